"""Feature specs: parsing, validation with errors that name the valid range, batched readout."""

from __future__ import annotations

import pytest
import torch
from tolerances import assert_reordered

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.features import (
    FeatureSpec,
    Readout,
    build_readout,
    parse_feature,
    parse_position,
    readout_weight,
)
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.probes import LayerRef, capture


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("layer3.1.bn1:17@center", FeatureSpec("layer3.1.bn1", 17, "center")),
        ("blocks.6:3@cls", FeatureSpec("blocks.6", 3, "cls")),
        ("layer4.0.act1:in:5@(3,4)", FeatureSpec("layer4.0.act1:in", 5, (3, 4))),
        ("layer4.0.act1:in:5@( 3 , 4 )", FeatureSpec("layer4.0.act1:in", 5, (3, 4))),
        ("x:2@mean", FeatureSpec("x", 2, "mean")),
        ("blocks.2:7@12", FeatureSpec("blocks.2", 7, 12)),
        ("layer1.0.conv1:3", FeatureSpec("layer1.0.conv1", 3, "center")),
        ("layer1.0.conv1:3@centre", FeatureSpec("layer1.0.conv1", 3, "center")),
        ("layer1.0.conv1:3@", FeatureSpec("layer1.0.conv1", 3, "center")),
    ],
)
def test_parse_feature(text: str, expected: FeatureSpec) -> None:
    spec = parse_feature(text)
    assert spec == expected
    assert parse_feature(str(spec)) == spec


def test_parsed_input_port() -> None:
    assert parse_feature("layer4.0.act1:in:5@(3,4)").ref == LayerRef("layer4.0.act1", "in")
    assert parse_feature("layer3.1.bn1:17@center").ref == LayerRef("layer3.1.bn1", "out")


def test_parse_position() -> None:
    assert parse_position("(1, 2)") == (1, 2)
    assert parse_position("1,2") == (1, 2)
    assert parse_position([3, 4]) == (3, 4)
    assert parse_position(5) == 5
    assert parse_position("7") == 7
    assert parse_position("cls") == "cls"
    with pytest.raises(MTIConfigError, match="must be"):
        parse_position((1, 2, 3))


@pytest.mark.parametrize(
    "text",
    [
        "layer1",
        "layer1:",
        ":3",
        "layer1:abc",
        "layer1:-1",
        "layer1:3.5",
        "layer1:3@middle",
        "layer1:3@(1,2,3)",
    ],
)
def test_malformed_feature_strings(text: str) -> None:
    with pytest.raises(MTIConfigError, match="bad"):
        parse_feature(text)


def test_non_string_feature_is_error() -> None:
    with pytest.raises(MTIConfigError, match="LAYER:CHANNEL@POSITION"):
        parse_feature(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("layer3.1.bn1:999@center", "valid 0..255"),
        ("layer3.1.bn1:3@(4,0)", "valid (0..3, 0..3)"),
        ("layer3.1.bn1:3@(0,-1)", "valid (0..3, 0..3)"),
        ("fc:in:512", "valid 0..511"),
        ("layer1.0.conv1:0@cls", "is for tokens"),
        ("layer1.0.conv1:0@5", "is for tokens"),
    ],
)
def test_range_errors_name_the_valid_range(resnet: LoadedModel, text: str, needle: str) -> None:
    with pytest.raises(MTIConfigError) as info:
        build_readout(resnet.model, resnet.input_size, [parse_feature(text)])
    assert needle in str(info.value)
    assert parse_feature(text).layer in str(info.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("blocks.1:0@101", "valid 0..100"),
        ("blocks.1:64@cls", "valid 0..63"),
        ("blocks.1:0@(10,2)", "out of range for layer blocks.1 with a 10x10 patch grid"),
        ("blocks.1:0@(1,-1)", "valid (0..9, 0..9)"),
    ],
)
def test_token_errors(vit: LoadedModel, text: str, needle: str) -> None:
    with pytest.raises(MTIConfigError) as info:
        build_readout(vit.model, vit.input_size, [parse_feature(text)])
    assert needle in str(info.value)


def test_build_readout_rejects_unknown_layer_and_empty(resnet: LoadedModel) -> None:
    with pytest.raises(MTIConfigError, match="layer3.1.bn1"):
        build_readout(resnet.model, resnet.input_size, [parse_feature("layer3.1.bnn1:0")])
    with pytest.raises(MTIConfigError, match="no feature"):
        build_readout(resnet.model, resnet.input_size, [])


def test_direction_length_must_match() -> None:
    spec = FeatureSpec("x", None, "center", direction=(1.0, 2.0))
    with pytest.raises(MTIConfigError, match="2 entries; the layer has 3 channels"):
        readout_weight(spec, (3, 4, 4))


