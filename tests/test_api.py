"""The Python API (``import mti_lightning as mti``): any model (timm, torchvision:NAME, a
hand-written nn.Module with functional in-place ops, CurveNet) through search, invert and
attribute; its results; its bad arguments; and the same images as the ``mti`` command."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest
import torch
import torch.nn.functional as F
from tolerances import NETWORK, assert_reordered
from torch import nn

import mti_lightning as mti
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.io import load_tensors
from mti_lightning.journeys.search.result import SearchResult

TINY = {
    "steps": 2,
    "draws": 1,
    "logger": None,
    "search.inversions.steps": 1,
    "search.inversions.draws": 1,
    "checkpoint.every_n_steps": 0,
}


class InplaceNet(nn.Module):
    """A hand-written network in the style of many research codes: functional in-place ReLUs
    and an in-place residual sum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 6, 3, stride=2, padding=1)
        self.head = nn.Linear(6, 4)
        gen = torch.Generator().manual_seed(0)
        for bn in (self.bn1, self.bn2):  # non-trivial running statistics
            bn.running_mean.copy_(torch.randn(8, generator=gen) * 0.1)
            bn.running_var.copy_(torch.rand(8, generator=gen) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv1(x))
        x = F.relu(x, inplace=True)
        y = self.bn2(self.conv2(x))
        y += x  # in place, on the captured pre-activation's successor
        y = F.relu(y, inplace=True)
        z = self.conv3(y)
        return self.head(z.mean((2, 3)))


