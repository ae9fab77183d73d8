"""Tests of the curve-image generator, its datasets, the ImageFolder export and the datamodule."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from torchvision.datasets import ImageFolder
from torchvision.transforms.functional import pil_to_tensor

from mti_lightning.world.curve_datamodule import CurveDataModule
from mti_lightning.world.curve_dataset import (
    CurveDataset,
    RenderedCurveDataset,
    write_image_folder,
)
from mti_lightning.world.curves import (
    NUM_CLASSES,
    CurveConfig,
    class_name,
    generate,
    labels_of,
)

# One arc on a flat background, nothing else: the arc's pixels are exactly the non-background.
CLEAN = CurveConfig(
    backgrounds=("flat",),
    n_distractors_range=(0, 0),
    extra_noise_range=(0.0, 0.0),
    orientation_jitter_deg=0.0,
)


def _ink(image: np.ndarray) -> np.ndarray:
    """Per-pixel ink weight of a CLEAN image: distance from the (corner) background colour."""
    return np.abs(image - image[:, :1, :1]).sum(0)


def test_sample_is_pure_function_of_seed_index_and_config() -> None:
    a = generate(3, 17)
    b = generate(3, 17)
    assert np.array_equal(a.image, b.image) and a.label == b.label and a.arcs == b.arcs
    assert not np.array_equal(a.image, generate(3, 18).image)
    assert not np.array_equal(a.image, generate(4, 17).image)


def test_image_format_and_labels() -> None:
    s = generate(0, 0, CurveConfig(size=40))
    assert s.image.shape == (3, 40, 40) and s.image.dtype == np.float32
    assert s.image.min() >= 0.0 and s.image.max() <= 1.0
    labels = [generate(0, i).label for i in range(200)]
    assert set(labels) == set(range(NUM_CLASSES))
    assert all(labels_of(0, i) == (labels[i], None) for i in range(200))


def test_class_names() -> None:
    names = [class_name(k) for k in range(NUM_CLASSES)]
    assert names[:3] == ["ori_000", "ori_022", "ori_045"] and names[-1] == "ori_157"
    with pytest.raises(ValueError, match="label"):
        class_name(8)


@pytest.mark.parametrize("index", range(24))
def test_label_is_the_chord_orientation(index: int) -> None:
    """The principal axis of the arc's ink is its chord: it must match label * 22.5 degrees."""
    s = generate(5, index, CLEAN)
    w = _ink(s.image)
    rows, cols = np.mgrid[: w.shape[0], : w.shape[1]]
    x, y = cols - np.average(cols, weights=w), -(rows - np.average(rows, weights=w))
    cov = np.cov(np.stack([x.ravel(), y.ravel()]), aweights=w.ravel())
    evals, evecs = np.linalg.eigh(cov)
    major = evecs[:, np.argmax(evals)]
    angle = math.degrees(math.atan2(major[1], major[0])) % 180
    diff = abs(angle - s.label * 22.5) % 180
    assert min(diff, 180 - diff) < 6.0


def test_config_changes_take_effect() -> None:
    thin = generate(1, 2, CurveConfig(**{**CLEAN.__dict__, "thickness_range": (0.03, 0.03)}))
    thick = generate(1, 2, CurveConfig(**{**CLEAN.__dict__, "thickness_range": (0.1, 0.1)}))
    assert _ink(thick.image).sum() > 2 * _ink(thin.image).sum()
    noisy = generate(1, 2, CurveConfig(backgrounds=("noise",), pixel_noise_std=0.3))
    assert np.abs(np.diff(noisy.image, axis=2)).mean() > 0.1
    assert noisy.meta["background"] == "noise"
    assert generate(1, 2, CurveConfig(n_distractors_range=(5, 5))).meta["n_distractors"] == 5


def test_config_validation_and_round_trip() -> None:
    cfg = CurveConfig(size=32, radius_range=(0.2, 0.3))
    assert CurveConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="size"):
        CurveConfig(size=4)
    with pytest.raises(ValueError, match="backgrounds"):
        CurveConfig(backgrounds=("plaid",))
    with pytest.raises(ValueError, match="orientation_jitter_deg"):
        CurveConfig(orientation_jitter_deg=12.0)
    with pytest.raises(ValueError, match="radius_range"):
        CurveConfig(radius_range=(0.3, 0.2))
    with pytest.raises(ValueError, match="unknown CurveConfig keys"):
        CurveConfig.from_dict({"sise": 64})
    with pytest.raises(ValueError, match="two_arc_fraction"):
        generate(0, 0, two_arc_fraction=1.5)
    with pytest.raises(ValueError, match="index"):
        generate(0, -1)


