"""The numbers of a search config, checked before any work: every non-finite or out-of-range
value is one error naming its key (``search.lr=nan; must be a finite number > 0``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mti_lightning.core.errors import MTIConfigError

# key -> (kind, lowest, lowest allowed itself, may be null); kind "int" or "float"
Rule = tuple[str, float | None, bool, bool]
RULES: dict[str, Rule] = {
    "seed": ("int", None, True, False),
    "search.steps": ("int", 1, True, False),
    "search.lr": ("float", 0, False, False),
    "search.draws": ("int", 1, True, False),
    "search.images_per_target": ("int", 1, True, False),
    "search.temperature": ("float", 0, False, False),
    "search.hold": ("float", None, True, True),
    "search.hold_weight": ("float", 0, True, False),
    "search.power": ("float", 0, True, False),
    "search.sign": ("float", None, True, False),
    "search.l2_weight": ("float", 0, True, False),
    "search.redirect_relu_steps": ("int", 0, True, False),
    "search.inversions.steps": ("int", 1, True, False),
    "search.inversions.lr": ("float", 0, False, False),
    "search.inversions.draws": ("int", 1, True, False),
    "search.inversions.power": ("float", 0, True, False),
    "param.decay": ("float", 0, True, True),
    "param.scale": ("float", 0, False, True),
    "transform.jitter": ("float", 0, True, False),
    "transform.rotate": ("float", 0, True, False),
    "transform.gaussian_noise": ("float", 0, True, False),
    "transform.uniform_noise": ("float", 0, True, False),
    "callbacks.snapshot_every": ("int", 0, True, False),
    "callbacks.check_every": ("int", 1, True, False),
    "callbacks.stop_activation": ("float", None, True, True),
    "checkpoint.every_n_steps": ("int", 0, True, False),
    "trainer.num_nodes": ("int", 1, True, False),
    "trainer.log_every_n_steps": ("int", 1, True, False),
}


def _get(cfg: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def check_number(key: str, value: Any, rule: Rule) -> None:
    """Raise MTIConfigError unless ``value`` obeys ``rule`` (see :data:`RULES`)."""
    kind, low, inclusive, nullable = rule
    if value is None and nullable:
        return
    what = "an integer" if kind == "int" else "a finite number"
    if low is not None:
        what += f" {'>=' if inclusive else '>'} {low:g}"
    if nullable:
        what += " (or null)"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and kind == "int":
        ok = isinstance(value, int)
    if ok:
        ok = math.isfinite(value) and (low is None or (value >= low if inclusive else value > low))
    if not ok:
        raise MTIConfigError(f"{key}={value!r}; must be {what}")


def _check_scale(value: Any) -> None:
    good = (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        and all(math.isfinite(v) for v in value)
        and 0 < value[0] <= value[1]
    )
    if not good:
        raise MTIConfigError(
            f"transform.scale={value!r}; must be [low, high] with 0 < low <= high, e.g. [0.85, 1.0]"
        )


def _check_canvas(value: Any) -> None:
    if value is None:
        return
    good = (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    )
    if not good:
        raise MTIConfigError(f"param.canvas={value!r}; must be [height, width] in px, or null")


def check_search_numbers(cfg: Mapping[str, Any]) -> None:
    """Check every number of a search config (keys that are absent are skipped)."""
    for key, rule in RULES.items():
        present, value = _get(cfg, key)
        if present:
            check_number(key, value, rule)
    present, snapshot_steps = _get(cfg, "callbacks.snapshot_steps")
    if present and snapshot_steps is not None:
        if not isinstance(snapshot_steps, (list, tuple)):
            raise MTIConfigError(
                f"callbacks.snapshot_steps={snapshot_steps!r}; must be a list of steps, e.g. [0]"
            )
        for step in snapshot_steps:
            check_number("callbacks.snapshot_steps", step, ("int", 0, True, False))
    present, scale = _get(cfg, "transform.scale")
    if present:
        _check_scale(scale)
    present, canvas = _get(cfg, "param.canvas")
    if present:
        _check_canvas(canvas)
