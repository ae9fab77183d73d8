"""The circuit's causal checks.

- **Ablation**: the unit's activation on its tensest data images with the top-k inhibitory
  channels of the attribution layer zeroed, against ``k`` random channels zeroed (one draw per
  control seed) and the intact network; all conditions of a batch of images in one forward
  (``core.circuit.ablate``). If those channels are what holds the unit off, removing them
  raises it more than removing any k channels does.
- **The echo** (Distill's Curve Circuits): for an orientation-tuned unit fed by the layer
  through one convolution, its tuning curve over single-arc curve images before and after the
  negative weights ``W[unit, c]`` of its top-k inhibitory channels are clamped to 0 (on a
  copy); the response at the orientation whose images inhibit it most (largest mean E-) and
  at its tuning minimum should come back up.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import torch

from mti_lightning.core.circuit import ablate, ablation_masks, single_conv, without_negative_weights
from mti_lightning.core.features import FeatureSpec, Readout
from mti_lightning.core.models import LoadedModel
from mti_lightning.world.curves import ORIENTATIONS_DEG
from mti_lightning.world.inhibition_tuning import channel_energies, feature_values
from mti_lightning.world.tuning import TUNED_R2, orientation_tuning, tuning_table


def ablation(
    lm: LoadedModel,
    readout: Readout,
    layer: str,
    images: torch.Tensor,
    inhibitory: Sequence[int],
    channels: int,
    k: int,
    seeds: Sequence[int],
    batch_size: int,
) -> dict[str, Any]:
    """Mean activation of the unit on ``images`` intact, without the ``inhibitory``
    channels, and without ``k`` random channels per seed; the rises over intact."""
    masks = ablation_masks(channels, inhibitory, k, seeds)
    acts = ablate(lm, readout, layer, images, masks, batch_size)
    means = acts.mean(1).tolist()
    intact, inhib, controls = means[0], means[1], means[2:]
    rises = [c - intact for c in controls]
    return {
        "images": len(images),
        "intact": intact,
        "inhibitory": inhib,
        "controls": controls,
        "rise_inhibitory": inhib - intact,
        "rise_control_mean": statistics.fmean(rises),
        "rise_control_max": max(rises),
        "rise_control_sd": statistics.pstdev(rises),
        "channels": list(inhibitory),
        "control_seeds": list(seeds),
    }


def echo(
    lm: LoadedModel,
    spec: FeatureSpec,
    readout: Readout,
    layer: str,
    inhibitory: Sequence[int],
    images: torch.Tensor,
    labels: torch.Tensor,
    batch: int = 64,
) -> dict[str, Any]:
    """The unit's tuning before and after the negative weights of ``inhibitory`` go, or
    ``{"skipped": reason}`` when the unit is not orientation tuned or the path from ``layer``
    is not one convolution."""
    conv = single_conv(lm, layer, spec.layer)
    if conv is None:
        return {"skipped": f"the path from {layer} to {spec.layer} is not one convolution"}
    before = feature_values(lm, readout, images)[:, 0]
    tuning = orientation_tuning(before[:, None], labels)
    r2 = float(tuning.r2[0])
    if r2 <= TUNED_R2:
        return {"skipped": f"{spec} is not orientation tuned (R2 {r2:.2f} <= {TUNED_R2})"}
    minus = channel_energies(lm, readout, layer, images, batch)["minus"][:, 0].sum(1)
    e_curve = tuning_table(minus[:, None], labels)[0]
    edited = without_negative_weights(lm, conv, spec.channel, inhibitory)
    after = feature_values(edited, readout, images)[:, 0]
    curve_before = tuning.curves[0]
    curve_after = tuning_table(after[:, None], labels)[0]
    deg = list(ORIENTATIONS_DEG)
    inhibiting = int(e_curve.argmax())
    worst = int(curve_before.argmin())
    return {
        "conv": conv,
        "r2": r2,
        "preferred_deg": deg[int(curve_before.argmax())],
        "inhibiting_deg": deg[inhibiting],
        "minimum_deg": deg[worst],
        "orientations_deg": deg,
        "curve_before": curve_before.tolist(),
        "curve_after": curve_after.tolist(),
        "e_minus_curve": e_curve.tolist(),
        "at_inhibiting_before": float(curve_before[inhibiting]),
        "at_inhibiting_after": float(curve_after[inhibiting]),
        "at_minimum_before": float(curve_before[worst]),
        "at_minimum_after": float(curve_after[worst]),
        "at_preferred_before": float(curve_before.max()),
        "at_preferred_after": float(curve_after[int(curve_before.argmax())]),
        "channels": list(inhibitory),
        "images": len(images),
    }
