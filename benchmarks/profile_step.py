"""Profiler check: what one search step runs, from ``torch.profiler`` over a window of steps.

For ``mti search=mti`` (linearized) and ``mti search=invert`` as users run them, a callback
profiles 10 whole steps (3 with ``--quick``) after warm-up, Trainer overhead included, and
the summary counts per step: ``grid_sample`` calls (the draws are one batched kernel: 1),
forward convolutions (beside the number the truncated network runs once: equal means no
loop over draws or images), and host-device syncs (GPU: ``cudaStreamSynchronize`` /
``cudaDeviceSynchronize`` / ``cudaEventSynchronize``; CPU: ``aten::_local_scalar_dense``,
the scalar reads that would wait for a GPU), each with the source line that caused it.
``--curves`` profiles with the per-unit curves on (``self.log`` of tensors, no logger): the
syncs per step must stay those of the run without them. ``--breakdown`` times instead what
each part of the inversion step costs beyond the network (``benchmarks/step_costs.py``):
Fourier image, transforms, noise, objective, optimiser, bookkeeping, Lightning's loop.

    python -m benchmarks.profile_step --device cpu [--quick] [--curves] [--out DIR]
    python -m benchmarks.profile_step --device cpu --breakdown [--models curvenet resnet18]
"""

from __future__ import annotations

import argparse
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from benchmarks import common, step_costs

DEVICE_SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
SYNC_NAMES = (*DEVICE_SYNCS, "aten::item", "aten::_local_scalar_dense")
HOST_ONLY = "torch/optim/"
FRAME = re.compile(r"(.*?\.py)\((\d+)\): (.*)")
# model, canvas, draws, units, input side (0: the model's own)
CONFIGS = {
    "cuda": ("resnet50", 224, 8, 2, 0),
    "cpu": ("resnet18", 128, 4, 2, 128),
    "quick": ("resnet18", 64, 2, 2, 64),
}
COLUMNS = [
    "kind",
    "steps",
    "grid_sample_per_step",
    "conv_per_step",
    "conv_in_truncated_forward",
    "syncs_per_step",
    "sync_sites",
]


class StepProfiler(L.Callback):
    """Profiles from the start of batch ``warmup`` to the end of batch ``warmup + n - 1``."""

    def __init__(self, warmup: int, n: int, device: str):
        self.first, self.last = warmup, warmup + n - 1
        activities = [ProfilerActivity.CPU]
        if device == "cuda":
            activities.append(ProfilerActivity.CUDA)
        self.prof = profile(activities=activities, with_stack=True)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.first:
            self.prof.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.last:
            self.prof.__exit__(None, None, None)


def site(stack: list[str]) -> str:
    """The innermost frame of the stack in this project, Lightning or torch.optim."""
    for frame in stack:
        m = FRAME.match(frame)
        if m is None:
            continue
        for root in ("mti_lightning/", "lightning/pytorch/", "torch/optim/"):
            if root in m.group(1):
                return f"{root}{m.group(1).split(root, 1)[1]}:{m.group(2)} ({m.group(3)})"
    return stack[0] if stack else "?"


