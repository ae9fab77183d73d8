"""Every number of the config is checked once, when the config is composed: a non-finite or
out-of-range value is one error naming its key; the rules are the schema's fields."""

from __future__ import annotations

import dataclasses
import math
import re
import typing

import pytest

from mti_lightning.core.config_checks import check_config, explain, schema_keys
from mti_lightning.core.config_schema import MTIConfig
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.face.api_config import compose


def _number_fields() -> dict[str, tuple[type, float | None, bool, bool]]:
    """Dotted key -> (int or float, lowest, lowest excluded, may be null), from the schema (a
    number with a list of choices is checked as a choice)."""
    out = {}

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if typing.get_origin(hints[f.name]) in (list, dict):
                continue
            args = typing.get_args(hints[f.name])
            inner = [a for a in args if a is not type(None)] or [hints[f.name]]
            if dataclasses.is_dataclass(inner[0]):
                walk(inner[0], f"{prefix}{f.name}.")
            elif inner[0] in (int, float) and not f.metadata.get("choices"):
                low, above = f.metadata.get("low"), f.metadata.get("above", False)
                out[f"{prefix}{f.name}"] = (inner[0], low, above, type(None) in args)

    walk(MTIConfig, "")
    return out


NUMBERS = _number_fields()


def test_the_schema_holds_the_rules_the_search_had():
    for key in ("seed", "search.steps", "search.lr", "search.inversions.draws", "param.scale"):
        assert key in NUMBERS
    assert NUMBERS["search.lr"] == (float, 0, True, False)
    assert NUMBERS["search.steps"] == (int, 1, False, False)
    assert NUMBERS["param.decay"] == (float, 0, False, True)


@pytest.mark.parametrize("key", sorted(NUMBERS))
def test_each_key_rejects_its_bad_values_and_names_itself(key):
    kind, low, above, nullable = NUMBERS[key]
    bad = [math.nan, math.inf, -math.inf, "3", True]
    if kind is int:
        bad.append(1.5)
    if low is not None:
        bad.append(low if above else low - 1)
    if not nullable:
        bad.append(None)
    for value in bad:
        why = explain(key, value)
        assert why is not None and re.match(rf"^{re.escape(key)}=.*; must be", why), (value, why)
    good = (low + 1 if above else low) if low is not None else 3
    assert explain(key, kind(good)) is None


@pytest.mark.parametrize("search", ["mti", "visualize", "invert", "accentuate"])
def test_shipped_configs_are_valid(search):
    check_config(compose([f"search={search}"]), strict=True)


def test_every_key_has_one_default():
    keys = schema_keys()
    assert keys["search.steps"] == 150 and keys["atlas.layers"] == ["auto"]
    assert compose([])["search"]["steps"] == keys["search.steps"]


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("transform.scale", [0.9, 0.5], "transform.scale=[0.9, 0.5]"),
        ("transform.scale", [0.0, 1.0], "transform.scale=[0.0, 1.0]"),
        ("param.canvas", [64], "param.canvas=[64]"),
        ("callbacks.snapshot_steps", [0, -3], "callbacks.snapshot_steps=-3"),
        ("callbacks.snapshot_steps", 5, "callbacks.snapshot_steps=5"),
        ("trainer.devices", 0, "trainer.devices=0; valid: a count >= 1"),
        ("trainer.precision", "8-mixed", "trainer.precision '8-mixed'; valid: 32,"),
        ("search.kind", "dream", "search.kind 'dream'; valid: mti, visualize"),
    ],
)
def test_lists_and_choices_are_checked(key, value, message):
    cfg = compose([])
    group, name = key.split(".")
    cfg[group][name] = value
    with pytest.raises(MTIConfigError, match=re.escape(message)):
        check_config(cfg)


@pytest.mark.parametrize(
    "override,message",
    [
        ("search.steps=abc", "search.steps='abc'; must be an integer >= 1"),
        ("trainer.fast_net=maybe", "trainer.fast_net='maybe'; must be true or false"),
        ("trainer.max_steps=abc", "trainer.max_steps=abc: unknown key; closest: train.max_steps"),
        ("+trainer.max_steps=3", "trainer.max_steps=3: unknown key; closest: train.max_steps"),
        ("logger=neptune", "logger=neptune: no such logger config; valid: csv, wandb"),
        ("model=efficientnet_b0", "model.name=efficientnet_b0"),
        ("trainer.devices=0", "trainer.devices=0; valid:"),
        (
            "search.inversions.match=both",
            "search.inversions.match 'both'; valid: signed_attribution, relu_attribution",
        ),
    ],
)
def test_composing_a_bad_override_is_one_error(override, message):
    with pytest.raises(MTIConfigError, match=re.escape(message)) as err:
        compose([override])
    assert "\n" not in str(err.value)
