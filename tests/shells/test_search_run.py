"""The search runner: a search's +/- inversions are ``search.kind=invert`` of its final images,
run by the same engine with the same seed."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from mti_lightning.shells.search_run import run_stages

TINY = [
    "model=resnet18",
    "model.input_size=[3,32,32]",
    "target=layer2.0.conv1:3@center",
    "search.attribution_layer=layer1.1.act2",
    "search.images_per_target=2",
    "search.draws=4",
    "search.steps=4",
    "search.inversions.steps=6",
    "search.inversions.draws=2",
    "search.inversions.lr=0.08",
    "search.inversions.power=3.0",
    "callbacks.snapshot_steps=[]",
    "callbacks.transparency=false",
    "checkpoint.every_n_steps=0",
    "logger=csv",
    "seed=5",
]


def _compose(overrides: list[str]) -> dict:
    with initialize_config_module("mti_lightning.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("fast_net", [True, False])
def test_search_inversions_equal_an_invert_search_of_its_images(tmp_path, fast_net):
    """The inversion stage after an MTI search and ``search=invert`` of the search's final
    images (with ``search.inversions``' steps, lr, draws and power, the same seed) are one
    computation: the same kind, built by the same code, fed the same draws. They run in one
    process on one CPU, so they agree to rounding; the tolerance (1e-6 on images in [0, 1])
    only leaves room for oneDNN picking other kernels for the separately built step
    networks."""
    flags = [f"trainer.fast_net={str(fast_net).lower()}"]
    searched = run_stages(_compose([*TINY, *flags]), tmp_path / "mti", logger=False)
    inv = searched.inversions
    assert inv is not None and inv["plus"].shape == (2, 3, 32, 32)

    invert = _compose(
        [
            *TINY,
            *flags,
            "search=invert",
            "search.steps=6",
            "search.draws=2",
            "search.lr=0.08",
            "search.power=3.0",
            "search.images_per_target=1",
            "search.attribution_layer=layer1.1.act2",
        ]
    )
    invert["search"]["image"] = searched.images
    inverted = run_stages(invert, tmp_path / "invert", lm=searched.prepared.lm, logger=False)
    images, end = inverted.images, inverted.prepared.search.measured["end"]
    assert inverted.prepared.features == [
        f"layer2.0.conv1:3@center ({part})" for part in ("+", "+", "-", "-")
    ]
    torch.testing.assert_close(inv["plus"], images[:2], rtol=0, atol=1e-6)
    torch.testing.assert_close(inv["minus"], images[2:], rtol=0, atol=1e-6)
    torch.testing.assert_close(inv["plus_activation"], end["activation"][:2], rtol=0, atol=1e-6)
    torch.testing.assert_close(inv["minus_activation"], end["activation"][2:], rtol=0, atol=1e-6)
    # the stage made something: images moved off their noise start, the + image drives more
    assert not torch.equal(inv["plus"], inv["minus"])
    assert float(inv["plus_activation"].mean()) > float(inv["minus_activation"].mean())
