"""The schema of the ``mti`` config: one dataclass per config group, the one source of every
default and every allowed range or choice.

The YAML files in ``conf/`` hold only what a choice (``search=invert``, ``trainer=gpu``,
``experiment=atlas``, ...) changes; the face registers :class:`MTIConfig` as Hydra's structured
schema (``face/schema_store.py``), so composing checks every type and key, and
``core/config_checks.py`` checks every range and choice each field declares here. Plain dataclasses: the core imports neither Hydra nor OmegaConf.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MISSING = "???"  # OmegaConf's mark of a value the user must give

SEARCH_KINDS = ("mti", "visualize", "visualize_neg", "invert", "accentuate")
INVERSION_MATCHES = ("signed_attribution", "relu_attribution")  # what inversions match
# what the trainer supports (shells/trainer.py checks the device can run it)
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
PRECISIONS = ("32", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "64")


def _rule(
    default: Any = None,
    low: float | None = None,
    above: bool = False,
    choices: tuple[Any, ...] = (),
) -> Any:
    """A field with its check: ``low`` the lowest value (excluded when ``above``), or the
    ``choices`` it may take."""
    return field(default=default, metadata={"low": low, "above": above, "choices": choices})


# -- the search's groups -------------------------------------------------------------------


@dataclass
class ModelSchema:
    """``model``: which network and the input it gets."""

    name: str = MISSING
    pretrained: bool = False
    checkpoint: str | None = None
    input_size: list[int] | None = None  # [C, H, W]; null: the model's own
    mean: list[float] | None = None  # per-channel normalisation; null: the model's own
    std: list[float] | None = None


@dataclass
class InversionsSchema:
    """``search.inversions``: the +/- attribution inversions after an MTI search."""

    enabled: bool = True
    steps: int = _rule(100, low=1)
    lr: float = _rule(0.05, low=0, above=True)
    draws: int = _rule(8, low=1)
    power: float = _rule(2.0, low=0)
    # the layer's target (core/inversion.py): relu(+-A) with the activation's sign, or without
    match: str = _rule("signed_attribution", choices=INVERSION_MATCHES)


@dataclass
class SearchSchema:
    """``search``: what is optimised and how (defaults: the MTI search)."""

    kind: str = _rule("mti", choices=SEARCH_KINDS)
    steps: int = _rule(150, low=1)
    lr: float = _rule(0.05, low=0, above=True)
    optimizer: str = "adam"
    draws: int = _rule(8, low=1)
    images_per_target: int = _rule(1, low=1)
    attribution_layer: str | None = "auto"  # a module name; auto: the model's own choice
    mode: str = _rule("linearized", choices=("linearized", "exact"))
    temperature: float = _rule(0.1, low=0, above=True)
    hold: float | None = 0.0  # keep the activation near this value (null: free)
    hold_weight: float = _rule(1.0, low=0)
    image: Any = None  # image file(s) the search starts from (invert, accentuate: required)
    sign: float = 1.0  # accentuate: +1 raises the feature, -1 lowers it
    l2_weight: float = _rule(10.0, low=0)  # accentuate: pull towards the seed image
    redirect_relu_steps: int = _rule(0, low=0)
    power: float = _rule(2.0, low=0)
    match: str = _rule("signed_attribution", choices=INVERSION_MATCHES)  # invert: inversions.match
    inversions: InversionsSchema = field(default_factory=InversionsSchema)


@dataclass
class ParamSchema:
    """``param``: the image parameterisation (defaults: Fourier phase)."""

    kind: str = _rule("fourier", choices=("fourier", "pixel"))
    canvas: list[int] | None = None  # [H, W]; null: the model's input size
    decay: float | None = _rule(1.0, low=0)
    # the magnitude's gain, i.e. the contrast before the sigmoid: 2 lets the MTI search beat
    # the tensest photo crop where 1 fell short (benchmarks/RESULTS.md, issue 32)
    scale: float | None = _rule(2.0, low=0, above=True)


@dataclass
class TransformSchema:
    """``transform``: the random draws each step averages over."""

    scale: list[float] = field(default_factory=lambda: [0.85, 1.0])
    jitter: float = _rule(0.05, low=0)
    rotate: float = _rule(0.0, low=0)
    gaussian_noise: float = _rule(0.02, low=0)
    uniform_noise: float = _rule(0.0, low=0)
    padding: str = _rule("reflection", choices=("reflection", "zeros", "border"))


@dataclass
class CallbacksSchema:
    """``callbacks``: snapshots, transparency, early stop, atlas placement."""

    snapshot_steps: list[int] = field(default_factory=lambda: [0])
    snapshot_every: int = _rule(50, low=0)
    transparency: bool = True
    stop_activation: float | None = None  # stop once every image's feature reaches this
    check_every: int = _rule(10, low=1)  # steps between early-stop / non-finite checks
    atlas: str | None = None  # an atlas run directory to place the search's images on
    atlas_every: int = _rule(10, low=0)


@dataclass
class TrainerSchema:
    """``trainer``: Lightning's devices, strategy and precision (defaults: one CPU)."""

    accelerator: str = _rule("cpu", choices=ACCELERATORS)
    devices: Any = 1  # a count >= 1, -1 (all), auto, or a list of device ids
    num_nodes: int = _rule(1, low=1)
    strategy: str = "auto"
    precision: Any = _rule("32", choices=PRECISIONS)
    compile: bool = False
    fast_net: bool = True  # steps on a copy rewritten for speed (core/fastnet.py)
    log_every_n_steps: int = _rule(10, low=1)
    progress_bar: bool = False
    requeue_signal: str | None = "USR2"  # SLURM: checkpoint and requeue on this signal


