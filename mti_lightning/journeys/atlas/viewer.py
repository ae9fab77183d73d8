"""Stage 7, the viewer: one self-contained HTML file (images inlined) beside the atlas.

It shows the atlas with a clickable grid over it; hovering a cell shows its icon and numbers,
clicking opens a panel with the icon's figures (the icon, its full canvas, the split +/- icons
when rendered), its statistics and the thumbnails of the data set images in the cell. The URL
parameter ``?cell=ROW_COL`` clicks that cell on load (to link to a cell, and for tests).

Search runs made with ``callbacks.atlas=`` this atlas (``atlas.searches``) are marked on it:
each image's trajectory as a line and its end point as the image itself; hovering a marker
shows the image and its figures (activation, E+, E-, nearest cell, distances to the data),
``?mti=RUN_INDEX`` shows marker INDEX of search RUN on load (for tests).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.io import to_uint8, write_text


def png_data_uri(image: Image.Image | torch.Tensor, size: int | None = None) -> str:
    """A PNG ``data:`` URI of a PIL image or a ``(3|4, H, W)`` tensor, optionally resized so
    its longer side is ``size``."""
    pil = image if isinstance(image, Image.Image) else Image.fromarray(to_uint8(image))
    if size is not None and max(pil.size) != size:
        scale = size / max(pil.size)
        new = (max(1, round(pil.width * scale)), max(1, round(pil.height * scale)))
        pil = pil.resize(new, Image.LANCZOS if scale < 1 else Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 12px; background: #fafafa; color: #222; }
h1 { font-size: 18px; margin: 0 0 4px; } header p { margin: 0 0 10px; color: #555; }
main { display: flex; gap: 16px; align-items: flex-start; }
#atlas-wrap { position: relative; width: min(78vh, 62vw); flex: none; }
#atlas { width: 100%; display: block; image-rendering: auto; }
#grid { position: absolute; inset: 0; }
.cell { position: absolute; box-sizing: border-box; cursor: pointer; }
.cell:hover, .cell.open { outline: 2px solid #000; z-index: 2; }
#detail { flex: 1; min-width: 260px; background: #fff; border: 1px solid #ddd; padding: 10px; }
#detail h2 { font-size: 16px; margin: 0 0 6px; }
#detail .figs img { width: 112px; height: 112px; image-rendering: pixelated;
  border: 1px solid #ccc; margin: 0 6px 6px 0; }
#detail .figs figure { display: inline-block; margin: 0; text-align: center; font-size: 11px; }
#detail table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
#detail td { padding: 1px 8px 1px 0; }
.thumbs { display: flex; flex-wrap: wrap; gap: 4px; }
.thumbs figure { margin: 0; font-size: 10px; text-align: center; width: 64px;
  overflow: hidden; text-overflow: ellipsis; }
.thumbs img { width: 64px; height: 64px; image-rendering: pixelated; }
#tip { position: fixed; display: none; pointer-events: none; background: #fff;
  border: 1px solid #999; padding: 4px; font-size: 12px; z-index: 10; }
#tip img { width: 80px; height: 80px; image-rendering: pixelated; display: block; }
#tip .pics { display: flex; gap: 4px; }
#tracks { position: absolute; inset: 0; width: 100%; height: 100%; pointer-events: none;
  z-index: 3; }
.mti { position: absolute; width: 5%; height: 5%; transform: translate(-50%, -50%);
  border: 2px solid #000; box-sizing: border-box; z-index: 4; cursor: help;
  image-rendering: pixelated; }
"""

