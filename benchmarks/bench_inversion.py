"""Benchmark 1: +/- attribution inversion step rate, ours vs faccent vs the bare network.

One image's attribution at the cam layer is inverted into 2 images (relu(A), relu(-A)) with
the spatial-channel cosine objective and crop bounds. Ours: ``mti search=invert`` as users
run it (MTISearch + DrawDataModule + Trainer), fp32 and bf16-mixed. faccent: its own
``render_vis`` loop driven as the paper's code drives it (``fourier_phase`` parameterisation,
one ``spatial_channel_cosim`` term per image with ``batch=i`` and crop bounds, ``box_crop`` +
``uniform_gaussian_noise`` transforms, ``nb_transforms`` draws), on the same network and
targets, fp32. Bare: the same network to the cam layer, forward + backward to the input on
the same 2 x draws batch; fast bare: the same on the step network ours runs (BatchNorms
folded, channels-last; ``core.fastnet``), with freed memory kept in the heap as ours keeps
it on a CPU (``core.heap``). On a CPU faccent is also timed with the heap kept (the same
process setting ours makes), to show how much of the difference that setting alone explains.
All timed interleaved in one process.

``--logging`` adds ours with its per-image match curves logged to W&B (offline) at every
step, interleaved with the rest: ``logging_cost`` is its extra time per step.

    python -m benchmarks.bench_inversion --device cpu [--quick] [--logging] [--out DIR]
        [--models efficientnet_lite0_imagenet ...]
"""

from __future__ import annotations

import argparse
import tempfile
import types
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks import common
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.objectives import SpatialChannelCosine

Config = tuple[str, int, int, int]  # model, canvas, draws, input side (0: the model's own)
CONFIGS = {
    "cuda": [
        ("resnet50", 512, 16, 0),
        ("resnet50", 224, 8, 0),
        ("curvenet", 64, 8, 0),
        ("efficientnet_lite0_imagenet", 224, 8, 0),
    ],
    "cpu": [
        ("resnet18", 224, 8, 0),
        ("curvenet", 64, 8, 0),
        ("efficientnet_lite0_imagenet", 224, 8, 0),  # ImageNet weights, offline
    ],
    "quick": [("resnet18", 64, 4, 64)],
}
# per precision: timed steps, steps per chunk, warm-up steps per chunk (bf16 autocast is
# emulated, ~10x slower, on CPUs without AVX512-BF16/AMX, hence fewer CPU bf16 steps)
TIMING = {
    "cuda": {"fp32": (40, 20, 3), "bf16": (40, 20, 3)},
    "cpu": {"fp32": (12, 2, 1), "bf16": (2, 1, 0)},
    "quick": {"fp32": (2, 1, 1), "bf16": (2, 1, 1)},
}
COLUMNS = [
    "model",
    "canvas",
    "draws",
    "batch",
    "precision",
    "ours_steps_s",
    "faccent_steps_s",
    "faccent_heap_steps_s",
    "bare_steps_s",
    "fast_bare_steps_s",
    "ours_vs_faccent",
    "ours_vs_faccent_heap",
    "ours_time_vs_bare",
    "ours_time_vs_fast_bare",
    "ours_logged_steps_s",
    "logging_cost",
]


def mask_bounds(mask: torch.Tensor) -> list[list[int]]:
    """faccent's ``crop_bounds`` ``[[h0, h1], [w0, w1]]`` of one ``(1, H, W)`` mask."""
    rows = mask[0].any(1).nonzero().flatten().tolist()
    cols = mask[0].any(0).nonzero().flatten().tolist()
    return [[rows[0], rows[-1] + 1], [cols[0], cols[-1] + 1]]


def faccent_runner(
    fc: types.ModuleType,
    lm: LoadedModel,
    objective: SpatialChannelCosine,
    canvas: int,
    draws: int,
    device: str,
    warmup: int,
) -> common.Runner:
    """faccent's ``render_vis`` on our targets; times the steps between objective calls."""
    name = common.faccent_layer(objective.layer)
    terms = [
        fc.objectives.spatial_channel_cosim(
            name,
            objective.target[i].to(device),
            cosine_power=objective.power,
            crop_bounds=mask_bounds(objective.mask[i]),
            batch=i,
        )
        for i in range(objective.target.shape[0])
    ]
    full = terms[0]
    for term in terms[1:]:
        full = full + term
    transforms = [
        fc.transform.box_crop(box_min_size=0.9, box_max_size=0.99, box_loc_std=0.05),
        fc.transform.uniform_gaussian_noise(),
    ]

    def run(n: int) -> float:
        lm.model.to(device)
        stamps = common.Stamps(warmup, n, device)

        def timed(hook: Callable) -> torch.Tensor:
            loss = full(hook)
            stamps.tick()
            return loss

        with common.quiet():
            param = fc.param.fourier_phase(
                device=device,
                img_size=(canvas, canvas),
                batch_size=len(terms),
                seed=0,
            )
            fc.render.render_vis(
                lm.model,
                fc.objectives.Objective(timed),
                parameterizer=param,
                transforms=transforms,
                nb_transforms=draws,
                out_thresholds=[warmup + n],
                inline_thresholds=[],
                progress=False,
                model_input_size=tuple(lm.input_size[1:]),
                model_input_range=common.input_range(lm.mean, lm.std),
                img_size=(canvas, canvas),
            )
        return stamps.seconds

    return run


