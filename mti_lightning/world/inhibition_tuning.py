"""Where inhibition lies, measured as inhibition, on the curves world.

A tuning curve's minimum says where a unit is least driven, not where it is inhibited: for any
single-peaked curve over 8 orientations the minimum lies 67.5 to 90 degrees from the peak by
shape alone. The measures here read inhibition itself, each beside the value an
orientation-blind unit would give:

- **E- orientation**: the orientation whose images give the largest mean ``E-`` (the
  attribution at an upstream layer), its offset from the preference, and how selective E-
  is (``(max - min) / mean`` over the 8 orientation means);
- **E- carriers**: the preferred orientations of the upstream channels, averaged (on doubled
  angles, orientation being modulo 180) with each channel's share of the unit's E- times its
  tuning strength (R2, so an untuned channel's arbitrary "preference" counts little) as
  weight: the orientation the inhibiting channels prefer; the same with E+ shares for
  contrast;
- **active suppression**: the unit's response to background-only images (the same
  backgrounds without any stroke) minus its lowest orientation mean: positive where some
  orientation drives it *below* its response to nothing.

The orientation-blind baseline: the same statistic with the orientation labels of the images
shuffled (the same permutation for activation and E-, so a unit whose E- merely anti-correlates
with its activation image by image keeps that), or, for the carriers, with the channels'
preferences permuted across channels; ``PERMUTATIONS`` draws, seeded. A tuned, inhibited unit
stands out of that distribution; an orientation-blind one sits in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mti_lightning.core.features import FeatureSpec, Readout, build_readout
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.probes import capture
from mti_lightning.shells.data_pass import reduce_batch
from mti_lightning.world.curves import ORIENTATIONS_DEG, background
from mti_lightning.world.tuning import offset_deg, orientation_tuning, tuning_table

PERMUTATIONS = 200
FAR_DEG = 67.5  # "near orthogonal": 67.5 or 90 degrees from the preference


def background_images(n: int, seed: int) -> torch.Tensor:
    """The backgrounds of the first ``n`` curve images of stream ``seed``: ``(n, 3, 64, 64)``."""
    return torch.stack([torch.from_numpy(background(seed, i)) for i in range(n)])


def _resized(lm: LoadedModel, images: torch.Tensor) -> torch.Tensor:
    if tuple(images.shape[-2:]) == tuple(lm.input_size[1:]):
        return images
    return F.interpolate(images, size=lm.input_size[1:], mode="bilinear", antialias=True)


def feature_values(
    lm: LoadedModel, readout: Readout, images: torch.Tensor, batch: int = 128
) -> torch.Tensor:
    """Every feature of ``readout`` on every image: ``(N, K)`` (images brought to the model's
    input size)."""
    device = next(iter(readout.buffers())).device
    k, out = len(readout.specs), []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = _resized(lm, images[start : start + batch]).to(device)
            n = len(x)
            acts = capture(lm.model, lm.normalize(x).repeat(k, 1, 1, 1), readout.layers)
            out.append(readout(acts, n).T.float().cpu())
    return torch.cat(out)


def layer_values(
    lm: LoadedModel, layer: str, images: torch.Tensor, batch: int = 64
) -> torch.Tensor:
    """Every channel of ``layer`` on every image, read at the centre of a map (the mean over
    tokens, or the value itself): ``(N, C)``, one forward per batch of images."""
    device = next(lm.model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = _resized(lm, images[start : start + batch]).to(device)
            act = capture(lm.model, lm.normalize(x), [layer])[layer].float()
            if act.dim() == 4:
                out.append(act[:, :, act.shape[2] // 2, act.shape[3] // 2].cpu())
            elif act.dim() == 3:
                out.append(act.mean(1).cpu())
            else:
                out.append(act.flatten(1).cpu())
    return torch.cat(out)


def channel_energies(
    lm: LoadedModel, readout: Readout, layer: str, images: torch.Tensor, batch: int = 64
) -> dict[str, torch.Tensor]:
    """Per image and feature, the activation ``(N, K)`` and the per-channel sums of
    ``relu(A)`` and ``relu(-A)`` at ``layer`` ``(N, K, C)``, through the data pass's reduction
    (``shells.data_pass.reduce_batch``) of in-memory images, ``batch`` (image, feature) pairs
    at a time."""
    device = next(iter(readout.buffers())).device
    k = len(readout.specs)
    chunk = max(1, batch // k)
    parts = []
    for start in range(0, len(images), chunk):
        x = _resized(lm, images[start : start + chunk]).to(device)
        out = reduce_batch(lm, readout, x, [layer], vectors=False, channel_sums=True)
        parts.append({key: v.cpu() for key, v in out.items()})
    merged = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    if k == 1:  # one feature: the pass drops the feature dimension; keep it
        merged = {key: v.unsqueeze(1) for key, v in merged.items()}
    return {
        "activation": merged["activation"],
        "plus": merged[f"{layer}/channel_plus"],
        "minus": merged[f"{layer}/channel_minus"],
    }


def circular_mean_deg(degrees: torch.Tensor, weights: torch.Tensor) -> float:
    """Weighted mean orientation (degrees modulo 180, on doubled angles); NaN with no
    weight."""
    rad = torch.deg2rad(degrees.double()) * 2
    w = weights.double()
    c, s = float((w * rad.cos()).sum()), float((w * rad.sin()).sum())
    if math.hypot(c, s) < 1e-12:
        return float("nan")
    return (math.degrees(math.atan2(s, c)) / 2) % 180


def _offset(a: float, b: float) -> float:
    return float(offset_deg(torch.tensor(a), torch.tensor(b)))


@dataclass
class InhibitionMeasures:
    """The measures of one unit (degrees modulo 180; ``*_blind``: the mean of the same
    statistic under the orientation-blind baseline; ``*_far_blind``: the share of baseline
    draws whose offset is at least ``FAR_DEG``; ``*_p``: the share of baseline draws at least
    as extreme)."""

    preferred_deg: float
    tuning_min_offset: float
    tuning_min_offset_blind: float
    tuning_min_far_blind: float
    e_minus_deg: float
    e_minus_offset: float
    e_minus_offset_blind: float
    e_minus_far_blind: float
    e_minus_selectivity: float
    e_minus_selectivity_blind: float
    e_minus_p: float
    carriers_deg: float
    carriers_offset: float
    carriers_offset_blind: float
    excitors_offset: float
    background: float
    suppression: float
    suppression_blind: float
    suppression_p: float
    suppressed_deg: float

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def _selectivity(per_orientation: torch.Tensor) -> torch.Tensor:
    """``(max - min) / mean`` over the last dimension (0 where the mean is 0)."""
    mean = per_orientation.mean(-1)
    spread = per_orientation.amax(-1) - per_orientation.amin(-1)
    return torch.where(mean > 0, spread / mean.clamp_min(1e-30), torch.zeros_like(mean))


def measure(
    activation: torch.Tensor,
    e_minus: torch.Tensor,
    labels: torch.Tensor,
    channel_minus: torch.Tensor,
    channel_plus: torch.Tensor,
    channel_pref_deg: torch.Tensor,
    channel_strength: torch.Tensor,
    background_activation: torch.Tensor,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
) -> InhibitionMeasures:
    """The measures of one unit from its activation ``(N,)``, E- ``(N,)`` and per-channel E-
    and E+ ``(N, C)`` on single-arc images of orientation ``labels``, the upstream channels'
    preferred orientations and tuning strengths ``(C,)`` (R2; negative counts as 0), and its activation on background-only
    images."""
    deg = torch.tensor(ORIENTATIONS_DEG)
    curve = tuning_table(activation[:, None], labels)[0]
    e_curve = tuning_table(e_minus[:, None], labels)[0]
    pref = float(deg[curve.argmax()])
    gen = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(len(labels), generator=gen) for _ in range(permutations)]
    blind_min, blind_e, blind_sel, blind_sup = [], [], [], []
    bg = float(background_activation.mean())
    for p in perms:
        shuffled = labels[p]
        c = tuning_table(activation[:, None], shuffled)[0]
        e = tuning_table(e_minus[:, None], shuffled)[0]
        p_pref = deg[c.argmax()]
        blind_min.append(float(offset_deg(p_pref, deg[c.argmin()])))
        blind_e.append(float(offset_deg(p_pref, deg[e.argmax()])))
        blind_sel.append(float(_selectivity(e)))
        blind_sup.append(bg - float(c.min()))
    sel = float(_selectivity(e_curve))
    suppression = bg - float(curve.min())

    strength = channel_strength.clamp_min(0)
    weights = channel_minus.sum(0) * strength
    carriers = circular_mean_deg(channel_pref_deg, weights)
    excite = circular_mean_deg(channel_pref_deg, channel_plus.sum(0) * strength)
    blind_carriers = []
    for _ in range(permutations):
        shuffled = channel_pref_deg[torch.randperm(len(channel_pref_deg), generator=gen)]
        blind_carriers.append(_offset(pref, circular_mean_deg(shuffled, weights)))

    def mean(values: list[float]) -> float:
        finite = [v for v in values if math.isfinite(v)]
        return sum(finite) / len(finite) if finite else float("nan")

    def far(values: list[float]) -> float:
        return sum(v >= FAR_DEG for v in values) / len(values)

    return InhibitionMeasures(
        preferred_deg=pref,
        tuning_min_offset=_offset(pref, float(deg[curve.argmin()])),
        tuning_min_offset_blind=mean(blind_min),
        tuning_min_far_blind=far(blind_min),
        e_minus_deg=float(deg[e_curve.argmax()]),
        e_minus_offset=_offset(pref, float(deg[e_curve.argmax()])),
        e_minus_offset_blind=mean(blind_e),
        e_minus_far_blind=far(blind_e),
        e_minus_selectivity=sel,
        e_minus_selectivity_blind=mean(blind_sel),
        e_minus_p=sum(v >= sel for v in blind_sel) / permutations,
        carriers_deg=carriers,
        carriers_offset=_offset(pref, carriers) if math.isfinite(carriers) else float("nan"),
        carriers_offset_blind=mean(blind_carriers),
        excitors_offset=_offset(pref, excite) if math.isfinite(excite) else float("nan"),
        background=bg,
        suppression=suppression,
        suppression_blind=mean(blind_sup),
        suppression_p=sum(v >= suppression for v in blind_sup) / permutations,
        suppressed_deg=float(deg[curve.argmin()]),
    )


@dataclass
class CurvesMeasurement:
    """What :func:`measure_units` read: per unit its measures, tuning curve ``(8,)`` and mean
    E- per orientation ``(8,)``; the upstream channels' tuning."""

    measures: list[InhibitionMeasures]
    curves: torch.Tensor
    e_minus_curves: torch.Tensor
    channel_pref_deg: torch.Tensor
    channel_r2: torch.Tensor


