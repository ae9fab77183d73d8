"""The spatial view of token layers: which tokens form the grid, where each grid cell sits in
the input, positions on the grid, and attribution on the grid against captum's on the tokens."""

from __future__ import annotations

import pytest
import timm
import torch
from tiny_transformers import tiny
from tolerances import NETWORK, assert_reordered
from torch import nn

from mti_lightning.core.attribution import attribute
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.features import build_readout, parse_feature
from mti_lightning.core.inversion import inversion_targets
from mti_lightning.core.models import LoadedModel, load_model
from mti_lightning.core.probes import capture
from mti_lightning.core.token_grid import layer_views


def _views(lm: LoadedModel, *layers: str) -> dict:
    return layer_views(lm.model, lm.input_size, layers)


def test_views_name_the_non_patch_tokens_and_take_the_grid_from_the_model(vit) -> None:
    v = _views(vit, "blocks.2:in", "blocks.2.mlp.fc1", "patch_embed", "fc_norm")
    assert (v["blocks.2:in"].layout, v["blocks.2:in"].grid) == ("tokens", (10, 10))
    assert v["blocks.2:in"].prefix == ("cls",) and v["blocks.2.mlp.fc1"].grid_shape == (192, 10, 10)
    # a dynamic-size ViT's patch embedding is channels-last (B, H, W, C)
    assert (v["patch_embed"].layout, v["patch_embed"].grid) == ("channels_last", (10, 10))
    assert v["fc_norm"].grid is None and v["fc_norm"].layout == "vector"
    assert _views(tiny("deit"), "blocks.1")["blocks.1"].prefix == ("cls", "dist")
    reg = _views(tiny("reg"), "blocks.1")["blocks.1"]
    assert reg.prefix == ("cls", "reg0", "reg1", "reg2", "reg3") and reg.grid == (2, 2)
    # LeViT: one grid per stage; a stage's downsampling reads the grid of the stage before
    lv = _views(
        tiny("levit"), "stages.0.blocks.0", "stages.1.blocks.0.mlp.ln1", "stages.1.downsample:in"
    )
    assert [lv[k].grid for k in lv] == [(4, 4), (2, 2), (4, 4)] and not lv[
        "stages.0.blocks.0"
    ].prefix
    sw = _views(tiny("swin"), "layers.2.blocks.1", "layers.2.blocks.1.mlp.fc1", "patch_embed.proj")
    assert (sw["layers.2.blocks.1"].layout, sw["layers.2.blocks.1"].grid_shape) == (
        "channels_last",
        (64, 2, 2),
    )
    assert sw["layers.2.blocks.1.mlp.fc1"].grid_shape == (256, 2, 2)
    assert sw["patch_embed.proj"].layout == "map"  # the stem convolution's (C, H, W) output


def test_layers_that_form_no_grid_say_why_in_one_line() -> None:
    # Swin's window attention runs one row per window; a stage 1 of 4x4 holds four 2x2 windows
    swin = tiny("swin")
    with pytest.raises(MTIConfigError) as info:
        qkv = parse_feature("layers.1.blocks.0.attn.qkv:0@0")
        build_readout(swin.model, swin.input_size, [qkv])
    assert "4 rows per image (attention windows" in str(info.value)
    assert "\n" not in str(info.value)
    # a hand-written token model declares no grid: center is refused, cls and indices read
    tokens = nn.Sequential(nn.Flatten(2), nn.Identity(), nn.Linear(16, 5))
    lm = load_model(tokens, input_size=(3, 4, 4))
    with pytest.raises(MTIConfigError, match="form no patch grid \\(the model declares no"):
        build_readout(lm.model, lm.input_size, [parse_feature("2:1@center")])
    build_readout(lm.model, lm.input_size, [parse_feature("2:1@cls"), parse_feature("2:1@2")])


def test_mobilevit_convolutions_are_maps_and_its_unfolded_patches_form_no_grid() -> None:
    torch.manual_seed(0)
    m = timm.create_model("mobilevit_xxs", pretrained=False).eval()
    lm = load_model(m, input_size=(3, 64, 64))
    v = _views(lm, "stages.3.1", "stages.3.1.conv_kxk", "stages.3.1.transformer.0")
    assert v["stages.3.1"].layout == "map" and v["stages.3.1"].grid == (4, 4)
    assert v["stages.3.1.conv_kxk"].layout == "map"
    assert v["stages.3.1.transformer.0"].layout == "batched"  # (B * 4 patch pixels, N, C)
    build_readout(lm.model, lm.input_size, [parse_feature("stages.3.1:3@center")])


