"""The census's static site: ``<census>/index.html`` (every unit, sortable and filterable) and
``<census>/pages/<slug>.html`` (one per unit), with the figures they show under
``<census>/site/<slug>/``: the tension scatter (from the data side's per-image tensors), the
tensest data images as thumbnails (from the census's image folder, or the search side's copy
of the tensest) and the unit's atlas where one is named. Everything is linked relatively, so
the site works from ``file://`` and can be copied or logged as one folder.

It shows what exists: without ``search.json`` the pages show the data side only; the upstream
channels appear once ``circuits.json`` (spec -> ``{"inhibitory": [{"channel", "share"}],
"excitatory": [...]}``) holds the unit; an atlas appears where the unit's row, its search
entry or ``atlases.json`` (spec -> path) names an image file.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from PIL import Image

from mti_lightning.core.io import atomic_write, write_text
from mti_lightning.journeys.census.layout import (
    ATLASES_JSON,
    CIRCUITS_JSON,
    DECOMPOSITIONS_JSON,
    SEARCH_JSON,
    layer_values,
    read_optional,
    read_units,
    unit_column,
    unit_slug,
)
from mti_lightning.journeys.census.pages import index_page, unit_page
from mti_lightning.journeys.census.scatter import tension_scatter

THUMBNAIL = 96  # px, longer side of a data image's thumbnail
SITE_OUTPUTS = ("index.html", "pages", "site", "units", "depth.png")


def _fresh(target: Path, source: Path) -> bool:
    """Whether ``target`` exists and is at least as new as ``source``."""
    return target.is_file() and target.stat().st_mtime_ns >= source.stat().st_mtime_ns


def _thumbnail(source: Path, target: Path) -> bool:
    """A thumbnail of the image file ``source`` at ``target`` (False when it does not decode)."""
    if _fresh(target, source):
        return True
    try:
        with Image.open(source) as img:
            pic = img.convert("RGB")
    except Exception:  # noqa: BLE001 (a file that does not decode gets no thumbnail)
        return False
    pic.thumbnail((THUMBNAIL, THUMBNAIL))
    atomic_write(target, lambda tmp: pic.save(tmp, format="PNG"))
    return True


def _original(folder: Path | None, name: str) -> Path | None:
    """The data image file ``name``: an absolute path as it is, a relative one inside
    ``folder`` (never leading out of it); None when there is no such file."""
    if Path(name).is_absolute():
        path = Path(name)
    elif folder is not None:
        path = (folder / name).resolve()
        if not path.is_relative_to(folder.resolve()):
            return None
    else:
        return None
    return path if path.is_file() else None


def _tops(
    census: Path, row: dict[str, Any], folder: Path | None, found: dict[str, Any]
) -> list[tuple[dict[str, Any], str | None, str | None]]:
    """Each tensest data image with its thumbnail and original file, relative to a page."""
    out = []
    site = census / "site" / unit_slug(row["spec"])
    for k, top in enumerate(row.get("top") or []):
        original = _original(folder, str(top.get("file", "")))
        thumb = None
        target = site / f"top_{k}.png"
        if original is not None and _thumbnail(original, target):
            thumb = f"../{target.relative_to(census).as_posix()}"
        elif k == 0 and found.get("images", {}).get("data"):
            thumb = f"../{found['images']['data']}"
        out.append((top, thumb, original.as_uri() if original else None))
    return out


def _scatter(census: Path, row: dict[str, Any], values: dict[str, Any] | None) -> str | None:
    if values is None:
        return None
    col = unit_column(values, row["unit"])
    if col is None:
        return None
    target = census / "site" / unit_slug(row["spec"]) / "scatter.png"
    if not _fresh(target, census / "data" / f"{row['layer']}.safetensors"):
        v = {k: values[k][:, col] for k in ("e_plus", "e_minus", "activation")}
        title = f"{row['spec']}: {len(v['e_plus'])} images"
        tension_scatter(
            target, v["e_plus"], v["e_minus"], v["activation"], title, row.get("act_hist")
        )
    return f"../{target.relative_to(census).as_posix()}"


def _atlas(census: Path, row: dict[str, Any], found: dict[str, Any], atlases: dict) -> str | None:
    """The unit's atlas image copied into the site, where one is named and exists."""
    named = row.get("atlas") or found.get("atlas") or atlases.get(row["spec"])
    if not named:
        return None
    source = Path(named) if Path(named).is_absolute() else census / named
    if not source.is_file():
        return None
    target = census / "site" / unit_slug(row["spec"]) / f"atlas{source.suffix.lower()}"
    if not _fresh(target, source):
        atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
    return f"../{target.relative_to(census).as_posix()}"


def build_site(census_dir: Path, images: Path | None = None) -> Path:
    """Write the census site of ``census_dir`` (which holds the data side's ``units.json``) and
    return its ``index.html``. ``images``: the folder the tensest images' file names are
    relative to (default: units.json's ``data`` where that is a folder; a built-in source
    passes the folder it wrote). Rebuilding redraws only figures whose sources changed and
    drops the pages of units no longer in the census."""
    census = Path(census_dir)
    units = read_units(census)
    rows = sorted(units["units"], key=lambda r: r["rank"])
    search = read_optional(census, SEARCH_JSON).get("units", {})
    circuits = read_optional(census, CIRCUITS_JSON)
    decompositions = read_optional(census, DECOMPOSITIONS_JSON)
    atlases = read_optional(census, ATLASES_JSON)
    data = units.get("data")
    if images is not None:
        folder: Path | None = Path(images)
    elif isinstance(data, str) and data and Path(data).is_dir():
        folder = Path(data)
    else:
        folder = None
    pages = {r["spec"]: f"pages/{unit_slug(r['spec'])}.html" for r in rows}
    values_of: dict[str, Any] = {}
    thumbs = {}
    for k, row in enumerate(rows):
        spec, found = row["spec"], search.get(row["spec"]) or {}
        if row["layer"] not in values_of:
            values_of[row["layer"]] = layer_values(census, row["layer"])
        assets = {key: f"../{rel}" for key, rel in found.get("images", {}).items()}
        assets |= {f"{key}_rf": f"../{rel}" for key, rel in found.get("crops", {}).items()}
        assets["scatter"] = _scatter(census, row, values_of[row["layer"]])
        assets["atlas"] = _atlas(census, row, found, atlases)
        if "mti" in found.get("images", {}):
            thumbs[spec] = found["images"]["mti"]
        links = {
            "index": "../index.html",
            "prev": f"../{pages[rows[k - 1]['spec']]}" if k > 0 else None,
            "next": f"../{pages[rows[k + 1]['spec']]}" if k + 1 < len(rows) else None,
        }
        circuit = circuits.get(spec) if isinstance(circuits, dict) else None
        html = unit_page(
            row,
            found or None,
            assets,
            _tops(census, row, folder, found),
            circuit,
            links,
            len(rows),
            decompositions.get(spec) if isinstance(decompositions, dict) else None,
        )
        write_text(census / pages[spec], html)
    keep = {census / p for p in pages.values()}
    for old in (census / "pages").glob("*.html"):
        if old not in keep:
            old.unlink()
    depth = "depth.png" if (census / "depth.png").is_file() else None
    index = index_page(units, rows, search, pages, thumbs, depth)
    return write_text(census / "index.html", index)
