"""The dataset pass on bad data: undecodable files are skipped and counted (a shard of only
such files included), an empty or missing folder is a clear error; and the other sources."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import N_IMAGES, tiny_config, write_folder
from tolerances import assert_reordered

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.journeys.atlas import run_atlas
from mti_lightning.journeys.atlas.dataset_pass import load_pass, prepare, recompute_maps
from mti_lightning.shells.images import torchvision_source


def test_corrupt_images_are_skipped_and_counted(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    bad = data / "zz_broken"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    good = next(data.rglob("*.png")).read_bytes()
    (bad / "truncated.png").write_bytes(good[: len(good) // 2])
    (data / "notes.txt").write_text("not an image, not counted")
    cfg = tiny_config(data)  # 82 files, shards of 16: the last shard holds only the two bad ones
    res = run_atlas(cfg, tmp_path / "run", stage="dataset_pass")["dataset_pass"]
    assert res["n_files"] == N_IMAGES + 2 and res["n_images"] == N_IMAGES
    assert res["n_failed"] == 2
    assert res["failed_files"] == ["zz_broken/empty.png", "zz_broken/truncated.png"]
    console = capsys.readouterr().out  # said on the console: how many, and where listed
    failed_json = tmp_path / "run" / "dataset_pass" / "failed.json"
    assert f"skipped 2 of {N_IMAGES + 2} images" in console and str(failed_json) in console
    assert json.loads(failed_json.read_text()) == res["failed_files"]
    r = load_pass(tmp_path / "run" / res["shards"])
    assert r["index"].tolist() == list(range(N_IMAGES))
    assert r["failed"].tolist() == [N_IMAGES, N_IMAGES + 1]
    assert r["activation"].shape == (N_IMAGES,)


def test_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "class_a").mkdir(parents=True)
    with pytest.raises(MTIConfigError, match=f"image folder {empty} holds no image files"):
        run_atlas(tiny_config(empty), tmp_path / "run")
    with pytest.raises(MTIConfigError, match="does not exist"):
        run_atlas(tiny_config(tmp_path / "missing"), tmp_path / "run")


def test_bad_layer_or_feature_fails_before_the_pass(image_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(MTIConfigError, match="unknown layer 'layer9'"):
        run_atlas(tiny_config(image_folder, layers=["layer9"]), tmp_path / "run")
    with pytest.raises(MTIConfigError, match="does not lie upstream"):
        run_atlas(tiny_config(image_folder, layers=["layer3"]), tmp_path / "run")
    with pytest.raises(MTIConfigError, match="icons need a spatial map"):
        run_atlas(tiny_config(image_folder, layers=["global_pool"]), tmp_path / "run")
    assert not (tmp_path / "run" / "dataset_pass").exists()


def test_recomputed_maps_equal_stored_maps(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "data", n=20)
    cfg = tiny_config(data)
    res = run_atlas(cfg, tmp_path / "run", stage="dataset_pass")["dataset_pass"]
    stored = load_pass(tmp_path / "run" / res["shards"])
    setup = prepare(cfg, tmp_path / "run")
    rows = [3, 0, 17, 9]
    maps = recompute_maps(setup, rows, "layer1", tuple(res["window"]), batch_size=3)
    assert_reordered(maps, stored["layer1/map"][rows])  # batches of 3, not the pass's


def test_icons_without_stored_maps(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "data", n=40)
    res = run_atlas(tiny_config(data, store_maps=False), tmp_path / "run")
    stored = load_pass(tmp_path / "run" / res["dataset_pass"]["shards"])
    assert "layer1/map" not in stored
    assert res["icons"]["n_icons"] >= 1 and (tmp_path / "run" / "atlas" / "atlas.png").is_file()


def test_torchvision_source() -> None:
    src = torchvision_source("FakeData", "", (24, 24))
    img = src.load(3)
    assert img is not None and img.shape == (3, 24, 24) and 0 <= img.min() <= img.max() <= 1
    assert src.name(3) == "FakeData[3]" and src.label(3).isdigit()
    assert src.identity() == f"torchvision:FakeData:{len(src)}"
    with pytest.raises(MTIConfigError, match="unknown torchvision data set 'Nope'.*CIFAR10"):
        torchvision_source("Nope", "", (24, 24))
    with pytest.raises(MTIConfigError, match="could not open torchvision data set CIFAR10"):
        torchvision_source("CIFAR10", "/nonexistent", (24, 24))
