"""Error types and name suggestions shared by the core: one clear message per bad input."""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable
from pathlib import Path


class MTIConfigError(ValueError):
    """A bad input (model, layer, feature, option) found before any long work starts."""


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """A run's write that failed for lack of space: one line naming the file, the space it
    needs and what is free there. Written files stay whole (every write is atomic)."""

    def __init__(self, path: str | Path, needed: int | None, free: int | None, written: int = 0):
        self.path, self.needed, self.free = Path(path), needed, free
        need = (
            f"it needs {_size(needed)}"
            if needed is not None
            else f"it had written {_size(written)} when the disk filled"
        )
        have = f", {_size(free)} free there" if free is not None else ""
        super().__init__(
            errno.ENOSPC,
            f"no space left on device writing {self.path}: {need}{have}; free some space "
            "(or write the run elsewhere) and rerun: the files written before are whole",
            str(self.path),
        )

    def __str__(self) -> str:
        return self.strerror


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def closest(name: str, choices: Iterable[str], n: int = 5) -> list[str]:
    """The ``n`` choices closest to ``name``, for 'did you mean' messages."""
    pool = list(choices)
    hits = difflib.get_close_matches(name, pool, n=n, cutoff=0.3)
    if len(hits) < n:
        prefix = name.split(".")[0]
        hits += [c for c in pool if c.startswith(prefix) and c not in hits][: n - len(hits)]
    return hits
