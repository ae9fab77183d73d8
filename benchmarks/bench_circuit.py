"""Benchmark 8: the circuit's two data-side computations (issue 22).

1. Every channel's share of E- and E+ from the one data pass: the pass's reduction of a
   batch with the per-channel sums (``channel_sums=True``) against the same reduction without
   them (what the atlas and the comparison run): the price of the whole channel table.
2. The ablation: the intact network, the top-k inhibitors zeroed and ``controls`` random k
   zeroed, all conditions of a batch of images in one forward (``core.circuit.ablate``),
   against one forward per condition.

Timed interleaved in chunks (``common.interleave``) so outside load weighs on both alike.

    python -m benchmarks.bench_circuit --device cpu [--quick] [--out DIR]
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from benchmarks import common
from mti_lightning.core.circuit import ablate, ablation_masks
from mti_lightning.core.features import FeatureSpec, build_readout
from mti_lightning.core.models import load_model
from mti_lightning.shells.data_pass import reduce_batch

# model, unit, layer, batch, controls, repeats
CONFIGS = {
    "cuda": ("efficientnet_lite0.imagenet", "blocks.2", "blocks.2:in", 128, 5, 20),
    "cpu": ("curvenet", "bn2", "pool1", 128, 5, 20),
    "quick": ("curvenet", "bn2", "pool1", 16, 2, 2),
}
COLUMNS = ["what", "contender", "per_s", "speedup"]


def main() -> None:
    args = common.parse_args(__doc__.split("\n\n")[0])
    common.setup(args)
    model, unit, layer, batch, controls, repeats = CONFIGS[
        "quick" if args.quick else args.device
    ]
    lm = load_model(model).to(args.device)
    readout = build_readout(lm.model, lm.input_size, [FeatureSpec(unit, 0, "center")])
    readout = readout.to(args.device)
    images = torch.rand(batch, *lm.input_size, generator=torch.Generator().manual_seed(0))
    images = images.to(args.device)
    channels = reduce_batch(lm, readout, images[:2], [layer])[f"{layer}/vector"].shape[-1]
    masks = ablation_masks(channels, [0, 1, 2, 3], 4, list(range(controls)))

    def timed(fn: Callable[[], object]) -> Callable[[int], float]:
        def run(n: int) -> float:
            common.sync(args.device)
            start = time.perf_counter()
            for _ in range(n):
                fn()
            common.sync(args.device)
            return time.perf_counter() - start

        return run

    sums = common.interleave(
        {
            "with per-channel sums": timed(
                lambda: reduce_batch(lm, readout, images, [layer], channel_sums=True)
            ),
            "without": timed(lambda: reduce_batch(lm, readout, images, [layer])),
        },
        repeats,
        max(1, repeats // 4),
    )
    abl = common.interleave(
        {
            "all conditions in one forward": timed(
                lambda: ablate(lm, readout, layer, images, masks, batch)
            ),
            "one forward per condition": timed(
                lambda: [ablate(lm, readout, layer, images, m[None], batch) for m in masks]
            ),
        },
        repeats,
        max(1, repeats // 4),
    )
    results = common.Results(
        args.out, "circuit", args, {"model": model, "unit": unit, "layer": layer, "batch": batch}
    )
    rows = []
    for what, rates, base in (
        (f"data pass reduction, batches of {batch} images/s", sums, "without"),
        (f"ablation, {len(masks)} conditions x {batch} images, batches/s", abl,
         "one forward per condition"),
    ):
        for name, rate in rates.items():
            row = {"what": what, "contender": name, "per_s": rate, "speedup": rate / rates[base]}
            rows.append(row)
            results.add(row)
    print(common.table(rows, COLUMNS))


if __name__ == "__main__":
    main()
