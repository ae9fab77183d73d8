"""What ``mti.decompose`` returns: the run directory, one row per component, the record of
``components.json`` and the factor tensors; shown in Jupyter as the figure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class DecomposeResult:
    """``rows``: per component its part, share, top channels and images, rendered image;
    ``factors``: ``PART/weights`` ``(k, C)`` and ``PART/coefficients`` ``(N, k)``."""

    run_dir: Path
    rows: list[dict[str, Any]]
    record: dict[str, Any]
    factors: dict[str, torch.Tensor]

    @property
    def figure(self) -> Path:
        """The components figure."""
        return self.run_dir / "decompose" / "components.png"

    def weights(self, part: str) -> torch.Tensor:
        """The channel weights ``(k, C)`` of ``part`` (``plus`` or ``minus``)."""
        return self.factors[f"{part}/weights"]

    def _repr_png_(self) -> bytes | None:
        return self.figure.read_bytes() if self.figure.is_file() else None
