"""What ``mti.circuit`` returns: the run directory, one row per channel of the attribution
layer (ranked by share of E-) and the whole record of ``circuit.json``; shown in Jupyter as
the figure."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class CircuitResult:
    """``rows``: per channel its shares, mean attribution, expanded weight and cancellation
    flag; ``record``: everything ``circuit.json`` holds (ablation, echo, correlation, times)."""

    run_dir: Path
    rows: list[dict[str, Any]]
    record: dict[str, Any]

    @property
    def figure(self) -> Path:
        """The circuit figure."""
        return self.run_dir / "circuit" / "circuit.png"

    @property
    def inhibitory(self) -> list[int]:
        """The top-k inhibitory channels, largest share of E- first."""
        return list(self.record["inhibitory"])

    @property
    def excitatory(self) -> list[int]:
        """The top-k excitatory channels, largest share of E+ first."""
        return list(self.record["excitatory"])

    def _repr_png_(self) -> bytes | None:
        return self.figure.read_bytes() if self.figure.is_file() else None

    def _repr_html_(self) -> str:
        where = html.escape(str(self.run_dir))
        about = f"<p>circuit of {html.escape(self.record['unit'])} at "
        about += f"{html.escape(self.record['layer'])}; run directory <code>{where}</code></p>"
        if not self.figure.is_file():
            return about
        data = base64.b64encode(self.figure.read_bytes()).decode("ascii")
        return about + f'<img src="data:image/png;base64,{data}" style="max-width:100%"/>'
