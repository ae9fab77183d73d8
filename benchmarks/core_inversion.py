"""Benchmark: +/- attribution inversion with the pure core against the bare network.

One image's attribution ``A`` at ``--layer`` for ``--feature`` of a random-init timm resnet18
is inverted into two images (targets ``relu(A)`` and ``relu(-A)``, spatial-channel cosine with
crop bounds), each rendered from Fourier noise with ``--draws`` transform draws per step. The
reference is the bare network truncated at the block that holds ``--layer``, run forward and
backward to its input on the same batch (2 x draws inputs at the model's input size): the
limit any optimisation step can reach. Reports steps/s of both and their ratio.

    python benchmarks/core_inversion.py --steps 50 --draws 8 --canvas 224 [--bf16] [--json P]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from mti_lightning.core.features import build_readout, parse_feature
from mti_lightning.core.inversion import inversion_objective
from mti_lightning.core.models import LoadedModel, load_model
from mti_lightning.core.parameterizations import FourierImage
from mti_lightning.core.render import render


def truncated_resnet(model: nn.Module, layer: str) -> nn.Sequential:
    """A timm ResNet's stem and every block up to and including the block holding ``layer``
    (``layerS.B...``): the network a forward stopped at the end of that block runs."""
    m = re.match(r"layer(\d+)\.(\d+)", layer)
    if m is None:
        raise ValueError(f"layer {layer!r} is not inside a ResNet block (layerS.B...)")
    stage, block = int(m.group(1)), int(m.group(2))
    parts: list[nn.Module] = [model.conv1, model.bn1, model.act1, model.maxpool]
    for s in range(1, stage):
        parts.append(getattr(model, f"layer{s}"))
    parts.extend(list(getattr(model, f"layer{stage}"))[: block + 1])
    return nn.Sequential(*parts)


def interleaved_rates(
    first: Callable[[int], None], second: Callable[[int], None], steps: int, chunk: int
) -> tuple[float, float]:
    """Steps/s of ``first(n)`` and ``second(n)`` (each runs ``n`` steps), timed in alternating
    chunks so that load from other processes on the machine weighs on both alike."""
    spent = [0.0, 0.0]
    done = 0
    while done < steps:
        n = min(chunk, steps - done)
        for i, run in enumerate((first, second)):
            start = time.perf_counter()
            run(n)
            spent[i] += time.perf_counter() - start
        done += n
    return steps / spent[0], steps / spent[1]


def bench(
    lm: LoadedModel,
    feature: str,
    layer: str,
    steps: int,
    draws: int,
    canvas: int,
    warmup: int,
    chunk: int,
    bf16: bool,
) -> dict[str, float]:
    """Steps/s of the inversion and of the bare truncated network, and their ratio."""
    readout = build_readout(lm.model, lm.input_size, [parse_feature(feature)])
    source = FourierImage(1, (canvas, canvas), seed=1)().detach()
    objective = inversion_objective(lm, source, readout, layer)  # 2 targets: relu(A), relu(-A)
    n_images = objective.target.shape[0]
    param = FourierImage(n_images, (canvas, canvas), seed=0)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    calls = [0]

    def inversion(n: int) -> None:
        calls[0] += 1  # a new seed per chunk: fresh draws, as one long run would have
        with autocast:
            render(lm, param, objective, None, steps=n, lr=0.05, n_draws=draws, seed=calls[0])

    bare_net = truncated_resnet(lm.model, layer)
    x = torch.rand(n_images * draws, *lm.input_size, requires_grad=True)

    def bare(n: int) -> None:
        for _ in range(n):
            with autocast:
                out = bare_net(x)
            torch.autograd.grad(out.float().sum(), x)

    inversion(warmup)
    bare(warmup)
    inv, ref = interleaved_rates(inversion, bare, steps, chunk)
    return {"inversion_steps_per_s": inv, "bare_steps_per_s": ref, "ratio": inv / ref}


def main() -> None:
    """Parse options, run the benchmark, print (and optionally save) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--canvas", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=5, help="steps per timed chunk")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--feature", default="layer3.0.conv1:5@center")
    parser.add_argument("--layer", default="layer2.1.act2")
    parser.add_argument("--bf16", action="store_true", help="CPU bf16 autocast for both loops")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lm = load_model("resnet18")
    figures = bench(
        lm,
        args.feature,
        args.layer,
        args.steps,
        args.draws,
        args.canvas,
        args.warmup,
        args.chunk,
        args.bf16,
    )
    result = {
        "model": "resnet18 (timm, random init)",
        "feature": args.feature,
        "layer": args.layer,
        "images": 2,
        "draws": args.draws,
        "batch": 2 * args.draws,
        "canvas": args.canvas,
        "input": list(lm.input_size),
        "steps": args.steps,
        "precision": "bf16-autocast" if args.bf16 else "fp32",
        "threads": args.threads,
        "torch": torch.__version__,
        **figures,
    }
    print(
        f"{result['precision']}: inversion {figures['inversion_steps_per_s']:.3f} steps/s, "
        f"bare forward+backward {figures['bare_steps_per_s']:.3f} steps/s, "
        f"ratio {figures['ratio']:.3f} (batch {result['batch']} at {lm.input_size[1]}px, "
        f"{args.threads} threads)"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
