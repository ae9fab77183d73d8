"""Synthetic curve images: seeded, anti-aliased arcs at 8 orientations on varied backgrounds.

The built-in world the project studies inhibition in. Each image holds one arc (or two
overlapping arcs of different orientations) of random radius, sweep, thickness and colour, a
background (flat, gradient, texture or pixel noise) and a few short straight distractor strokes.

**Orientation of an arc** is the orientation of its *chord* (the straight line through its two
end points), measured in degrees counterclockwise from the image's +x axis (rightwards) with the
y axis pointing up the image, modulo 180. Label ``k`` (0..7) means orientation ``k * 22.5``
degrees (plus at most ``orientation_jitter_deg``). Which side of the chord the arc bulges to is a
nuisance variable drawn at random (``bulge`` in the metadata), so a class holds both a curve and
its mirror image across the chord. Label 0 is a "smile" or a "frown"; label 4 (90 degrees) is
a "(" or a ")".

Sample ``index`` of ``seed`` is a pure function of ``(seed, index, config, two_arc_fraction)``:
any index renders on its own, in any order or process. A two-arc sample is its single-arc
counterpart with a second arc painted on top (the second arc is drawn last from the stream).

Rendering is analytic: each stroke's distance field over pixel centres, turned into a coverage
``clip(thickness / 2 + 0.5 - distance, 0, 1)`` (a one-pixel box filter), so edges are
anti-aliased and a network cannot read the orientation off staircase artefacts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

NUM_CLASSES = 8
ORIENTATION_STEP_DEG = 22.5
ORIENTATIONS_DEG: tuple[float, ...] = tuple(k * ORIENTATION_STEP_DEG for k in range(NUM_CLASSES))
BACKGROUND_KINDS: tuple[str, ...] = ("flat", "gradient", "texture", "noise")
_LUMA = np.array([0.299, 0.587, 0.114])


def class_name(label: int) -> str:
    """Folder-style name of orientation class ``label``: 0 -> ``ori_000``, 1 -> ``ori_022``."""
    if not 0 <= label < NUM_CLASSES:
        raise ValueError(f"label must be in 0..{NUM_CLASSES - 1}, got {label}")
    return f"ori_{int(ORIENTATIONS_DEG[label]):03d}"


def _check_range(name: str, value: tuple[float, float], low: float, high: float) -> None:
    lo, hi = value
    if not (low <= lo <= hi <= high):
        raise ValueError(f"{name} must satisfy {low} <= min <= max <= {high}, got {value}")


@dataclass(frozen=True)
class CurveConfig:
    """Every knob of the generator. Lengths are fractions of the image ``size``.

    Defaults give 64x64 images with arcs of radius 11.5..22.4 px, 1.9..3.8 px thick, sweeping
    90..150 degrees, centred within +-7.7 px of the image centre, and 0..3 distractor strokes
    3.2..7.7 px long (shorter than any arc's chord, about 16 px at least).
    """

    size: int = 64  # side of the square image, pixels
    radius_range: tuple[float, float] = (0.18, 0.35)  # arc radius
    sweep_range_deg: tuple[float, float] = (90.0, 150.0)  # angle the arc subtends at its centre
    thickness_range: tuple[float, float] = (0.03, 0.06)  # stroke width (arcs and distractors)
    position_jitter: float = 0.12  # max offset of the arc's centre from the image centre, per axis
    orientation_jitter_deg: float = 3.0  # uniform in +-this around the class orientation
    backgrounds: tuple[str, ...] = BACKGROUND_KINDS  # kinds drawn uniformly
    background_amplitude: float = 0.2  # strength of the gradient and texture variations
    pixel_noise_std: float = 0.1  # std of the per-pixel noise of the "noise" background
    extra_noise_range: tuple[float, float] = (0.0, 0.03)  # std range of noise over everything
    min_contrast: float = 0.3  # min luma difference of strokes from the mean background
    n_distractors_range: tuple[int, int] = (0, 3)  # inclusive
    distractor_length_range: tuple[float, float] = (0.05, 0.12)
    second_arc_offset: float = 0.08  # max offset of a second arc's centre from the first's

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"size must be >= 8 pixels, got {self.size}")
        _check_range("radius_range", self.radius_range, 1e-3, 1.0)
        _check_range("sweep_range_deg", self.sweep_range_deg, 10.0, 300.0)
        _check_range("thickness_range", self.thickness_range, 1e-3, 0.5)
        _check_range("extra_noise_range", self.extra_noise_range, 0.0, 1.0)
        _check_range("distractor_length_range", self.distractor_length_range, 0.0, 1.0)
        _check_range("n_distractors_range", self.n_distractors_range, 0, 1000)
        if not 0.0 <= self.orientation_jitter_deg < ORIENTATION_STEP_DEG / 2:
            raise ValueError(
                f"orientation_jitter_deg must be in [0, {ORIENTATION_STEP_DEG / 2}) so classes "
                f"do not overlap, got {self.orientation_jitter_deg}"
            )
        for name in ("position_jitter", "background_amplitude", "pixel_noise_std"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.second_arc_offset <= 1.0:
            raise ValueError(f"second_arc_offset must be in [0, 1], got {self.second_arc_offset}")
        if not 0.0 <= self.min_contrast <= 0.5:
            raise ValueError(f"min_contrast must be in [0, 0.5], got {self.min_contrast}")
        unknown = [k for k in self.backgrounds if k not in BACKGROUND_KINDS]
        if not self.backgrounds or unknown:
            raise ValueError(
                f"backgrounds must be a non-empty subset of {BACKGROUND_KINDS}, "
                f"got {self.backgrounds}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain-types dict (lists for tuples), for YAML recipes and run directories."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CurveConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"unknown CurveConfig keys {unknown}; valid: {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class Arc:
    """One drawn arc, lengths in pixels.

    ``orientation_deg`` is the chord's orientation (label * 22.5 plus jitter); ``bulge`` is +1
    when the arc bulges to the left of the chord direction (up for orientation 0, a "frown"),
    -1 to the right; ``center`` is (x, y), y down, of the point halfway between the chord's
    midpoint and the arc's apex; ``colour`` is RGB in [0, 1].
    """

    label: int
    orientation_deg: float
    bulge: int
    radius: float
    sweep_deg: float
    thickness: float
    center: tuple[float, float]
    colour: tuple[float, float, float]


@dataclass
class CurveSample:
    """A rendered image (float32, 3 x H x W in [0, 1]) with its label(s) and metadata."""

    image: np.ndarray
    label: int
    second_label: int | None
    arcs: list[Arc]
    meta: dict[str, Any] = field(default_factory=dict)


@lru_cache(maxsize=8)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x right, y down), each of shape (size, size)."""
    c = np.arange(size, dtype=np.float32) + 0.5
    return np.meshgrid(c, c, indexing="xy")


@lru_cache(maxsize=16)
def _upsampler(size: int, cells: int) -> np.ndarray:
    """Linear-interpolation matrix (size x cells) that resizes a coarse grid to ``size``."""
    pos = (np.arange(size) + 0.5) * cells / size - 0.5
    pos = np.clip(pos, 0, cells - 1)
    lo = np.minimum(np.floor(pos).astype(int), cells - 2)
    frac = pos - lo
    mat = np.zeros((size, cells))
    mat[np.arange(size), lo] = 1 - frac
    mat[np.arange(size), lo + 1] = frac
    return mat


def _paint_stroke(
    image: np.ndarray,
    distance: Callable[[np.ndarray, np.ndarray], np.ndarray],
    box: tuple[float, float, float, float],
    thickness: float,
    colour: tuple[float, float, float],
) -> None:
    """Alpha-blend a stroke of ``thickness`` around the curve whose ``distance`` field is given.

    Only the window ``box`` (x0, y0, x1, y1), grown by the half thickness plus one pixel, is
    evaluated: short strokes then cost a fraction of a full-image pass.
    """
    size = image.shape[-1]
    pad = thickness / 2 + 1
    c0, r0 = (max(int(math.floor(v - pad)), 0) for v in box[:2])
    c1, r1 = (min(int(math.ceil(v + pad)), size) for v in box[2:])
    if c0 >= c1 or r0 >= r1:
        return
    x, y = _pixel_grid(size)
    coverage = np.clip(thickness / 2 + 0.5 - distance(x[r0:r1, c0:c1], y[r0:r1, c0:c1]), 0, 1)
    window = image[:, r0:r1, c0:c1]
    window *= 1 - coverage
    window += coverage * np.asarray(colour, dtype=image.dtype)[:, None, None]


def _paint_segment(
    image: np.ndarray,
    p: tuple[float, float],
    q: tuple[float, float],
    thickness: float,
    colour: tuple[float, float, float],
) -> None:
    """Paint the straight segment p-q (round caps)."""
    dx, dy = q[0] - p[0], q[1] - p[1]
    length2 = max(dx * dx + dy * dy, 1e-12)

    def distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        t = np.clip(((x - p[0]) * dx + (y - p[1]) * dy) / length2, 0.0, 1.0)
        return np.hypot(x - p[0] - t * dx, y - p[1] - t * dy)

    box = (min(p[0], q[0]), min(p[1], q[1]), max(p[0], q[0]), max(p[1], q[1]))
    _paint_stroke(image, distance, box, thickness, colour)


def _paint_arc(image: np.ndarray, arc: Arc) -> None:
    """Paint ``arc`` (round caps)."""
    theta = math.radians(arc.orientation_deg)
    # Unit normal to the chord, pointing to the bulge; image y points down, hence the sign flip.
    bx, by = -math.sin(theta) * arc.bulge, -math.cos(theta) * arc.bulge
    ux, uy = math.cos(theta), -math.sin(theta)
    half = math.radians(arc.sweep_deg) / 2
    cos_half, radius = math.cos(half), arc.radius
    # The box centre lies halfway between the chord midpoint and the apex.
    back = radius * (1 + cos_half) / 2
    cx, cy = arc.center[0] - back * bx, arc.center[1] - back * by
    ends = [
        (
            cx + radius * (cos_half * bx + sign * math.sin(half) * ux),
            cy + radius * (cos_half * by + sign * math.sin(half) * uy),
        )
        for sign in (-1.0, 1.0)
    ]

    def distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        vx, vy = x - cx, y - cy
        dist_center = np.hypot(vx, vy)
        inside = vx * bx + vy * by >= dist_center * cos_half
        to_end = np.minimum(*(np.hypot(x - ex, y - ey) for ex, ey in ends))
        return np.where(inside, np.abs(dist_center - radius), to_end)

    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    _paint_stroke(image, distance, box, arc.thickness, arc.colour)


def _contrasting_colour(rng: np.random.Generator, background_luma: float, min_contrast: float):
    """A random colour whose luma differs from ``background_luma`` by at least min_contrast."""
    below = max(background_luma - min_contrast, 0.0)
    above = max(1.0 - background_luma - min_contrast, 0.0)
    u = rng.random() * (below + above)
    target = u if u < below else background_luma + min_contrast + (u - below)
    colour = rng.random(3)
    luma = float(colour @ _LUMA)
    if target < luma:
        colour = colour * (target / max(luma, 1e-6))
    else:
        colour = 1 - (1 - colour) * ((1 - target) / max(1 - luma, 1e-6))
    return tuple(float(c) for c in np.clip(colour, 0.0, 1.0))


def _background(rng: np.random.Generator, config: CurveConfig, kind: str) -> np.ndarray:
    size, amp = config.size, config.background_amplitude
    base = rng.random(3)[:, None, None] * np.ones((3, size, size))
    if kind == "gradient":
        x, y = _pixel_grid(size)
        angle = rng.random() * 2 * math.pi
        ramp = ((x * math.cos(angle) + y * math.sin(angle)) / size)[None]
        base = base + amp * (rng.random(3)[:, None, None] * 2 - 1) * (ramp - ramp.mean())
    elif kind == "texture":
        for cells in (4, 8, 16):
            up = _upsampler(size, cells)
            coarse = rng.standard_normal((3, cells, cells))
            base = base + (amp / 2) * (up @ coarse @ up.T)
    elif kind == "noise":
        base = base + config.pixel_noise_std * rng.standard_normal((3, size, size))
    return np.clip(base, 0.0, 1.0).astype(np.float32)


def _paint(image: np.ndarray, coverage: np.ndarray, colour: tuple[float, float, float]) -> None:
    image *= 1 - coverage
    image += coverage * np.asarray(colour)[:, None, None]


def _draw_arc(
    rng: np.random.Generator,
    config: CurveConfig,
    label: int,
    center: tuple[float, float],
    background_luma: float,
) -> Arc:
    jitter = config.orientation_jitter_deg
    return Arc(
        label=label,
        orientation_deg=float(ORIENTATIONS_DEG[label] + rng.uniform(-jitter, jitter)),
        bulge=int(rng.integers(2)) * 2 - 1,
        radius=float(rng.uniform(*config.radius_range) * config.size),
        sweep_deg=float(rng.uniform(*config.sweep_range_deg)),
        thickness=float(rng.uniform(*config.thickness_range) * config.size),
        center=center,
        colour=_contrasting_colour(rng, background_luma, config.min_contrast),
    )


def _draw_labels(rng: np.random.Generator, two_arc_fraction: float) -> tuple[int, int | None]:
    """First label, and the second label or None; always consumes the same draws."""
    two_arcs = rng.random() < two_arc_fraction
    first = int(rng.integers(NUM_CLASSES))
    other = int(rng.integers(NUM_CLASSES - 1))
    other += other >= first
    return first, other if two_arcs else None


def _check_stream(seed: int, index: int, two_arc_fraction: float) -> None:
    if index < 0 or seed < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    if not 0.0 <= two_arc_fraction <= 1.0:
        raise ValueError(f"two_arc_fraction must be in [0, 1], got {two_arc_fraction}")


def labels_of(seed: int, index: int, two_arc_fraction: float = 0.0) -> tuple[int, int | None]:
    """The labels ``generate`` gives sample ``index`` (any config), without rendering it."""
    _check_stream(seed, index, two_arc_fraction)
    return _draw_labels(np.random.default_rng([seed, index]), two_arc_fraction)


def generate(
    seed: int, index: int, config: CurveConfig | None = None, two_arc_fraction: float = 0.0
) -> CurveSample:
    """Render sample ``index`` of stream ``seed``: a pure function of all four arguments."""
    config = config or CurveConfig()
    _check_stream(seed, index, two_arc_fraction)
    rng = np.random.default_rng([seed, index])
    label, second_label = _draw_labels(rng, two_arc_fraction)
    size = config.size

    kind = config.backgrounds[int(rng.integers(len(config.backgrounds)))]
    image = _background(rng, config, kind)
    background_luma = float(image.mean(axis=(1, 2)) @ _LUMA)

    jitter = config.position_jitter * size
    center = tuple(float(c) for c in size / 2 + rng.uniform(-jitter, jitter, 2))
    arcs = [_draw_arc(rng, config, label, center, background_luma)]

    n_distractors = int(
        rng.integers(config.n_distractors_range[0], config.n_distractors_range[1] + 1)
    )
    for _ in range(n_distractors):
        length = rng.uniform(*config.distractor_length_range) * size
        angle = rng.random() * math.pi
        px, py = rng.uniform(0, size, 2)
        q = (px + length * math.cos(angle), py - length * math.sin(angle))
        thickness = rng.uniform(*config.thickness_range) * size
        colour = _contrasting_colour(rng, background_luma, config.min_contrast)
        _paint_segment(image, (px, py), q, thickness, colour)

    noise_std = float(rng.uniform(*config.extra_noise_range))
    noise = noise_std * rng.standard_normal(image.shape, dtype=np.float32)

    if second_label is not None:
        offset = config.second_arc_offset * size
        center2 = tuple(float(c) for c in np.asarray(center) + rng.uniform(-offset, offset, 2))
        arcs.append(_draw_arc(rng, config, second_label, center2, background_luma))

    for arc in arcs:
        _paint_arc(image, arc)

    image += noise
    np.clip(image, 0.0, 1.0, out=image)
    return CurveSample(
        image=image,
        label=label,
        second_label=second_label,
        arcs=arcs,
        meta={"background": kind, "n_distractors": n_distractors, "noise_std": noise_std},
    )


def background(seed: int, index: int, config: CurveConfig | None = None) -> np.ndarray:
    """The background of sample ``index`` of stream ``seed`` alone (``(3, H, W)`` in [0, 1]):
    what :func:`generate` paints before any stroke, for the response of a unit to no curve."""
    config = config or CurveConfig()
    _check_stream(seed, index, 0.0)
    rng = np.random.default_rng([seed, index])
    _draw_labels(rng, 0.0)
    kind = config.backgrounds[int(rng.integers(len(config.backgrounds)))]
    return _background(rng, config, kind)
