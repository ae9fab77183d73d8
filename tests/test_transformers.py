"""Vision transformers in the journeys: a search with its +/- inversions on a ViT, a DeiT
(distillation token), a ViT with register tokens, a Swin and a LeViT; an inversion on a ViT
that matches the +/- parts of its target; an atlas of a ViT over curve images, with icons."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from tiny_transformers import tiny
from tolerances import NETWORK, assert_reordered

import mti_lightning as mti
from mti_lightning.core.features import build_readout, parse_feature
from mti_lightning.core.inversion import inversion_targets
from mti_lightning.core.io import load_tensors
from mti_lightning.core.parameterizations import make_parameterization
from mti_lightning.core.probes import capture
from mti_lightning.core.token_grid import spatial_view

TINY = {
    "steps": 2,
    "draws": 1,
    "logger": None,
    "search.inversions.steps": 2,
    "search.inversions.draws": 1,
    "checkpoint.every_n_steps": 0,
}


@pytest.mark.parametrize(
    ("model", "target", "layer", "prefix"),
    [
        ("vit", "blocks.3.mlp.fc1:3@center", "blocks.3:in", 1),
        ("deit", "blocks.1.mlp.fc1:3@center", "blocks.1:in", 2),
        ("reg", "blocks.1:3@cls", "blocks.1:in", 5),
        ("swin", "layers.2.blocks.1.mlp.fc1:5@center", "layers.2.blocks.1:in", 0),
        ("levit", "stages.1.blocks.0.mlp.ln1:3@(1,0)", "stages.1.blocks.0:in", 0),
    ],
)
def test_search_with_inversions_completes_on_transformers(tmp_path, model, target, layer, prefix):
    lm = mti.load_model("test_vit", input_size=(3, 64, 64)) if model == "vit" else tiny(model)
    result = mti.search(lm, target, run_dir=tmp_path, **TINY)
    assert result.record["attribution_layer"] == layer
    inv = result.inversions
    assert inv["plus"].shape == inv["minus"].shape == result.images.shape
    assert not torch.equal(inv["plus"], inv["minus"])
    row = result.rows[0]
    assert row["end_e_plus"] > 0 and row["end_e_minus"] > 0
    assert result.alpha is not None and result.alpha.amax() > 0  # the transparency map
    # the non-patch tokens' own attribution is reported beside the grid's
    assert ("inversion_prefix_e_plus" in row) == (prefix > 0)
    if prefix:
        assert row["inversion_grid_e_plus"] > 0 and row["inversion_prefix_e_plus"] >= 0


def _match(lm, layer: str, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cosine of each image's patch grid at ``layer`` with its target."""
    with torch.no_grad():
        act = capture(lm.model, lm.normalize(images), [layer])[layer]
    grid = spatial_view(lm.model, lm.input_size, layer, act.shape[1:]).to_grid(act)
    return F.cosine_similarity(grid.flatten(1), targets.flatten(1), dim=1)


def test_invert_on_a_vit_matches_the_positive_and_negative_parts(tmp_path) -> None:
    lm = mti.load_model("test_vit", input_size=(3, 64, 64))
    target, layer = "blocks.3:2@cls", "blocks.3:in"
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    options = {**TINY, "steps": 60, "lr": 0.1}
    result = mti.invert(lm, image, target, layer=layer, run_dir=tmp_path, **options)
    assert result.images.shape == (2, 3, 64, 64)
    readout = build_readout(lm.model, lm.input_size, [parse_feature(target)])
    t = inversion_targets(lm, image, readout, layer)  # rows: a where A > 0, a where A < 0
    noise = make_parameterization("fourier", 2, (64, 64), seed=0)().detach()
    before = _match(lm, layer, noise, t.targets)
    after = _match(lm, layer, result.images, t.targets)
    assert (after > before + 0.1).all(), (before, after)


def test_atlas_of_a_vit_over_curves_has_icons(tmp_path) -> None:
    result = mti.atlas(
        "test_vit", "blocks.3.mlp.fc1:3@center", data="curves", run_dir=tmp_path, logger=None,
        input_size=[3, 64, 64], curves_n=24, grid=3, min_images=1, icon_steps=3, icon_draws=1,
        icon_canvas=32, atlas_size=96, top_activation=8, bottom_activation=8, top_l1=8,
        top_e_minus=8, umap_n_neighbors=5, batch_size=8, viewer_thumbnails=2,
    )  # fmt: skip
    icons = result.stages["icons"]
    assert result.stages["dataset_pass"]["window"] == [0, 4, 0, 4]  # the 4x4 patch grid
    assert icons["n_icons"] >= 2
    assert len(list((tmp_path / "icons" / "png").glob("cell_*.png"))) == icons["n_icons"]
    cells = json.loads((tmp_path / "atlas" / "cells.json").read_text())
    assert len(cells) == icons["n_icons"] and result.atlas_png.is_file()
    rendered = load_tensors(tmp_path / "icons" / "icons.safetensors")
    assert rendered["images"].shape[0] == icons["n_icons"]
    assert (rendered["alpha"].flatten(1).amax(1) > 0).all()  # transparency from pixel gradients


def test_a_census_reads_a_swin_stage_by_its_channels_at_the_grid_centre(tmp_path) -> None:
    """A Swin stage is channels-last (H, W, C): the census counts its C channels and reads each
    unit at the centre of the grid, as the feature spec ``LAYER:UNIT@center`` does."""
    from mti_lightning.core.io import read_image
    from mti_lightning.world.curve_dataset import write_image_folder

    lm = tiny("swin")
    folder = write_image_folder(tmp_path / "curves", 3, 3, None, 0.3)
    result = mti.census(
        lm,
        ["layers.2"],
        str(folder),
        run_dir=tmp_path / "run",
        units="all",
        logger=None,
        search=False,
        site=False,
        top_k=1,
    )
    with torch.no_grad():
        value = capture(lm.model, torch.zeros(1, *lm.input_size), ["layers.2"])["layers.2"]
    channels = value.shape[-1]
    assert len(result.rows) == channels
    data = load_tensors(tmp_path / "run" / "census" / "data" / "layers.2.safetensors")
    files = sorted(p for p in folder.rglob("*.png"))
    images = torch.stack([read_image(p, tuple(lm.input_size[1:])) for p in files])
    with torch.no_grad():
        grid = capture(lm.model, lm.normalize(images), ["layers.2"])["layers.2"]
    h, w = grid.shape[1:3]
    want = grid[:, h // 2, w // 2, :][:, data["units"]]
    assert_reordered(data["activation"], want, tol=NETWORK)  # the pass batches the data


def test_a_circuit_on_a_swin_block_reads_its_channels_last_stage(tmp_path) -> None:
    """The circuit of a Swin unit at a channels-last stage has one row per channel C (not per
    grid row) and ablates channels along the last dimension."""
    from mti_lightning.world.curve_dataset import write_image_folder

    lm = tiny("swin")
    folder = write_image_folder(tmp_path / "curves", 4, 3, None, 0.3)
    result = mti.circuit(
        lm,
        "layers.2.blocks.1.mlp.fc1:5@center",
        data=str(folder),
        k=2,
        run_dir=tmp_path / "c",
        logger=None,
        echo=False,
        control_seeds=1,
        viz_steps=1,
        viz_draws=1,
    )
    with torch.no_grad():
        value = capture(lm.model, torch.zeros(1, *lm.input_size), [result.record["layer"]])
    assert len(result.rows) == next(iter(value.values())).shape[-1]
    assert len(result.record["inhibitory"]) == 2 and result.figure.is_file()
