"""Objectives: composable per-image scores to maximise, computed from one shared forward.

A forward over ``K`` images x ``D`` draws captures the layers every term needs and the feature
values ``(K, D)``; each term turns that into one score per image ``(K,)`` (averaged over
draws), so every image of a batch can have its own feature and target. Terms compose with
``+``, ``-``, ``*`` (a float) and unary ``-``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mti_lightning.core.attribution import attribution_from, tension_ratio
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.token_grid import SpatialView


@dataclass
class Evaluation:
    """What one forward produced: layer values ``(K*D, ...)`` and feature values ``(K, D)``.

    ``record``: what the terms computed on the way, detached, per image ``(K,)`` (mean over
    the draws): ``e_plus``, ``e_minus``, ``tension``, ``tension_ratio`` from a ``Tension``
    term, ``match`` from a ``SpatialChannelCosine`` term. A search logs them as its curves
    without another forward or backward.
    """

    acts: dict[str, torch.Tensor]
    values: torch.Tensor
    images: torch.Tensor
    record: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return self.values.shape[0]

    @property
    def n_draws(self) -> int:
        return self.values.shape[1]

    def per_image(self, layer: str) -> torch.Tensor:
        """Layer value as ``(K, D, ...)``."""
        a = self.acts[layer]
        return a.view(self.n_images, self.n_draws, *a.shape[1:])


class Objective(nn.Module):
    """Base of all terms: ``score(ev) -> (K,)``, larger is better.

    Terms are modules so their targets are buffers: they move with the search to its device
    and are saved in its checkpoints.
    """

    def forward(self, ev: Evaluation) -> torch.Tensor:
        return self.score(ev)

    def layers(self) -> set[str]:
        return set()

    def score(self, ev: Evaluation) -> torch.Tensor:
        raise NotImplementedError

    def __add__(self, other: Objective) -> Objective:
        return Sum([self, other])

    def __mul__(self, factor: float) -> Objective:
        return Scaled(self, float(factor))

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return Scaled(self, -1.0)

    def __sub__(self, other: Objective) -> Objective:
        return Sum([self, -other])


class Sum(Objective):
    def __init__(self, terms: list[Objective]):
        super().__init__()
        self.terms = nn.ModuleList(
            t for term in terms for t in (term.terms if isinstance(term, Sum) else [term])
        )

    def layers(self) -> set[str]:
        return set().union(*(t.layers() for t in self.terms))

    def score(self, ev: Evaluation) -> torch.Tensor:
        return sum(t.score(ev) for t in self.terms)


class Scaled(Objective):
    def __init__(self, term: Objective, factor: float):
        super().__init__()
        self.term, self.factor = term, factor

    def layers(self) -> set[str]:
        return self.term.layers()

    def score(self, ev: Evaluation) -> torch.Tensor:
        return self.factor * self.term.score(ev)


def _per_image(value: torch.Tensor | float | None, k: int, ref: torch.Tensor) -> torch.Tensor:
    if value is None:
        return torch.ones(k, device=ref.device, dtype=ref.dtype)
    t = torch.as_tensor(value, device=ref.device, dtype=ref.dtype)
    return t.expand(k) if t.dim() == 0 else t


class Activation(Objective):
    """The feature's value (``sign`` +1 maximises, -1 minimises; per image or shared)."""

    def __init__(self, sign: torch.Tensor | float = 1.0):
        super().__init__()
        self.register_buffer("sign", torch.as_tensor(sign, dtype=torch.float32))

    def score(self, ev: Evaluation) -> torch.Tensor:
        return _per_image(self.sign, ev.n_images, ev.values) * ev.values.mean(1)


def _on_grid(view: SpatialView | None) -> SpatialView | None:
    """The view a term reads its layer through: None where the value is a map already (or no
    view is given), else the view, which must form a grid."""
    return None if view is None or view.is_map else view.require_grid()


