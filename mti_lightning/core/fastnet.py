"""A step-only copy of a frozen network that computes the same probed values in less time.

Every optimisation step is a forward and backward of a frozen network in eval mode, so three
rewrites pay on every step without changing any value a probe reads:

- an eval BatchNorm right after a convolution is a per-channel affine map, folded into the
  convolution's weight and bias (one memory-bound op less forward and backward);
- convolutional networks run channels-last, the layout the CPU (oneDNN) and GPU (cuDNN)
  convolution kernels prefer;
- ReLUs work in place (no new activation-sized tensor per ReLU). ``models.freeze`` switched
  that off so that a probe's value could not be overwritten; probes now hand the network a
  clone of every value they keep, so in the copy it is safe again.

Pairs are found from one real forward (the BatchNorm's input *is* the convolution's output),
never from module order, and a pair whose convolution output or BatchNorm input is probed is
left alone. The copy is then checked against the original at the probed layers, in plain
float32 whatever precision the caller runs in, and if any value differs, folding and in-place
ReLUs are dropped. The original network is never changed: measurements, attribution and
callbacks keep using it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from mti_lightning.core.models import LoadedModel
from mti_lightning.core.probes import LayerRef, capture


class ActAfterFold(nn.Module):
    """What is left of a BatchNorm+activation module (timm's ``BatchNormAct2d``) once its
    normalisation is folded away: its dropout and activation, under the same names."""

    def __init__(self, drop: nn.Module, act: nn.Module):
        super().__init__()
        self.drop = drop
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(x))


@dataclass
class FastNet:
    """The step-only network and what was done to it (for logs and tests)."""

    lm: LoadedModel
    folded: list[tuple[str, str]] = field(default_factory=list)
    channels_last: bool = False
    note: str = ""

    def describe(self) -> dict[str, object]:
        """A JSON-ready record of the rewrites (for a run's metrics)."""
        inplace = any(getattr(m, "inplace", False) for m in self.lm.model.modules())
        return {
            "batchnorms_folded": len(self.folded),
            "channels_last": self.channels_last,
            "inplace_relu": inplace,
            "note": self.note,
        }


def _foldable_bn(module: nn.Module) -> bool:
    plain = type(module) is nn.BatchNorm2d
    with_act = isinstance(module, nn.BatchNorm2d) and type(module).__name__ == "BatchNormAct2d"
    return (
        (plain or with_act) and module.running_mean is not None and module.running_var is not None
    )


def conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """``(conv name, batchnorm name)`` where the BatchNorm's input is the conv's output tensor
    in a forward of ``example`` (so the conv's output feeds the BatchNorm directly)."""
    convs = {n: m for n, m in model.named_modules() if type(m) is nn.Conv2d}
    bns = {n: m for n, m in model.named_modules() if _foldable_bn(m)}
    outputs: dict[int, tuple[str, torch.Tensor]] = {}
    found: dict[str, str] = {}
    handles = []
    for name, conv in convs.items():

        def conv_hook(_m, _args, out, name=name):
            outputs[id(out)] = (name, out)

        handles.append(conv.register_forward_hook(conv_hook))
    for name, bn in bns.items():

        def bn_hook(_m, args, name=name):
            hit = outputs.get(id(args[0])) if args else None
            if hit is not None and hit[1] is args[0]:
                found.setdefault(name, hit[0])

        handles.append(bn.register_forward_pre_hook(bn_hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    uses: dict[str, int] = {}
    for conv_name in found.values():
        uses[conv_name] = uses.get(conv_name, 0) + 1
    return [(c, b) for b, c in found.items() if uses[c] == 1]


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def fold_pair(model: nn.Module, conv_name: str, bn_name: str) -> None:
    """Fold eval BatchNorm ``bn_name`` into convolution ``conv_name`` of ``model`` (in place)."""
    conv = model.get_submodule(conv_name)
    bn = model.get_submodule(bn_name)
    with torch.no_grad():
        scale = torch.rsqrt(bn.running_var.double() + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        shift = -bn.running_mean.double() * scale
        if bn.bias is not None:
            shift = shift + bn.bias.double()
        if conv.bias is not None:
            shift = shift + conv.bias.double() * scale
        weight = conv.weight.double() * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
        conv.weight = nn.Parameter(weight.to(conv.weight.dtype), requires_grad=False)
        conv.bias = nn.Parameter(shift.to(conv.weight.dtype), requires_grad=False)
    rest = ActAfterFold(bn.drop, bn.act) if type(bn) is not nn.BatchNorm2d else nn.Identity()
    _set_module(model, bn_name, rest)


def _probed(pair: tuple[str, str], refs: list[LayerRef]) -> bool:
    conv, bn = pair
    for ref in refs:
        if ref.module == conv or ref.module.startswith(conv + "."):
            return True
        if ref.module == bn and ref.port == "in":
            return True
    return False


@contextmanager
def _full_fp32(device_type: str) -> Iterator[None]:
    """No autocast and no TF32 inside: both networks' values carry only float32 rounding while
    compared (a caller may be inside a bf16 autocast region)."""
    conv_tf32, matmul = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.autocast(device_type, enabled=False):
            yield
    finally:
        torch.backends.cudnn.allow_tf32 = conv_tf32
        torch.set_float32_matmul_precision(matmul)


def _agrees(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    for key, value in a.items():
        scale = float(value.abs().max()) + 1e-6
        if not torch.allclose(value, b[key], rtol=1e-3, atol=1e-4 * scale):
            return False
    return True


def fast_network(
    lm: LoadedModel,
    layers: Iterable[str | LayerRef],
    example: torch.Tensor,
    fold: bool = True,
    channels_last: bool = True,
    inplace_relu: bool = True,
) -> FastNet:
    """A copy of ``lm`` for the optimisation step, exact at ``layers`` (see the module doc).

    ``example`` is a normalised input batch on the network's device; it is used once to find
    the conv->BatchNorm pairs and once to check the copy against the original.
    """
    refs = [r if isinstance(r, LayerRef) else LayerRef.parse(r) for r in layers]
    net = copy.deepcopy(lm.model)
    has_conv = any(isinstance(m, nn.Conv2d) for m in net.modules())
    pairs = [p for p in conv_bn_pairs(net, example) if not _probed(p, refs)] if fold else []
    for conv_name, bn_name in pairs:
        fold_pair(net, conv_name, bn_name)
    cl = channels_last and has_conv and example.dim() == 4
    if cl:
        net.to(memory_format=torch.channels_last)
    if inplace_relu:
        for module in net.modules():
            if type(module) is nn.ReLU:
                module.inplace = True
    fast = FastNet(replace(lm, model=net), pairs, cl)
    if pairs or inplace_relu:
        with torch.no_grad(), _full_fp32(example.device.type):
            want = capture(lm.model, example, refs)
            got = capture(net, example, refs)
        if not _agrees(want, got):
            retry = fast_network(lm, refs, example, False, channels_last, False)
            retry.note = (
                f"folding {len(pairs)} BatchNorms or in-place ReLUs changed a probed value; "
                "neither used"
            )
            return retry
    return fast
