"""Benchmark 2: MTI search step rate and peak memory, ``exact`` vs ``linearized`` gradients.

``mti search=mti`` (tension at the cam layer, activation held at 0) on K units of a layer,
as users run it, in both gradient modes; beside them the bare network to the feature's layer
(forward + backward to the input on the same K x draws batch). Rates are interleaved in one
process; peak memory comes from one more short fit of each mode (GPU: allocated bytes since
a reset; CPU: the process's peak RSS, which only grows, so read the CPU figures in order).

``--logging`` adds the linearized search with its per-unit curves logged to W&B (offline) at
every step, timed interleaved with the rest: ``logging_cost`` is its extra time per step.

    python -m benchmarks.bench_mti --device cpu [--quick] [--logging] [--out DIR]
"""

from __future__ import annotations

from benchmarks import common

# model, canvas, draws, units, input side (0: the model's own)
CONFIGS = {
    "cuda": ("resnet50", 224, 8, 8, 0),
    "cpu": ("resnet18", 224, 8, 2, 0),
    "quick": ("resnet18", 64, 4, 2, 64),
}
MODES = ("linearized", "exact")
COLUMNS = [
    "model",
    "units",
    "draws",
    "precision",
    "mode",
    "steps_s",
    "bare_steps_s",
    "time_vs_bare",
    "vs_linearized",
    "peak_memory_mb",
    "logged_steps_s",
    "logging_cost",
]


def main() -> None:
    args = common.parse_args(__doc__.split("\n\n")[0], common.logging_switch)
    common.setup(args)
    key = "quick" if args.quick else args.device
    model, canvas, draws, units, side = CONFIGS[key]
    common.check_models("bench_mti", [model])
    precisions = ["fp32", "bf16"] if args.device == "cuda" else ["fp32"]
    steps, chunk, warmup = {"quick": (2, 1, 1), "cuda": (30, 15, 3), "cpu": (4, 2, 0)}[key]
    layer, _, cam = common.FEATURES[model]
    results = common.Results(
        args.out,
        "mti",
        args,
        {"model": model, "canvas": canvas, "draws": draws, "units": units, "steps": steps},
    )
    searches = {
        mode: common.Search(
            [
                "search=mti",
                *common.search_overrides(args.device, model, side),
                f"param.canvas=[{canvas},{canvas}]",
                f"search.draws={draws}",
                f"search.mode={mode}",
                f"search.attribution_layer={cam}",
                f"target.layer={layer}",
                f"target.channel=[{','.join(map(str, range(units)))}]",
                "target.position=center",
            ],
            args.device,
        )
        for mode in MODES
    }
    lm = searches["linearized"].lm
    batch = searches["linearized"].batch
    for label in precisions:
        precision = common.PRECISIONS[label]
        runners = {mode: s.runner(warmup, precision) for mode, s in searches.items()}
        if args.logging:  # the same linearized search with its curves logged to W&B
            runners["logged"] = searches["linearized"].runner(warmup, precision, logged=True)
        runners["bare"] = common.bare_runner(
            lm.model, layer, batch, lm.input_size, args.device, label == "bf16"
        )
        for run in runners.values():
            run(1)
        rates = common.interleave(runners, steps, chunk)
        lm.model.cpu()  # only the measured search's network on the device
        for mode, search in searches.items():
            common.reset_peak_memory(args.device)
            search.fit(warmup + 2, precision)
            results.add(
                {
                    "model": model,
                    "canvas": canvas,
                    "units": units,
                    "draws": draws,
                    "batch": batch,
                    "feature_layer": layer,
                    "cam_layer": cam,
                    "precision": label,
                    "mode": mode,
                    "steps_s": rates[mode],
                    "bare_steps_s": rates["bare"],
                    "time_vs_bare": rates["bare"] / rates[mode],
                    "vs_linearized": rates[mode] / rates["linearized"],
                    "peak_memory_mb": common.peak_memory_mb(args.device),
                    "logged_steps_s": rates.get("logged") if mode == "linearized" else None,
                    "logging_cost": rates["linearized"] / rates["logged"] - 1
                    if "logged" in rates and mode == "linearized"
                    else None,
                }
            )
    print(common.table(results.data["rows"], COLUMNS))
    print(f"wrote {results.path}")


if __name__ == "__main__":
    main()
