"""Benchmark 7b: how good the MTI search and its +/- inversions are, on bench_quality's seeded
sample of units of an offline ImageNet network, at one or more named settings.

The data side is the census's own (``shells/unit_pass.UnitsReduce``, the pass ``mti census``
runs): it finds each unit's tensest photo crop. Then, per layer and position, the product's
search runner (``shells/search_run.run_stages``: the MTI search, then its inversion stage)
runs at each setting. Every image is scored by ``benchmarks/tension_scores.py`` (plain
autograd, its own code path): the MTI's tension over the tensest crop's (target: >= 1 for
>= 90% of units), and the same over 16 seeded views of each never optimised (crop 0.7-1,
rotation +-15 degrees: ``robust_over_data``, whether the MTI's tension is structure);
whether the + inversion raises and the - inversion lowers the unit from its value on a grey
image (target: both, for >= 90% of units); the cosine of each inversion's
attribution with its part (target >= 0.8); and CPU seconds per unit (the process's CPU time,
both threads, of the search and its inversions). Each unit's images are saved as PNGs under
``OUT/quality_mti/SETTING/`` for ``benchmarks.quality_report``.

    python -m benchmarks.bench_quality_mti --device cpu [--quick] [--settings NAME ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from statistics import median

import torch

from benchmarks import common
from benchmarks.bench_quality import DEPTHS, groups, sample_units
from benchmarks.quality_scores import Unit, random_views
from benchmarks.tension_scores import attribution, inversion_scores, tension

# named settings: overrides of the schema's defaults (search.steps=150, draws=8, lr=0.05,
# param.scale=2, inversions 100 steps and 8 draws matching sign(a) * relu(+-A), transform
# scale 0.85-1, no rotation)
SCALE_1 = "param.scale=1.0"  # the Fourier contrast before issue 32 moved it to 2
SETTINGS = {
    "default": [],
    "previous_default": [SCALE_1],
    "contrast_1_5": ["param.scale=1.5"],
    "relu_attribution": ["search.inversions.match=relu_attribution", SCALE_1],
    "long": ["search.steps=300", "search.inversions.steps=200", SCALE_1],
    "no_transforms": [
        "transform.scale=[1.0,1.0]",
        "transform.jitter=0",
        "transform.gaussian_noise=0",
        SCALE_1,
    ],
    "wide_draws": ["transform.scale=[0.5,1.0]", "transform.rotate=15"],
    # the photographs' own magnitude spectrum (benchmarks/photo_spectrum.py: 1.70 at 128 px)
    "photo_spectrum": ["param.decay=1.7", SCALE_1],
}
QUICK = [
    "search.steps=6",
    "search.draws=2",
    "search.inversions.steps=6",
    "search.inversions.draws=2",
]
COLUMNS = [
    "setting",
    "units",
    "over_data_ge_1",
    "over_data_median",
    "robust_over_data_ge_1",
    "signs_ok",
    "cos_plus_median",
    "cos_minus_median",
    "cos_ge_08",
    "spatial_cos_ge_08",
    "cpu_s_per_unit",
    "wall_s_per_unit",
]


def sample_options(parser: argparse.ArgumentParser) -> None:
    """The sample's options: the network, how many units, the canvas and the photo crops."""
    parser.add_argument("--model", default="efficientnet_lite0_imagenet")
    parser.add_argument("--units", type=int, default=18, help="units (bench_quality's sample)")
    parser.add_argument("--canvas", type=int, default=128)
    parser.add_argument("--data", default="photos:n=1000,seed=0", help="the crops of the data side")


def sample_depths(args: argparse.Namespace) -> tuple[str, ...]:
    """The sample's layers; ``--quick`` shrinks the sample in ``args`` (4 units of two depths,
    64 px, 64 crops)."""
    if not args.quick:
        return DEPTHS
    args.units, args.canvas, args.data = 4, 64, "photos:n=64,seed=0"
    return DEPTHS[:2]


def _options(parser: argparse.ArgumentParser) -> None:
    sample_options(parser)
    parser.add_argument("--settings", nargs="+", default=["default"], choices=sorted(SETTINGS))
    parser.add_argument(
        "--draws", type=int, default=0, help="draws of search and inversions (0: the schema's)"
    )


