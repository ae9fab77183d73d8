"""The census site's HTML: the index (every unit; sort by a column, filter by layer and minimum
numbers) and one page per unit. Pure text building: every name, label and file name goes
through :func:`esc` (``html.escape`` with quotes), every path in an ``href``/``src`` through
:func:`url` (percent-encoded), and the pages hold their CSS and script inline, so they work from
``file://`` with no server and no network.

The index reads its state from the URL's hash, ``#sort=KEY:asc|desc&layer=NAME&min_KEY=VALUE``,
and keeps the hash up to date, so a sorted, filtered view can be linked to (and tested).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

# index columns: (key, label, numeric); the numbers come from units.json, then search.json
COLUMNS: list[tuple[str, str, bool]] = [
    ("rank", "rank", True),
    ("spec", "unit", False),
    ("layer", "layer", False),
    ("tension_mean", "tension (mean)", True),
    ("tension_p90", "tension p90", True),
    ("tension_p99", "tension p99", True),
    ("ratio_mean", "ratio (mean)", True),
    ("frac_tense", "fraction tense", True),
    ("e_plus_mean", "E+ (mean)", True),
    ("e_minus_mean", "E- (mean)", True),
    ("act_mean", "activation (mean)", True),
    ("end_tension", "search tension", True),
    ("search_over_data", "search / data", True),
]
# the index's minimum filters: (key, label)
FILTERS = [
    ("tension_mean", "tension"),
    ("ratio_mean", "ratio"),
    ("frac_tense", "fraction tense"),
    ("search_over_data", "search / data"),
]


def esc(value: Any) -> str:
    """``value`` as HTML text or attribute value: ``& < > " '`` escaped."""
    return html.escape(str(value), quote=True)


def url(path: str) -> str:
    """A relative path (or ``file:`` URI) for ``href``/``src``: percent-encoded, then escaped."""
    if path.startswith("file:"):
        return esc(path)
    return esc(quote(path, safe="/"))


def fmt(value: Any) -> str:
    """A number in 4 significant digits ("-" for none), as HTML text."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return esc(value)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 16px; color: #222; background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 6px; } h2 { font-size: 16px; margin: 18px 0 6px; }
p.meta { color: #555; margin: 0 0 10px; }
table { border-collapse: collapse; font-size: 13px; background: #fff; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; }
td.text, th.text { text-align: left; }
th[data-key] { cursor: pointer; user-select: none; background: #f0f0f0; }
th[aria-sort=ascending]::after { content: " \\25B2"; }
th[aria-sort=descending]::after { content: " \\25BC"; }
#filters { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; margin: 8px 0; }
#filters input { width: 6em; }
img.thumb { width: 40px; height: 40px; image-rendering: pixelated; display: block; }
figure { display: inline-block; margin: 0 10px 10px 0; text-align: center; font-size: 12px;
  vertical-align: top; max-width: 160px; overflow-wrap: anywhere; }
figure img { width: 128px; height: 128px; image-rendering: pixelated; border: 1px solid #ccc; }
img.wide { width: auto; height: auto; max-width: 100%; }
nav a { margin-right: 12px; }
.missing { color: #888; font-style: italic; }
"""

