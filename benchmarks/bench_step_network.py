"""Benchmark 6: the step network across architectures, the bare network's forward + backward
to the input as loaded vs as the steps run it (``core.fastnet``: BatchNorms folded, ReLUs
after max-pools, in-place ReLUs, phase-gradient stems on a CPU, channels-last), at the same
batch, to the same mid-network layer.

Shows which architectures gain from which rewrites, and that the rewritten network is exact:
the largest difference of the layer's values relative to their largest magnitude, and the
L2 error of the input gradient (of a fixed random projection of the values) relative to its
L2 norm.

    python -m benchmarks.bench_step_network --device cpu [--quick] [--out DIR]
"""

from __future__ import annotations

import time

import torch

from benchmarks import common
from mti_lightning.core.fastnet import fast_network
from mti_lightning.core.models import load_model
from mti_lightning.core.probes import capture

# model, the layer read (a mid-network block)
MODELS = [
    ("resnet50", "layer3"),
    ("efficientnet_b0", "blocks.4"),
    ("mobilenetv3_small_100", "blocks.3"),
    ("regnetx_002", "s3"),
    ("densenet121", "features.denseblock3"),
    ("vgg11_bn", "features.21"),
    ("convnext_atto", "stages.2"),
    ("vit_tiny_patch16_224", "blocks.7"),
    ("curvenet", "bn2"),
]
# per setting: input side (0: the model's own), batch, least timed steps, seconds per
# contender (small models get more steps until their timing spans that long), chunks
SETTINGS = {
    "cuda": (224, 64, 30, 0.5, 3),
    "cpu": (128, 8, 4, 4.0, 4),
    "quick": (64, 2, 2, 0.0, 1),
}
MAX_STEPS = 1000
COLUMNS = [
    "model",
    "layer",
    "input",
    "batch",
    "precision",
    "batchnorms_folded",
    "relus_after_pools",
    "phase_grad_convs",
    "bare_steps_s",
    "fast_steps_s",
    "speedup",
    "max_rel_diff",
    "grad_rel_l2",
    "build_s",
]


def _rel(want: torch.Tensor, got: torch.Tensor) -> float:
    return float((want - got).abs().max() / want.abs().max().clamp_min(1e-12))


def _value_and_grad(net: torch.nn.Module, x: torch.Tensor, layer: str) -> tuple:
    x = x.clone().requires_grad_(True)
    value = capture(net, x, [layer])[layer]
    weights = torch.randn(value.shape, generator=torch.Generator().manual_seed(1))
    (grad,) = torch.autograd.grad((value * weights.to(value.device)).sum(), x)
    return value.detach(), grad


def row(name: str, layer: str, side: int, batch: int, device: str, timing: tuple) -> list[dict]:
    """fp32 (and bf16 on a GPU) rows of one model."""
    least, seconds, chunks = timing
    torch.manual_seed(0)
    own_size = name == "curvenet" or "vit" in name  # fixed input sizes
    lm = load_model(name, device=device, input_size=None if own_size else (3, side, side))
    x = lm.normalize(torch.rand(batch, *lm.input_size, device=device))
    start = time.perf_counter()
    fast = fast_network(lm, [layer], x[:2])
    common.sync(device)
    build = time.perf_counter() - start
    want, want_grad = _value_and_grad(lm.model, x, layer)
    got, got_grad = _value_and_grad(fast.lm.model, x, layer)
    rows = []
    for precision in ["fp32", "bf16"] if device == "cuda" else ["fp32"]:
        bf16 = precision == "bf16"
        runners = {
            "bare": common.bare_runner(lm.model, layer, batch, lm.input_size, device, bf16),
            "fast": common.bare_runner(fast.lm.model, layer, batch, lm.input_size, device, bf16),
        }
        for run in runners.values():
            run(1)
        per_step = runners["bare"](2) / 2
        steps = min(MAX_STEPS, max(least, int(seconds / per_step)))
        rates = common.interleave(runners, steps, max(1, steps // chunks))
        rows.append(
            {
                "model": name,
                "layer": layer,
                "input": list(lm.input_size),
                "batch": batch,
                "precision": precision,
                "batchnorms_folded": len(fast.folded),
                "relus_after_pools": len(fast.relus_after_pools),
                "phase_grad_convs": len(fast.phase_grad),
                "bare_steps_s": rates["bare"],
                "fast_steps_s": rates["fast"],
                "speedup": rates["fast"] / rates["bare"],
                "max_rel_diff": _rel(want, got),
                "grad_rel_l2": float((want_grad - got_grad).norm() / want_grad.norm()),
                "build_s": build,
                "steps_timed": steps,
                "note": fast.note,
            }
        )
    return rows


def main() -> None:
    args = common.parse_args(__doc__.split("\n\n")[0])
    common.setup(args)
    side, batch, least, seconds, chunks = SETTINGS["quick" if args.quick else args.device]
    models = MODELS[:1] + MODELS[-1:] if args.quick else MODELS
    results = common.Results(
        args.out,
        "step_network",
        args,
        {
            "models": models,
            "side": side,
            "batch": batch,
            "least_steps": least,
            "seconds_per_contender": seconds,
            "chunks": chunks,
        },
    )
    for name, layer in models:
        for r in row(name, layer, side, batch, args.device, (least, seconds, chunks)):
            results.add(r)
    print(common.table(results.data["rows"], COLUMNS))
    print(f"wrote {results.path}")


if __name__ == "__main__":
    main()