_SCRIPT = """
const A = JSON.parse(document.getElementById("atlas-data").textContent);
const grid = document.getElementById("grid"), tip = document.getElementById("tip");
const detail = document.getElementById("detail");
const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3));
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function figure(src, caption) {
  const f = el("figure"); f.append(el("img", {src: src, alt: caption}), el("figcaption", {}, caption));
  return f;
}
function openCell(c, node) {
  document.querySelectorAll(".cell.open").forEach((n) => n.classList.remove("open"));
  node.classList.add("open");
  detail.replaceChildren();
  detail.dataset.cell = c.row + "_" + c.col;
  detail.append(el("h2", {}, "cell (" + c.row + ", " + c.col + "): " + c.n + " images"));
  const figs = el("div", {class: "figs"});
  figs.append(figure(c.icon, "icon"), figure(c.canvas, "full canvas"));
  if (c.plus) figs.append(figure(c.plus, "+ part"), figure(c.minus, "- part"));
  detail.append(figs);
  const t = el("table");
  for (const [k, v] of [["icon activation", c.activation], ["icon E+", c.e_plus],
      ["icon E-", c.e_minus], ["images: mean activation", c.mean_activation],
      ["images: mean E+", c.mean_e_plus], ["images: mean E-", c.mean_e_minus]]) {
    const r = el("tr"); r.append(el("td", {}, k), el("td", {}, fmt(v))); t.append(r);
  }
  detail.append(t, el("h3", {}, "images in this cell" + (c.thumbs.length < c.n ?
      " (" + c.thumbs.length + " of " + c.n + ", by activation)" : "")));
  const th = el("div", {class: "thumbs"});
  for (const m of c.thumbs) {
    const f = figure(m.src, fmt(m.activation));
    f.className = "thumb"; f.title = m.name + "  " + m.label + "  act " + fmt(m.activation) +
      "  E+ " + fmt(m.e_plus) + "  E- " + fmt(m.e_minus);
    th.append(f);
  }
  detail.append(th);
}
for (const c of A.cells) {
  const node = el("div", {class: "cell", id: "cell-" + c.row + "_" + c.col});
  const s = 100 / A.grid;
  node.style.cssText = "left:" + c.col * s + "%;top:" + c.row * s + "%;width:" + s +
      "%;height:" + s + "%";
  node.addEventListener("mouseenter", () => {
    tip.replaceChildren(el("img", {src: c.icon}),
        el("div", {}, c.n + " images, icon act " + fmt(c.activation)));
    tip.style.display = "block";
  });
  node.addEventListener("mousemove", (e) => {
    tip.style.left = e.clientX + 14 + "px"; tip.style.top = e.clientY + 14 + "px";
  });
  node.addEventListener("mouseleave", () => { tip.style.display = "none"; });
  node.addEventListener("click", () => openCell(c, node));
  grid.append(node);
}
const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];
const tracks = document.getElementById("tracks");
const clip = (v) => Math.min(100, Math.max(0, 100 * v));
function mtiTip(s, m) {
  const lines = [s.name + "  #" + m.image + "  " + m.feature,
    "act " + fmt(m.activation) + "  E+ " + fmt(m.e_plus) + "  E- " + fmt(m.e_minus),
    "nearest cell (" + m.cell.join(", ") + ", icon right): icon act " + fmt(m.cell_icon_activation) +
      ", data act " + fmt(m.cell_mean_activation) + (m.cell_tense ? " (tense)" : ""),
    "nearest data image: " + fmt(m.nn_dist) + " (layout), " + fmt(m.nn_dist_hd) +
      " (attribution) x median NN, " + (m.on_map ? "on" : "off") + " the data's map"];
  const pics = el("div", {class: "pics"});
  pics.append(el("img", {src: m.src, alt: "image"}));
  const cell = A.cells.find((c) => c.row === m.cell[0] && c.col === m.cell[1]);
  if (cell) pics.append(el("img", {src: cell.icon, alt: "nearest cell's icon"}));
  tip.replaceChildren(pics, ...lines.map((t) => el("div", {}, t)));
  tip.dataset.mti = s.index + "_" + m.image;
  tip.style.display = "block";
}
for (const s of A.searches) {
  for (const m of s.images) {
    const colour = COLOURS[(s.index + m.image) % COLOURS.length];
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", m.trajectory.map((p) => clip(p[0]) + "," + (100 - clip(p[1]))).join(" "));
    line.setAttribute("fill", "none"); line.setAttribute("stroke", colour);
    line.setAttribute("stroke-width", "0.5");
    tracks.append(line);
    const node = el("img", {class: "mti", id: "mti-" + s.index + "_" + m.image, src: m.src,
        alt: m.feature});
    node.style.cssText = "left:" + clip(m.x) + "%;top:" + (100 - clip(m.y)) + "%;border-color:" + colour;
    node.addEventListener("mouseenter", () => mtiTip(s, m));
    node.addEventListener("mousemove", (e) => {
      tip.style.left = e.clientX + 14 + "px"; tip.style.top = e.clientY + 14 + "px";
    });
    node.addEventListener("mouseleave", () => { tip.style.display = "none"; });
    document.getElementById("atlas-wrap").append(node);
  }
}
const want = new URLSearchParams(location.search).get("cell");
if (want) { const n = document.getElementById("cell-" + want); if (n) n.click(); }
const wantMti = new URLSearchParams(location.search).get("mti");
if (wantMti) {
  const [si, mi] = wantMti.split("_").map(Number);
  const s = A.searches.find((x) => x.index === si);
  const m = s && s.images.find((x) => x.image === mi);
  if (m) {
    mtiTip(s, m);
    const box = document.getElementById("mti-" + wantMti).getBoundingClientRect();
    tip.style.left = box.right + 8 + "px"; tip.style.top = box.top + "px";
  }
}
"""