def bench(
    config: Config, args: argparse.Namespace, seed_dir: Path, timing: dict[str, tuple]
) -> list[dict]:
    """Rows (fp32 and bf16) of one model/canvas/draws setting; per precision, ours, the
    bare network and faccent are interleaved for ``timing[precision]`` (steps, chunk,
    warm-up steps)."""
    model, canvas, draws, side = config
    layer, channel, cam = common.FEATURES[model]
    image = common.seed_image(seed_dir / f"seed_{canvas}.png", canvas)
    search = common.inversion_search(args.device, model, side, canvas, draws, image)
    lm, batch = search.lm, search.batch
    fc = common.import_faccent()
    rows = []
    for label, precision in common.PRECISIONS.items():
        steps, chunk, warmup = timing[label]
        runners = {
            "ours": search.runner(warmup, precision),
            "bare": common.bare_runner(
                lm.model, cam, batch, lm.input_size, args.device, label == "bf16"
            ),
            "fast_bare": common.fast_bare_runner(lm, cam, batch, args.device, label == "bf16"),
            "faccent": faccent_runner(
                fc, lm, search.search.objective, canvas, draws, args.device, warmup
            ),
        }
        if args.logging:  # ours with its match curves logged to W&B at every step
            runners["ours_logged"] = search.runner(warmup, precision, logged=True)
        if args.device == "cpu":  # how much of the lead the kept heap alone explains
            runners["faccent_heap"] = common.heap_kept(runners["faccent"])
        for run in runners.values():  # first-call costs (allocations, cuDNN autotuning)
            run(1)
        rates = common.interleave(runners, steps, chunk)
        rows.append(
            {
                "model": model,
                "canvas": canvas,
                "draws": draws,
                "batch": batch,
                "input": list(lm.input_size),
                "feature": f"{layer}:{channel}@center",
                "cam_layer": cam,
                "precision": label,
                "ours_steps_s": rates["ours"],
                "faccent_steps_s": rates["faccent"],
                "bare_steps_s": rates["bare"],
                "fast_bare_steps_s": rates["fast_bare"],
                "ours_vs_faccent": rates["ours"] / rates["faccent"],
                "faccent_heap_steps_s": rates.get("faccent_heap"),
                "ours_vs_faccent_heap": rates["ours"] / rates["faccent_heap"]
                if "faccent_heap" in rates
                else None,
                "ours_time_vs_bare": rates["bare"] / rates["ours"],
                "ours_time_vs_fast_bare": rates["fast_bare"] / rates["ours"],
                "ours_logged_steps_s": rates.get("ours_logged"),
                "logging_cost": rates["ours"] / rates["ours_logged"] - 1
                if "ours_logged" in rates
                else None,
                "steps_timed": steps,
            }
        )
    return rows


def _options(parser: argparse.ArgumentParser) -> None:
    """``--logging`` and ``--models`` (only these of the device's settings)."""
    common.logging_switch(parser)
    parser.add_argument("--models", nargs="+", help="only the settings of these models")


def main() -> None:
    args = common.parse_args(__doc__.split("\n\n")[0], _options)
    common.setup(args)
    configs = CONFIGS["quick" if args.quick else args.device]
    configs = common.pick_rows("bench_inversion", configs, args.models)
    common.check_models("bench_inversion", [c[0] for c in configs])
    timing = TIMING["quick" if args.quick else args.device]
    results = common.Results(
        args.out,
        "inversion",
        args,
        {
            "configs": configs,
            "timing (steps, chunk, warm-up)": timing,
            "images": 2,
            "faccent_precision": "fp32 in every row (its loop has no mixed precision)",
            "ours": "mti search=invert: MTISearch + DrawDataModule + make_trainer, guard and "
            "transparency callbacks, no logger/snapshots",
        },
    )
    seed_dir = Path(tempfile.mkdtemp(prefix="mti-bench-seeds-"))
    for config in configs:
        for row in bench(config, args, seed_dir, timing):
            results.add(row)
    print(common.table(results.data["rows"], COLUMNS))
    print(f"wrote {results.path}")


if __name__ == "__main__":
    main()
