"""A small census of CurveNet units over a few curve images (the census's own data side), for
the search side, the site and W&B.

One image file is named with markup, so every page that shows a file name has a hostile one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import mti_lightning as mti
from mti_lightning.core.io import write_json
from mti_lightning.core.models import LoadedModel, load_model
from mti_lightning.journeys.census.site import build_site
from mti_lightning.shells.images import FolderSource
from mti_lightning.world.curve_dataset import write_image_folder

HOSTILE_FILE = "<img src=x onerror=\"document.title='pwned'\"> & q.png"
HOSTILE_LAYER = "<script>document.title='pwned'</script>"
# (layer, its attribution layer) and the units sampled per layer
LAYERS = [("bn2", "pool1"), ("bn3", "pool2")]
UNITS = 3
N_IMAGES = 6
TOP_K = 3
THRESHOLD = 0.5


def curve_folder(root: Path) -> Path:
    """``N_IMAGES`` curve images, the first renamed to :data:`HOSTILE_FILE`."""
    folder = write_image_folder(root, N_IMAGES, seed=3)
    first = sorted(p for p in folder.rglob("*.png"))[0]
    first.rename(first.parent / HOSTILE_FILE)
    return folder


def build_census(run_dir: Path, lm: LoadedModel, source: FolderSource) -> Path:
    """The census's own data side (``mti.census`` without its search side and site) over
    ``source``: units.json, data/<layer>.safetensors and depth.png; returns the census folder."""
    mti.census(
        lm, [layer for layer, _ in LAYERS], str(source.root), run_dir=run_dir, units=UNITS,
        top_k=TOP_K, threshold=THRESHOLD, shard_size=8, batch_size=8, logger=None,
        search=False, site=False,
    )
    return run_dir / "census"


@pytest.fixture(scope="session")
def curvenet() -> LoadedModel:
    torch.manual_seed(0)
    return load_model("curvenet")


@pytest.fixture(scope="session")
def census_source(tmp_path_factory: pytest.TempPathFactory) -> FolderSource:
    folder = curve_folder(tmp_path_factory.mktemp("census-images") / "curves")
    return FolderSource(folder, (64, 64))


@pytest.fixture(scope="session")
def data_census(
    tmp_path_factory: pytest.TempPathFactory, curvenet: LoadedModel, census_source: FolderSource
) -> Path:
    """A census folder holding only the data side's files."""
    return build_census(tmp_path_factory.mktemp("census"), curvenet, census_source)


@pytest.fixture
def census_copy(data_census: Path, tmp_path: Path) -> Path:
    """A fresh copy of :func:`data_census` a test may add to."""
    return Path(shutil.copytree(data_census, tmp_path / "census"))


def tiny_search_options(units_per_search: int = 2, top_n: int = 4):
    """The search side at test size: 3 steps of 1 draw, inversions of 2 steps, on the network
    itself (building the fast step network costs more than 3 steps save)."""
    from dataclasses import replace

    from mti_lightning.core.config_schema import MTIConfig
    from mti_lightning.journeys.census.search_side import SearchSideOptions

    cfg = MTIConfig()
    inv = replace(cfg.search.inversions, steps=2, draws=1)
    search = replace(cfg.search, steps=3, draws=1, inversions=inv)
    cfg = replace(cfg, search=search, trainer=replace(cfg.trainer, fast_net=False))
    return SearchSideOptions(cfg, top_n=top_n, units_per_search=units_per_search)


@pytest.fixture(scope="session")
def search_runs(
    tmp_path_factory: pytest.TempPathFactory,
    data_census: Path,
    curvenet: LoadedModel,
    census_source: FolderSource,
) -> tuple[Path, dict[Path, int]]:
    """:func:`data_census` searched in two calls, as a run stopped after its first chunk and
    rerun would be: the 2 tensest units (one chunk), then the 4 tensest, 2 per search. Returns
    the census and the files the first call left, with their modification times."""
    from mti_lightning.journeys.census.search_side import run_search_side

    census = Path(shutil.copytree(data_census, tmp_path_factory.mktemp("searched") / "census"))
    run_search_side(census, curvenet, tiny_search_options(top_n=2), census_source)
    first = {p: p.stat().st_mtime_ns for p in census.rglob("*") if p.is_file()}
    run_search_side(census, curvenet, tiny_search_options(top_n=4), census_source)
    return census, first


@pytest.fixture(scope="session")
def searched_census(search_runs: tuple[Path, dict[Path, int]]) -> Path:
    """:func:`data_census` with the search side run on its 4 tensest units, 2 per search."""
    return search_runs[0]


def add_hostile_unit(census: Path, source: FolderSource) -> str:
    """Add a unit whose layer is a script and whose tensest image's file name is markup (the
    data side would never name a layer so, but a page must show any name as text); returns
    its spec."""
    units = json.loads((census / "units.json").read_text())
    first = units["units"][0]
    hostile = next(i for i in range(len(source)) if HOSTILE_FILE in source.name(i))
    spec = f"{HOSTILE_LAYER}:0@center"
    top = [{**first["top"][0], "index": hostile, "file": source.name(hostile)}]
    row = {**first, "layer": HOSTILE_LAYER, "attr_layer": HOSTILE_LAYER, "spec": spec, "top": top}
    units["units"].append({**row, "rank": len(units["units"]) + 1})
    write_json(census / "units.json", units)
    return spec


@pytest.fixture(scope="session")
def site(searched_census: Path, census_source, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The searched census plus a hostile unit, a circuit for the tensest unit and an atlas for
    the second, built into a site."""
    census = Path(shutil.copytree(searched_census, tmp_path_factory.mktemp("site") / "census"))
    add_hostile_unit(census, census_source)
    rows = json.loads((census / "units.json").read_text())["units"]
    circuit = {"inhibitory": [{"channel": "<b>7</b>", "share": 0.4}], "excitatory": []}
    write_json(census / "circuits.json", {rows[0]["spec"]: circuit})
    shutil.copyfile(census / "depth.png", census / "atlas of <two>.png")
    write_json(census / "atlases.json", {rows[1]["spec"]: "atlas of <two>.png"})
    build_site(census)
    return census