@dataclass
class LoggerSchema:
    """``logger``: W&B (offline without an API key), CSV, or none."""

    kind: str = _rule("wandb", choices=("wandb", "csv", "none"))
    project: str = "mti-lightning"
    group: str | None = None
    name: str | None = None
    mode: str = _rule("auto", choices=("auto", "online", "offline"))
    max_unit_curves: int = 16  # per-step curves for the first N images (shells check it)


@dataclass
class CheckpointSchema:
    """``checkpoint``: the search's Lightning checkpoints."""

    every_n_steps: int = _rule(50, low=0)
    resume: bool = False  # continue from <run dir>/checkpoints/last.ckpt


# -- the other tasks' groups (present when their experiment is chosen) ---------------------


@dataclass
class AtlasSchema:
    """``atlas``: the attribution atlas of one feature over a data set."""

    # data
    data: str = "curves"  # curves, a folder, or torchvision:NAME
    data_root: str = ""
    curves_n: int = 4000
    curves_seed: int = 4000
    curves_two_arc_fraction: float = 0.3
    # attribution layers, the first is the atlas layer; auto: the model's own (CurveNet:
    # pool1), else the block before the feature
    layers: list[str] = field(default_factory=lambda: ["auto"])
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


@dataclass
class CompareSchema:
    """``compare``: architectures side by side (``mti experiment=compare``)."""

    units: Any = 16  # per model: a count (seeded sample of the layer's channels), all, a list
    unit_seed: int = 0
    images: str | None = None  # a folder of images; null: synthetic curve images
    n_images: int = 64
    checkpoints: dict[str, Any] = field(default_factory=dict)  # {model: local state dict}
    attribution_layers: dict[str, Any] = field(default_factory=dict)  # {model: layer}
    search_units: int = 4  # units per model in its MTI search; 0: none
    batch_size: int = 64  # (unit, image) pairs per attribution pass
    train: bool = True  # train timm models without weights on the curves world (or reuse)
    recipes: Any = None  # {model: recipe overrides}, e.g. {resnet10t: {epochs: 3}}
    cache_dir: str | None = None  # null: $MTI_TRAINED_CACHE or ~/.cache/mti-lightning/trained
    tuning_images: int = 1200  # the comparison checks its ranges (compare/run.py)
    tuning_seed: int = 7
    # tuned units' inhibition measured as inhibition (E- by orientation, its carriers, active
    # suppression; world/inhibition_tuning.py) on this many of the tuning images; 0: off
    inhibition_images: int = _rule(400, low=0)
    report_to: str | None = None  # also copy compare_report.md and .png into this folder


CENSUS_POSITIONS = ("center", "mean", "max")
# the statistics a census can rank its units by (one row per unit, ``census/units.json``)
CENSUS_RANK_KEYS = (
    "tension_p90",
    "tension_p99",
    "tension_p50",
    "tension_mean",
    "ratio_mean",
    "frac_tense",
)


