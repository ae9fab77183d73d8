"""The census site in headless Chromium: every page renders, every link and image resolves, one
page per unit, a header click sorts, the filters filter, and names holding markup (a layer that
is a script, a file name that is an image tag) appear only as text.

Needs ``/usr/bin/chromium`` (Debian: ``apt-get install -y chromium``); skipped without it.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from conftest import HOSTILE_FILE, HOSTILE_LAYER

from mti_lightning.core.io import write_json
from mti_lightning.journeys.census.layout import unit_slug
from mti_lightning.journeys.census.site import build_site

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless Chromium not installed at /usr/bin/chromium (apt-get install -y chromium)",
)


def dump_doms(tmp_path: Path, urls: list[str]) -> list[str]:
    """The DOM of each page after its scripts ran, the browsers started side by side."""
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--virtual-time-budget=2000", "--dump-dom",
    ]  # fmt: skip
    procs = [
        subprocess.Popen(
            [str(CHROMIUM), *flags, f"--user-data-dir={tmp_path / f'profile{k}'}", u],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for k, u in enumerate(urls)
    ]
    return [p.communicate(timeout=180)[0] for p in procs]


def links(page: Path) -> list[str]:
    text = page.read_text()
    return [html.unescape(v) for v in re.findall(r'(?:href|src)="([^"]*)"', text)]


def target(page: Path, link: str) -> Path:
    parts = urlsplit(link)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    assert not parts.scheme and not parts.netloc, f"{page.name} links outside: {link}"
    return (page.parent / unquote(parts.path)).resolve()


def test_one_page_per_unit_and_every_link_resolves(site: Path) -> None:
    rows = json.loads((site / "units.json").read_text())["units"]
    pages = sorted((site / "pages").glob("*.html"))
    assert len(pages) == len(rows)
    assert {p.stem for p in pages} == {unit_slug(r["spec"]) for r in rows}
    for page in [site / "index.html", *pages]:
        found = links(page)
        assert found
        for link in found:
            assert target(page, link).is_file(), f"{page.name}: {link} does not resolve"
    index_links = {target(site / "index.html", u) for u in links(site / "index.html")}
    assert {p.resolve() for p in pages} <= index_links


@pytest.fixture(scope="module")
def rendered(site: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The DOM of the index and of every unit's page (by spec) after their scripts ran."""
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium not installed at /usr/bin/chromium")
    rows = json.loads((site / "units.json").read_text())["units"]
    pages = {r["spec"]: site / "pages" / f"{unit_slug(r['spec'])}.html" for r in rows}
    urls = [(site / "index.html").as_uri(), *(p.as_uri() for p in pages.values())]
    doms = dump_doms(tmp_path_factory.mktemp("chromium"), urls)
    return {"index": doms[0], **dict(zip(pages, doms[1:]))}


def test_every_page_renders(site: Path, rendered: dict[str, str]) -> None:
    for row in json.loads((site / "units.json").read_text())["units"]:
        dom = rendered[row["spec"]]
        assert f"<h1>{html.escape(row['spec'], quote=False)}</h1>" in dom
        scatter = row["layer"] != HOSTILE_LAYER  # the hostile unit has no per-image values
        assert len(re.findall(r"<img ", dom)) >= scatter + len(row["top"])
        assert ('alt="tension scatter"' in dom) == scatter


@needs_chromium
def test_clicking_headers_sorts_and_filters(site: Path, tmp_path: Path) -> None:
    index = (site / "index.html").as_uri()
    asc, desc, bn2 = dump_doms(
        tmp_path,
        [
            f"{index}#sort=ratio_mean:asc",
            f"{index}#sort=search_over_data:desc",
            f"{index}#sort=rank:asc&layer=bn2&min_tension_mean=0.8",
        ],
    )

    def column(dom: str, key: str) -> list[float]:
        return [float(v) if v else float("nan") for v in re.findall(rf'data-{key}="([^"]*)"', dom)]

    rows = json.loads((site / "units.json").read_text())["units"]
    ratios = column(asc, "ratio_mean")
    assert len(ratios) == len(rows) and ratios == sorted(ratios)
    assert 'aria-sort="ascending"' in asc
    over = [v for v in column(desc, "search_over_data") if v == v]
    assert len(over) == 4 and over == sorted(over, reverse=True)
    shown = [r for r in re.findall(r"<tr (data-rank[^>]*)>", bn2) if "hidden" not in r]
    want = [r for r in rows if r["layer"] == "bn2" and r["tension_mean"] >= 0.8]
    assert len(shown) == len(want) and all('data-layer="bn2"' in r for r in shown)
    assert f"{len(want)} of {len(rows)} units shown" in bn2


def test_names_holding_markup_stay_text(site: Path, rendered: dict[str, str]) -> None:
    for dom in rendered.values():
        assert "<title>pwned</title>" not in dom
        assert not re.search(r"<script>document", dom)
        assert not re.search(r"<img[^>]*onerror=\"", dom)
        assert not re.search(r"<b>7</b>", dom)
    spec = f"{HOSTILE_LAYER}:0@center"
    tensest = json.loads((site / "units.json").read_text())["units"][0]["spec"]
    assert html.escape(spec, quote=False) in rendered["index"]
    assert html.escape(HOSTILE_FILE, quote=False) in rendered[spec]  # its tensest image's caption
    assert "Upstream channels" in rendered[tensest] and "&lt;b&gt;7&lt;/b&gt;" in rendered[tensest]
    assert "Upstream channels" not in rendered[spec]


def test_pages_show_what_exists(census_copy: Path, census_source) -> None:
    """Without the search side, the pages show the data side and say the search is missing;
    a rebuild after a unit is gone drops its page."""
    build_site(census_copy)
    rows = json.loads((census_copy / "units.json").read_text())["units"]
    page = (census_copy / "pages" / f"{unit_slug(rows[0]['spec'])}.html").read_text()
    assert "the search side has not run" in page and "scatter.png" in page
    assert "Upstream channels" not in page and "Atlas" not in page
    units = json.loads((census_copy / "units.json").read_text())
    units["units"] = units["units"][:2]
    write_json(census_copy / "units.json", units)
    build_site(census_copy)
    assert len(list((census_copy / "pages").glob("*.html"))) == 2
