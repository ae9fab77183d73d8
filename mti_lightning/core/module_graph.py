"""Which module feeds which, read from a real forward, and swapping a module by its name.

The step-network rewrites (``core.fastnet``) pair a module with the one right after it only
when the second one's input *is* the first one's output tensor in a forward: module order in
``named_modules()`` says nothing about data flow (a residual block lists its shortcut last).
The census's closed form (``core.conv_energy``) reads every module's first input and output the
same way (``first_calls``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

Value = tuple[Any, int]  # a tensor and its version counter when it was read


def _hooked_forward(
    model: nn.Module, example: torch.Tensor, handles: list[RemovableHandle]
) -> None:
    """One no-grad forward of ``example`` with ``handles``' hooks, which it then removes (on an
    error too)."""
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()


def direct_feeds(
    model: nn.Module,
    example: torch.Tensor,
    producer: Callable[[nn.Module], bool],
    consumer: Callable[[nn.Module], bool],
) -> list[tuple[str, str]]:
    """``(producer name, consumer name)`` pairs where, in a forward of ``example``, the
    consumer's first input is the producer's output tensor, and no other consumer module
    reads that producer's output."""
    producers = {n: m for n, m in model.named_modules() if producer(m)}
    consumers = {n: m for n, m in model.named_modules() if consumer(m)}
    outputs: dict[int, tuple[str, torch.Tensor]] = {}
    found: dict[str, str] = {}
    handles = []
    for name, module in producers.items():

        def out_hook(_m, _args, out, name=name):
            outputs[id(out)] = (name, out)

        handles.append(module.register_forward_hook(out_hook))
    for name, module in consumers.items():

        def in_hook(_m, args, name=name):
            hit = outputs.get(id(args[0])) if args else None
            if hit is not None and hit[1] is args[0]:
                found.setdefault(name, hit[0])

        handles.append(module.register_forward_pre_hook(in_hook))
    _hooked_forward(model, example, handles)
    uses: dict[str, int] = {}
    for name in found.values():
        uses[name] = uses.get(name, 0) + 1
    return [(p, c) for c, p in found.items() if uses[p] == 1]


def first_calls(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[Value, Value]]:
    """``{module name: (input, output)}`` of every module's first call in one forward, each
    as the tensor itself (kept alive, so identity comparisons hold) with its version counter
    then: a tensor written in place in between (``x += shortcut``) is another value."""
    inputs: dict[str, Value] = {}
    seen: dict[str, tuple[Value, Value]] = {}
    handles = []

    def version(t: Any) -> int:
        return t._version if isinstance(t, torch.Tensor) else -1

    for name, module in model.named_modules():
        if not name:
            continue

        def pre(_m, args, name=name):
            if name not in inputs and args:
                inputs[name] = (args[0], version(args[0]))

        def hook(_m, _args, out, name=name):
            if name not in seen:
                seen[name] = (inputs.get(name, (None, -1)), (out, version(out)))

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(hook))
    _hooked_forward(model, example, handles)
    return seen


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at dotted ``name`` in ``model`` (in place)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