_SCRIPT = """
const table = document.getElementById("units");
const body = table.tBodies[0];
const rows = Array.from(body.rows);
const heads = Array.from(table.querySelectorAll("th[data-key]"));
const layer = document.getElementById("layer");
const mins = Array.from(document.querySelectorAll("input[data-min]"));
let sortKey = "rank", sortDir = 1;
function value(row, key, numeric) {
  const v = row.dataset[key];
  if (!numeric) return v || "";
  return v === undefined || v === "" ? NaN : Number(v);
}
function sortBy(key, dir) {
  const head = heads.find((h) => h.dataset.key === key);
  if (!head) return;
  const numeric = head.dataset.numeric === "1";
  sortKey = key; sortDir = dir;
  const sorted = rows.slice().sort((a, b) => {
    const x = value(a, key, numeric), y = value(b, key, numeric);
    if (numeric) {
      if (isNaN(x) || isNaN(y)) return isNaN(x) - isNaN(y);
      return (x - y) * dir || value(a, "rank", true) - value(b, "rank", true);
    }
    return x.localeCompare(y) * dir;
  });
  sorted.forEach((r) => body.appendChild(r));
  heads.forEach((h) => h.removeAttribute("aria-sort"));
  head.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
  remember();
}
function filter() {
  let shown = 0;
  rows.forEach((r) => {
    let ok = !layer.value || r.dataset.layer === layer.value;
    mins.forEach((m) => {
      if (m.value !== "" && !(value(r, m.dataset.min, true) >= Number(m.value))) ok = false;
    });
    r.hidden = !ok;
    shown += ok;
  });
  document.getElementById("count").textContent = shown + " of " + rows.length + " units shown";
  remember();
}
function remember() {
  const q = new URLSearchParams();
  q.set("sort", sortKey + ":" + (sortDir > 0 ? "asc" : "desc"));
  if (layer.value) q.set("layer", layer.value);
  mins.forEach((m) => { if (m.value !== "") q.set("min_" + m.dataset.min, m.value); });
  history.replaceState(null, "", "#" + q.toString());
}
heads.forEach((h) => h.addEventListener("click", () => {
  const first = h.dataset.numeric === "1" && h.dataset.key !== "rank" ? -1 : 1;
  sortBy(h.dataset.key, h.dataset.key === sortKey ? -sortDir : first);
}));
layer.addEventListener("change", filter);
mins.forEach((m) => m.addEventListener("input", filter));
const state = new URLSearchParams(location.hash.slice(1));
if (state.get("layer") !== null) layer.value = state.get("layer");
mins.forEach((m) => { const v = state.get("min_" + m.dataset.min); if (v !== null) m.value = v; });
const asked = (state.get("sort") || "").split(":");
const head = heads.find((h) => h.dataset.key === asked[0]);
if (head) {
  head.click();
  if ((asked[1] === "asc") !== (sortDir > 0)) head.click();
}
filter();
"""


def _page(title: str, body: str, script: str = "") -> str:
    tail = f"<script>{script}</script>" if script else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}{tail}</body></html>\n"
    )


def _row_values(row: Mapping[str, Any], found: Mapping[str, Any] | None) -> dict[str, Any]:
    values = {k: row.get(k) for k, _, _ in COLUMNS}
    for key in ("end_tension", "search_over_data"):
        values[key] = (found or {}).get(key)
    return values


def index_page(
    meta: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    search: Mapping[str, Mapping[str, Any]],
    pages: Mapping[str, str],
    thumbs: Mapping[str, str],
    depth_figure: str | None,
) -> str:
    """The index: ``rows`` of units.json (with ``search`` entries by spec), each linking to its
    page ``pages[spec]`` and showing its MTI ``thumbs[spec]`` where one exists."""
    heads = "".join(
        f'<th data-key="{esc(k)}" data-numeric="{int(n)}"'
        f"{'' if n else ' class=text'}>{esc(label)}</th>"
        for k, label, n in COLUMNS
    )
    lines = []
    for row in rows:
        spec = str(row["spec"])
        values = _row_values(row, search.get(spec))
        data = "".join(f' data-{k}="{esc("" if v is None else v)}"' for k, v in values.items())
        cells = []
        for k, _, numeric in COLUMNS:
            if k == "spec":
                cells.append(f'<td class="text"><a href="{url(pages[spec])}">{esc(spec)}</a></td>')
            elif numeric:
                cells.append(f"<td>{fmt(values[k])}</td>")
            else:
                cells.append(f'<td class="text">{esc(values[k])}</td>')
        thumb = thumbs.get(spec)
        pic = f'<img class="thumb" src="{url(thumb)}" alt="MTI">' if thumb else ""
        lines.append(f"<tr{data}>{''.join(cells)}<td>{pic}</td></tr>")
    layers = sorted({str(r["layer"]) for r in rows})
    options = "".join(f'<option value="{esc(name)}">{esc(name)}</option>' for name in layers)
    inputs = "".join(
        f'<label>min {esc(label)} <input type="number" step="any" data-min="{esc(k)}"></label>'
        for k, label in FILTERS
    )
    depth = (
        f'<h2>Tension by depth</h2><img class="wide" src="{url(depth_figure)}" alt="depth">'
        if depth_figure
        else ""
    )
    body = (
        f"<h1>Inhibition census of {esc(meta.get('model', '?'))}</h1>"
        f'<p class="meta">{len(rows)} units over {esc(meta.get("n_images", "?"))} images of '
        f"{esc(meta.get('data', '?'))}; tense-image threshold {esc(meta.get('threshold', '?'))}. "
        "Click a column to sort; the filters keep units at or above each minimum.</p>"
        f'<div id="filters"><label>layer <select id="layer"><option value="">all</option>'
        f'{options}</select></label>{inputs}<span id="count"></span></div>'
        f'<table id="units"><thead><tr>{heads}<th>MTI</th></tr></thead>'
        f"<tbody>{''.join(lines)}</tbody></table>{depth}"
    )
    return _page(f"census: {meta.get('model', '')}", body, _SCRIPT)


