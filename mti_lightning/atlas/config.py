"""Every option of the attribution atlas as one flat dataclass of plain fields.

Each field maps 1:1 to a key of the YAML config (``mti experiment=atlas``, ``atlas.FIELD``).
Values are checked when the config is built, so a bad option fails before any work starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.features import FeatureSpec, parse_feature

UMAP_METRICS = ("cosine", "euclidean", "correlation", "manhattan", "chebyshev")


@dataclass
class AtlasConfig:
    """Options of an atlas run (see DESIGN.md section 1, "attribution atlas").

    ``data``: ``curves`` (the built-in curve images, written to ``data_root`` or
    ``<run_dir>/data/curves``), a path to an image folder (ImageFolder layout or any tree of
    image files), or ``torchvision:NAME`` (a torchvision data set class, read from
    ``data_root`` without downloading). ``layers``: the attribution layers; the first is the
    atlas layer (embedding, icons), the others only get energies and vectors; ``auto`` is the
    model's own attribution layer, else the block boundary before the feature. ``input_size``:
    side of the square model input, or ``[C, H, W]`` (0 = the model's own). The ``mti``
    command and the Python API fill ``model``, ``pretrained``, ``checkpoint``, ``input_size``
    and ``feature`` from their ``model=`` and ``target=`` (``atlas/face.py``).
    """

    # data
    data: str = "curves"
    data_root: str = ""
    curves_n: int = 4000
    curves_seed: int = 4000
    curves_two_arc_fraction: float = 0.3
    # model and feature
    model: str = "curvenet"
    pretrained: bool = False
    checkpoint: str = ""
    input_size: int | list[int] = 0  # side of a square input in px, or [C, H, W]; 0: own
    feature: str = "bn2:19@center"
    layers: list[str] = field(default_factory=lambda: ["pool1"])
    # dataset pass
    batch_size: int = 256
    shard_size: int = 512
    num_workers: int = 0
    store_maps: bool = True  # keep the atlas layer's maps in the shards (else recomputed)
    crop_maps: bool = True  # ...cropped to the feature's window at that layer
    accelerator: str = "cpu"
    devices: int = 1
    strategy: str = "auto"
    precision: str = "32"
    fast_net: bool = True  # pass and icons on a copy rewritten for speed (core.fastnet)
    # selection: the union of these top/bottom-k sets (0 switches a criterion off)
    top_activation: int = 300
    bottom_activation: int = 300
    top_l1: int = 300
    top_l2: int = 0
    top_e_plus: int = 0
    top_e_minus: int = 300
    top_tension: int = 0
    # embedding
    umap_n_neighbors: int = 15
    umap_min_dist: float = 0.1
    umap_metric: str = "cosine"
    umap_n_epochs: int = 0  # 0: UMAP's own default
    layout_clip: float = 0.01  # per-axis quantile clipped off each end of the layout
    seed: int = 0
    # icons
    grid: int = 30  # the layout is cut into grid x grid cells
    min_images: int = 3  # a cell gets an icon when it holds at least this many images
    icon_steps: int = 128
    icon_lr: float = 0.05
    icon_draws: int = 2
    icon_power: float = 2.0
    icon_inhibition_boost: float = 2.0
    icon_canvas: int = 128  # side of the icon canvas in px (0: the model's input side)
    icon_scale_min: float = 0.9
    icon_jitter: float = 0.03
    icon_noise: float = 0.02
    crop_icons: bool = True
    split_icons: bool = False  # also render each cell's + and - parts separately
    # atlas and viewer
    atlas_size: int = 1800  # side of the atlas PNG in px (rounded down to whole cells)
    viewer_thumbnails: int = 24  # data set images shown per cell in the viewer
    thumbnail_size: int = 48
    searches: list[str] = field(default_factory=list)  # search runs marked in the viewer

    def __post_init__(self) -> None:
        self.layers = list(self.layers)
        self.searches = [str(s) for s in self.searches or []]
        self.validate()

    @property
    def spec(self) -> FeatureSpec:
        """The target feature, parsed."""
        return parse_feature(self.feature)

    @property
    def atlas_layer(self) -> str:
        """The layer whose attribution is embedded and rendered into icons."""
        return self.layers[0]

    @property
    def selection_sizes(self) -> dict[str, int]:
        """Criterion name -> k, for the criteria switched on."""
        return {k: v for k, v in self.selection_sizes_all().items() if v > 0}

    def validate(self) -> None:
        """Raise MTIConfigError naming the first bad option and what would be valid."""
        parse_feature(self.feature)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "bool" and not isinstance(value, bool):
                raise MTIConfigError(f"{f.name}={value!r}; must be true or false")
        if not self.layers or not all(isinstance(x, str) and x for x in self.layers):
            raise MTIConfigError(
                f"layers={self.layers!r}; give at least one attribution layer name, e.g. [pool1]"
            )
        if self.data != "curves" and not self.data.strip():
            raise MTIConfigError("data is empty; valid: curves, a folder path, torchvision:NAME")
        positive = {
            "curves_n": self.curves_n,
            "batch_size": self.batch_size,
            "shard_size": self.shard_size,
            "devices": self.devices,
            "umap_n_neighbors": self.umap_n_neighbors,
            "grid": self.grid,
            "min_images": self.min_images,
            "icon_steps": self.icon_steps,
            "icon_draws": self.icon_draws,
            "atlas_size": self.atlas_size,
            "thumbnail_size": self.thumbnail_size,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise MTIConfigError(f"{name}={value!r}; must be an integer >= 1")
        non_negative = {
            "num_workers": self.num_workers,
            "umap_n_epochs": self.umap_n_epochs,
            "icon_canvas": self.icon_canvas,
            "viewer_thumbnails": self.viewer_thumbnails,
            "curves_seed": self.curves_seed,
            **self.selection_sizes_all(),
        }
        for name, value in non_negative.items():
            if not isinstance(value, int) or value < 0:
                raise MTIConfigError(f"{name}={value!r}; must be an integer >= 0")
        if not self.selection_sizes:
            raise MTIConfigError(
                "every selection criterion is 0; set at least one of "
                f"{', '.join(self.selection_sizes_all())} to k >= 1"
            )
        if not 0.0 <= self.curves_two_arc_fraction <= 1.0:
            raise MTIConfigError(
                f"curves_two_arc_fraction={self.curves_two_arc_fraction}; must be in [0, 1]"
            )
        if self.umap_metric not in UMAP_METRICS:
            raise MTIConfigError(
                f"umap_metric={self.umap_metric!r}; valid: {', '.join(UMAP_METRICS)}"
            )
        if not 0.0 <= self.umap_min_dist <= 1.0:
            raise MTIConfigError(f"umap_min_dist={self.umap_min_dist}; must be in [0, 1]")
        if not 0.0 <= self.layout_clip < 0.5:
            raise MTIConfigError(f"layout_clip={self.layout_clip}; must be in [0, 0.5)")
        if self.icon_lr <= 0 or self.icon_power < 0 or self.icon_inhibition_boost < 0:
            raise MTIConfigError(
                f"icon_lr={self.icon_lr}, icon_power={self.icon_power}, "
                f"icon_inhibition_boost={self.icon_inhibition_boost}; need lr > 0 and the "
                "others >= 0"
            )
        if not 0.0 < self.icon_scale_min <= 1.0 or self.icon_jitter < 0 or self.icon_noise < 0:
            raise MTIConfigError(
                f"icon_scale_min={self.icon_scale_min}, icon_jitter={self.icon_jitter}, "
                f"icon_noise={self.icon_noise}; need 0 < scale_min <= 1, jitter and noise >= 0"
            )
        size = self.input_size
        good_size = (isinstance(size, int) and not isinstance(size, bool) and size >= 0) or (
            isinstance(size, (list, tuple))
            and len(size) == 3
            and all(isinstance(v, int) and v >= 1 for v in size)
        )
        if not good_size:
            raise MTIConfigError(f"input_size={size!r}; must be a side >= 0 or [C, H, W]")
        if self.atlas_size < self.grid:
            raise MTIConfigError(
                f"atlas_size={self.atlas_size} px is smaller than grid={self.grid} cells"
            )

    def selection_sizes_all(self) -> dict[str, int]:
        """Every selection criterion and its k (0 = off)."""
        return {
            "top_activation": self.top_activation,
            "bottom_activation": self.bottom_activation,
            "top_l1": self.top_l1,
            "top_l2": self.top_l2,
            "top_e_plus": self.top_e_plus,
            "top_e_minus": self.top_e_minus,
            "top_tension": self.top_tension,
        }

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON/YAML values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AtlasConfig:
        """Build from a mapping (e.g. a resolved Hydra node); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise MTIConfigError(
                f"unknown atlas option(s) {unknown}; valid options: {', '.join(sorted(names))}"
            )
        return cls(**dict(data))
