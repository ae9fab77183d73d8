"""Model loading: timm by name, local checkpoints, built-ins, and the errors of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

import mti_lightning.core.zoo as zoo
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.models import load_model

CURVENET_WEIGHTS = Path(zoo.__file__).parent / "weights" / "curvenet.safetensors"
SMALL = "test_resnet"  # timm's tiny ResNet: checkpoints of a few MB keep these tests fast


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_timm_by_name_config_and_frozen() -> None:
    lm = load_model("resnet18")
    cfg = timm.data.resolve_data_config({}, model=timm.create_model("resnet18"))
    assert lm.input_size == tuple(cfg["input_size"]) == (3, 224, 224)
    assert lm.mean == pytest.approx(cfg["mean"])
    assert lm.std == pytest.approx(cfg["std"])
    assert lm.trained is False
    assert "random-init" in lm.source
    assert not any(m.training for m in lm.model.modules())
    assert not any(p.requires_grad for p in lm.model.parameters())
    assert not any(getattr(m, "inplace", False) is True for m in lm.model.modules())


def test_other_config_is_read_from_timm() -> None:
    lm = load_model("test_vit")
    assert lm.input_size == (3, 160, 160)
    assert lm.mean == pytest.approx((0.5, 0.5, 0.5))


def test_normalize_once_per_device_and_dtype() -> None:
    """Mean/std are built once per device and dtype: a step must not copy them from the
    host each time (a blocking copy on a GPU)."""
    lm = load_model("resnet18")
    x = torch.rand(2, 3, 4, 4)
    mean = torch.tensor(lm.mean).view(1, 3, 1, 1)
    std = torch.tensor(lm.std).view(1, 3, 1, 1)
    torch.testing.assert_close(lm.normalize(x), (x - mean) / std)
    cached = lm._constants[(x.device, x.dtype)]
    torch.testing.assert_close(lm.normalize(x), (x - mean) / std)
    assert lm._constants[(x.device, x.dtype)] is cached and len(lm._constants) == 1
    lm.normalize(x.double())
    assert len(lm._constants) == 2


def test_unknown_name_lists_close_names() -> None:
    with pytest.raises(MTIConfigError, match="unknown model 'resnet181'") as info:
        load_model("resnet181")
    assert "resnet18" in str(info.value)
    assert "curvenet" in str(info.value)  # built-ins are named too


def test_torch_checkpoint_loads(tmp_path: Path) -> None:
    donor = timm.create_model(SMALL)
    torch.nn.init.normal_(donor.fc.weight)
    path = tmp_path / "weights.pt"
    torch.save(donor.state_dict(), path)
    lm = load_model(SMALL, checkpoint=path)
    assert lm.trained is True and "checkpoint" in lm.source
    for k, v in donor.state_dict().items():
        torch.testing.assert_close(lm.model.state_dict()[k], v)
    assert not any(p.requires_grad for p in lm.model.parameters())


def test_wrapped_and_prefixed_checkpoint_loads(tmp_path: Path) -> None:
    """Lightning-style ``{"state_dict": ...}`` and DDP ``module.`` prefixes are unwrapped."""
    donor = timm.create_model(SMALL)
    state = {f"module.{k}": v for k, v in _state(donor).items()}
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": state, "epoch": 3}, path)
    lm = load_model(SMALL, checkpoint=path)
    torch.testing.assert_close(lm.model.conv1[0].weight, donor.conv1[0].weight)


def test_safetensors_checkpoint_loads(tmp_path: Path) -> None:
    donor = timm.create_model(SMALL)
    path = tmp_path / "weights.safetensors"
    save_file(_state(donor), str(path))
    lm = load_model(SMALL, checkpoint=path)
    torch.testing.assert_close(lm.model.layer2[0].conv1.weight, donor.layer2[0].conv1.weight)


def test_checkpoint_with_wrong_shapes_is_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ten_classes.pt"
    torch.save(timm.create_model(SMALL, num_classes=10).state_dict(), path)
    with pytest.raises(MTIConfigError, match="does not match") as info:
        load_model(SMALL, checkpoint=path)
    assert "fc.weight" in str(info.value) and "(10, 96)" in str(info.value)


def test_checkpoint_of_other_architecture_is_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "convnext.safetensors"
    save_file(_state(timm.create_model("test_convnext")), str(path))
    with pytest.raises(MTIConfigError, match="does not match") as info:
        load_model(SMALL, checkpoint=path)
    assert "head.fc.weight" in str(info.value) and "conv1.0.weight" in str(info.value)


def test_checkpoint_missing_keys_is_clear_error(tmp_path: Path) -> None:
    state = _state(timm.create_model(SMALL))
    del state["fc.bias"]
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(MTIConfigError, match=r"missing \['fc.bias'\]"):
        load_model(SMALL, checkpoint=path)


def test_unreadable_or_absent_checkpoint_is_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(MTIConfigError, match="could not read checkpoint"):
        load_model(SMALL, checkpoint=junk)
    with pytest.raises(MTIConfigError, match="not found"):
        load_model(SMALL, checkpoint=tmp_path / "absent.pt")


@pytest.mark.skipif(not CURVENET_WEIGHTS.exists(), reason="curvenet weights not shipped yet")
def test_builtin_curvenet_loads_offline() -> None:
    lm = load_model("curvenet")
    assert lm.source == "builtin:curvenet"
    assert not any(p.requires_grad for p in lm.model.parameters())
    assert not any(m.training for m in lm.model.modules())
    x = torch.rand(1, *lm.input_size)
    out = lm.model(lm.normalize(x))
    assert torch.isfinite(out).all()
