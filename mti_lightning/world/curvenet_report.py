"""What CurveNet's middle layer responds to: per unit, its orientation tuning curve (mean
pre-activation per orientation), its top synthetic images and its feature visualisation.

Writes ``curvenet_report.txt`` and ``curvenet_report.png`` into the run directory.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mti_lightning.core.features import FeatureSpec, Readout, build_readout
from mti_lightning.core.io import atomic_write, write_text
from mti_lightning.core.models import LoadedModel, load_model
from mti_lightning.core.objectives import Activation
from mti_lightning.core.parameterizations import FourierImage
from mti_lightning.core.probes import capture
from mti_lightning.core.transforms import TransformConfig
from mti_lightning.shells.engine import DEFAULT_OPTIONS, EngineOptions, optimise
from mti_lightning.shells.search import MTISearch
from mti_lightning.world.curve_dataset import CurveDataset
from mti_lightning.world.curves import NUM_CLASSES, ORIENTATIONS_DEG
from mti_lightning.world.tuning import TUNED_R2, orientation_tuning


def tuning(
    layer: str = "bn2", n_images: int = 2400, seed: int = 7, batch: int = 256
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centre pre-activation of every channel of ``layer`` on single-arc curve images:
    returns (values (N, C), labels (N,), images (N, 3, H, W))."""
    lm = load_model("curvenet")
    data = CurveDataset(n_images, seed)
    images = torch.stack([data[i][0] for i in range(n_images)])
    labels = torch.tensor([data[i][1] for i in range(n_images)])
    values = []
    with torch.no_grad():
        for start in range(0, n_images, batch):
            act = capture(lm.model, lm.normalize(images[start : start + batch]), [layer])[layer]
            values.append(act[:, :, act.shape[2] // 2, act.shape[3] // 2])
    return torch.cat(values), labels, images


def run_report(
    run_dir: Path,
    layer: str = "bn2",
    units: int = 6,
    steps: int = 128,
    n_images: int = 2400,
    options: EngineOptions = DEFAULT_OPTIONS,
) -> str:
    """Write the report for the ``units`` most orientation-tuned channels of ``layer``; the
    feature visualisations run on the engine with ``options`` (the ``trainer`` group)."""
    values, labels, images = tuning(layer, n_images)
    t = orientation_tuning(values, labels)
    curves, strength = t.curves, t.r2
    chosen = strength.argsort(descending=True)[:units].tolist()
    lm = load_model("curvenet")
    specs = [FeatureSpec(layer, c) for c in chosen]
    readout = build_readout(lm.model, lm.input_size, specs)
    viz = visualise(lm, readout, steps, Path(run_dir) / "stages" / "visualisation", options)
    lines = [f"CurveNet {layer} (pre-activation at the centre), {len(values)} single-arc images"]
    lines.append(
        f"{'unit':>5} {'R2':>5} {'pref':>6} {'worst':>6} {'offset':>6}  mean per orientation"
    )
    offsets = []
    for c in chosen:
        off = float(t.offset_deg[c])
        offsets.append(off)
        row = " ".join(f"{v:+.2f}" for v in curves[c].tolist())
        lines.append(
            f"{c:>5} {float(strength[c]):5.2f} {float(t.preferred_deg[c]):6.1f} "
            f"{float(t.inhibition_deg[c]):6.1f} {off:6.1f}  {row}"
        )
    tuned = int(t.tuned.sum())
    lines.append(
        f"{tuned} of {len(strength)} channels have R2 > {TUNED_R2}; among the units shown the strongest "
        f"inhibition lies {sum(offsets) / len(offsets):.1f} degrees from the preferred "
        "orientation on average"
    )
    text = "\n".join(lines)
    _figure(run_dir / "curvenet_report.png", chosen, curves, values, images, viz, strength)
    write_text(run_dir / "curvenet_report.txt", text + "\n")
    return text


def visualise(
    lm: LoadedModel, readout: Readout, steps: int, work_dir: Path, options: EngineOptions
) -> torch.Tensor:
    """Feature visualisations ``(K, 3, H, W)`` of the features of ``readout``, one batched
    search on the engine (Adam, lr 0.05, 8 draws a step, seed 0)."""
    param = FourierImage(len(readout.specs), lm.input_size[1:], seed=0)
    search = MTISearch(lm, param, Activation(1.0), readout, TransformConfig(), lr=0.05)
    optimise(search, steps, 8, 0, work_dir, options)
    return search().detach().cpu()


def _figure(path, chosen, curves, values, images, viz, strength) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = 4
    fig, axes = plt.subplots(len(chosen), top + 2, figsize=(2 * (top + 2), 2.1 * len(chosen)))
    for r, c in enumerate(chosen):
        ax = axes[r][0]
        ax.bar(
            range(NUM_CLASSES),
            curves[c].tolist(),
            color=["C3" if v > 0 else "C0" for v in curves[c]],
        )
        ax.set_xticks(range(NUM_CLASSES), [f"{int(d)}" for d in ORIENTATIONS_DEG], fontsize=6)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"unit {c} tuning (R2 {float(strength[c]):.2f})", fontsize=7)
        for j, i in enumerate(values[:, c].argsort(descending=True)[:top].tolist()):
            axes[r][1 + j].imshow(images[i].permute(1, 2, 0).numpy())
            axes[r][1 + j].set_title(f"top {j + 1}: {float(values[i, c]):+.2f}", fontsize=7)
        axes[r][-1].imshow(viz[r].permute(1, 2, 0).clamp(0, 1).numpy())
        axes[r][-1].set_title("feature visualisation", fontsize=7)
        for ax in axes[r][1:]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
