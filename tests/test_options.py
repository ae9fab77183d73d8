"""Every number of a search config is checked before any work: a non-finite or out-of-range
value is one error naming its key."""

from __future__ import annotations

import math
import re

import pytest

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.face.api_config import compose
from mti_lightning.search.options import RULES, check_number, check_search_numbers


def _bad_values(rule) -> list:
    kind, low, inclusive, nullable = rule
    bad = [math.nan, math.inf, -math.inf, "3", True]
    if kind == "int":
        bad.append(1.5)
    if low is not None:
        bad.append(low - 1 if inclusive else low)
    if not nullable:
        bad.append(None)
    return bad


@pytest.mark.parametrize("key", list(RULES))
def test_each_key_rejects_its_bad_values_and_names_itself(key):
    rule = RULES[key]
    for value in _bad_values(rule):
        with pytest.raises(MTIConfigError, match=rf"^{re.escape(key)}=.*; must be"):
            check_number(key, value, rule)
    good = (rule[1] if rule[2] else rule[1] + 1) if rule[1] is not None else 3
    check_number(key, int(good) if rule[0] == "int" else float(good), rule)


@pytest.mark.parametrize("search", ["mti", "visualize", "invert", "accentuate"])
def test_shipped_configs_are_valid(search):
    check_search_numbers(compose([f"search={search}"]))


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("transform.scale", [0.9, 0.5], "transform.scale=[0.9, 0.5]"),
        ("transform.scale", [0.0, 1.0], "transform.scale=[0.0, 1.0]"),
        ("param.canvas", [64], "param.canvas=[64]"),
        ("callbacks.snapshot_steps", [0, -3], "callbacks.snapshot_steps=-3"),
        ("callbacks.snapshot_steps", 5, "callbacks.snapshot_steps=5"),
    ],
)
def test_lists_are_checked(key, value, message):
    cfg = compose([])
    group, name = key.split(".")
    cfg[group][name] = value
    with pytest.raises(MTIConfigError, match=re.escape(message)):
        check_search_numbers(cfg)