def _reference(net: InplaceNet, images: torch.Tensor, channel: int) -> dict[str, torch.Tensor]:
    """Attribution of conv3's centre unit at bn1 (output) and conv3's input, by hand, with no
    in-place op anywhere."""
    net.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (images - mean) / std
    a = net.bn1(net.conv1(x))
    h = F.relu(a)
    y = F.relu(net.bn2(net.conv2(h)) + h)
    z = net.conv3(y)
    value = z[:, channel, z.shape[2] // 2, z.shape[3] // 2]
    ga, gy = torch.autograd.grad(value.sum(), [a, y])
    return {"bn1": a * ga, "conv3:in": y * gy, "activation": value}


def test_attribution_with_functional_inplace_ops_equals_a_clone_safe_reference():
    net = InplaceNet()
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    ref = _reference(net, images, 2)
    got = mti.attribute(net, images, "conv3:2@center", ["bn1", "conv3:in"], input_size=(3, 16, 16))
    assert_reordered(got.activation, ref["activation"], tol=NETWORK)
    for layer in ("bn1", "conv3:in"):
        assert_reordered(got.maps[layer], ref[layer], tol=NETWORK)
        assert got.maps[layer].abs().sum() > 0


class WritesIntoItsInput(nn.Module):
    """After calling ``act``, the caller writes into the tensor it gave it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.out = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        y = self.act(h)
        h += y
        return self.out(h)


def test_a_module_input_written_after_the_call_is_an_error_not_a_wrong_value():
    with pytest.raises(MTIConfigError, match=re.escape("['act:in']: the model writes into")):
        mti.attribute(
            WritesIntoItsInput(), torch.rand(1, 3, 8, 8), "out:0@center", "act:in", (3, 8, 8)
        )


MODELS = {
    "timm": ("resnet18", "layer2.0.conv1:3@center", {"input_size": [3, 32, 32]}),
    "torchvision": ("torchvision:resnet18", "layer2.0.conv1:3@center", {"input_size": [3, 32, 32]}),
    "module": (InplaceNet, "conv3:2@center", {"input_size": [3, 16, 16]}),
    "curvenet": ("curvenet", "bn2:19@center", {}),
}


@pytest.mark.parametrize("which", list(MODELS))
def test_search_invert_attribute_on_any_model(which, tmp_path):
    model, target, extra = MODELS[which]
    model = model() if isinstance(model, type) else model
    result = mti.search(model, target, run_dir=tmp_path / "search", **TINY, **extra)
    assert isinstance(result, SearchResult) and result.features == [target]
    size = result.images.shape[-2:]
    assert result.inversions is not None and result.inversions["plus"].shape[-2:] == size
    row = result.rows[0]
    assert row["end_e_plus"] > 0 and row["end_e_minus"] > 0
    assert result.record["steps_run"] == 2 and result.record["attribution_layer"]
    if which == "curvenet":
        assert result.record["attribution_layer"] == "pool1"
    inverted = mti.invert(
        model, result.images[0], target, run_dir=tmp_path / "inv", **TINY, **extra
    )
    assert inverted.features == [f"{target} (+)", f"{target} (-)"]
    assert inverted.images.shape == (2, 3, *size)
    size_kw = {"input_size": extra["input_size"]} if "input_size" in extra else {}
    torch.manual_seed(0)  # a random-init model by name: the same weights as the search's
    attr = mti.attribute(model, result.images, target, "auto", **size_kw)
    layer = result.record["attribution_layer"]
    assert list(attr.maps) == [layer]
    torch.testing.assert_close(
        attr.energies[layer].e_plus[0], torch.tensor(row["end_e_plus"]), rtol=0.05, atol=1e-3
    )


def test_search_result_saves_shows_and_tabulates(tmp_path):
    result = mti.search(
        "curvenet",
        ["bn2:19@center", "bn2:5@center"],
        canvas=[40, 40],
        run_dir=tmp_path / "a",
        **TINY,
    )
    assert result.run_dir == tmp_path / "a"
    for name in (
        "config.yaml",
        "metrics.json",
        "summary.png",
        "summary.txt",
        "tensors.safetensors",
    ):
        assert (tmp_path / "a" / name).is_file(), name
    record = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert record["images"] == result.rows and len(result.rows) == 2
    png = result._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png == (tmp_path / "a" / "summary.png").read_bytes()
    assert "<img" in result._repr_html_() and "bn2:5@center" in result._repr_html_()
    result.save(tmp_path / "b")
    again = load_tensors(tmp_path / "b" / "tensors.safetensors")
    assert torch.equal(again["images"], result.images) and torch.equal(
        again["plus"], result.inversions["plus"]
    )
    assert sorted(p.name for p in (tmp_path / "b").rglob("*.png")) == sorted(
        p.name for p in (tmp_path / "a").rglob("*.png") if "snapshots" not in p.parts
    )
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install pandas"):
            result.to_pandas()
    else:
        assert result.to_pandas().to_dict("records") == result.rows


def test_visualize_and_accentuate(tmp_path):
    up = mti.visualize("curvenet", "bn2:19@center", canvas=[40, 40], run_dir=tmp_path / "v", **TINY)
    assert up.record["kind"] == "visualize" and up.inversions is None
    assert up.rows[0]["end_activation"] > up.rows[0]["start_activation"]  # raised
    down = mti.visualize(
        "curvenet", "bn2:19@center", negative=True, canvas=[40, 40], run_dir=tmp_path / "n", **TINY
    )
    assert down.record["kind"] == "visualize_neg"
    assert down.rows[0]["end_activation"] < down.rows[0]["start_activation"]  # lowered
    acc = mti.accentuate(
        "curvenet", up.images[0], "bn2:19@center", canvas=[40, 40], run_dir=tmp_path / "a", **TINY
    )
    assert acc.record["kind"] == "accentuate" and acc.images.shape == (1, 3, 40, 40)


BAD = [
    (lambda: mti.load_model(InplaceNet()), "input_size is required for an nn.Module (InplaceNet)"),
    (
        lambda: mti.load_model("torchvision:resnet_18"),
        "unknown torchvision model 'torchvision:resnet_18'",
    ),
    (lambda: mti.load_model("torchvision:resnet_18"), "'resnet18'"),
    (lambda: mti.load_model("resnt18"), "unknown model 'resnt18'"),
    (lambda: mti.search("curvenet", "layer9.conv:1", **TINY), "unknown layer 'layer9.conv'"),
    (lambda: mti.attribute("curvenet", torch.rand(1, 3, 64, 64), "nope:1"), "unknown layer 'nope'"),
    (lambda: mti.search("curvenet", "bn2:19", lrr=0.1), "unknown option 'lrr'"),
    (lambda: mti.search("curvenet", "bn2:19", scale=0.5), "option 'scale' is ambiguous"),
    (lambda: mti.search("curvenet", "bn2:19", lr=float("nan")), "search.lr=nan"),
    (lambda: mti.search("curvenet", "bn2:19", callbacks=1), "callbacks is a group of keys"),
    (lambda: mti.search("curvenet", "bn2:19", kind="dream"), "kind 'dream'"),
    (
        lambda: mti.search("curvenet", "bn2:19", attribution_layer="bn3", **TINY),
        "search.attribution_layer='bn3'",
    ),
]


@pytest.mark.parametrize("call,message", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_arguments_are_one_clear_error(call, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MTIConfigError, match=re.escape(message)):
        call()
    assert not (tmp_path / "outputs").exists()  # nothing written before the error


def test_unreachable_pretrained_weights_are_a_clear_error_and_local_weights_load(
    tmp_path, monkeypatch
):
    """No network, on purpose (an empty weights cache and a proxy that refuses every
    connection): the error says so and how to load local weights; those local weights load
    with the model's normalisation."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    # urlopen's shared opener is built with the proxies of its first call: leave none behind
    monkeypatch.setattr(urllib.request, "_opener", None)
    with pytest.raises(MTIConfigError) as err:
        mti.load_model("torchvision:squeezenet1_1", pretrained=True)
    assert "could not fetch pretrained weights for torchvision:squeezenet1_1" in str(err.value)
    assert "checkpoint=PATH" in str(err.value)
    torch.manual_seed(3)
    local = torchvision.models.squeezenet1_1()
    torch.save(local.state_dict(), tmp_path / "w.pt")
    lm = mti.load_model("torchvision:squeezenet1_1", checkpoint=tmp_path / "w.pt")
    assert lm.trained and lm.input_size == (3, 224, 224) and lm.std == (0.229, 0.224, 0.225)
    first = next(iter(local.state_dict()))
    assert torch.equal(lm.model.state_dict()[first], local.state_dict()[first])


def test_load_model_normalisation_and_freezing():
    net = InplaceNet()
    lm = mti.load_model(net, input_size=(3, 16, 16))
    assert lm.mean == (0.485, 0.456, 0.406) and lm.source == "module:InplaceNet"
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    custom = mti.load_model("torchvision:alexnet", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert custom.mean == (0.5, 0.5, 0.5) and custom.input_size == (3, 224, 224)
    with pytest.raises(MTIConfigError, match="one value per input channel"):
        mti.load_model(net, input_size=(3, 16, 16), mean=(0.5,))


def test_compare_wraps_the_comparison(tmp_path):
    from mti_lightning.face.results import CompareResult

    result = mti.compare(
        ["curvenet"],
        layers="bn2",
        units=[19, 5],
        n_images=8,
        search_units=0,
        logger="csv",
        run_dir=tmp_path / "c",
    )
    assert isinstance(result, CompareResult) and result.run_dir == tmp_path / "c"
    rows = list(result)  # the rows, as the call returned them before it had a result object
    assert rows == result.rows and len(result) == 2 and result[0] == rows[0]
    assert sorted(r["unit"] for r in rows) == [5, 19] and {r["model"] for r in rows} == {"curvenet"}
    assert (tmp_path / "c" / "config.yaml").is_file()
    assert result._repr_png_() == (tmp_path / "c" / "compare_report.png").read_bytes()
    assert "curvenet" in result._repr_html_() and "<img" in result._repr_html_()


def test_checkpoint_is_the_models_weights_or_the_checkpoint_group():
    """``checkpoint=PATH`` means the model's weights (as in ``load_model``); a dict sets the
    search's own checkpoint group."""
    from mti_lightning.core.config_schema import CheckpointSchema
    from mti_lightning.face.api_config import build_config

    cfg, _ = build_config(["search=mti"], "resnet18", {"checkpoint": "w.safetensors"})
    assert cfg.model.checkpoint == "w.safetensors"
    assert isinstance(cfg.checkpoint, CheckpointSchema)
    cfg, _ = build_config(["search=mti"], "resnet18", {"checkpoint": {"every_n_steps": 5}})
    assert cfg.checkpoint.every_n_steps == 5 and cfg.model.checkpoint is None


def test_one_resolver_for_every_call_takes_each_calls_own_keys_first():
    """A bare option is the call's own group's key (``lr`` is ``search.lr`` in a search,
    ``train.lr`` in a training; ``train`` is ``compare.train`` in a comparison), then a
    top-level key, Lightning's, or the one shared group that holds it."""
    from mti_lightning.face.api_config import build_config

    cfg, _ = build_config(["experiment=train"], "resnet10t", {"lr": 0.01, "epochs": 2}, "train")
    assert cfg.train.lr == 0.01 and cfg.train.epochs == 2
    assert cfg.search.lr == 0.05  # the schema's default, untouched
    cfg, _ = build_config(["search=mti"], "curvenet", {"lr": 0.2, "devices": 2}, "search")
    assert cfg.search.lr == 0.2 and cfg.trainer.devices == 2
    cfg, _ = build_config(
        ["experiment=compare"], None, {"train": False, "steps": 7, "units": "all"}, "compare"
    )
    assert cfg.compare.train is False and cfg.compare.units == "all"
    assert cfg.search.steps == 7 and cfg.train is None
    cfg, _ = build_config(["experiment=atlas"], "curvenet", {"grid": 4, "seed": 5}, "atlas")
    assert cfg.atlas.grid == 4 and cfg.atlas.seed == 5
    with pytest.raises(MTIConfigError, match="train.epochs=0.5; must be an integer"):
        build_config(["experiment=train"], "resnet10t", {"epochs": 0.5}, "train")
    with pytest.raises(MTIConfigError, match="trainer.devices=0; valid"):
        build_config(["search=mti"], "curvenet", {"devices": 0}, "search")


def test_the_model_group_is_found_in_this_editable_install():
    """``conf/`` sits at the repository root and installs as ``mti_lightning.conf``; the
    model group is found through that package (the wheel's layout: tests/test_packaging.py)."""
    from importlib.resources import files

    from mti_lightning.face.api_config import _model_group

    assert files("mti_lightning.conf").joinpath("model", "vit_tiny.yaml").is_file()
    assert _model_group("vit_tiny") == ["model=vit_tiny"]
    assert _model_group("vit_tiny_patch16_224") == [] and _model_group(None) == []
