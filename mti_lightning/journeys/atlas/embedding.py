"""Stage 4, the embedding: UMAP of the selected images' spatially summed attribution vectors.

The nearest neighbours are computed exactly here (chunked, in torch) and handed to UMAP, which
skips its approximate search: exact for the few thousand points of an atlas, and it saves
compiling the approximate search's numba kernels in every process.

The 2-D layout is normalised to the unit square per axis after clipping outliers to the
``clip`` and ``1 - clip`` quantiles, so a few far points do not squeeze the rest into a corner
of the grid.

The stage also keeps what it takes to place *new* vectors on the layout
(:class:`LayoutModel`): the fitted UMAP (its ``transform`` queries :class:`ExactIndex`, the same
exact neighbour search the fit used) and the normalisation bounds, saved as a pickle stamped
with the stage's fingerprint (see :func:`save_model`).
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.io import atomic_write
from mti_lightning.journeys.atlas.figures import DIVERGING, centered_norm, new_figure, save_figure

MIN_POINTS = 5
MODEL_FILE = "umap_model.pkl"


def distances(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    """Pairwise distances ``(len(a), len(b))`` under one of UMAP's metric names."""
    if metric in ("cosine", "correlation"):
        if metric == "correlation":
            a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
        return (1 - F.normalize(a, dim=1) @ F.normalize(b, dim=1).T).clamp_min(0)
    p = {"euclidean": 2.0, "manhattan": 1.0, "chebyshev": float("inf")}[metric]
    return torch.cdist(a, b, p=p)


def exact_knn(vectors: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices and distances ``(n, k)`` of each point's ``k`` nearest points (itself
    included, at distance 0), ties broken by index; rows in chunks of at most 2**24 distances."""
    x = torch.from_numpy(np.ascontiguousarray(vectors)).double()
    chunk = max(1, min(x.shape[0], 2**24 // x.shape[0]))
    idx, dist = [], []
    for start in range(0, x.shape[0], chunk):
        d = distances(x[start : start + chunk], x, metric)
        rows = torch.arange(d.shape[0])
        d[rows, rows + start] = 0.0
        d, order = torch.sort(d, dim=1, stable=True)
        idx.append(order[:, :k])
        dist.append(d[:, :k])
    return torch.cat(idx).numpy().astype(np.int32), torch.cat(dist).numpy().astype(np.float32)


class ExactIndex:
    """Exact nearest neighbours among the fitted vectors, in the role of the search index UMAP's
    ``transform`` queries (the third element of ``precomputed_knn``): new points get the same
    exact neighbours under the same metric as the fit did, without building (and compiling)
    UMAP's approximate index."""

    _angular_trees = False  # read by UMAP's transform to pick its search epsilon; unused here

    def __init__(self, vectors: np.ndarray, metric: str):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.metric = metric

    def query(self, x: np.ndarray, k: int, epsilon: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Indices and distances ``(len(x), k)`` of each row's ``k`` nearest fitted vectors."""
        d = distances(
            torch.from_numpy(np.asarray(x, dtype=np.float64)),
            torch.from_numpy(self.vectors).double(),
            self.metric,
        )
        d, order = torch.sort(d, dim=1, stable=True)
        return order[:, :k].numpy().astype(np.int32), d[:, :k].numpy().astype(np.float32)


def fit(
    vectors: np.ndarray,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "cosine",
    n_epochs: int = 0,
    seed: int = 0,
) -> tuple[np.ndarray, Any]:
    """Seeded UMAP of ``(n, C)`` vectors to ``(n, 2)`` (``n_epochs`` 0 = UMAP's default), and
    the fitted ``umap.UMAP``, whose ``transform`` places new vectors on the same layout."""
    n = vectors.shape[0]
    if n < MIN_POINTS:
        raise MTIConfigError(
            f"the selection holds {n} images; the embedding needs at least {MIN_POINTS}: raise "
            "the selection sizes or use a larger data set"
        )
    import umap

    k = min(n_neighbors, n - 1)
    knn_index, knn_dist = exact_knn(vectors, k, metric)
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=k,
        min_dist=min_dist,
        metric=metric,
        n_epochs=n_epochs or None,
        random_state=seed,
        init="spectral" if n > 2 * MIN_POINTS else "random",
        precomputed_knn=(knn_index, knn_dist, ExactIndex(vectors, metric)),
    )
    with warnings.catch_warnings():
        # UMAP's notes on a seeded (single-thread) run, on a search index that is not its own
        # and on disconnected graphs are expected here
        warnings.simplefilter("ignore", UserWarning)
        raw = reducer.fit_transform(vectors.astype(np.float32)).astype(np.float64)
    return raw, reducer