def _grid_per_image(ev: Evaluation, layer: str, view: SpatialView | None) -> torch.Tensor:
    """``layer``'s value as ``(K, D, ...)``, read through ``view`` (a ``(C, H, W)`` patch grid)
    where one is given."""
    if view is None:
        return ev.per_image(layer)
    a = view.to_grid(ev.acts[layer])
    return a.reshape(ev.n_images, ev.n_draws, *a.shape[1:])


class CosineDirection(Objective):
    """``dot * cos**power`` between a layer's channel vector and a direction, averaged over
    positions (maps) or tokens; ``directions`` is ``(K, C)``. ``view``: the layer's spatial
    view where its value is not a ``(C, H, W)`` map (a Swin stage's ``(H, W, C)``, a ViT's
    tokens: then the positions are its patch grid's, ``core.token_grid``)."""

    def __init__(
        self,
        layer: str,
        directions: torch.Tensor,
        power: float = 1.0,
        view: SpatialView | None = None,
    ):
        super().__init__()
        self.layer, self.power, self.view = layer, power, _on_grid(view)
        self.register_buffer("directions", directions.float())

    def layers(self) -> set[str]:
        return {self.layer}

    def score(self, ev: Evaluation) -> torch.Tensor:
        a = _grid_per_image(ev, self.layer, self.view)
        v = self.directions.to(a.device, a.dtype)
        if a.dim() == 5:
            a = a.flatten(3).transpose(2, 3)
        dot = torch.einsum("kdnc,kc->kdn", a, v)
        cos = F.cosine_similarity(a, v[:, None, None, :], dim=-1).clamp_min(1e-6)
        return (dot * cos.pow(self.power)).mean((1, 2))


class SpatialChannelCosine(Objective):
    """Match a layer's map to a target: ``dot(act, t) * cos(act, t)**power`` over the region
    inside ``bounds`` (``(K, 4)`` rows h0, h1, w0, w1); the +/- inversion objective. ``view``:
    the layer's spatial view where its value is not a ``(C, H, W)`` map already (a
    transformer's tokens: the target is their patch grid, ``core.token_grid``)."""

    def __init__(
        self,
        layer: str,
        target: torch.Tensor,
        bounds: torch.Tensor | None = None,
        power: float = 2.0,
        view: SpatialView | None = None,
    ):
        if target.dim() != 4:
            raise MTIConfigError(
                f"spatial-channel cosine target must be (K, C, H, W), got {tuple(target.shape)}"
            )
        super().__init__()
        self.layer, self.power, self.view = layer, power, _on_grid(view)
        mask = torch.ones(target.shape[0], 1, *target.shape[2:])
        if bounds is not None:
            h = torch.arange(target.shape[2]).view(1, -1, 1)
            w = torch.arange(target.shape[3]).view(1, 1, -1)
            b = bounds.cpu().view(-1, 4, 1, 1)
            inside = (h >= b[:, 0]) & (h < b[:, 1]) & (w >= b[:, 2]) & (w < b[:, 3])
            mask = inside.unsqueeze(1).float()
        self.register_buffer("target", target.float() * mask)
        self.register_buffer("mask", mask)

    def layers(self) -> set[str]:
        return {self.layer}

    def score(self, ev: Evaluation) -> torch.Tensor:
        a = _grid_per_image(ev, self.layer, self.view)
        t = self.target.to(a.device, a.dtype)
        m = self.mask.to(a.device, a.dtype)
        a = (a * m[:, None]).flatten(2)
        t = t.flatten(1)[:, None, :]
        dot = (a * t).sum(-1)
        cos = dot / (a.norm(dim=-1) * t.norm(dim=-1) + 1e-8)
        score = (dot * cos.clamp_min(1e-6).pow(self.power)).mean(1)
        ev.record["match"] = score.detach()
        return score