def test_readout_weights() -> None:
    w = readout_weight(FeatureSpec("x", 1, "center"), (3, 4, 6))
    assert w.sum() == 1 and w[1, 2, 3] == 1
    w = readout_weight(FeatureSpec("x", 2, "mean"), (3, 4, 6))
    assert torch.allclose(w[2], torch.full((4, 6), 1 / 24)) and w[:2].abs().sum() == 0
    w = readout_weight(FeatureSpec("x", 0, "cls"), (5, 3))
    assert w[0, 0] == 1 and w.sum() == 1
    w = readout_weight(FeatureSpec("x", None, (1, 1), direction=(0.5, -2.0)), (2, 3, 3))
    assert w[:, 1, 1].tolist() == [0.5, -2.0] and w.abs().sum() == 2.5


def _by_hand(acts: torch.Tensor, spec: FeatureSpec) -> torch.Tensor:
    """Read ``spec`` off a single input's layer value, without the readout machinery."""
    v = acts
    if v.dim() == 3:
        c = (
            torch.tensor(spec.direction)
            if spec.direction is not None
            else torch.eye(v.shape[0])[spec.channel]
        )
        if spec.position == "mean":
            col = v.mean((1, 2))
        else:
            h, w = (
                (v.shape[1] // 2, v.shape[2] // 2) if spec.position == "center" else spec.position
            )
            col = v[:, h, w]
        return (c * col).sum()
    if v.dim() == 2:
        c = (
            torch.tensor(spec.direction)
            if spec.direction is not None
            else torch.eye(v.shape[1])[spec.channel]
        )
        row = (
            v.mean(0)
            if spec.position == "mean"
            else v[0 if spec.position == "cls" else spec.position]
        )
        return (c * row).sum()
    return v[spec.channel] if spec.direction is None else (torch.tensor(spec.direction) * v).sum()


def _check_readout(lm: LoadedModel, specs: list[FeatureSpec], x: torch.Tensor, d: int) -> None:
    readout = build_readout(lm.model, lm.input_size, specs)
    acts = capture(lm.model, lm.normalize(x), readout.layers)
    values = readout(acts, d)
    assert values.shape == (len(specs), d)
    for k, spec in enumerate(specs):
        for j in range(d):
            expected = _by_hand(acts[str(spec.ref)][k * d + j], spec)
            assert_reordered(values[k, j], expected, scale=float(acts[str(spec.ref)].abs().max()))


def test_readout_same_layer_different_features(resnet: LoadedModel, images) -> None:
    specs = [
        parse_feature("layer2.0.conv1:3@center"),
        parse_feature("layer2.0.conv1:7@(1,2)"),
        parse_feature("layer2.0.conv1:0@mean"),
    ]
    _check_readout(resnet, specs, images(6), d=2)


def test_readout_different_layers(resnet: LoadedModel, images) -> None:
    specs = [
        parse_feature("layer3.0.bn1:5@mean"),
        parse_feature("layer2.0.conv1:7@(1,2)"),
        parse_feature("layer2.1.act1:in:9@center"),
        parse_feature("fc:in:11"),
        parse_feature("layer2.0.conv1:2@(0,7)"),
    ]
    _check_readout(resnet, specs, images(10), d=2)


def test_readout_direction_features(resnet: LoadedModel, images) -> None:
    gen = torch.Generator().manual_seed(1)
    d128 = tuple(torch.randn(128, generator=gen).tolist())
    d512 = tuple(torch.randn(512, generator=gen).tolist())
    specs = [
        FeatureSpec("layer2.0.conv1", None, "center", direction=d128),
        FeatureSpec("layer2.0.conv1", None, "mean", direction=d128),
        FeatureSpec("fc:in", None, "mean", direction=d512),
    ]
    _check_readout(resnet, specs, images(3), d=1)


def test_readout_tokens(vit: LoadedModel) -> None:
    gen = torch.Generator().manual_seed(2)
    specs = [
        parse_feature("blocks.2:3@cls"),
        parse_feature("blocks.2:5@17"),
        parse_feature("blocks.4:1@mean"),
        FeatureSpec(
            "blocks.4", None, "cls", direction=tuple(torch.randn(64, generator=gen).tolist())
        ),
    ]
    _check_readout(vit, specs, torch.rand(4, *vit.input_size, generator=gen), d=1)


def test_weight_for_is_zero_for_images_on_other_layers() -> None:
    specs = [FeatureSpec("a", 1, "center"), FeatureSpec("b", 0, "cls"), FeatureSpec("a", 0, "mean")]
    readout = Readout(specs, {"a": (2, 3, 3), "b": (4, 2)})
    w = readout.weight_for("a")
    assert w.shape == (3, 2, 3, 3)
    assert w[1].abs().sum() == 0
    assert w[0, 1, 1, 1] == 1 and w[2, 0].sum() == pytest.approx(1.0)
    with pytest.raises(KeyError):
        readout.weight_for("c")