def search_markers(run: str | Path, index: int, fingerprint: str, atlas_dir: Path) -> dict:
    """The markers of one search run placed on this atlas (its ``atlas/placement.json``,
    checked to come from this atlas's embedding), with each image inlined."""
    run = Path(run).expanduser()
    path = run / "atlas" / "placement.json"
    if not path.is_file():
        raise MTIConfigError(
            f"atlas.searches: {run} holds no atlas placement ({path} missing); run the search "
            f"with callbacks.atlas={atlas_dir}"
        )
    placement = json.loads(path.read_text())
    if placement.get("embedding_fingerprint") != fingerprint:
        raise MTIConfigError(
            f"atlas.searches: {run} was placed on another atlas ({placement.get('atlas_run')}), "
            f"not on {atlas_dir}; run it again with callbacks.atlas={atlas_dir}"
        )
    keys = (
        "image", "feature", "activation", "e_plus", "e_minus", "tension", "x", "y", "cell",
        "cell_icon_activation", "cell_mean_activation", "cell_tense", "nn_dist", "nn_dist_hd",
        "on_map",
    )  # fmt: skip
    images = []
    for rec in placement["images"]:
        with Image.open(path.parent / rec["png"]) as img:
            src = png_data_uri(img.convert("RGB"), 64)
        images.append(
            {
                **{k: rec[k] for k in keys},
                "src": src,
                "trajectory": [[p["x"], p["y"]] for p in rec["trajectory"]],
            }
        )
    return {"index": index, "name": run.name, "path": str(run), "images": images}


def render_viewer(
    title: str,
    subtitle: str,
    atlas_uri: str,
    grid: int,
    cells: list[dict],
    searches: list[dict] | None = None,
) -> str:
    """The HTML text of the viewer; ``cells`` hold each icon's figures, numbers and thumbs,
    ``searches`` the markers of search runs (:func:`search_markers`)."""
    data = {"grid": grid, "cells": cells, "searches": searches or []}
    data = json.dumps(data).replace("</", "<\\/")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head>
<body>
<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>
<main>
<div id="atlas-wrap"><img id="atlas" src="{atlas_uri}" alt="attribution atlas">
<div id="grid"></div><svg id="tracks" viewBox="0 0 100 100" preserveAspectRatio="none"></svg>
</div>
<aside id="detail" data-cell=""><p>Hover a cell to preview its icon; click it for its
figures and the data set images it holds.</p></aside>
</main>
<div id="tip"></div>
<script type="application/json" id="atlas-data">{data}</script>
<script>{_SCRIPT}</script>
</body></html>
"""


def write_viewer(
    path: Path,
    title: str,
    subtitle: str,
    atlas: Path,
    grid: int,
    cells: list[dict[str, Any]],
    searches: list[dict] | None = None,
) -> Path:
    """Write the viewer with the atlas PNG at ``atlas`` inlined."""
    atlas_uri = "data:image/png;base64," + base64.b64encode(atlas.read_bytes()).decode("ascii")
    return write_text(path, render_viewer(title, subtitle, atlas_uri, grid, cells, searches))