def measure_units(
    lm: LoadedModel,
    specs: list[FeatureSpec],
    layer: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    backgrounds: torch.Tensor,
    batch: int = 64,
    permutations: int = PERMUTATIONS,
) -> CurvesMeasurement:
    """The measures of every unit of ``specs`` (features of one model) with attribution at
    ``layer``, on single-arc curve images ``images`` (labels) and background-only images;
    the upstream channels' preferences come from their own values at the layer's centre (the
    token mean for tokens) on the same images."""
    readout = build_readout(lm.model, lm.input_size, specs)
    device = next(lm.model.parameters()).device
    readout = readout.to(device)
    got = channel_energies(lm, readout, layer, images, batch)
    bg = feature_values(lm, readout, backgrounds)
    up_values = layer_values(lm, layer, images, batch)
    up_tuning = orientation_tuning(up_values, labels)
    out, curves, e_curves = [], [], []
    for k in range(len(specs)):
        act, minus, plus = got["activation"][:, k], got["minus"][:, k], got["plus"][:, k]
        out.append(
            measure(
                act,
                minus.sum(1),
                labels,
                minus,
                plus,
                up_tuning.preferred_deg,
                up_tuning.r2,
                bg[:, k],
                permutations,
                seed=k,
            )
        )
        curves.append(tuning_table(act[:, None], labels)[0])
        e_curves.append(tuning_table(minus.sum(1)[:, None], labels)[0])
    return CurvesMeasurement(
        out, torch.stack(curves), torch.stack(e_curves), up_tuning.preferred_deg, up_tuning.r2
    )


__all__ = [
    "FAR_DEG",
    "CurvesMeasurement",
    "InhibitionMeasures",
    "background_images",
    "channel_energies",
    "circular_mean_deg",
    "feature_values",
    "measure",
    "measure_units",
]