def _figure(src: str | None, caption: str, href: str | None = None) -> str:
    if not src:
        return f'<figure><span class="missing">no {esc(caption)}</span></figure>'
    img = f'<img src="{url(src)}" alt="{esc(caption)}">'
    if href:
        img = f'<a href="{url(href)}">{img}</a>'
    return f"<figure>{img}<figcaption>{esc(caption)}</figcaption></figure>"


def _cropped(
    found: Mapping[str, Any], assets: Mapping[str, str], figures: Sequence[tuple[str, str]]
) -> list[str]:
    """The ``figures`` (key, caption) again, cropped to the unit's effective receptive field,
    with the field stated in px; nothing when the unit sees the whole canvas."""
    rf = found.get("receptive_field") or {}
    shown = [
        _figure(assets[f"{key}_rf"], caption) for key, caption in figures if assets.get(f"{key}_rf")
    ]
    if not shown:
        return []
    size = "x".join(str(v) for v in rf.get("input_px", []))
    return [
        f'<p class="meta">cropped to the unit\'s effective receptive field: '
        f"{esc(rf.get('effective_px'))} px (theoretical {esc(rf.get('theoretical_px'))} px, "
        f"at the network's {esc(size)} px input)</p>",
        *shown,
    ]


def _numbers(pairs: Sequence[tuple[str, Any]]) -> str:
    cells = "".join(f'<tr><td class="text">{esc(k)}</td><td>{fmt(v)}</td></tr>' for k, v in pairs)
    return f"<table>{cells}</table>"


def _decomposition_section(d: Mapping[str, Any]) -> str:
    """The unit's E+ and E- components (from its decomposition run): share and top channels
    of each, and the components figure."""
    rows = "".join(
        f'<tr><td class="text">E{"+" if c.get("part") == "plus" else "-"} {esc(c.get("component"))}'
        f'</td><td>{fmt(c.get("share"))}</td><td class="text">{esc(c.get("top_channels"))}</td></tr>'
        for c in d.get("components", [])
    )
    parts = [
        "<h2>Decomposed attributions (signed NMF)</h2>",
        f"<p>at {esc(d.get('layer'))}</p>",
        "<table><tr><th class=text>component</th><th>share</th><th class=text>top channels</th>"
        f"</tr>{rows}</table>",
    ]
    if d.get("figure"):
        parts.append(f'<img class="wide" src="{url("../" + str(d["figure"]))}" alt="components">')
    return "".join(parts)


def _circuit_section(circuit: Mapping[str, Any]) -> str:
    """The unit's upstream channels (from its circuit run): the strongest inhibitory and
    excitatory channels with their shares, the ablation's rise, and the circuit figure."""
    parts = ["<h2>Upstream channels</h2>"]
    if circuit.get("layer"):
        parts.append(f"<p>at {esc(circuit['layer'])}</p>")
    if circuit.get("ablation_rise") is not None:
        parts.append(
            f"<p>ablating the inhibitory channels raises the unit by "
            f"{fmt(circuit['ablation_rise'])} on its tensest images (random channels: "
            f"{fmt(circuit.get('ablation_rise_control'))})</p>"
        )
    for key, label in (
        ("inhibitory", "strongest inhibitory"),
        ("excitatory", "strongest excitatory"),
    ):
        entries = circuit.get(key) or []
        cells = "".join(
            f'<tr><td class="text">{esc(e.get("channel"))}</td><td>{fmt(e.get("share"))}</td>'
            f'<td class="text">{"cancels" if e.get("cancels") else ""}</td></tr>'
            for e in entries
        )
        parts.append(
            f"<h3>{esc(label)}</h3><table><tr><th class=text>channel</th><th>share</th>"
            f"<th class=text></th></tr>{cells}</table>"
        )
    if circuit.get("figure"):
        parts.append(
            f'<img class="wide" src="{url("../" + str(circuit["figure"]))}" alt="circuit">'
        )
    return "".join(parts)


