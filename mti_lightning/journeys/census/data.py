"""The census's data stage: the engine's one data pass (``shells/data_pass.py``) in census mode
over one job's pieces, every unit of a piece at once, sharded and resumable (a killed job
rerun continues at its first missing shard), DDP within the job.

Before the pass the working tensors of a chunk are estimated; a chunk over
``census.max_memory_mb`` is split (fewer images per chunk, fewer units per batched backward),
and the console says so.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import torch
from torch import nn

from mti_lightning.core.io import write_json
from mti_lightning.core.probes import LayerRef, capture, layer_shapes, resolve_module
from mti_lightning.journeys.census.context import CensusRun
from mti_lightning.shells.data_pass import PassOptions, PassSetup, run_pass
from mti_lightning.shells.unit_pass import UnitGroup, UnitsReduce

FLOAT = 4  # bytes


def _groups(run: CensusRun, job: int) -> list[UnitGroup]:
    plans = {p.name: p for p in run.plans}
    return [
        UnitGroup(p.key, p.layer, plans[p.layer].attr_layer, p.channels, plans[p.layer].path)
        for p in run.job_pieces(job)
    ]


def path_elements(model: nn.Module, input_size: tuple, attr_layer: str, unit_layer: str) -> tuple:
    """Per image, the elements of every module output a forward makes up to the unit layer
    (about what autograd keeps for the backward) and the largest output after the
    attribution layer (a batched backward holds a few gradients of that size per unit at a
    time), from one forward of one image with hooks on the leaf modules."""
    attr = LayerRef.parse(attr_layer)
    count = {"all": 0, "after": 0, "started": False}

    def counted(_m: nn.Module, _args: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            count["all"] += out[0].numel()
            if count["started"]:
                count["after"] = max(count["after"], out[0].numel())

    def start(*_: Any) -> None:
        count["started"] = True

    handles = [
        m.register_forward_hook(counted)
        for m in model.modules()
        if next(m.children(), None) is None
    ]
    module = resolve_module(model, attr)
    handles.append(
        module.register_forward_pre_hook(start)
        if attr.port == "in"
        else module.register_forward_hook(start)
    )
    device = next(iter(model.parameters()), torch.zeros(0)).device
    try:
        with torch.no_grad():
            capture(model, torch.zeros(1, *input_size, device=device), [attr_layer, unit_layer])
    finally:
        for h in handles:
            h.remove()
    return count["all"], count["after"]


def _batched_bytes(run: CensusRun, g: UnitGroup, a: int) -> tuple[int, int]:
    """``(fixed, per unit)`` bytes per image of a batched group: the forward's saved outputs,
    and per unit of a batched backward three gradients of the path's largest output plus the
    attribution map and its parts. (On efficientnet_lite0 at 224 px, 32 units of ``blocks.4``
    over 64 images: about 8.8 GB, where 5.3 GB was measured: a bound, not a forecast.)"""
    total, largest = _path_profile(run.lm.model, tuple(run.lm.input_size), g.attr_layer, g.layer)
    return total * FLOAT, (3 * largest + 4 * a) * FLOAT


_path_profile = cache(path_elements)


def _bytes_per_image(run: CensusRun, groups: list[UnitGroup], per_backward: int) -> int:
    """The largest working set one image needs in any group: the closed form's eight
    outputs of all channels (whole maps for ``max``, one position for ``center``, none for
    ``mean``) plus the attribution map's parts; the batched path's saved forward, and its
    gradients, attributions and their parts for ``per_backward`` units."""
    names = list(dict.fromkeys([g.attr_layer for g in groups] + [g.layer for g in groups]))
    shapes = layer_shapes(run.lm.model, run.lm.input_size, names)
    worst = 0
    for g in groups:
        a = math.prod(shapes[g.attr_layer])
        if g.path is not None:
            plan = next(p for p in run.plans if p.name == g.layer)
            positions = math.prod(shapes[g.layer][1:]) if run.c.position == "max" else 1
            out = plan.n_channels * positions
            need = (6 * a + 14 * out) * FLOAT
        else:
            fixed, per_unit = _batched_bytes(run, g, a)
            need = fixed + per_backward * per_unit
        worst = max(worst, need)
    return worst


def fit_memory(run: CensusRun, groups: list[UnitGroup], who: str) -> tuple[int, int]:
    """``(images per chunk, units per batched backward)`` within ``census.max_memory_mb``;
    a split is said on the console."""
    c = run.c
    budget = c.max_memory_mb * 2**20
    per_backward = 64
    batched = [g for g in groups if g.path is None]
    if batched:
        shapes = layer_shapes(run.lm.model, run.lm.input_size, [g.attr_layer for g in batched])
        costs = [_batched_bytes(run, g, math.prod(shapes[g.attr_layer])) for g in batched]
        fixed, per_unit = max(f for f, _ in costs), max(u for _, u in costs)
        fits = max(1, int(max(budget - fixed, 0) // per_unit))
        if fits < per_backward:
            print(
                f"{who}: {per_backward} units per batched backward need "
                f"~{(fixed + per_backward * per_unit) / 2**20:.3g} MB per image, over "
                f"census.max_memory_mb={c.max_memory_mb:g}; splitting into {fits} units each"
            )
            per_backward = fits
    need = _bytes_per_image(run, groups, per_backward)
    images = max(1, min(c.batch_size, int(budget // max(need, 1))))
    if images < c.batch_size:
        print(
            f"{who}: a chunk of {c.batch_size} images needs ~{c.batch_size * need / 2**20:.3g} "
            f"MB, over census.max_memory_mb={c.max_memory_mb:g}; splitting it into chunks of "
            f"{images} images"
        )
    return images, per_backward


def run_data(run: CensusRun, job: int) -> dict[str, Any]:
    """Compute every missing shard of job ``job``; record its result (on rank 0)."""
    c, t = run.c, run.cfg.trainer
    groups = _groups(run, job)
    who = f"census job {job}/{c.jobs}"
    if not groups:
        print(f"{who}: no pieces (the census has {len(run.pieces)}); nothing to do")
        return {"rank": 0, "pieces": []}
    images, per_backward = fit_memory(run, groups, who)
    reduce = UnitsReduce(run.lm.model, groups, c.position, per_backward)
    setup = PassSetup(run.lm, None, run.source, [], {}, units=reduce)
    options = PassOptions.on_trainer(
        t,
        shard_size=c.shard_size,
        batch_size=images,
        num_workers=c.num_workers,
        vectors=False,
        fast_net=c.fast_net,
    )
    options.check()
    out = run_pass(setup, options, run.shard_dir(job), who=who)
    if out["rank"] != 0:
        return out
    record = {
        **out,
        "fingerprint": run.job_fingerprint(job),
        "shards": run.shard_dir(job).name,
        "pieces": [g.key for g in groups],
        "images_per_chunk": images,
        "units_per_backward": per_backward,
    }
    write_json(run.dir / "files.json", [run.source.name(i) for i in range(len(run.source))])
    write_json(run.job_dir(job) / "result.json", record)
    return record
