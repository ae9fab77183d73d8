"""The kinds of search, each one registered object: its objective, how many images it makes per
feature and what they are called, whether it needs image files, whether those start the
optimisation, whether it needs an attribution layer and whether +/- inversions follow it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mti_lightning.core.config_schema import SearchSchema
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.features import FeatureSpec, Readout
from mti_lightning.core.inversion import inversion_objective
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.objectives import Activation, L2ToSeed, Objective, Tension

# (search config, model, readout of the features, seed images or None) -> objective
ObjectiveFactory = Callable[[SearchSchema, LoadedModel, Readout, Any], Objective]


@dataclass(frozen=True)
class SearchKind:
    """One kind of search (``search.kind``).

    ``parts``: the images made per feature (``("+", "-")`` for an inversion: an excitatory and
    an inhibitory image, in two halves of the batch); ``reads_feature``: the objective reads the
    feature's value each step (an inversion reads only the attribution layer);
    ``needs_image``: ``search.image`` is required; ``per_image``: every target is made once
    per image (else the images are one per target image, or one for all); ``starts_from_image``:
    the images seed the parameterisation; ``needs_layer``: an attribution layer is required;
    ``inversions``: +/- inversions of the final images follow (``search.inversions``)."""

    name: str
    objective: ObjectiveFactory
    parts: tuple[str, ...] = ("",)
    reads_feature: bool = True
    needs_image: bool = False
    per_image: bool = False
    starts_from_image: bool = False
    needs_layer: bool = False
    inversions: bool = False

    def n_images(self, n_features: int) -> int:
        return n_features * len(self.parts)

    def feature_names(self, specs: Sequence[FeatureSpec]) -> list[str]:
        """One name per image of the batch, in batch order."""
        if self.parts == ("",):
            return [str(sp) for sp in specs]
        return [f"{sp} ({part})" for part in self.parts for sp in specs]


def _tension(s: SearchSchema, lm: LoadedModel, readout: Readout, seeds: Any) -> Objective:
    return Tension(s.attribution_layer, s.mode, s.temperature, s.hold, s.hold_weight)


def _visualize(sign: float) -> ObjectiveFactory:
    return lambda s, lm, readout, seeds: Activation(sign)


def _accentuate(s: SearchSchema, lm: LoadedModel, readout: Readout, seeds: Any) -> Objective:
    return Activation(float(s.sign)) + s.l2_weight * L2ToSeed(seeds)


def _invert(
    s: SearchSchema, lm: LoadedModel, readout: Readout, seeds: torch.Tensor
) -> Objective:
    return inversion_objective(lm, seeds, readout, s.attribution_layer, s.power, match=s.match)


KINDS: dict[str, SearchKind] = {
    k.name: k
    for k in (
        SearchKind("mti", _tension, starts_from_image=True, needs_layer=True, inversions=True),
        SearchKind("visualize", _visualize(1.0)),
        SearchKind("visualize_neg", _visualize(-1.0)),
        SearchKind(
            "invert",
            _invert,
            parts=("+", "-"),
            reads_feature=False,
            needs_image=True,
            per_image=True,
            needs_layer=True,
        ),
        SearchKind("accentuate", _accentuate, needs_image=True, starts_from_image=True),
    )
}


def search_kind(name: str) -> SearchKind:
    """The registered kind ``name``, or a clear error listing the valid ones."""
    if name not in KINDS:
        raise MTIConfigError(f"search.kind {name!r}; valid: {', '.join(KINDS)}")
    return KINDS[name]
