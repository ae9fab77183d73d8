"""A finished atlas, loaded to place new images on it (the ``AtlasEmbedding`` callback, the
viewer's search markers).

An image is placed from its attribution vector at the atlas layer: the embedding stage's UMAP
``transform`` gives its layout position, the grid its cell (or, off the occupied cells, the
nearest occupied one by cell centre), and two distances say how far it lies from the data:

- ``nn_dist``: layout distance to the nearest selected data image, in units of the layout's
  median nearest-neighbour distance (1 = as close as a typical data image to its neighbour);
- ``nn_dist_hd``: the same in the attribution space under the atlas's UMAP metric. UMAP's
  transform puts every new point among its nearest data images, so the layout distance
  under-reports how unlike the data an image is; this one does not.

``on_map`` is true when ``nn_dist_hd`` is within the 95th percentile of the data images' own
nearest-neighbour distances. A cell is *tense* when the mean tension ``min(E+, E-)`` of its
data images lies in the top 10 % of the tension of every image of the dataset pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.io import load_tensors
from mti_lightning.journeys.atlas import embedding, icons
from mti_lightning.journeys.atlas.compose import icon_rgba
from mti_lightning.journeys.atlas.config import AtlasConfig

TENSE_PERCENTILE = 90.0
ON_MAP_QUANTILE = 0.95


def _pass_keys(shard_dir: Path, keys: list[str]) -> dict[str, torch.Tensor]:
    """Only ``keys`` of a finished dataset pass's shards (not its stored maps), in index order."""
    files = sorted(shard_dir.glob("shard_*.safetensors"))
    if not files:
        raise MTIConfigError(f"no dataset pass shards in {shard_dir}; run the atlas first")
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    for f in files:
        with safe_open(str(f), framework="pt") as shard:
            for k in keys:
                parts[k].append(shard.get_tensor(k))
    return {k: torch.cat(v) for k, v in parts.items()}


def _nn_distances(x: torch.Tensor, metric: str) -> torch.Tensor:
    """Each row's distance to its nearest other row."""
    return torch.from_numpy(embedding.exact_knn(x.numpy(), 2, metric)[1][:, 1]).double()


@dataclass
class AtlasMap:
    """What placing new images on an atlas needs, read from its run directory."""

    run_dir: Path
    cfg: AtlasConfig
    fingerprint: str  # the embedding stage's
    model: embedding.LayoutModel
    raw: np.ndarray  # (n, 2) UMAP coordinates of the selected data images
    vectors: torch.Tensor  # (n, C) their attribution vectors
    cells: np.ndarray  # (K,) occupied cell ids, one icon each
    icons: list[Any]  # K RGBA PIL icons
    cell_stats: dict[str, np.ndarray]  # per icon: activation, mean_activation, mean_tension...
    cell_tension_pct: np.ndarray  # (K,) percentile of the cell's mean tension in the pass
    nn_raw: float  # median nearest-neighbour distance of the layout
    nn_hd: float  # ... and of the attribution vectors
    on_map_hd: float  # 95th percentile of the data's own nn_dist_hd (in units of nn_hd)

    @property
    def grid(self) -> int:
        return self.cfg.grid

    @property
    def atlas_png(self) -> Path:
        return self.run_dir / "atlas" / "atlas.png"

    def describe(self) -> str:
        return f"{self.cfg.model} {self.cfg.feature}, attribution at {self.cfg.atlas_layer}"

    def place(self, vectors: np.ndarray) -> list[dict[str, Any]]:
        """One record per vector: layout position, nearest occupied cell and its figures,
        distances to the data (see the module docstring)."""
        vectors = np.asarray(vectors, dtype=np.float64)
        raw, xy = self.model.transform(vectors)
        d_raw = torch.cdist(torch.from_numpy(raw), torch.from_numpy(self.raw)).min(1).values
        d_hd = embedding.distances(torch.from_numpy(vectors), self.vectors, self.cfg.umap_metric)
        d_hd = d_hd.min(1).values
        cell = icons.assign_cells(np.clip(xy, 0.0, 1.0), self.grid)
        rc = np.stack(np.divmod(self.cells, self.grid), 1).astype(np.float64)
        out = []
        for k in range(len(vectors)):
            here = np.array(divmod(int(cell[k]), self.grid), dtype=np.float64)
            i = int(np.argmin(((rc - here) ** 2).sum(1)))
            hd = float(d_hd[k]) / self.nn_hd
            out.append(
                {
                    "x": float(xy[k, 0]),
                    "y": float(xy[k, 1]),
                    "cell": [int(rc[i, 0]), int(rc[i, 1])],
                    "in_cell": bool(self.cells[i] == cell[k]),
                    "icon": i,
                    "cell_icon_activation": float(self.cell_stats["activation"][i]),
                    "cell_mean_activation": float(self.cell_stats["mean_activation"][i]),
                    "cell_mean_tension": float(self.cell_stats["mean_tension"][i]),
                    "cell_tension_pct": float(self.cell_tension_pct[i]),
                    "cell_tense": bool(self.cell_tension_pct[i] >= TENSE_PERCENTILE),
                    "nn_dist": float(d_raw[k]) / self.nn_raw,
                    "nn_dist_hd": hd,
                    "on_map": hd <= self.on_map_hd,
                }
            )
        return out