def unit_page(
    row: Mapping[str, Any],
    found: Mapping[str, Any] | None,
    assets: Mapping[str, str],
    tops: Sequence[tuple[Mapping[str, Any], str | None, str | None]],
    circuit: Mapping[str, Any] | None,
    links: Mapping[str, str],
    n_units: int,
    decomposition: Mapping[str, Any] | None = None,
) -> str:
    """One unit's page. ``assets``: relative paths of its figures by key (``mti``,
    ``mti_plus``, ``viz_plus``, ``data_plus``, ..., ``scatter``, ``atlas``); ``tops``: each
    tensest data image's entry with its thumbnail path and a link to the original file (or
    None); ``circuit``: its upstream channels (``inhibitory``/``excitatory`` lists of
    ``{channel, share}``) or None; ``links``: ``index``, ``prev``, ``next``; ``decomposition``:
    its E+/E- components (from its decomposition run) or None."""
    spec = str(row["spec"])
    nav = f'<a href="{url(links["index"])}">index</a>'
    for key, label in (("prev", "previous unit"), ("next", "next unit")):
        if links.get(key):
            nav += f'<a href="{url(links[key])}">{label}</a>'
    data_numbers = _numbers(
        [
            (k, row.get(k))
            for k in (
                "tension_mean", "tension_p50", "tension_p90", "tension_p99", "ratio_mean",
                "frac_tense", "e_plus_mean", "e_minus_mean", "act_mean", "act_p01", "act_p50",
                "act_p99",
            )
        ]
    )  # fmt: skip
    parts = [
        f"<nav>{nav}</nav><h1>{esc(spec)}</h1>",
        f'<p class="meta">rank {esc(row.get("rank"))} of {n_units}; layer {esc(row.get("layer"))},'
        f" unit {esc(row.get('unit'))}; attribution layer {esc(row.get('attr_layer'))}</p>",
        "<h2>Over the data</h2>",
        data_numbers,
        "<h2>Feature visualisation</h2>",
    ]
    missing = '<p class="missing">the search side has not run for this unit</p>'
    if found:
        parts += [
            _figure(assets.get("viz_plus"), "+ (raises the unit)"),
            _figure(assets.get("viz_minus"), "- (lowers the unit)"),
            *_cropped(found, assets, [("viz_plus", "+ (cropped)"), ("viz_minus", "- (cropped)")]),
        ]
    else:
        parts.append(missing)
    parts.append("<h2>Maximally tense image</h2>")
    if found:
        parts.append(
            _numbers(
                [
                    ("search tension", found.get("end_tension")),
                    ("search E+", found.get("end_e_plus")),
                    ("search E-", found.get("end_e_minus")),
                    ("search ratio", found.get("end_ratio")),
                    ("search activation", found.get("end_activation")),
                    ("largest tension in the data", found.get("data_max_tension")),
                    ("search / data", found.get("search_over_data")),
                ]
            )
        )
        parts += [
            _figure(assets.get("mti"), "MTI"),
            _figure(assets.get("mti_plus"), "MTI + inversion"),
            _figure(assets.get("mti_minus"), "MTI - inversion"),
            *_cropped(
                found,
                assets,
                [
                    ("mti", "MTI (cropped)"),
                    ("mti_plus", "+ inversion (cropped)"),
                    ("mti_minus", "- inversion (cropped)"),
                    ("data", "tensest data image (cropped)"),
                    ("data_plus", "its + inversion (cropped)"),
                    ("data_minus", "its - inversion (cropped)"),
                ],
            ),
        ]
    else:
        parts.append(missing)
    parts.append("<h2>Tensest data images</h2>")
    figures = []
    for k, (top, thumb, original) in enumerate(tops):
        caption = (
            f"{top.get('file')}: tension {fmt(top.get('tension'))}, E+ {fmt(top.get('e_plus'))},"
            f" E- {fmt(top.get('e_minus'))}, activation {fmt(top.get('activation'))}"
        )
        figures.append(_figure(thumb, caption, original))
        if k == 0 and found:
            figures.append(_figure(assets.get("data_plus"), "+ inversion of the tensest"))
            figures.append(_figure(assets.get("data_minus"), "- inversion of the tensest"))
    parts.append("".join(figures) or '<p class="missing">no data images</p>')
    parts.append("<h2>Tension scatter</h2>")
    parts.append(
        f'<img class="wide" src="{url(assets["scatter"])}" alt="tension scatter">'
        if assets.get("scatter")
        else '<p class="missing">no per-image values for this unit</p>'
    )
    if assets.get("atlas"):
        parts.append(f'<h2>Atlas</h2><img class="wide" src="{url(assets["atlas"])}" alt="atlas">')
    if circuit:
        parts.append(_circuit_section(circuit))
    if decomposition:
        parts.append(_decomposition_section(decomposition))
    return _page(spec, "".join(parts))