@dataclass
class CensusSchema:
    """``census``: the tension statistics of every unit of chosen layers over a data set,
    ranked across the model (``mti experiment=census``)."""

    # layer names, relative depths in (0, 1] (a block's feature layer), or ``all`` (every
    # block's feature layer)
    layers: list[Any] = field(default_factory=lambda: ["all"])
    # auto: the convolution's input where one convolution (+ eval BatchNorm) feeds the layer
    # (the closed form), else the block boundary before it (a batched backward); or a name
    attribution_layer: str = "auto"
    units: Any = "all"  # all channels of each layer, or a count (a seeded sample per layer)
    unit_seed: int = 0
    position: str = _rule("center", choices=CENSUS_POSITIONS)
    # data: curves, photos, a folder, or torchvision:NAME
    data: str = "curves"
    data_root: str = ""
    curves_n: int = _rule(1000, low=1)
    curves_seed: int = 1000
    curves_two_arc_fraction: float = _rule(0.3, low=0)
    # an image is tense for a unit when its tension exceeds ``threshold`` times the unit's
    # mean of max(E+, E-) over the data: inhibition at least that share of the unit's usual
    # drive (scale-free, so comparable across units and layers)
    threshold: float = _rule(0.5, low=0)
    top_k: int = _rule(8, low=1)  # the tensest images kept per unit
    hist_bins: int = _rule(32, low=1)  # the activation histogram's bins per unit
    rank_by: str = _rule("tension_p90", choices=CENSUS_RANK_KEYS)
    # jobs: the (layer, unit chunk) pieces are dealt round-robin to ``jobs`` jobs; this one is
    # ``job`` (a Hydra multirun over census.job, locally or through the SLURM launcher)
    jobs: int = _rule(1, low=1)
    job: int = _rule(0, low=0)
    unit_chunk: int = _rule(0, low=0)  # units per piece; 0: a whole layer per piece
    stage: str = _rule("all", choices=("all", "data", "merge"))
    out: str | None = None  # the census directory its jobs share; null: the run directory
    # the data pass
    batch_size: int = _rule(64, low=1)  # images per chunk (split further to fit memory)
    shard_size: int = _rule(256, low=1)  # images per shard file
    num_workers: int = _rule(0, low=0)
    max_memory_mb: float = _rule(2048.0, low=0, above=True)  # per chunk's working tensors
    fast_net: bool = True
    # the search side: an MTI search, +/- visualisations and inversions per unit (the
    # search.* settings), for the first ``search_top_n`` units by rank (0: every unit),
    # ``units_per_search`` units batched in one search
    search: bool = True
    search_top_n: int = _rule(0, low=0)
    units_per_search: int = _rule(32, low=1)
    site: bool = True  # the static site (census/index.html, a page per unit) and its W&B table
    # run directories of circuits (mti experiment=circuit) of census units: their upstream
    # channels, ablation and figure go on those units' pages
    circuits: list[str] = field(default_factory=list)
    # run directories of decompositions (mti experiment=decompose) of census units: their
    # E+ and E- components go on those units' pages
    decompositions: list[str] = field(default_factory=list)


@dataclass
class TrainSchema:
    """``train``: training any network; every key left null comes from the model's measured
    recipe (``world/recipes.py``) or the default recipe (``world/train.py``)."""

    data: str | None = None  # curves or an ImageFolder path ROOT/CLASS/*.png
    kwargs: Any = None  # constructor arguments, e.g. {img_size: 64, patch_size: 8}
    image_size: int | None = None
    train_size: int | None = None
    val_size: int | None = None
    test_size: int | None = None
    seed: int | None = None
    train_seed: int | None = None
    val_seed: int | None = None
    test_seed: int | None = None
    two_arc_fraction: float | None = None
    epochs: int | None = None
    max_steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    warmup: float | None = None
    label_smoothing: float | None = None
    num_workers: int | None = None
    num_threads: int | None = None
    config: Any = None  # curve world options (CurveConfig), e.g. {pixel_noise_std: 0.05}
    out: str | None = None  # weights file; default <run dir>/model.safetensors


@dataclass
class ToysSchema:
    """``toys``: toy models of superposition, trained, then measured."""

    kind: str = _rule("all", choices=("abs", "xor", "all"))
    n: int = _rule(6, low=1)
    m: int = _rule(8, low=1)
    sparsity: float | None = None  # default 0.01 (abs), 0.05 (xor)
    steps: int = _rule(2000, low=1)
    seeds: int = _rule(4, low=1)
    restarts: int = _rule(32, low=1)
    mti_steps: int = _rule(300, low=1)


@dataclass
class CurvesSchema:
    """``curves``: synthetic curve images written in ImageFolder layout."""

    n: int = _rule(2000, low=1)
    seed: int = 0
    two_arc_fraction: float = 0.3
    out: str | None = None  # default: <run dir>/curves


@dataclass
class ReportSchema:
    """``report``: what CurveNet's middle layer responds to."""

    layer: str = "bn2"
    units: int = _rule(6, low=1)
    steps: int = _rule(128, low=1)
    n_images: int = _rule(2400, low=1)


@dataclass
class AggregateSchema:
    """``aggregate``: the runs of a sweep in one table and figure."""

    runs: str = MISSING  # a sweep or run directory, or a glob
    top: int = _rule(40, low=1)  # rows in the figure's bar chart