def _recorded(run_dir: Path, stage: str) -> dict[str, Any]:
    path = run_dir / stage / "result.json"
    if not path.is_file():
        raise MTIConfigError(
            f"{run_dir} holds no finished atlas (no {stage}/result.json); make one with "
            f"`mti experiment=atlas hydra.run.dir={run_dir}`"
        )
    return json.loads(path.read_text())


def load_atlas(run_dir: str | Path) -> AtlasMap:
    """Read an atlas run directory (its stages up to the icons finished) for placing images."""
    run_dir = Path(run_dir).expanduser().resolve()
    if not (run_dir / "atlas_config.json").is_file():
        raise MTIConfigError(
            f"{run_dir} is not an atlas run directory (no atlas_config.json); give the "
            "directory `mti experiment=atlas` wrote"
        )
    cfg = AtlasConfig.from_dict(json.loads((run_dir / "atlas_config.json").read_text()))
    passed, emb, _ = (_recorded(run_dir, s) for s in ("dataset_pass", "embedding", "icons"))
    model = embedding.load_layout_model(
        run_dir / "embedding" / embedding.MODEL_FILE, emb["fingerprint"]
    )
    layout = load_tensors(run_dir / "embedding" / "layout.safetensors")
    t = load_tensors(run_dir / "icons" / "icons.safetensors")
    layer = cfg.atlas_layer
    r = _pass_keys(
        run_dir / passed["shards"], [f"{layer}/vector", f"{layer}/e_plus", f"{layer}/e_minus"]
    )
    rows = layout["rows"]
    vectors = r[f"{layer}/vector"][rows].double()
    raw = layout["raw"].numpy()
    tension = torch.minimum(r[f"{layer}/e_plus"], r[f"{layer}/e_minus"]).double()
    cells = t["cells"].numpy()
    k = len(cells)
    # mean min(E+, E-) of each cell's data images, and its percentile among all pass images
    cell_tension = icons.cell_means(tension[rows], t["point_cells"].numpy(), cells).numpy()
    pct = np.array([100.0 * float((tension <= v).double().mean()) for v in cell_tension])
    h0, h1, w0, w1 = t["crop"].tolist()
    pics = [
        icon_rgba(t["images"][i, :, h0:h1, w0:w1], t["alpha"][i, h0:h1, w0:w1]) for i in range(k)
    ]
    nn_raw = _nn_distances(torch.from_numpy(raw), "euclidean")
    nn_hd = _nn_distances(vectors, cfg.umap_metric)
    med_hd = float(nn_hd.median()) or 1.0
    return AtlasMap(
        run_dir=run_dir,
        cfg=cfg,
        fingerprint=emb["fingerprint"],
        model=model,
        raw=raw,
        vectors=vectors,
        cells=cells,
        icons=pics,
        cell_stats={
            "activation": t["activation"][:k].numpy(),
            "mean_activation": t["mean_activation"].numpy(),
            "mean_tension": cell_tension,
        },
        cell_tension_pct=pct,
        nn_raw=float(nn_raw.median()) or 1.0,
        nn_hd=med_hd,
        on_map_hd=float(torch.quantile(nn_hd, ON_MAP_QUANTILE)) / med_hd,
    )