def tensest_crops(
    lm, units: list[Unit], layers: dict[Unit, str], crops, batch: int = 64
) -> dict[Unit, tuple[int, float]]:
    """Per unit, the index of its tensest crop and that tension, by the census's data side."""
    from mti_lightning.core.conv_energy import one_conv_path
    from mti_lightning.shells.unit_pass import UnitGroup, UnitsReduce

    example = lm.normalize(crops[0][0][None])
    reducers = []
    for kind in ("center", "mean"):
        found = [
            UnitGroup(
                f"{g[0].layer}/{kind}",
                g[0].layer,
                layers[g[0]],
                tuple(u.channel for u in g),
                one_conv_path(lm.model, g[0].layer, example, layers[g[0]]),
            )
            for g in groups(units)
            if g[0].kind == kind
        ]
        if found:
            reducers.append((kind, UnitsReduce(lm.model, found, kind)))
    best = {u: (-1, -float("inf")) for u in units}
    loader = torch.utils.data.DataLoader(crops, batch_size=batch)
    start = 0
    for images, _ in loader:
        for kind, reduce in reducers:
            out = reduce(lm, images)
            for g in reduce.groups:
                t = torch.minimum(out[f"{g.key}/e_plus"], out[f"{g.key}/e_minus"])
                for col, channel in enumerate(g.channels):
                    u = Unit(g.layer, channel, kind)
                    value, index = t[:, col].max(0)
                    if float(value) > best[u][1]:
                        best[u] = (start + int(index), float(value))
        start += len(images)
    return best


def run_group(lm, group: list[Unit], overrides: list[str]):
    """The MTI search of ``group`` and its inversions, by the product's search runner; the run
    and its CPU and wall seconds."""
    from mti_lightning.shells.search_run import run_stages

    cfg = common.compose(
        [
            *overrides,
            f"target.layer={group[0].layer}",
            f"target.channel=[{','.join(str(u.channel) for u in group)}]",
            f"target.position={group[0].kind}",
        ]
    )
    cpu, wall = time.process_time(), time.perf_counter()
    with common.quiet():
        run = run_stages(cfg, Path(tempfile.mkdtemp(prefix="mti-quality-")), lm, logger=False)
    return run, time.process_time() - cpu, time.perf_counter() - wall


def summary(setting: str, rows: list[dict]) -> dict:
    """The setting's target rates and medians over its units."""
    n = len(rows)
    cos = [c for r in rows for c in (r["cos_plus"], r["cos_minus"])]
    return {
        "setting": setting,
        "units": n,
        "over_data_ge_1": sum(r["over_data"] >= 1 for r in rows) / n,
        "over_data_median": median(r["over_data"] for r in rows),
        "robust_over_data_ge_1": sum(r["robust_over_data"] >= 1 for r in rows) / n,
        "robust_over_data_median": median(r["robust_over_data"] for r in rows),
        "signs_ok": sum(r["plus_raises"] and r["minus_lowers"] for r in rows) / n,
        "plus_raises": sum(r["plus_raises"] for r in rows) / n,
        "minus_lowers": sum(r["minus_lowers"] for r in rows) / n,
        "cos_plus_median": median(r["cos_plus"] for r in rows),
        "cos_minus_median": median(r["cos_minus"] for r in rows),
        "cos_ge_08": sum(c >= 0.8 for c in cos) / len(cos),
        "spatial_cos_plus_median": median(r["spatial_cos_plus"] for r in rows),
        "spatial_cos_minus_median": median(r["spatial_cos_minus"] for r in rows),
        "spatial_cos_ge_08": sum(
            c >= 0.8 for r in rows for c in (r["spatial_cos_plus"], r["spatial_cos_minus"])
        )
        / (2 * n),
        "source_cos_plus_median": median(r["source_cos_plus"] for r in rows),
        "source_cos_minus_median": median(r["source_cos_minus"] for r in rows),
        "cpu_s_per_unit": sum(r["cpu_s"] for r in rows) / n,
        "wall_s_per_unit": sum(r["wall_s"] for r in rows) / n,
    }