def conv_count(model: nn.Module, layer: str, x: torch.Tensor) -> int:
    """Convolution modules the forward up to ``layer`` runs on ``x``."""
    calls = [0]
    hooks = [
        m.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            common.truncated_forward(model, layer)(x)
    finally:
        for h in hooks:
            h.remove()
    return calls[0]


def python_stack(evt: Any) -> list[str]:
    """Python frames above an event, innermost first: its own recorded stack and the
    Python-function events among its ancestors (``path(line): function``)."""
    frames: list[str] = []
    while evt is not None:
        frames.extend(evt.stack or [])
        if FRAME.match(evt.name):
            frames.append(evt.name)
        evt = evt.cpu_parent
    return frames


def in_backward(evt: Any) -> bool:
    """Whether an event ran inside the autograd engine's backward (a convolution there is a
    gradient, e.g. the phase-gradient stem's, not a forward)."""
    while evt is not None:
        if evt.name.startswith("autograd::engine::evaluate_function"):
            return True
        evt = evt.cpu_parent
    return False


def summarise(prof: profile, n: int, device: str) -> dict[str, Any]:
    """Per-step counts and the source lines of the syncs.

    On a GPU a sync is a runtime synchronisation event. On a CPU every scalar read
    (``_local_scalar_dense``) is counted and located; reads in ``torch/optim`` (Adam's step
    counter, a host tensor on every device unless ``capturable``/``fused``) are host-only and
    left out of ``syncs_per_step``: the rest would wait for the device on a GPU.
    """
    sync_kinds = DEVICE_SYNCS if device == "cuda" else ("aten::_local_scalar_dense",)
    names: Counter[str] = Counter()
    sites: Counter[str] = Counter()
    forward_convs = 0
    for evt in prof.events():
        names[evt.name] += 1
        if evt.name == "aten::convolution" and not in_backward(evt):
            forward_convs += 1
        if evt.name in sync_kinds:
            sites[site(python_stack(evt))] += 1
    host_only = sum(c for s, c in sites.items() if device == "cpu" and s.startswith(HOST_ONLY))
    return {
        "grid_sample_per_step": names["aten::grid_sampler"] / n,
        "conv_per_step": forward_convs / n,
        "syncs_per_step": (sum(sites.values()) - host_only) / n,
        "host_only_reads_per_step": host_only / n,
        "sync_events": {k: names[k] for k in SYNC_NAMES if names[k]},
        "sync_sites": dict(sites),
    }


def profile_kind(
    kind: str, args: argparse.Namespace, config: tuple, n: int, warmup: int, seed_dir: Path
) -> dict[str, Any]:
    """Profile ``n`` steps of ``mti search=<kind>``."""
    model, canvas, draws, units, side = config
    layer, channel, cam = common.FEATURES[model]
    channels = [channel] if kind == "invert" else list(range(units))
    extra = [f"search.image={common.seed_image(seed_dir / 'seed.png', canvas)}"]
    search = common.Search(
        [
            f"search={kind}",
            *common.search_overrides(args.device, model, side),
            f"param.canvas=[{canvas},{canvas}]",
            f"search.draws={draws}",
            f"search.attribution_layer={cam}",
            f"target.layer={layer}",
            f"target.channel=[{','.join(map(str, channels))}]",
            "target.position=center",
            *(extra if kind == "invert" else ["search.mode=linearized"]),
        ],
        args.device,
    )
    precision = common.PRECISIONS["bf16" if args.device == "cuda" else "fp32"]
    search.fit(warmup + 1, precision, curves=args.curves)
    profiler = StepProfiler(warmup, n, args.device)
    search.fit(warmup + n, precision, [profiler], curves=args.curves)
    deepest = cam if kind == "invert" else layer
    x = torch.rand(search.batch, *search.lm.input_size)
    return {
        "kind": kind,
        "model": model,
        "canvas": canvas,
        "draws": draws,
        "images": search.search.n_images,
        "precision": precision,
        "steps": n,
        "unit_curves": args.curves,
        "deepest_layer": deepest,
        "conv_in_truncated_forward": conv_count(search.lm.model.cpu(), deepest, x),
        **summarise(profiler.prof, n, args.device),
    }


def options(parser: argparse.ArgumentParser) -> None:
    """``--curves``: profile with the per-unit curves logged (``self.log`` of tensors, no
    logger): they must add no host sync per step. ``--breakdown``: the cost of each part of
    the step instead (``--models``: only those settings)."""
    parser.add_argument("--curves", action="store_true", help="per-unit curves on (self.log)")
    parser.add_argument("--breakdown", action="store_true", help="time each part of a step")
    parser.add_argument("--models", nargs="+", help="--breakdown: only these models")


def main_breakdown(args: argparse.Namespace) -> None:
    """The step's parts timed level by level (``benchmarks/step_costs.py``)."""
    configs = step_costs.CONFIGS["quick" if args.quick else args.device]
    configs = common.pick_rows("profile_step", configs, args.models)
    common.check_models("profile_step --breakdown", [c[0] for c in configs])
    results = common.Results(
        args.out,
        "step_costs",
        args,
        {"configs (model, canvas, draws, side, steps per round, rounds)": configs},
    )
    seed_dir = Path(tempfile.mkdtemp(prefix="mti-bench-seeds-"))
    for config in configs:
        for row in step_costs.breakdown(config, args.device, seed_dir):
            results.add(row)
    print(common.table(results.data["rows"], step_costs.COLUMNS))
    print(f"wrote {results.path}")


def main() -> None:
    args = common.parse_args(__doc__.split("\n\n")[0], options)
    common.setup(args)
    if args.breakdown:
        main_breakdown(args)
        return
    config = CONFIGS["quick" if args.quick else args.device]
    common.check_models("profile_step", [config[0]])
    n, warmup = (3, 1) if args.quick else (10, 3)
    results = common.Results(args.out, "profile", args, {"config": config, "steps": n})
    seed_dir = Path(tempfile.mkdtemp(prefix="mti-bench-seeds-"))
    for kind in ("mti", "invert"):
        results.add(profile_kind(kind, args, config, n, warmup, seed_dir))
    print(common.table(results.data["rows"], COLUMNS))
    print(f"wrote {results.path}")


if __name__ == "__main__":
    main()
