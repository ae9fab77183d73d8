"""What a search found, as one object: its images, +/- inversions, transparency, per-unit rows
and metrics record, and the run directory they were written to.

The ``mti`` command and the Python API both end a search by building a ``SearchResult`` and
calling :meth:`SearchResult.save`, so a run directory looks the same whichever face made it.
In Jupyter the result shows itself as the summary figure (``summary.png``) and its table.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from mti_lightning.core.io import atomic_write, save_png, save_tensors, write_json, write_text
from mti_lightning.journeys.search.summary import figure_png, format_table


@dataclass
class SearchResult:
    """The outcome of one search (MTI, visualisation, inversion or accentuation).

    ``images``: ``(K, 3, H, W)`` in [0, 1], one per row of ``rows``; ``inversions``: the
    ``plus``/``minus`` images (and their activations) of an MTI search, or None; ``alpha``:
    the transparency maps ``(K, H, W)`` or None; ``record``: the metrics record
    (``metrics.json``; its ``images`` entry is ``rows``); ``run_dir``: where it was written.
    """

    images: torch.Tensor
    rows: list[dict[str, Any]]
    record: dict[str, Any]
    title: str = ""
    inversions: dict[str, torch.Tensor] | None = None
    alpha: torch.Tensor | None = None
    run_dir: Path | None = None

    @property
    def features(self) -> list[str]:
        """The feature each image was made for, in order."""
        return [str(r["feature"]) for r in self.rows]

    def table(self) -> str:
        """The aligned text table (``summary.txt``)."""
        return format_table(self.rows)

    @cached_property
    def figure(self) -> bytes:
        """The summary figure (``summary.png``) as PNG bytes."""
        return figure_png(self.rows, self.images, self.inversions, self.title)

    def to_pandas(self) -> Any:
        """The rows as a ``pandas.DataFrame`` (needs pandas installed)."""
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError("to_pandas needs pandas: pip install pandas") from err
        return pd.DataFrame(self.rows)

    def save(self, run_dir: str | Path) -> Path:
        """Write the run directory's result files (the layout the ``mti`` command writes):
        ``images/``, ``inversions/``, ``transparency/``, ``tensors.safetensors``,
        ``metrics.json``, ``summary.txt`` and ``summary.png``. Returns the directory."""
        out = Path(run_dir)
        images = self.images.float().cpu()
        for k, img in enumerate(images):
            save_png(out / "images" / f"image_{k:03d}.png", img)
        tensors = {"images": images}
        inv = self.inversions
        if inv:
            for k in range(len(images)):
                save_png(out / "inversions" / f"plus_{k:03d}.png", inv["plus"][k].float().cpu())
                save_png(out / "inversions" / f"minus_{k:03d}.png", inv["minus"][k].float().cpu())
            tensors |= {"plus": inv["plus"], "minus": inv["minus"]}
        if self.alpha is not None:
            tensors["alpha"] = self.alpha
            for k, img in enumerate(images):
                rgba = torch.cat([img, self.alpha[k : k + 1].float().cpu()])
                save_png(out / "transparency" / f"image_{k:03d}.png", rgba)
        save_tensors(out / "tensors.safetensors", tensors)
        write_json(out / "metrics.json", self.record)
        write_text(out / "summary.txt", self.table() + "\n")
        atomic_write(out / "summary.png", lambda tmp: tmp.write_bytes(self.figure))
        if self.run_dir is None:
            self.run_dir = out
        return out

    def _repr_png_(self) -> bytes:
        return self.figure

    def _repr_html_(self) -> str:
        picture = base64.b64encode(self.figure).decode("ascii")
        where = f"<p>run directory: <code>{html.escape(str(self.run_dir))}</code></p>"
        return (
            f'<img src="data:image/png;base64,{picture}"/>'
            f"<pre>{html.escape(self.table())}</pre>" + (where if self.run_dir else "")
        )

    def __repr__(self) -> str:
        return (
            f"SearchResult({self.record.get('kind')!r}, {len(self.rows)} images, "
            f"run_dir={str(self.run_dir) if self.run_dir else None!r})"
        )
