"""Error types and name suggestions shared by the core: one clear message per bad input."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MTIConfigError(ValueError):
    """A bad input (model, layer, feature, option) found before any long work starts."""


def closest(name: str, choices: Iterable[str], n: int = 5) -> list[str]:
    """The ``n`` choices closest to ``name``, for 'did you mean' messages."""
    pool = list(choices)
    hits = difflib.get_close_matches(name, pool, n=n, cutoff=0.3)
    if len(hits) < n:
        prefix = name.split(".")[0]
        hits += [c for c in pool if c.startswith(prefix) and c not in hits][: n - len(hits)]
    return hits
