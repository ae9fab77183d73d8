"""How far below its value on a grey image each unit of bench_quality's sample can be driven:
the floor under the sign target of ``bench_quality_mti`` (the - inversion must lower the unit
below grey). Per unit: its value on grey, the lowest value and the share below grey over the
photo crops, and the lowest value the product's ``search.kind=visualize_neg`` reaches with the
default Fourier parameterisation and with pixels (``param=pixel``), at the inversions' steps
and draws. A unit no Fourier image takes below grey cannot pass the sign target by any
inversion the defaults render.

    python -m benchmarks.grey_floor --device cpu [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from benchmarks import common
from benchmarks.bench_quality import groups, sample_units
from benchmarks.bench_quality_mti import sample_depths, sample_options
from benchmarks.quality_scores import unit_values

COLUMNS = ["unit", "grey", "crops_min", "crops_below_grey", "neg_fourier", "neg_pixel"]
PARAMS = {"neg_fourier": [], "neg_pixel": ["param=pixel"]}


def _options(parser: argparse.ArgumentParser) -> None:
    sample_options(parser)
    parser.add_argument("--steps", type=int, default=100, help="the inversions' default")
    parser.add_argument("--draws", type=int, default=8, help="the inversions' default")


def main() -> None:
    args = common.parse_args(__doc__.split("\n\n")[0], _options)
    common.setup(args)
    depths = sample_depths(args)
    if args.quick:
        args.steps, args.draws = 6, 2
    import mti_lightning as mti
    from mti_lightning.shells.search_run import run_stages
    from mti_lightning.world.photos import photo_crops

    c = args.canvas
    results = common.Results(
        args.out,
        "grey_floor",
        args,
        {k: getattr(args, k) for k in ("model", "units", "canvas", "data", "steps", "draws")},
    )
    lm = mti.load_model(args.model.replace("_imagenet", ".imagenet"), input_size=(3, c, c))
    units = sample_units(lm.model, depths, args.units, c, 0)
    crops = photo_crops(args.data, size=c)
    images = torch.stack([crops[i][0] for i in range(len(crops))])
    grey = torch.full((1, 3, c, c), 0.5)
    reached: dict[str, dict] = {u.target: {} for u in units}
    for group in groups(units):
        for column, extra in PARAMS.items():
            cfg = common.compose(
                [
                    *common.search_overrides(args.device, args.model, c),
                    *extra,
                    f"param.canvas=[{c},{c}]",
                    "logger.kind=none",
                    "search.kind=visualize_neg",
                    f"search.steps={args.steps}",
                    f"search.draws={args.draws}",
                    f"target.layer={group[0].layer}",
                    f"target.channel=[{','.join(str(u.channel) for u in group)}]",
                    f"target.position={group[0].kind}",
                ]
            )
            with common.quiet():
                run = run_stages(cfg, Path(tempfile.mkdtemp(prefix="mti-floor-")), lm, logger=False)
            found = run.images.detach().cpu().clamp(0, 1)
            for i, u in enumerate(group):
                reached[u.target][column] = float(
                    unit_values(lm.model, lm.normalize, u, found[i : i + 1])[0]
                )
    for u in units:
        g = float(unit_values(lm.model, lm.normalize, u, grey)[0])
        values = torch.cat(
            [
                unit_values(lm.model, lm.normalize, u, images[i : i + 100])
                for i in range(0, len(images), 100)
            ]
        )
        results.add(
            {
                "unit": u.target,
                "grey": g,
                "crops_min": float(values.min()),
                "crops_below_grey": float((values < g).float().mean()),
                **reached[u.target],
            }
        )
    print(common.table(results.data["rows"], COLUMNS))
    print(f"wrote {results.path}")


if __name__ == "__main__":
    main()