def layout_bounds(xy: np.ndarray, clip: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis ``[clip, 1 - clip]`` quantiles of a layout: its normalisation's origin and span."""
    lo = np.quantile(xy, clip, axis=0)
    hi = np.quantile(xy, 1 - clip, axis=0)
    return lo, np.where(hi > lo, hi - lo, 1.0)


def normalise_layout(xy: np.ndarray, clip: float) -> np.ndarray:
    """Clip each axis to its ``[clip, 1 - clip]`` quantiles and scale it to [0, 1]."""
    lo, span = layout_bounds(xy, clip)
    return np.clip((xy - lo) / span, 0.0, 1.0)


@dataclass
class LayoutModel:
    """What places new vectors on a finished layout: the fitted UMAP (a pickled
    ``umap.UMAP``, so it loads with the umap-learn version that wrote it, or a compatible
    one) and the normalisation's per-axis origin and span; ``fingerprint`` is the embedding
    stage's fingerprint when it was fitted."""

    reducer: Any
    lo: np.ndarray
    span: np.ndarray
    fingerprint: str

    def transform(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw UMAP coordinates ``(n, 2)`` of new vectors and their normalised layout
        position, not clipped (a point outside [0, 1]^2 lies beyond the grid).

        UMAP's ``transform`` (``transform_mode="graph"``) gives each new vector its fuzzy
        memberships to its k nearest data vectors, and UMAP's ``init_graph_transform`` places
        it at their membership-weighted mean position (at a data point's own position when
        it is that point). UMAP's usual stochastic refinement after that step is left out on
        purpose: its negative samples are seeded from the bits of each point's start
        position, so two vectors a rounding error apart (one process against DDP, one step
        against the next) could land far apart; this placement is a continuous function of
        the vector."""
        from umap.umap_ import init_graph_transform

        self.reducer.set_params(transform_mode="graph")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            graph = self.reducer.transform(np.asarray(vectors, dtype=np.float32)).tocsr()
        graph.eliminate_zeros()
        raw = init_graph_transform(graph, self.reducer.embedding_).astype(np.float64)
        return raw, (raw - self.lo) / self.span


def save_layout_model(path: Path, model: LayoutModel) -> Path:
    """Pickle the layout model atomically (a pickle runs code when loaded: load only the
    model files of atlas runs you trust)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(pickle.dumps(model, protocol=4)))


def load_layout_model(path: Path, fingerprint: str) -> LayoutModel:
    """The layout model at ``path``, checked to belong to the embedding made with
    ``fingerprint``; a clear error naming the stage to re-run otherwise."""
    run_dir = path.parent.parent
    redo = f"re-run `mti experiment=atlas hydra.run.dir={run_dir} stage=embedding`"
    if not path.is_file():
        raise MTIConfigError(
            f"the atlas in {run_dir} has no embedding model ({path.name}; atlases made before "
            f"it was kept lack it): {redo}"
        )
    model = pickle.loads(path.read_bytes())
    if not isinstance(model, LayoutModel) or model.fingerprint != fingerprint:
        raise MTIConfigError(
            f"the embedding model {path} was fitted for another embedding than the atlas's "
            f"layout: {redo}"
        )
    return model


def layout_figure(
    layout: np.ndarray, activation: np.ndarray, energy: np.ndarray, path: Path, title: str
) -> Path:
    """Scatter of the layout coloured by activation (centred on 0), sized by energy."""
    fig, ax = new_figure()
    size = 4 + 60 * energy / max(float(energy.max()), 1e-12)
    points = ax.scatter(
        layout[:, 0],
        layout[:, 1],
        c=activation,
        s=size,
        cmap=DIVERGING,
        norm=centered_norm(activation),
        linewidths=0.2,
        edgecolors="0.3",
        alpha=0.85,
    )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(points, ax=ax, label="activation (size: E+ + E-)")
    fig.tight_layout()
    return save_figure(fig, path)
