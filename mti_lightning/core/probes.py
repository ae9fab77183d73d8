"""Layer probes: capture a module's output (``NAME``) or input (``NAME:in``) during a forward.

Captured values are safe against in-place ops downstream (``nn.ReLU(inplace=True)``,
``F.relu(x, inplace=True)``, ``x += shortcut``): the hook keeps the original tensor and hands
the network a clone, so ``x += shortcut`` after a targeted BN changes the clone, not the
captured pre-activation, while gradients still flow back through the captured tensor. A
module's *input* is still held by the code that called it; should that code write into it
after the call, the captured value would be wrong, and the probe says so (an error naming the
layer) instead of returning it. The
forward stops as soon as every requested layer has been captured.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from mti_lightning.core.errors import MTIConfigError, closest


@dataclass(frozen=True)
class LayerRef:
    """A module name from ``named_modules()`` and whether its input or output is meant."""

    module: str
    port: str = "out"

    @classmethod
    def parse(cls, name: str) -> LayerRef:
        """``layer3.1.bn1`` -> output; ``layer4.0.act1:in`` -> input."""
        if name.endswith(":in"):
            return cls(name[: -len(":in")], "in")
        if name.endswith(":out"):
            return cls(name[: -len(":out")], "out")
        return cls(name, "out")

    def __str__(self) -> str:
        return self.module if self.port == "out" else f"{self.module}:in"


class _StopForward(Exception):
    """Raised from a hook once every needed layer has been captured."""


def resolve_module(model: nn.Module, ref: LayerRef) -> nn.Module:
    """The module that ``ref`` names (inside a ``torch.compile`` wrapper too), or an error
    listing the closest real names. Found by walking the dotted name (every step of a search
    probes its layers: listing all of a deep network's modules each time costs 0.1 ms and more
    per layer)."""
    root = getattr(model, "_orig_mod", model)
    if ref.module:
        try:
            return root.get_submodule(ref.module)
        except AttributeError:
            pass
    names = [n for n, _ in root.named_modules() if n]
    raise MTIConfigError(
        f"unknown layer {ref.module!r}; closest names in this model: {closest(ref.module, names)}"
    )


def _first_tensor(value: object) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    raise MTIConfigError(f"layer value of type {type(value).__name__} is not a tensor")


def _replace_first(value: object, tensor: torch.Tensor) -> object:
    if isinstance(value, torch.Tensor):
        return tensor
    return type(value)([tensor, *value[1:]])


@contextmanager
def _hooks(
    model: nn.Module,
    refs: Sequence[LayerRef],
    store: dict[LayerRef, torch.Tensor],
    stop: bool,
    versions: dict[LayerRef, int],
):
    handles = []
    wanted = set(refs)

    def after_capture() -> None:
        if stop and wanted.issubset(store):
            raise _StopForward

    # resolve every name first: a bad one must not leave the hooks of the good ones behind
    modules = [resolve_module(model, ref) for ref in refs]
    for ref, module in zip(refs, modules):
        if ref.port == "in":

            def pre_hook(_m, args, ref=ref):
                if ref in store or not args:
                    return None
                x = _first_tensor(args)
                store[ref] = x
                versions[ref] = x._version
                after_capture()
                return _replace_first(tuple(args), x.clone())

            handles.append(module.register_forward_pre_hook(pre_hook))
        else:

            def hook(_m, _args, out, ref=ref):
                if ref in store:
                    return None
                x = _first_tensor(out)
                store[ref] = x
                after_capture()
                return _replace_first(out, x.clone())

            handles.append(module.register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def capture(
    model: nn.Module,
    x: torch.Tensor,
    layers: Iterable[str | LayerRef],
    stop: bool = True,
) -> dict[str, torch.Tensor]:
    """Run ``model(x)`` and return ``{layer name: value}`` for each requested layer.

    With ``stop`` the forward ends as soon as the last requested layer has run. A layer the
    forward never reaches is an error naming it.
    """
    refs = [r if isinstance(r, LayerRef) else LayerRef.parse(r) for r in layers]
    store: dict[LayerRef, torch.Tensor] = {}
    versions: dict[LayerRef, int] = {}
    with _hooks(model, refs, store, stop, versions):
        try:
            model(x)
        except _StopForward:
            pass
    overwritten = [str(r) for r, v in versions.items() if store[r]._version != v]
    if overwritten:
        raise MTIConfigError(
            f"layer(s) {overwritten}: the model writes into this module input in place after "
            "the module ran (e.g. x += y), so its value cannot be captured; probe the output "
            "of the module that produces it instead"
        )
    missing = [str(r) for r in refs if r not in store]
    if missing:
        raise MTIConfigError(
            f"layer(s) {missing} were never reached by the model's forward; choose a module "
            "that the forward calls on the image (see model.named_modules())"
        )
    return {str(r): store[r] for r in refs}


def layer_shapes(model: nn.Module, input_size: Sequence[int], layers: Iterable[str]) -> dict:
    """Shapes (without batch) of the requested layers, from one probe forward on zeros."""
    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else torch.device("cpu")
    with torch.no_grad():
        values = capture(model, torch.zeros(1, *input_size, device=device), layers)
    return {k: tuple(v.shape[1:]) for k, v in values.items()}
