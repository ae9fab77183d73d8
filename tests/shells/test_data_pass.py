"""The engine's one data pass and image source: several targets at once equal one pass per
target and the core's attribution of each (image, target) pair; the image source reads
folders, data sets and the world's named ``curves`` with one suffix list and one decoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tolerances import assert_reordered

import mti_lightning.world  # noqa: F401  (registers curves)
from mti_lightning.core.attribution import attribute
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.features import FeatureSpec, Readout
from mti_lightning.core.io import IMAGE_SUFFIXES, load_image
from mti_lightning.core.models import load_seeded
from mti_lightning.core.probes import layer_shapes
from mti_lightning.shells.data_pass import PassOptions, PassSetup, load_pass, run_pass
from mti_lightning.shells.images import SOURCES, SourceRequest, open_source

LAYER, ATTR, UNITS = "layer2.0.bn1", "layer1", [0, 3, 5]


def write_images(root: Path, n: int = 10, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"c{i % 2}" / f"{i:03d}.png")
    return root


def setup_for(units: list[int], source) -> tuple[PassSetup, object]:
    lm = load_seeded("test_resnet", 0, input_size=(3, 32, 32))
    shapes = layer_shapes(lm.model, lm.input_size, [LAYER, ATTR])
    readout = Readout([FeatureSpec(LAYER, u, "center") for u in units], shapes)
    return PassSetup(lm, readout, source, [ATTR], shapes), lm


def test_many_targets_equal_one_pass_per_target_and_the_core_attribution(tmp_path: Path):
    folder = write_images(tmp_path / "images")
    source = open_source(folder, (32, 32))
    options = PassOptions(shard_size=4, batch_size=6, fast_net=False)
    setup, lm = setup_for(UNITS, source)
    run_pass(setup, options, tmp_path / "all" / "shards-x")
    together = load_pass(tmp_path / "all" / "shards-x")
    assert together["activation"].shape == (10, 3)
    assert together[f"{ATTR}/vector"].shape == (10, 3, setup.shapes[ATTR][0])
    images = torch.stack([source.load(i) for i in range(len(source))])
    for k, unit in enumerate(UNITS):
        one, _ = setup_for([unit], source)
        run_pass(one, options, tmp_path / f"u{unit}" / "shards-x")
        alone = load_pass(tmp_path / f"u{unit}" / "shards-x")
        assert alone["activation"].shape == (10,)
        # one unit's sums among three units' or alone, batched in shards or whole: reordered;
        # every number is a sum of the attribution's terms, of size E+ + E-
        terms = float((alone[f"{ATTR}/e_plus"] + alone[f"{ATTR}/e_minus"]).max())
        for key in ("activation", f"{ATTR}/e_plus", f"{ATTR}/e_minus", f"{ATTR}/vector"):
            assert_reordered(together[key][:, k], alone[key], scale=terms, msg=key)
        probe = Readout([FeatureSpec(LAYER, unit, "center")] * len(images), setup.shapes)
        ref = attribute(lm, images, probe, [ATTR])
        assert_reordered(together["activation"][:, k], ref.activation, scale=terms)
        e = ref.energies[ATTR]
        assert_reordered(together[f"{ATTR}/e_plus"][:, k], e.e_plus, scale=terms)
        assert_reordered(together[f"{ATTR}/e_minus"][:, k], e.e_minus, scale=terms)


def test_without_vectors_and_with_an_undecodable_file(tmp_path: Path, capsys):
    folder = write_images(tmp_path / "images", n=5)
    (folder / "c0" / "broken.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("not an image")
    setup, _ = setup_for(UNITS[:2], open_source(folder, (32, 32)))
    shards = tmp_path / "pass" / "shards-x"
    res = run_pass(setup, PassOptions(shard_size=3, vectors=False), shards, who="census")
    stored = load_pass(shards)
    assert f"{ATTR}/vector" not in stored and stored["activation"].shape == (5, 2)
    assert res["n_files"] == 6 and res["n_failed"] == 1 and res["failed_files"] == ["c0/broken.png"]
    listing = tmp_path / "pass" / "failed.json"
    assert f"census: skipped 1 of 6 images that did not decode; listed in {listing}" in (
        capsys.readouterr().out
    )


def test_the_image_source_kinds(tmp_path: Path) -> None:
    folder = write_images(tmp_path / "images", n=4, size=40)
    src = open_source(folder, (32, 32), limit=3)
    assert len(src) == 3 and src.name(0) == "c0/000.png" and src.label(0) == "c0"
    torch.testing.assert_close(src.load(0), load_image(folder / "c0" / "000.png", (32, 32)))
    assert ".png" in IMAGE_SUFFIXES and ".ppm" in IMAGE_SUFFIXES
    data = [(torch.rand(3, 32, 32), 1), (torch.rand(3, 32, 32), 0)]
    ds = open_source(data, (32, 32))
    assert len(ds) == 2 and ds.name(1) == "list[1]" and ds.load(0).shape == (3, 32, 32)
    assert "curves" in SOURCES
    request = SourceRequest((48, 48), tmp_path / "curves", n=16, seed=3)
    curves = open_source("curves", (48, 48), request=request)
    assert len(curves) == 16 and curves.load(0).shape == (3, 48, 48)
    assert curves.name(0).startswith("ori_")
    with pytest.raises(MTIConfigError, match="does not exist"):
        open_source(tmp_path / "nowhere", (32, 32))