@pytest.mark.parametrize(
    ("model", "layer", "patch"),
    [("vit", "blocks.0.norm1:in", 16), ("swin", "layers.0.blocks.0.norm1:in", 4)],
)
def test_a_grid_cell_reads_its_own_patch_of_the_input(vit, model, layer, patch) -> None:
    """Before any attention, token (h, w) of the grid depends only on input patch (h, w)."""
    lm = vit if model == "vit" else tiny(model)
    readout = build_readout(lm.model, lm.input_size, [parse_feature(f"{layer}:3@(1,2)")])
    x = torch.rand(1, *lm.input_size, requires_grad=True)
    value = readout(capture(lm.model, lm.normalize(x), readout.layers), 1)
    (grad,) = torch.autograd.grad(value.sum(), x)
    where = grad.abs().sum((0, 1)) > 0
    inside = torch.zeros_like(where)
    inside[patch : 2 * patch, 2 * patch : 3 * patch] = True
    assert where[inside].all() and not where[~inside].any()


def test_center_on_a_swin_stage_reads_the_centre_token() -> None:
    swin = tiny("swin")
    specs = [
        parse_feature("layers.2.blocks.1.mlp.fc1:5@center"),
        parse_feature("layers.2.blocks.1:7@center"),
        parse_feature("layers.2.blocks.1:7@(0,1)"),
    ]
    readout = build_readout(swin.model, swin.input_size, specs)
    x = swin.normalize(torch.rand(3, *swin.input_size))
    acts = capture(swin.model, x, readout.layers)
    values = readout(acts, 1)[:, 0]
    tokens, stage = acts["layers.2.blocks.1.mlp.fc1"], acts["layers.2.blocks.1"]
    assert tokens.shape == (3, 4, 256) and stage.shape == (3, 2, 2, 64)
    expected = torch.stack([tokens[0, 1 * 2 + 1, 5], stage[1, 1, 1, 7], stage[2, 0, 1, 7]])
    torch.testing.assert_close(values, expected)


def test_grid_and_token_tensor_round_trip(vit) -> None:
    view = _views(vit, "blocks.1")["blocks.1"]
    value = torch.randn(2, 101, 64)
    grid = view.to_grid(value)
    assert grid.shape == (2, 64, 10, 10)
    torch.testing.assert_close(grid[:, :, 3, 7], value[:, 1 + 3 * 10 + 7])
    torch.testing.assert_close(view.prefix_part(value), value[:, :1])
    back = view.from_grid(grid[1])
    torch.testing.assert_close(back[1:], value[1, 1:])
    assert not back[0].any()


def test_attribution_on_the_grid_equals_captums_on_the_token_tensor() -> None:
    captum_attr = pytest.importorskip("captum.attr")
    lm = tiny("deit")
    readout = build_readout(lm.model, lm.input_size, [parse_feature("blocks.1.mlp.fc1:3@center")])
    x = torch.rand(1, *lm.input_size)
    ours = attribute(lm, x, readout, ["blocks.1:in"]).maps["blocks.1:in"]
    view = _views(lm, "blocks.1:in")["blocks.1:in"]

    def feature(inp: torch.Tensor) -> torch.Tensor:
        return readout(capture(lm.model, inp, readout.layers), 1)[:, 0]

    block = lm.model.blocks[1]
    method = captum_attr.LayerGradientXActivation(feature, block, multiply_by_inputs=True)
    theirs = method.attribute(lm.normalize(x), attribute_to_layer_input=True)
    theirs = theirs[0] if isinstance(theirs, tuple) else theirs
    assert theirs.shape == (1, 6, 32)
    # captum's backward and ours: the same maths through the network in another order
    assert_reordered(
        view.to_grid(ours), view.to_grid(theirs), tol=NETWORK, scale=float(theirs.abs().max())
    )
    assert_reordered(
        view.prefix_part(ours), theirs[:, :2], tol=NETWORK, scale=float(theirs.abs().max())
    )


def test_inversion_targets_are_the_patch_grid_with_the_class_tokens_share_beside(vit) -> None:
    readout = build_readout(vit.model, vit.input_size, [parse_feature("blocks.3:2@cls")])
    x = torch.rand(1, *vit.input_size)
    t = inversion_targets(vit, x, readout, "blocks.3:in", match="relu_attribution")
    found = attribute(vit, x, readout, ["blocks.3:in"])
    raw = found.maps["blocks.3:in"]
    assert t.targets.shape == (2, 64, 10, 10) and (t.targets >= 0).all()
    torch.testing.assert_close(t.targets[0] - t.targets[1], t.view.to_grid(raw)[0])
    signed = inversion_targets(vit, x, readout, "blocks.3:in").targets  # the default
    sign = t.view.to_grid(found.layer_acts["blocks.3:in"]).sign()[0]
    torch.testing.assert_close(signed[0] - signed[1], sign * t.view.to_grid(raw)[0])
    cls = raw[0, 0]
    torch.testing.assert_close(t.aside["prefix_e_plus"], cls.clamp_min(0).sum().view(1))
    torch.testing.assert_close(t.aside["prefix_e_minus"], (-cls).clamp_min(0).sum().view(1))
    assert t.aside["prefix_e_plus"] > 0  # a class-token feature: its own token carries a share
    head = build_readout(vit.model, vit.input_size, [parse_feature("head:1")])
    with pytest.raises(MTIConfigError, match="'fc_norm' .* has no spatial map to invert: it is a"):
        inversion_targets(vit, x, head, "fc_norm")
