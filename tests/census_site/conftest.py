"""A small census built from real computations (``mti.attribute`` of CurveNet units over a few
curve images) in the data side's on-disk layout, for the search side, the site and W&B.

One image file is named with markup, so every page that shows a file name has a hostile one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import mti_lightning as mti
from mti_lightning.core.io import save_tensors, write_json
from mti_lightning.core.models import LoadedModel, load_model
from mti_lightning.journeys.census.site import build_site
from mti_lightning.shells.images import FolderSource
from mti_lightning.world.curve_dataset import write_image_folder

HOSTILE_FILE = "<img src=x onerror=\"document.title='pwned'\"> & q.png"
HOSTILE_LAYER = "<script>document.title='pwned'</script>"
# (layer, attribution layer, units)
LAYERS = [("bn2", "pool1", [0, 1, 2]), ("bn3", "pool2", [0, 1])]
N_IMAGES = 6
TOP_K = 3
THRESHOLD = 0.05


def curve_folder(root: Path) -> Path:
    """``N_IMAGES`` curve images, the first renamed to :data:`HOSTILE_FILE`."""
    folder = write_image_folder(root, N_IMAGES, seed=3)
    first = sorted(p for p in folder.rglob("*.png"))[0]
    first.rename(first.parent / HOSTILE_FILE)
    return folder


def stats(values: torch.Tensor) -> dict[str, float]:
    q = torch.quantile(values, torch.tensor([0.01, 0.5, 0.9, 0.99]))
    return {"mean": float(values.mean()), "p01": float(q[0]), "p50": float(q[1]),
            "p90": float(q[2]), "p99": float(q[3])}


def build_census(census_dir: Path, lm: LoadedModel, source: FolderSource) -> Path:
    """Write units.json, data/<layer>.safetensors and depth.png as the data side does."""
    batch = torch.stack([source.load(i) for i in range(len(source))])
    rows, layers = [], []
    for depth, (layer, attr, units) in enumerate(LAYERS):
        cols = {"e_plus": [], "e_minus": [], "activation": []}
        for u in units:
            att = mti.attribute(lm, batch, f"{layer}:{u}@center", attr)
            e = att.energies[attr]
            e_plus, e_minus, act = e.e_plus.flatten(), e.e_minus.flatten(), att.activation.flatten()
            for k, v in zip(cols, (e_plus, e_minus, act)):
                cols[k].append(v)
            tension = torch.minimum(e_plus, e_minus)
            ratio = tension / torch.maximum(e_plus, e_minus).clamp_min(1e-12)
            t, a = stats(tension), stats(act)
            counts, edges = np.histogram(act.numpy(), bins=5)
            order = tension.argsort(descending=True)[:TOP_K].tolist()
            rows.append({
                "layer": layer, "unit": u, "spec": f"{layer}:{u}@center", "attr_layer": attr,
                "tension_mean": t["mean"], "tension_p50": t["p50"], "tension_p90": t["p90"],
                "tension_p99": t["p99"], "ratio_mean": float(ratio.mean()),
                "e_plus_mean": float(e_plus.mean()), "e_minus_mean": float(e_minus.mean()),
                "frac_tense": float((tension > THRESHOLD).float().mean()),
                "act_mean": a["mean"], "act_p01": a["p01"], "act_p50": a["p50"],
                "act_p99": a["p99"],
                "act_hist": {"edges": edges.tolist(), "counts": counts.tolist()},
                "top": [{"index": i, "file": source.name(i), "tension": float(tension[i]),
                         "e_plus": float(e_plus[i]), "e_minus": float(e_minus[i]),
                         "activation": float(act[i])} for i in order],
            })
        save_tensors(census_dir / "data" / f"{layer}.safetensors", {
            **{k: torch.stack(v, 1).float() for k, v in cols.items()},
            "units": torch.tensor(units, dtype=torch.int64),
        })
        layers.append({"name": layer, "depth": (depth + 1) / len(LAYERS), "attr_layer": attr,
                       "n_units": len(units)})
    rows.sort(key=lambda r: -r["tension_mean"])
    rows = [{"rank": k + 1, **r} for k, r in enumerate(rows)]
    write_json(census_dir / "units.json", {
        "model": lm.name, "data": str(source.root), "n_images": len(source),
        "threshold": THRESHOLD, "layers": layers, "units": rows,
    })
    from PIL import Image

    Image.new("RGB", (40, 20), (200, 120, 40)).save(census_dir / "depth.png")
    return census_dir


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
    return build_census(tmp_path_factory.mktemp("census") / "census", curvenet, census_source)


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