def main() -> None:
    args = common.parse_args(__doc__.split("\n\n")[0], _options)
    common.setup(args)
    depths = sample_depths(args)
    import mti_lightning as mti
    from mti_lightning.core.features import build_readout
    from mti_lightning.core.io import save_png
    from mti_lightning.core.layer_choice import attribution_layer_auto
    from mti_lightning.core.targets import parse_targets
    from mti_lightning.world.photos import photo_crops

    c = args.canvas
    base = [
        *common.search_overrides(args.device, args.model, c),
        "search.inversions.enabled=true",
        f"param.canvas=[{c},{c}]",
        "logger.kind=none",
        *(
            [f"search.draws={args.draws}", f"search.inversions.draws={args.draws}"]
            if args.draws
            else []
        ),
    ]
    results = common.Results(
        args.out,
        "quality_mti",
        args,
        {
            "model": args.model,
            "units": args.units,
            "canvas": c,
            "data": args.data,
            "draws": args.draws or "schema default (8)",
            "settings": {s: SETTINGS[s] + (QUICK if args.quick else []) for s in args.settings},
        },
    )
    lm = mti.load_model(args.model.replace("_imagenet", ".imagenet"), input_size=(3, c, c))
    units = sample_units(lm.model, depths, args.units, c, 0)
    layers = {
        u: attribution_layer_auto(
            lm, build_readout(lm.model, lm.input_size, parse_targets(u.target))
        )
        for u in units
    }
    crops = photo_crops(args.data, size=c)
    start = time.perf_counter()
    best = tensest_crops(lm, units, layers, crops)
    data_s = time.perf_counter() - start
    print(f"data side: {len(crops)} crops, {data_s:.0f} s")
    for setting in args.settings:
        overrides = [*base, *SETTINGS[setting], *(QUICK if args.quick else [])]
        folder = args.out / "quality_mti" / setting
        rows = []
        for group in groups(units):
            run, cpu_s, wall_s = run_group(lm, group, overrides)
            mti_images = run.images.detach().cpu().clamp(0, 1)
            plus = run.inversions["plus"].detach().cpu().clamp(0, 1)
            minus = run.inversions["minus"].detach().cpu().clamp(0, 1)
            for i, u in enumerate(group):
                layer, (index, census_t) = layers[u], best[u]
                crop = crops[index][0]
                _, maps = attribution(
                    lm.model, lm.normalize, u, layer, torch.stack([mti_images[i], crop])
                )
                t_mti, t_data = (float(t) for t in tension(maps))
                views = torch.cat([random_views(mti_images[i]), random_views(crop)])
                _, view_maps = attribution(lm.model, lm.normalize, u, layer, views)
                r_mti, r_data = (float(t) for t in tension(view_maps).view(2, -1).mean(1))
                inv = inversion_scores(
                    lm.model, lm.normalize, u, layer, mti_images[i], plus[i], minus[i]
                )
                name = f"{u.layer}_{u.channel}_{u.kind}"
                for part, image in (
                    ("data", crop),
                    ("mti", mti_images[i]),
                    ("plus", plus[i]),
                    ("minus", minus[i]),
                ):
                    save_png(folder / f"{name}_{part}.png", image)
                rows.append(
                    {
                        "unit": u.target,
                        "attribution_layer": layer,
                        "tension": t_mti,
                        "data_tension": t_data,
                        "census_data_tension": census_t,
                        "data_index": index,
                        "over_data": t_mti / t_data if t_data > 0 else float("nan"),
                        "robust_tension": r_mti,
                        "robust_data_tension": r_data,
                        "robust_over_data": r_mti / r_data if r_data > 0 else float("nan"),
                        **inv,
                        "cpu_s": cpu_s / len(group),
                        "wall_s": wall_s / len(group),
                    }
                )
        results.add({**summary(setting, rows), "data_side_s": data_s, "per_unit": rows})
    print(common.table(results.data["rows"], COLUMNS))
    print(f"wrote {results.path}")


if __name__ == "__main__":
    main()
