"""Stage 7, the viewer: one self-contained HTML file (images inlined) beside the atlas.

It shows the atlas with a clickable grid over it; hovering a cell shows its icon and numbers,
clicking opens a panel with the icon's figures (the icon, its full canvas, the split +/- icons
when rendered), its statistics and the thumbnails of the data set images in the cell. The URL
parameter ``?cell=ROW_COL`` clicks that cell on load (to link to a cell, and for tests).
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
const want = new URLSearchParams(location.search).get("cell");
if (want) { const n = document.getElementById("cell-" + want); if (n) n.click(); }
"""


def render_viewer(title: str, subtitle: str, atlas_uri: str, grid: int, cells: list[dict]) -> str:
    """The HTML text of the viewer; ``cells`` hold each icon's figures, numbers and thumbs."""
    data = json.dumps({"grid": grid, "cells": cells}).replace("</", "<\\/")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head>
<body>
<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>
<main>
<div id="atlas-wrap"><img id="atlas" src="{atlas_uri}" alt="attribution atlas">
<div id="grid"></div></div>
<aside id="detail" data-cell=""><p>Hover a cell to preview its icon; click it for its
figures and the data set images it holds.</p></aside>
</main>
<div id="tip"></div>
<script type="application/json" id="atlas-data">{data}</script>
<script>{_SCRIPT}</script>
</body></html>
"""


def write_viewer(
    path: Path, title: str, subtitle: str, atlas: Path, grid: int, cells: list[dict[str, Any]]
) -> Path:
    """Write the viewer with the atlas PNG at ``atlas`` inlined."""
    atlas_uri = "data:image/png;base64," + base64.b64encode(atlas.read_bytes()).decode("ascii")
    return write_text(path, render_viewer(title, subtitle, atlas_uri, grid, cells))
