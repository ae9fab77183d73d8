"""The atlas config: plain fields and validation with clear errors."""

from __future__ import annotations

import pytest

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.journeys.atlas import AtlasConfig


def test_defaults_are_valid_and_plain() -> None:
    cfg = AtlasConfig()
    # the schema's default: auto, which the run resolves (CurveNet: pool1)
    assert cfg.model == "curvenet" and cfg.data == "curves" and cfg.atlas_layer == "auto"
    for value in cfg.to_dict().values():
        assert isinstance(value, (str, int, float, bool, list))
    assert AtlasConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"umap_metric": "cosin"}, ["cosin", "cosine"]),
        ({"feature": "bn2"}, ["bn2", "LAYER:CHANNEL@POSITION"]),
        ({"grid": 0}, ["grid=0"]),
        ({"layers": []}, ["layers"]),
        ({"layout_clip": 0.7}, ["layout_clip"]),
        ({"fast_net": "off"}, ["fast_net='off'", "true or false"]),
        (
            {
                "top_activation": 0,
                "bottom_activation": 0,
                "top_l1": 0,
                "top_e_minus": 0,
            },
            ["every selection criterion is 0", "top_tension"],
        ),
    ],
)
def test_bad_options_name_the_value(options: dict, words: list[str]) -> None:
    with pytest.raises(MTIConfigError) as err:
        AtlasConfig(**options)
    for word in words:
        assert word in str(err.value)


def test_unknown_option_lists_valid_ones() -> None:
    with pytest.raises(MTIConfigError, match="umap_neighbors.*valid options.*umap_n_neighbors"):
        AtlasConfig.from_dict({"umap_neighbors": 5})
