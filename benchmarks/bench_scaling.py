"""Benchmark 5: how cost grows with batch and canvas size.

Inversion steps/s (``mti search=invert`` as users run it, 2 images) against the number of
draws (the batch is 2 x draws) at a fixed canvas, and against the canvas side at fixed draws,
each beside the bare network on the same batch (the canvas only changes the image-side work:
the Fourier parameterisation and the one ``grid_sample``; the network input stays the
model's). Then the atlas dataset pass's images/s (``run_pass`` on images already on the
device) against the batch size.

    python -m benchmarks.bench_scaling --device cpu [--quick] [--out DIR]
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import torch

from benchmarks import common
from benchmarks.bench_atlas_pass import DeviceSource, write_jpegs
from mti_lightning.journeys.atlas.config import AtlasConfig
from mti_lightning.journeys.atlas.dataset_pass import prepare, run_pass

# model, input side (0: own), base canvas, draws list, base draws, canvas list, batch list
CONFIGS = {
    "cuda": (
        "resnet50",
        0,
        224,
        [4, 8, 16, 32, 64],
        16,
        [224, 384, 512, 768, 1024],
        [16, 32, 64, 128, 256],
    ),
    "cpu": ("resnet18", 112, 112, [2, 4, 8, 16], 4, [112, 224, 448], [8, 16, 32]),
    "quick": ("resnet18", 64, 64, [2, 4], 2, [64, 128], [8, 16]),
}
COLUMNS = [
    "sweep",
    "draws",
    "canvas",
    "batch",
    "steps_s",
    "bare_steps_s",
    "images_s",
    "time_vs_bare",
]


def main() -> None:
    args = common.parse_args(__doc__.split("\n\n")[0])
    common.setup(args)
    key = "quick" if args.quick else args.device
    model, side, canvas0, draws_list, draws0, canvases, batches = CONFIGS[key]
    common.check_models("bench_scaling", [model])
    steps, warmup = {"quick": (2, 1), "cuda": (15, 3), "cpu": (3, 1)}[key]
    label = "bf16" if args.device == "cuda" else "fp32"
    layer, channel, cam = common.FEATURES[model]
    results = common.Results(
        args.out,
        "scaling",
        args,
        {"model": model, "input_side": side, "precision": label, "steps": steps},
    )
    work = Path(tempfile.mkdtemp(prefix="mti-bench-scaling-"))
    points = [(d, canvas0, "draws") for d in draws_list]
    points += [(draws0, c, "canvas") for c in canvases if c != canvas0 or draws0 not in draws_list]
    for draws, canvas, sweep in points:
        image = common.seed_image(work / f"seed_{canvas}.png", canvas)
        search = common.inversion_search(args.device, model, side, canvas, draws, image)
        ours = search.runner(warmup, common.PRECISIONS[label])
        lm = search.lm
        bare = common.bare_runner(
            lm.model, cam, search.batch, lm.input_size, args.device, label == "bf16"
        )
        bare(1)
        rates = common.interleave({"ours": ours, "bare": bare}, steps, steps)
        results.add(
            {
                "sweep": sweep,
                "draws": draws,
                "canvas": canvas,
                "batch": search.batch,
                "steps_s": rates["ours"],
                "bare_steps_s": rates["bare"],
                "time_vs_bare": rates["bare"] / rates["ours"],
            }
        )
    cfg = AtlasConfig(
        data=str(write_jpegs(work / "jpeg", 2)),
        model=model,
        input_size=side,
        feature=f"{layer}:{channel}@center",
        layers=[cam],
        accelerator="gpu" if args.device == "cuda" else "cpu",
        precision=common.PRECISIONS[label],
    )
    setup = prepare(cfg, work / "run")
    n_batches = 2 if args.quick else 8
    images = torch.rand(max(batches) * n_batches, *setup.lm.input_size, device=args.device)
    for i, batch in enumerate(batches):
        source = dataclasses.replace(setup, source=DeviceSource(images[: batch * n_batches]))
        run = dataclasses.replace(cfg, batch_size=batch, shard_size=batch)
        with common.quiet():
            run_pass(source, run, work / "run" / f"shards-warm-{i}")
            summary = run_pass(source, run, work / "run" / f"shards-{i}")
        results.add({"sweep": "atlas batch", "batch": batch, "images_s": summary["images_per_s"]})
    print(common.table(results.data["rows"], COLUMNS))
    print(f"wrote {results.path}")


if __name__ == "__main__":
    main()