def test_two_arc_image_is_single_arc_image_plus_a_second_arc() -> None:
    for index in range(10):
        one = generate(2, index, two_arc_fraction=0.0)
        two = generate(2, index, two_arc_fraction=1.0)
        assert one.second_label is None and len(one.arcs) == 1
        assert two.label == one.label and two.second_label not in (None, two.label)
        assert two.arcs[0] == one.arcs[0] and two.arcs[1].label == two.second_label
        changed = np.abs(two.image - one.image).max(0) > 1e-6
        assert 0 < changed.mean() < 0.3
        assert labels_of(2, index, 1.0) == (two.label, two.second_label)


def test_datasets() -> None:
    ds = CurveDataset(16, seed=9, two_arc_fraction=0.5)
    image, label = ds[5]
    sample = generate(9, 5, CurveConfig(), 0.5)
    assert torch.equal(image, torch.from_numpy(sample.image)) and label == sample.label
    assert len(ds) == 16 and ds.sample(5).second_label == sample.second_label
    with pytest.raises(IndexError):
        ds[16]
    rendered = RenderedCurveDataset(ds)
    assert len(rendered) == 16 and rendered[5][1] == label
    assert (rendered[5][0] - image).abs().max() <= 0.5 / 255 + 1e-6
    for bad in (
        {"n": 0, "seed": 0},
        {"n": 4, "seed": -1},
        {"n": 4, "seed": 0, "two_arc_fraction": 2},
    ):
        with pytest.raises(ValueError):
            CurveDataset(**bad)


def test_write_image_folder_reads_back_with_image_folder(tmp_path) -> None:
    out = write_image_folder(tmp_path / "curves", n=40, seed=4, two_arc_fraction=0.25)
    folder = ImageFolder(str(out), allow_empty=True)
    assert folder.classes == [class_name(k) for k in range(NUM_CLASSES)]
    assert len(folder) == 40
    with open(out / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40
    by_file = {r["file"]: r for r in rows}
    for path, target in folder.samples:
        index = int(path[-10:-4])
        sample = generate(4, index, CurveConfig(), 0.25)
        assert target == sample.label
        row = by_file[f"{class_name(target)}/{index:06d}.png"]
        assert row["orientation"] == str(sample.label)
        assert row["second_orientation"] == (
            "" if sample.second_label is None else str(sample.second_label)
        )
    assert any(r["second_orientation"] for r in rows)
    png, target = folder[0]
    index = int(folder.samples[0][0][-10:-4])
    pixels = pil_to_tensor(png).float() / 255
    assert (
        pixels - torch.from_numpy(generate(4, index, CurveConfig(), 0.25).image)
    ).abs().max() <= 1 / 255


def test_write_image_folder_resumes(tmp_path) -> None:
    out = write_image_folder(tmp_path, n=12, seed=1)
    files = sorted(out.glob("ori_*/*.png"))
    assert len(files) == 12
    kept, removed = files[0], files[1]
    kept_mtime = kept.stat().st_mtime_ns
    removed.unlink()
    write_image_folder(tmp_path, n=12, seed=1)
    assert kept.stat().st_mtime_ns == kept_mtime and removed.exists()
    assert not list(out.rglob("*.tmp")) and len(list(out.glob("ori_*/*.png"))) == 12


def test_write_image_folder_rejects_bad_input(tmp_path) -> None:
    with pytest.raises(ValueError, match="n"):
        write_image_folder(tmp_path, n=0, seed=0)
    with pytest.raises(ValueError, match="two_arc_fraction"):
        write_image_folder(tmp_path, n=3, seed=0, two_arc_fraction=-0.1)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        write_image_folder(a_file, n=3, seed=0)


def test_datamodule() -> None:
    dm = CurveDataModule(train_size=24, val_size=8, config={"size": 32}, batch_size=8)
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 3, 32, 32) and labels.shape == (8,)
    assert len(dm.val_dataloader().dataset) == 8
    with pytest.raises(ValueError, match="differ"):
        CurveDataModule(train_seed=3, val_seed=3)
    with pytest.raises(ValueError, match="n"):
        CurveDataModule(train_size=0)
