"""Which module feeds which, read from a real forward, and swapping a module by its name.

The step-network rewrites (``core.fastnet``) pair a module with the one right after it only
when the second one's input *is* the first one's output tensor in a forward: module order in
``named_modules()`` says nothing about data flow (a residual block lists its shortcut last).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


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
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    uses: dict[str, int] = {}
    for name in found.values():
        uses[name] = uses.get(name, 0) + 1
    return [(p, c) for c, p in found.items() if uses[p] == 1]


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at dotted ``name`` in ``model`` (in place)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
