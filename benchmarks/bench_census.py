"""Benchmark 7: the inhibition census's data side.

1. The closed form against one backward per unit: E+ and E- of every channel of resnet18's
   ``layer3.0.bn1`` (random init, attribution at ``layer2.1.act2``, the input of
   ``layer3.0.conv1``) at the centre position for a batch of images, from the attribution
   layer's map, against the reference on the same map: one forward to ``bn1``, then one
   backward per channel (``retain_graph``), each giving that channel's attribution map and
   energies. The backwards are timed for a sample of channels and counted for all of them;
   the two agree (largest relative difference reported). All figures interleaved, best of
   ``--repeats``.
2. The whole data side (the census pass's per-chunk work: the forward to the attribution
   layer, the energies and activations of every channel, the chunk's top-k by tension)
   against the forward to the attribution layer alone: the limit.
3. CurveNet's whole census data side (every unit of every layer, ``mti.census`` as users run
   it: data pass, merge, figure; ``search=False, site=False``: the search side is the MTI
   search that benchmarks 2 and 3 time) end to end over curve images: wall time and peak
   memory (RSS).

    python -m benchmarks.bench_census --device cpu [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import common
from mti_lightning.core.attribution import attribution_from, energies
from mti_lightning.core.conv_energy import conv_unit_energies, one_conv_path
from mti_lightning.core.models import load_seeded
from mti_lightning.core.probes import capture
from mti_lightning.shells.unit_pass import UnitGroup, UnitsReduce

LAYER, ATTR = "layer3.0.bn1", "layer2.1.act2"
# batch, side, sampled backwards, CurveNet census images
CONFIGS = {"cpu": (16, 224, 16, 2000), "cuda": (64, 224, 256, 50000), "quick": (4, 96, 8, 200)}
COLUMNS = ["what", "seconds", "units", "units_s", "speedup", "ratio", "peak_mb"]


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=3, help="timings per figure (best kept)")


def fastest(fns: dict, repeats: int, device: str) -> dict[str, float]:
    """The fastest of ``repeats`` runs of each of ``fns`` (after one warm-up each), in
    seconds, the contenders interleaved so that outside load weighs on all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            common.sync(device)
            start = time.perf_counter()
            fn()
            common.sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def curvenet_census(n_images: int, out: Path) -> dict:
    import mti_lightning as mti

    start = time.perf_counter()
    result = mti.census(
        "curvenet", ["all"], "curves", run_dir=out, curves_n=n_images, logger=None,
        batch_size=256, shard_size=512, search=False, site=False,
    )
    return {"seconds": time.perf_counter() - start, "units": len(result.rows)}


def main() -> None:
    args = common.parse_args(__doc__.split("\n\n")[0], options)
    common.setup(args)
    batch, side, sampled, n_curves = CONFIGS["quick" if args.quick else args.device]
    device = torch.device(args.device)
    results = common.Results(
        args.out, "census", args,
        {"model": "resnet18 (timm, random init)", "layer": LAYER, "attr_layer": ATTR,
         "batch": batch, "side": side, "sampled_backwards": sampled, "position": "center",
         "curvenet_images": n_curves},
    )
    # 3 first: the process's peak RSS only grows, so CurveNet's figure comes before resnet18's
    with tempfile.TemporaryDirectory() as tmp:
        common.reset_peak_memory(args.device)
        row = curvenet_census(n_curves, Path(tmp))
        results.add({
            "what": f"CurveNet census data side, every unit, {n_curves} curve images (end to end)",
            "seconds": row["seconds"], "units": row["units"],
            "units_s": row["units"] / row["seconds"],
            "peak_mb": common.peak_memory_mb(args.device),
        })

    lm = load_seeded("resnet18", 0, input_size=(3, side, side)).to(device)
    images = torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(0))
    images = images.to(device)
    x = lm.normalize(images)
    path = one_conv_path(lm.model, LAYER, x[:2], ATTR)
    assert path is not None, "layer2.1.act2 -> layer3.0.conv1 -> bn1 should be one convolution"
    n = lm.model.get_submodule(path.conv).out_channels
    reduce = UnitsReduce(lm.model, [UnitGroup("g", LAYER, ATTR, tuple(range(n)), path)], "center")

    def data_side() -> dict:
        with torch.no_grad():
            out = reduce(lm, images)
            tension = torch.minimum(out["g/e_plus"], out["g/e_minus"])
            out["top"] = tension.topk(min(8, batch), dim=0).indices
        return out

    def forward_only() -> None:
        with torch.no_grad():
            capture(lm.model, x, [ATTR])

    # the reference: one forward, then one backward per channel
    conv, bn = lm.model.get_submodule(path.conv), lm.model.get_submodule(path.bn)
    channels = torch.arange(n, device=device)
    with torch.enable_grad():
        acts = capture(lm.model, x.detach().requires_grad_(True), [ATTR, LAYER])
        a, value = acts[ATTR], acts[LAYER]
        h, w = value.shape[2:]
        centre = value[:, :, h // 2, w // 2]  # (B, C)
        units = torch.linspace(0, n - 1, sampled).round().long().tolist()
        ref = {}

        def backwards() -> None:
            for u in units:
                ref[u] = energies(attribution_from({ATTR: a}, centre[:, u], [ATTR])[ATTR])

        def closed_form() -> None:
            with torch.no_grad():
                conv_unit_energies(a.detach(), conv, bn, channels, "center")

        t = fastest(
            {"backwards": backwards, "closed": closed_form, "forward": forward_only,
             "data_side": data_side},
            args.repeats,
            args.device,
        )
    per_unit = t["backwards"] / len(units)
    got = data_side()
    worst = 0.0
    for u in units:
        for key in ("e_plus", "e_minus"):
            want = getattr(ref[u], key)
            diff = (got[f"g/{key}"][:, u] - want).abs().max() / want.abs().max().clamp_min(1e-12)
            worst = max(worst, float(diff))
    results.add({
        "what": f"one backward per unit ({LAYER}, {n} units, counted from {len(units)} timed)",
        "seconds": per_unit * n, "units": n, "units_s": 1 / per_unit,
    })
    results.add({
        "what": "closed form: E+/E- of every unit from the attribution layer's map",
        "seconds": t["closed"], "units": n, "units_s": n / t["closed"],
        "speedup": per_unit * n / t["closed"], "max_rel_diff": worst,
    })
    results.add({"what": "forward to the attribution layer alone", "seconds": t["forward"]})
    results.add({
        "what": "whole data side (forward, energies of every unit, top-k)",
        "seconds": t["data_side"], "units": n, "ratio": t["data_side"] / t["forward"],
        "speedup": per_unit * n / t["data_side"],
    })
    print(common.table(results.data["rows"], COLUMNS))
    print(f"largest relative difference closed form vs backward: {worst:.2e}")
    print(f"wrote {results.path}")


if __name__ == "__main__":
    main()