def smooth_min(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft minimum ``-tau * log(exp(-a/tau) + exp(-b/tau))`` with ``tau`` relative to the
    mean size of ``a`` and ``b`` (so the smoothing does not depend on the layer's scale)."""
    tau = (temperature * (a.abs() + b.abs()).detach() / 2).clamp_min(1e-8)
    stacked = torch.stack([-a / tau, -b / tau])
    return -tau * torch.logsumexp(stacked, 0)


def _record_energies(ev: Evaluation, e_plus: torch.Tensor, e_minus: torch.Tensor) -> None:
    """Per-image means over the draws of the energies, tension and tension ratio."""
    ev.record.update(
        e_plus=e_plus.mean(1),
        e_minus=e_minus.mean(1),
        tension=torch.minimum(e_plus, e_minus).mean(1),
        tension_ratio=tension_ratio(e_plus, e_minus).mean(1),
    )


class Tension(Objective):
    """Smooth minimum of ``E+`` and ``E-`` of the feature's attribution at ``layer``.

    ``mode='exact'`` differentiates through ``d f / d act`` (double backward);
    ``'linearized'`` holds that gradient constant within the step (exact on piecewise-linear
    paths). ``hold`` keeps the feature near a value with weight ``hold_weight`` (relative to
    the energy scale), e.g. 0 for silent-but-tense images.
    """

    def __init__(
        self,
        layer: str,
        mode: str = "linearized",
        temperature: float = 0.1,
        hold: float | None = None,
        hold_weight: float = 1.0,
    ):
        if mode not in ("exact", "linearized"):
            raise MTIConfigError(f"tension mode {mode!r}; valid: exact, linearized")
        super().__init__()
        self.layer, self.mode, self.temperature = layer, mode, temperature
        self.hold, self.hold_weight = hold, hold_weight

    def layers(self) -> set[str]:
        return {self.layer}

    def energies(self, ev: Evaluation) -> tuple[torch.Tensor, torch.Tensor]:
        """``E+`` and ``E-`` per input ``(K, D)``, differentiable per the mode."""
        attr = attribution_from(
            ev.acts, ev.values, [self.layer], create_graph=self.mode == "exact"
        )[self.layer]
        flat = attr.flatten(1).view(ev.n_images, ev.n_draws, -1)
        return flat.clamp_min(0).sum(-1), (-flat).clamp_min(0).sum(-1)

    def score(self, ev: Evaluation) -> torch.Tensor:
        e_plus, e_minus = self.energies(ev)
        _record_energies(ev, e_plus.detach(), e_minus.detach())
        s = smooth_min(e_plus, e_minus, self.temperature)
        if self.hold is not None:
            scale = ((e_plus + e_minus).detach() / 2).clamp_min(1e-6)
            s = s - self.hold_weight * (ev.values - self.hold).square() / scale
        return s.mean(1)


class Diversity(Objective):
    """Negative mean cosine similarity of each image's Gram matrix at ``layer`` to the other
    images' (pushes a batch of images for the same feature apart). ``view``: as for
    :class:`CosineDirection` (a channels-last stage read as ``(C, H, W)``)."""

    def __init__(self, layer: str, view: SpatialView | None = None):
        super().__init__()
        self.layer, self.view = layer, _on_grid(view)

    def layers(self) -> set[str]:
        return {self.layer}

    def score(self, ev: Evaluation) -> torch.Tensor:
        a = _grid_per_image(ev, self.layer, self.view).mean(1)
        a = a.flatten(2) if a.dim() == 4 else a.transpose(1, 2)
        gram = F.normalize(torch.einsum("kcn,kdn->kcd", a, a).flatten(1), dim=1)
        sim = gram @ gram.t()
        k = sim.shape[0]
        if k < 2:
            return sim.new_zeros(k)
        off = sim - torch.diag_embed(torch.diagonal(sim))
        return -off.sum(1) / (k - 1)


class L2ToSeed(Objective):
    """Negative mean squared distance of each canvas to its seed image (stay close to it)."""

    def __init__(self, seeds: torch.Tensor):
        super().__init__()
        self.register_buffer("seeds", seeds.float())

    def score(self, ev: Evaluation) -> torch.Tensor:
        s = self.seeds.to(ev.images.device, ev.images.dtype)
        return -(ev.images - s).square().flatten(1).mean(1)
