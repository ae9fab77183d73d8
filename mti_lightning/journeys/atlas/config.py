"""Every option of the attribution atlas as one flat dataclass of plain fields.

Each ``atlas.*`` key of the config (``mti experiment=atlas``) is a field of the schema's
``AtlasSchema``, its one source of defaults; this class adds the model and the feature and the
atlas's own checks. Values are checked when the config is built, so a bad option fails before
any work starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mti_lightning.core.config_schema import AtlasSchema
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.features import FeatureSpec, parse_feature

UMAP_METRICS = ("cosine", "euclidean", "correlation", "manhattan", "chebyshev")


@dataclass
class AtlasConfig(AtlasSchema):
    """Options of an atlas run: the ``atlas.*`` keys, whose defaults are the schema's
    (:class:`~mti_lightning.core.config_schema.AtlasSchema`), plus the model and the feature.

    ``data``: ``curves`` (the built-in curve images, written to ``data_root`` or
    ``<run_dir>/data/curves``), ``photos[:KEY=VALUE,...]`` (seeded crops of scikit-image's
    photographs; ``curves_n`` and ``curves_seed`` where the spec gives no ``n``/``seed``), a path to an image folder (ImageFolder layout or any tree of
    image files), or ``torchvision:NAME`` (a torchvision data set class, read from
    ``data_root`` without downloading). ``layers``: the attribution layers; the first is the
    atlas layer (embedding, icons), the others only get energies and vectors; ``auto`` is the
    model's own attribution layer, else the block boundary before the feature. ``input_size``:
    side of the square model input, or ``[C, H, W]`` (0 = the model's own). The ``mti``
    command and the Python API fill ``model``, ``pretrained``, ``checkpoint``, ``input_size``
    and ``feature`` from their ``model=`` and ``target=`` (``atlas/face.py``).
    """

    model: str = "curvenet"
    pretrained: bool = False
    checkpoint: str = ""
    input_size: int | list[int] = 0  # side of a square input in px, or [C, H, W]; 0: own
    feature: str = "bn2:19@center"

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
            raise MTIConfigError(
                "data is empty; valid: curves, photos, a folder path, torchvision:NAME"
            )
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
