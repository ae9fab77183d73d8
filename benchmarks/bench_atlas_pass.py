"""Benchmark 4: the atlas dataset pass (attribution of one feature for every image).

Ours: ``dataset_pass.run_pass`` as the atlas runs it (Lightning predict loop, attribution in
device-sized chunks reduced on the device, one shard file written per batch), its own
``images_per_s`` (the predict loop without Trainer set-up). faccent: the paper's hooks,
``cam.posneg_cam_maps_from_dataloader`` (``feature_target_saver`` stopping the forward at the
feature, ``actgrad_extractor`` forward and full-backward hooks at the cam layer), on the same
network and images; the network's parameters require grad there, as a freshly loaded model
in the paper's notebook does (faccent's ``loss.backward()`` needs a path to a leaf).

1. images already on the device: ours reads them through an in-memory image source, so the
   data loader only slices; faccent gets a list of device batches. Interleaved rounds.
2. end to end from JPEG files on disk (ours), with the loader's decode-only rate beside it
   (the same ``ShardDataset`` and ``DataLoader`` settings, no network).

    python -m benchmarks.bench_atlas_pass --device cpu [--quick] [--out DIR]
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import tempfile
import time
import types
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from benchmarks import common
from mti_lightning.journeys.atlas.config import AtlasConfig
from mti_lightning.journeys.atlas.dataset_pass import PassSetup, prepare, run_pass
from mti_lightning.shells.data_pass import ShardDataset

# model, batch, images on the device (ours), faccent batches, JPEG files, input side
CONFIGS = {
    "cuda": ("resnet50", 64, 4096, 10, 4096, 0),
    "cpu": ("resnet18", 64, 256, 4, 256, 0),
    "quick": ("resnet18", 16, 64, 2, 64, 64),
}
JPEG_SIDE = 320
COLUMNS = ["data", "who", "precision", "batch", "images", "images_s", "ours_vs_faccent"]


class DeviceSource:
    """An image source over a tensor of images already on the device."""

    def __init__(self, images: torch.Tensor):
        self.images = images
        self.size = tuple(images.shape[-2:])

    def __len__(self) -> int:
        return self.images.shape[0]

    def load(self, index: int) -> torch.Tensor:
        return self.images[index]

    def name(self, index: int) -> str:
        return f"device[{index}]"

    def label(self, index: int) -> str:
        return ""

    def identity(self) -> str:
        return f"device:{len(self)}"


def _write_jpeg(job: tuple[Path, int]) -> None:
    path, seed = job
    rng = np.random.default_rng(seed)
    low = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    base = np.asarray(low.resize((JPEG_SIDE, JPEG_SIDE), Image.BICUBIC), dtype=np.float32)
    noisy = base + rng.normal(0, 12, base.shape)
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def write_jpegs(folder: Path, n: int) -> Path:
    """``n`` smooth random textures with grain as JPEG files (``JPEG_SIDE`` pixels square,
    resized to the model's input by the loader, as photos are)."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(folder / f"img_{i:06d}.jpg", i) for i in range(n)]
    with Pool(max(1, (os.cpu_count() or 2) - 1)) as pool:
        pool.map(_write_jpeg, jobs, chunksize=64)
    return folder


def decode_rate(setup: PassSetup, cfg: AtlasConfig, empty: Path) -> float:
    """Images/s of the pass's data loader alone (decode and resize, nothing else)."""
    loader = DataLoader(
        ShardDataset(setup.source, cfg.shard_size, empty),
        batch_size=None,
        num_workers=cfg.num_workers,
    )
    start, n = time.perf_counter(), 0
    for item in loader:
        n += item["images"].shape[0]
    return n / (time.perf_counter() - start)


def faccent_pass(
    fc: types.ModuleType, setup: PassSetup, batches: list[torch.Tensor], device: str
) -> float:
    """Seconds of faccent's pass over ``batches`` (normalised, on the device)."""
    layer, channel = setup.readout.specs[0].layer, setup.readout.specs[0].channel
    model = setup.lm.model.to(device)
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        common.sync(device)
        start = time.perf_counter()
        with common.quiet():
            fc.cam.posneg_cam_maps_from_dataloader(
                [(x, None) for x in batches],
                model,
                common.faccent_layer(layer),
                channel,
                [common.faccent_layer(setup.layers[0])],
                position="middle",
            )
        common.sync(device)
        return time.perf_counter() - start
    finally:
        model.zero_grad(set_to_none=True)
        for p in model.parameters():
            p.requires_grad_(False)


def main() -> None:
    args = common.parse_args(__doc__.split("\n\n")[0])
    common.setup(args)
    model, batch, n_device, faccent_batches, n_files, side = CONFIGS[
        "quick" if args.quick else args.device
    ]
    common.check_models("bench_atlas_pass", [model])
    layer, channel, cam = common.FEATURES[model]
    rounds = 1 if args.quick else 2
    workers = max(0, min(12, (os.cpu_count() or 2) - 2))
    work = Path(tempfile.mkdtemp(prefix="mti-bench-atlas-"))
    folder = write_jpegs(work / "jpeg", n_files)
    precisions = ["fp32", "bf16"] if args.device == "cuda" else ["fp32"]
    results = common.Results(
        args.out,
        "atlas_pass",
        args,
        {
            "model": model,
            "feature": f"{layer}:{channel}@center",
            "layers": [cam],
            "batch": batch,
            "device_images": n_device,
            "faccent_images": faccent_batches * batch,
            "jpeg_files": n_files,
            "jpeg_side": JPEG_SIDE,
            "loader_workers": workers,
            "rounds": rounds,
        },
    )
    fc = common.import_faccent()

    def config(precision: str, workers: int) -> AtlasConfig:
        return AtlasConfig(
            data=str(folder),
            model=model,
            input_size=side,
            feature=f"{layer}:{channel}@center",
            layers=[cam],
            batch_size=batch,
            shard_size=batch,
            num_workers=workers,
            accelerator="gpu" if args.device == "cuda" else "cpu",
            precision=common.PRECISIONS[precision],
        )

    setup = prepare(config("fp32", 0), work / "run")
    size = setup.lm.input_size
    images = torch.rand(n_device, *size, device=args.device)
    on_device = dataclasses.replace(setup, source=DeviceSource(images))
    batches = [
        setup.lm.normalize(images[i * batch : (i + 1) * batch]) for i in range(faccent_batches)
    ]
    calls = itertools.count()

    def ours(precision: str, source: PassSetup, workers: int = 0) -> dict:
        shards = work / "run" / f"shards-{next(calls)}"
        with common.quiet():
            return run_pass(source, config(precision, workers), shards)

    warm = dataclasses.replace(setup, source=DeviceSource(images[: 2 * batch]))
    for precision in precisions:
        ours(precision, warm)
    faccent_pass(fc, setup, batches[:1], args.device)
    spent = {p: [0.0, 0] for p in [*precisions, "faccent"]}
    for _ in range(rounds):
        for precision in precisions:
            summary = ours(precision, on_device)
            spent[precision][0] += summary["loop_s"]
            spent[precision][1] += summary["computed_images"]
        spent["faccent"][0] += faccent_pass(fc, setup, batches, args.device)
        spent["faccent"][1] += len(batches) * batch
    faccent_rate = spent["faccent"][1] / spent["faccent"][0]
    where = "on the device" if args.device == "cuda" else "in memory"
    base = {"data": where, "batch": batch, "input": list(size)}
    results.add({**base, "who": "faccent hooks", "precision": "fp32", "images_s": faccent_rate})
    for precision in precisions:
        rate = spent[precision][1] / spent[precision][0]
        results.add(
            {
                **base,
                "who": "ours (run_pass)",
                "precision": precision,
                "images": spent[precision][1],
                "images_s": rate,
                "ours_vs_faccent": rate / faccent_rate,
            }
        )
    del images, batches, on_device, warm
    decode = decode_rate(setup, config("fp32", workers), work / "empty")
    base = {"data": f"JPEG files ({workers} loader workers)", "batch": batch, "images": n_files}
    results.add({**base, "who": "loader decode only", "precision": "", "images_s": decode})
    for precision in precisions:
        summary = ours(precision, setup, workers)
        results.add(
            {
                **base,
                "who": "ours (run_pass)",
                "precision": precision,
                "images_s": summary["images_per_s"],
                "vs_decode_only": summary["images_per_s"] / decode,
            }
        )
    print(common.table(results.data["rows"], COLUMNS))
    print(f"wrote {results.path}")


if __name__ == "__main__":
    main()
