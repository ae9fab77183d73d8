"""Benchmark 3: many units of one layer in one batched search vs one search per unit.

``mti search=mti`` (linearized) over K units of a layer in one search (K images, one
per unit, every step one batched forward) against K one-unit searches run one after another,
each built the way ``mti`` builds it (a sweep over units). Units/s counts the whole
``trainer.fit`` of each search (its steps, Trainer set-up and the start/end measurements;
model loading excluded) and, separately, the timed steps alone. The one-unit searches are a
sample of ``--singles`` units; their rate is units done over seconds spent.

    python -m benchmarks.bench_units --device cpu [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse

from benchmarks import common

# model, canvas, draws, units, input side (0: the model's own), steps per search
CONFIGS = {
    "cuda": ("resnet50", 224, 8, 64, 0, 20),
    "cpu": ("curvenet", 64, 4, 32, 0, 10),
    "quick": ("curvenet", 64, 4, 8, 0, 4),
}
COLUMNS = ["how", "units", "searches", "steps", "fit_s", "units_s", "units_s_steps", "speedup"]


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--singles", type=int, default=0, help="one-unit searches timed")


def search(args: argparse.Namespace, channels: list[int], config: tuple) -> common.Search:
    """``mti search=mti`` over ``channels`` of the config's feature layer."""
    model, canvas, draws, _, side, _ = config
    layer, _, cam = common.FEATURES[model]
    return common.Search(
        [
            "search=mti",
            *common.search_overrides(args.device, model, side),
            f"param.canvas=[{canvas},{canvas}]",
            f"search.draws={draws}",
            "search.mode=linearized",
            f"search.attribution_layer={cam}",
            f"target.layer={layer}",
            f"target.channel=[{','.join(map(str, channels))}]",
            "target.position=center",
        ],
        args.device,
    )


def timed_fit(s: common.Search, steps: int, precision: str) -> tuple[float, float]:
    """Whole-fit seconds and steps/s of the steps after the first."""
    timer = common.StepTimer(1, steps - 1, s.device)
    wall = s.fit(steps, precision, [timer])
    return wall, (steps - 1) / timer.seconds


def main() -> None:
    args = common.parse_args(__doc__.split("\n\n")[0], options)
    common.setup(args)
    config = CONFIGS["quick" if args.quick else args.device]
    model, canvas, draws, units, _, steps = config
    common.check_models("bench_units", [model])
    singles = args.singles or (2 if args.quick else 6 if args.device == "cuda" else 4)
    precision = "bf16-mixed" if args.device == "cuda" else "32"
    results = common.Results(
        args.out,
        "units",
        args,
        {
            "model": model,
            "canvas": canvas,
            "draws": draws,
            "units": units,
            "steps_per_search": steps,
            "singles": singles,
            "precision": precision,
            "layer": common.FEATURES[model][0],
        },
    )
    batched = search(args, list(range(units)), config)
    batched.fit(2, precision)  # warm-up: allocations, cuDNN autotuning
    before = timed_fit(batched, steps, precision)
    walls, rates = [], []
    for c in range(singles):
        single = search(args, [c], config)
        if c == 0:
            single.fit(2, precision)
        w, r = timed_fit(single, steps, precision)
        walls.append(w)
        rates.append(r)
    after = timed_fit(batched, steps, precision)  # before and after: load drifts weigh alike
    wall, rate = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
    batched_row = {
        "how": "one batched search",
        "units": units,
        "searches": 1,
        "steps": steps,
        "batch": batched.batch,
        "fit_s": wall,
        "units_s": units / wall,
        "units_s_steps": units * rate / steps,
    }
    single_row = {
        "how": "one search per unit",
        "units": singles,
        "searches": singles,
        "steps": steps,
        "batch": draws,
        "fit_s": sum(walls),
        "units_s": singles / sum(walls),
        "units_s_steps": singles / sum(steps / r for r in rates),
    }
    batched_row["speedup"] = batched_row["units_s"] / single_row["units_s"]
    batched_row["speedup_steps"] = batched_row["units_s_steps"] / single_row["units_s_steps"]
    results.add(batched_row)
    results.add(single_row)
    print(common.table(results.data["rows"], COLUMNS))
    print(f"wrote {results.path}")


if __name__ == "__main__":
    main()
