"""Benchmark 7: how good the pictures are, not only how fast: our feature visualisation
(``search=visualize``) and MTI search (``search=mti``) beside torch-lucent's ``render_vis``
(its defaults: FFT, decorrelated colour, standard transforms) at the same steps and canvas, on
a seeded sample of units of an offline ImageNet network over three depths, channel-mean and
centre-position targets alike.

Each final image is scored by ``benchmarks/quality_scores.py`` (its own code path): the unit's
value, its mean over 16 seeded views never optimised (robustness), value over the largest
value over photo crops (vs data) and the share of spectral power above half Nyquist; with
seconds per step per unit. lucent is optional: without it (``--quick`` on a bare checkout)
its column is skipped with a note. faccent has no plain feature-visualisation objective on
these targets in the form its benchmark drives it, so it is not a column here.

    python -m benchmarks.bench_quality --device cpu [--quick] [--models M ...] [--out DIR] [--images]
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Iterator

import torch
from torch import nn

from benchmarks import common
from benchmarks.quality_scores import Unit, data_max, scores

DEPTHS = ("blocks.2", "blocks.4", "blocks.5")
COLUMNS = ["model", "method", "units", "value", "robust", "vs_data", "high_freq", "s_per_step_unit"]
SCORES = ("value", "robust", "vs_data", "high_freq")


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=["efficientnet_lite0_imagenet"])
    parser.add_argument("--units", type=int, default=18, help="units per model (>= 16)")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--canvas", type=int, default=128)
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--data", default="photos:n=1000,seed=0", help="photo crops for vs_data")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument(
        "--methods", nargs="+", default=["visualize", "mti", "lucent"], help="columns to run"
    )
    parser.add_argument(
        "--extra", nargs="*", default=[], help="mti overrides added to our searches (a setting)"
    )
    parser.add_argument(
        "--images", action="store_true", help="save final images as OUT/quality/METHOD/UNIT.png"
    )


def sample_units(
    model: nn.Module, depths: tuple[str, ...], n: int, canvas: int, seed: int
) -> list[Unit]:
    """``n`` seeded units spread over ``depths``, alternating channel-mean and centre targets."""
    widths: dict[str, int] = {}
    modules = dict(model.named_modules())

    def record(layer: str):
        def hook(_m: nn.Module, _i: tuple, out: torch.Tensor) -> None:
            widths[layer] = out.shape[1]

        return hook

    hooks = [modules[d].register_forward_hook(record(d)) for d in depths]
    with torch.no_grad():
        model(torch.zeros(1, 3, canvas, canvas))
    for h in hooks:
        h.remove()
    g = torch.Generator().manual_seed(seed)
    units = []
    for i in range(n):
        layer = depths[i % len(depths)]
        channel = int(torch.randint(0, widths[layer], (), generator=g))
        units.append(Unit(layer, channel, "mean" if (i // len(depths)) % 2 else "center"))
    return sorted(set(units), key=lambda u: (u.layer, u.kind, u.channel))


def groups(units: list[Unit]) -> Iterator[list[Unit]]:
    """Units of one layer and kind: one search each (a search has one layer and position)."""
    keys = sorted({(u.layer, u.kind) for u in units})
    for key in keys:
        yield [u for u in units if (u.layer, u.kind) == key]


def ours(
    method: str, model: str, group: list[Unit], args: argparse.Namespace
) -> tuple[torch.Tensor, float]:
    """The final images of one search of ``group`` (``method`` visualize | mti) and its seconds
    per step per unit (timed after one warm-up step, Trainer overhead included)."""
    c = args.canvas
    search = common.Search(
        [
            f"search={method}",
            *common.search_overrides(args.device, model, c),
            f"param.canvas=[{c},{c}]",
            f"search.draws={args.draws}",
            f"search.lr={args.lr}",
            f"target.layer={group[0].layer}",
            f"target.channel=[{','.join(str(u.channel) for u in group)}]",
            f"target.position={group[0].kind}",
            *args.extra,
        ],
        args.device,
    )
    timer = common.StepTimer(1, args.steps - 1, args.device)
    search.fit(args.steps, "32", [timer])
    with torch.no_grad():
        images = search.search.param().detach().cpu().clamp(0, 1)
    return images, timer.seconds / (args.steps - 1) / len(group)


class _Normalized(nn.Module):
    """The network with its input normalisation in front (lucent feeds [0, 1] images)."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean)[None, :, None, None])
        self.register_buffer("std", torch.tensor(std)[None, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def lucent_images(
    loaded, group: list[Unit], args: argparse.Namespace
) -> tuple[torch.Tensor, float]:
    """lucent's ``render_vis`` with its defaults, one unit per render, at our canvas (no
    upsampling to 224: ``fixed_image_size``); seconds per step per unit."""
    from lucent.optvis import objectives, param, render

    wrapped = _Normalized(loaded.model, loaded.mean, loaded.std).eval()
    images, seconds = [], 0.0
    for u in group:
        name = "net_" + u.layer.replace(".", "_")
        objective = (
            objectives.channel(name, u.channel)
            if u.kind == "mean"
            else objectives.neuron(name, u.channel)
        )
        torch.manual_seed(0)
        start = time.perf_counter()
        out = render.render_vis(
            wrapped,
            objective,
            param_f=lambda: param.image(args.canvas),
            thresholds=(args.steps,),
            preprocess=False,
            progress=False,
            show_image=False,
            fixed_image_size=args.canvas,
        )
        seconds += time.perf_counter() - start
        images.append(torch.from_numpy(out[-1][0]).permute(2, 0, 1).float())
    return torch.stack(images), seconds / args.steps / len(group)


def main() -> None:
    args = common.parse_args(__doc__.split("\n\n")[0], _options)
    common.setup(args)
    if args.quick:
        args.units, args.steps, args.canvas, args.draws = 4, 6, 64, 2
        args.data = "photos:n=64,seed=0"
    import mti_lightning as mti
    from mti_lightning.core.io import save_png
    from mti_lightning.world.photos import photo_crops

    has_lucent = importlib.util.find_spec("lucent") is not None
    methods = [m for m in args.methods if m != "lucent" or has_lucent]
    results = common.Results(
        args.out,
        "quality",
        args,
        {
            "models": args.models,
            "units": args.units,
            "steps": args.steps,
            "canvas": args.canvas,
            "draws": args.draws,
            "data": args.data,
            "lr": args.lr,
            "extra": args.extra,
            "lucent": "torch-lucent 0.1.8 render_vis defaults"
            if has_lucent
            else "not installed: column skipped",
        },
    )
    for model in args.models:
        loaded = mti.load_model(
            model.replace("_imagenet", ".imagenet"), input_size=(3, args.canvas, args.canvas)
        )
        units = sample_units(
            loaded.model, DEPTHS if not args.quick else DEPTHS[:2], args.units, args.canvas, 0
        )
        crops = photo_crops(args.data, size=args.canvas)
        loader = torch.utils.data.DataLoader(crops, batch_size=64)
        best = data_max(loaded.model, loaded.normalize, units, (x for x, _ in loader))
        per_method: dict[str, list[dict]] = {m: [] for m in methods}
        for group in groups(units):
            for method in methods:
                if method == "lucent":
                    images, s_step = lucent_images(loaded, group, args)
                else:
                    images, s_step = ours(method, model, group, args)
                for u, image in zip(group, images):
                    if args.images:
                        name = f"{u.layer}_{u.channel}_{u.kind}.png"
                        save_png(args.out / "quality" / method / name, image)
                    row = scores(loaded.model, loaded.normalize, u, image, best[u])
                    per_method[method].append({"unit": u.target, **row, "s_per_step_unit": s_step})
        for method, rows in per_method.items():
            mean = {k: sum(r[k] for r in rows) / len(rows) for k in (*SCORES, "s_per_step_unit")}
            results.add(
                {"model": model, "method": method, "units": len(rows), **mean, "per_unit": rows}
            )
    print(common.table(results.data["rows"], COLUMNS))
    if "lucent" in args.methods and not has_lucent:
        print(
            "lucent not installed: its column is skipped (pip install --no-deps --target DIR torch-lucent==0.1.8)"
        )
    print(f"wrote {results.path}")


if __name__ == "__main__":
    main()