@dataclass
class CircuitSchema:
    """``circuit``: the inhibition circuit of one unit (``target``) at an upstream layer."""

    # data: curves, photos, a folder, or torchvision:NAME (as the atlas's)
    data: str = "curves"
    data_root: str = ""
    curves_n: int = _rule(1000, low=1)
    curves_seed: int = 4000
    # the attribution layer; auto: the model's own (CurveNet: pool1), else the block before
    layer: str = "auto"
    k: int = _rule(8, low=1)  # inhibitory and excitatory channels shown and ablated
    depth: int = _rule(1, choices=(1, 2))  # 2: one more layer upstream of the top channels
    tense_fraction: float = _rule(0.1, low=0, above=True)  # the tensest images' share
    # a channel cancels when |mean A_c| < cancel_ratio * mean |A_c| (core/circuit.py)
    cancel_ratio: float = _rule(0.25, low=0, above=True)
    control_seeds: int = _rule(5, low=1)  # random k-channel ablations as the control
    echo: bool = True  # the echo: tuning before/after the top inhibitors' negative weights go
    echo_images: int = _rule(800, low=8)  # curve images of the tuning curves
    echo_seed: int = 7
    visualize: bool = True  # feature visualisations of the unit and its 2k channels
    viz_steps: int = _rule(128, low=1)
    viz_lr: float = _rule(0.05, low=0, above=True)
    viz_draws: int = _rule(4, low=1)
    batch_size: int = _rule(64, low=1)  # (image, target) pairs per attribution chunk
    shard_size: int = _rule(512, low=1)
    num_workers: int = _rule(0, low=0)
    fast_net: bool = True


@dataclass
class DecomposeSchema:
    """``decompose``: signed NMF of one unit's (``target``) attributions at an upstream layer
    over a data set: the E+ and E- parts, each split into non-negative channel components."""

    # data: curves, photos, a folder, or torchvision:NAME (as the atlas's)
    data: str = "curves"
    data_root: str = ""
    curves_n: int = _rule(1000, low=1)
    curves_seed: int = 5000
    # the attribution layer; auto: the model's own (CurveNet: pool1), else the block before
    layer: str = "auto"
    # components per part: an integer in [1, channels], or auto (the smallest k whose NMF
    # explains ``fraction`` of the part's Frobenius norm, at most ``k_max``)
    k: Any = "auto"
    fraction: float = _rule(0.9, low=0, above=True)
    k_max: int = _rule(12, low=1)
    parts: list[str] = field(default_factory=lambda: ["plus", "minus"])
    top_images: int = _rule(8, low=1)  # data images kept per component (highest coefficient)
    render: bool = True  # an image per component: cosine with its direction, on the engine
    render_steps: int = _rule(128, low=1)
    render_lr: float = _rule(0.05, low=0, above=True)
    render_draws: int = _rule(4, low=1)
    render_power: float = _rule(1.0, low=0)
    batch_size: int = _rule(64, low=1)  # (image, target) pairs per attribution chunk
    shard_size: int = _rule(512, low=1)
    num_workers: int = _rule(0, low=0)
    fast_net: bool = True


def _default_target() -> dict[str, Any]:
    # CurveNet's orientation-tuned units (docs/curvenet_report.txt)
    return {"layer": "bn2", "depth": None, "channel": [9, 12, 19, 5], "position": "center"}


# train_curvenet is gone (its task says so, naming `mti experiment=train model=curvenet`)
TASKS = ("search", "curves", "train", "train_curvenet", "toys", "curvenet_report", "compare")
TASKS += ("aggregate", "atlas", "census", "circuit", "decompose")


@dataclass
class MTIConfig:
    """The whole config; the groups of the other tasks are null until their experiment sets
    them."""

    task: str = _rule("search", choices=TASKS)
    seed: int = 0
    # the feature(s): LAYER:CHANNEL@POSITION, a list of them, or {layer, depth, channel,
    # position}; layer null with depth 0.5 picks the block at half the model's depth
    target: Any = field(default_factory=_default_target)
    model: ModelSchema = field(default_factory=ModelSchema)
    search: SearchSchema = field(default_factory=SearchSchema)
    param: ParamSchema = field(default_factory=ParamSchema)
    transform: TransformSchema = field(default_factory=TransformSchema)
    trainer: TrainerSchema = field(default_factory=TrainerSchema)
    logger: LoggerSchema = field(default_factory=LoggerSchema)
    callbacks: CallbacksSchema = field(default_factory=CallbacksSchema)
    checkpoint: CheckpointSchema = field(default_factory=CheckpointSchema)
    stage: str | None = None  # atlas: run one stage (dataset_pass, ..., viewer)
    models: list[str] | None = None  # compare: the models side by side
    layers: Any = None  # compare: a depth, a layer name, or {model: ..., default: ...}
    atlas: AtlasSchema | None = None
    census: CensusSchema | None = None
    compare: CompareSchema | None = None
    train: TrainSchema | None = None
    toys: ToysSchema | None = None
    curves: CurvesSchema | None = None
    report: ReportSchema | None = None
    aggregate: AggregateSchema | None = None
    circuit: CircuitSchema | None = None
    decompose: DecomposeSchema | None = None
