"""A step-only copy of a frozen network that computes the same probed values in less time.

Every optimisation step is a forward and backward of a frozen network in eval mode, so a few
rewrites pay on every step without changing any value a probe reads or any gradient a step
follows:

- an eval BatchNorm right after a convolution is folded into it (``core.bn_fold``);
- a ReLU right before a max-pool runs after it, on a quarter of the elements
  (``core.pool_act``);
- ReLUs work in place (no new activation-sized tensor per ReLU). ``models.freeze`` switched
  that off so that a probe's value could not be overwritten; probes now hand the network a
  clone of every value they keep, so in the copy it is safe again;
- on a CPU, a few-channel strided stem convolution computes its input gradient by phases, as
  one stride-1 convolution (``core.phase_grad``);
- convolutional networks run channels-last, the layout the CPU (oneDNN) and GPU (cuDNN)
  convolution kernels prefer.

Pairs are found from one real forward (``core.module_graph``), never from module order, and a
rewrite that would change a probed value by construction is not made (a probed pre-BatchNorm
value, a probed ReLU output). Each kind of rewrite is then checked against the original
network, in plain float32 whatever precision the caller runs in: the probed values and the
input gradient of a fixed projection of them must agree, or that kind is dropped and the
``note`` says so. The original network is never changed: measurements, attribution and
callbacks keep using it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from mti_lightning.core.bn_fold import conv_bn_pairs, fold_pair
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.module_graph import set_module
from mti_lightning.core.phase_grad import PhaseGradConv2d, phase_grad_pays
from mti_lightning.core.pool_act import move_relu_after_pool, relu_pool_pairs
from mti_lightning.core.probes import LayerRef, capture


@dataclass
class FastNet:
    """The step-only network and what was done to it (for logs and tests)."""

    lm: LoadedModel
    folded: list[tuple[str, str]] = field(default_factory=list)
    relus_after_pools: list[tuple[str, str]] = field(default_factory=list)
    phase_grad: list[str] = field(default_factory=list)
    channels_last: bool = False
    note: str = ""

    def describe(self) -> dict[str, object]:
        """A JSON-ready record of the rewrites (for a run's metrics)."""
        inplace = any(getattr(m, "inplace", False) for m in self.lm.model.modules())
        return {
            "batchnorms_folded": len(self.folded),
            "relus_after_pools": len(self.relus_after_pools),
            "phase_grad_convs": len(self.phase_grad),
            "channels_last": self.channels_last,
            "inplace_relu": inplace,
            "note": self.note,
        }


def _inside(name: str, ancestor: str) -> bool:
    return name == ancestor or name.startswith(ancestor + ".")


def _fold_probed(pair: tuple[str, str], refs: list[LayerRef]) -> bool:
    conv, bn = pair
    return any(_inside(r.module, conv) or (r.module == bn and r.port == "in") for r in refs)


def _relu_probed(pair: tuple[str, str], refs: list[LayerRef]) -> bool:
    """A probe reads the ReLU's output (the ReLU or a module ending with it) or the pool's
    input: values the move changes."""
    relu, pool = pair
    for r in refs:
        if r.module == pool and r.port == "in":
            return True
        if _inside(relu, r.module) and not _inside(pool, r.module):
            return True
    return False


def _fold(net: nn.Module, example: torch.Tensor, refs: list[LayerRef]) -> list:
    pairs = [p for p in conv_bn_pairs(net, example) if not _fold_probed(p, refs)]
    for conv_name, bn_name in pairs:
        fold_pair(net, conv_name, bn_name)
    return pairs


def _relu_after_pool(net: nn.Module, example: torch.Tensor, refs: list[LayerRef]) -> list:
    pairs = [p for p in relu_pool_pairs(net, example) if not _relu_probed(p, refs)]
    for relu_name, pool_name in pairs:
        move_relu_after_pool(net, relu_name, pool_name)
    return pairs


def _inplace_relu(net: nn.Module, example: torch.Tensor, refs: list[LayerRef]) -> list:
    switched = []
    for name, module in net.named_modules():
        if type(module) is nn.ReLU and not module.inplace:
            module.inplace = True
            switched.append(name)
    return switched


def _phase_grad(net: nn.Module, example: torch.Tensor, refs: list[LayerRef]) -> list:
    names = [n for n, m in net.named_modules() if phase_grad_pays(m)]
    for name in names:
        set_module(net, name, PhaseGradConv2d.from_conv(net.get_submodule(name)))
    return names


Rewrite = Callable[[nn.Module, torch.Tensor, list[LayerRef]], list]
REWRITES: dict[str, tuple[Rewrite, str]] = {
    "fold": (_fold, "folding {n} BatchNorms"),
    "relu_after_pool": (_relu_after_pool, "moving {n} ReLUs after their max-pools"),
    "inplace_relu": (_inplace_relu, "in-place ReLUs"),
    "phase_grad": (_phase_grad, "phase gradients of {n} stem convolutions"),
}


GRAD = "input gradient"
# relative L2 error allowed in the input gradient: a max-pool window whose two largest values
# are within float32 rounding of each other sends its gradient either way, which alone moves
# a deep VGG's input gradient by ~1% in L2 (float32 against float64); a faulty rewrite is off
# by order one, or raises
GRAD_TOL = 0.05


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


def _probe(net: nn.Module, example: torch.Tensor, refs: list[LayerRef]) -> dict[str, torch.Tensor]:
    """The probed values and the input gradient of a fixed random projection of them, in
    float32 with gradients on (callers may be in ``no_grad`` or inference mode)."""
    with torch.inference_mode(False), torch.enable_grad(), _full_fp32(example.device.type):
        x = example.detach().clone().requires_grad_(True)
        values = capture(net, x, refs)
        gen = torch.Generator(device="cpu").manual_seed(0)
        total = sum(
            (v.float() * torch.randn(v.shape, generator=gen).to(v.device)).sum()
            for v in values.values()
        )
        (grad,) = torch.autograd.grad(total, x, allow_unused=True)
    out = {k: v.detach() for k, v in values.items()}
    if grad is not None:
        out[GRAD] = grad
    return out


def _probe_trial(
    net: nn.Module, example: torch.Tensor, refs: list[LayerRef]
) -> dict[str, torch.Tensor] | None:
    """``_probe`` of a rewritten network; None where its backward fails (an in-place op that
    overwrote a value the backward needs)."""
    try:
        return _probe(net, example, refs)
    except RuntimeError:
        return None


def _agrees(want: dict[str, torch.Tensor], got: dict[str, torch.Tensor] | None) -> bool:
    if got is None:
        return False
    for key, value in want.items():
        if key == GRAD:
            if float((value - got[key]).norm()) > GRAD_TOL * float(value.norm()):
                return False
            continue
        scale = float(value.abs().max()) + 1e-6
        if not torch.allclose(value, got[key], rtol=1e-3, atol=1e-4 * scale):
            return False
    return True


def fast_network(
    lm: LoadedModel,
    layers: Iterable[str | LayerRef],
    example: torch.Tensor,
    fold: bool = True,
    channels_last: bool = True,
    inplace_relu: bool = True,
    relu_after_pool: bool = True,
    phase_grad: bool | None = None,
) -> FastNet:
    """A copy of ``lm`` for the optimisation step, exact at ``layers`` (see the module doc).

    ``example`` is a normalised input batch on the network's device; the pairs are found in a
    forward of it and every kind of rewrite is checked on it. ``phase_grad`` defaults to on
    for a CPU ``example`` only: that is where it was measured faster.
    """
    refs = [r if isinstance(r, LayerRef) else LayerRef.parse(r) for r in layers]
    if phase_grad is None:
        phase_grad = example.device.type == "cpu"
    net = copy.deepcopy(lm.model)
    has_conv = any(isinstance(m, nn.Conv2d) for m in net.modules())
    cl = channels_last and has_conv and example.dim() == 4
    if cl:
        net.to(memory_format=torch.channels_last)
    wanted = {
        "fold": fold,
        "relu_after_pool": relu_after_pool,
        "inplace_relu": inplace_relu,
        "phase_grad": phase_grad,
    }
    done: dict[str, list] = {}
    dropped = []
    want: dict[str, torch.Tensor] | None = None
    for kind, (rewrite, label) in REWRITES.items():
        if not wanted[kind]:
            continue
        trial = copy.deepcopy(net)
        changes = rewrite(trial, example, refs)
        if not changes:
            continue
        if cl:
            trial.to(memory_format=torch.channels_last)
        want = want if want is not None else _probe(lm.model, example, refs)
        if _agrees(want, _probe_trial(trial, example, refs)):
            net, done[kind] = trial, changes
        else:
            dropped.append(label.format(n=len(changes)))
    note = f"{'; '.join(dropped)}: changed a probed value or gradient, not used" if dropped else ""
    return FastNet(
        replace(lm, model=net),
        folded=done.get("fold", []),
        relus_after_pools=done.get("relu_after_pool", []),
        phase_grad=done.get("phase_grad", []),
        channels_last=cl,
        note=note,
    )
