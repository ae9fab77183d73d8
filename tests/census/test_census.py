"""The census journey end to end on CurveNet and curve images: jobs, resume, faces, bad input,
and a hand-built unit whose inputs fight ranking first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from tolerances import assert_reordered, assert_same_ranking
from torch import nn

import mti_lightning as mti
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.io import load_tensors, read_image
from mti_lightning.face.api_config import compose_config
from mti_lightning.journeys.census.search_side import trade_line
from mti_lightning.journeys.census.tracking import census_rows
from mti_lightning.shells.unit_pass import UnitsReduce
from mti_lightning.world.curve_dataset import write_image_folder

MTI = str(Path(sys.executable).parent / "mti")
OPTIONS = {"shard_size": 8, "batch_size": 4, "top_k": 3, "logger": None, "search": False,
           "site": False}
LAYERS = ["bn2", "act3:in"]


@pytest.fixture(scope="module")
def curves(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("curves")
    return write_image_folder(folder, 20, 3, None, 0.3)


def census(run_dir: Path, data: Path, **options):
    return mti.census("curvenet", LAYERS, str(data), run_dir=run_dir, **{**OPTIONS, **options})


def numbers(rows: list[dict]) -> dict[str, list[float]]:
    keys = [k for k, v in rows[0].items() if isinstance(v, float)]
    return {k: [r[k] for r in rows] for k in keys}


def same_table(a: Path, b: Path) -> None:
    """The census of ``b`` equals that of ``a`` up to the rounding of another chunking (its
    sums run in another order): numbers within :data:`REORDERED`, rankings up to ties."""
    ta = json.loads((a / "census" / "units.json").read_text())["units"]
    tb = json.loads((b / "census" / "units.json").read_text())["units"]
    assert_same_ranking([r["spec"] for r in ta], [r["spec"] for r in tb],
                        [r["tension_p90"] for r in ta], [r["tension_p90"] for r in tb])
    by_spec = {r["spec"]: r for r in tb}
    tb = [by_spec[r["spec"]] for r in ta]
    for key, values in numbers(ta).items():
        assert_reordered(numbers(tb)[key], values, msg=key)
    for ra, rb in zip(ta, tb):
        assert_same_ranking([t["index"] for t in ra["top"]], [t["index"] for t in rb["top"]],
                            [t["tension"] for t in ra["top"]], [t["tension"] for t in rb["top"]],
                            truncated=True)
    for layer in LAYERS:
        da, db = (load_tensors(d / "census" / "data" / f"{layer}.safetensors") for d in (a, b))
        assert torch.equal(da["units"], db["units"])
        scale = float(torch.maximum(da["e_plus"], da["e_minus"]).max())
        for key in ("e_plus", "e_minus", "activation"):
            assert_reordered(db[key], da[key], scale=scale, msg=key)


@pytest.fixture(scope="module")
def one(curves, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("one")
    result = census(run, curves)
    table = result.table
    assert table["n_images"] == 20 and table["model"] == "curvenet"
    assert [(x["name"], x["attr_layer"], x["n_units"]) for x in table["layers"]] == [
        ("bn2", "conv2:in", 32),
        ("act3:in", "conv3:in", 48),
    ]
    rows = result.rows
    assert len(rows) == 80 and [r["rank"] for r in rows] == list(range(1, 81))
    p90 = [r["tension_p90"] for r in rows]
    assert p90 == sorted(p90, reverse=True)
    top = rows[0]["top"]
    assert [t["tension"] for t in top] == sorted((t["tension"] for t in top), reverse=True)
    assert top[0]["tension"] == pytest.approx(min(top[0]["e_plus"], top[0]["e_minus"]))
    data = load_tensors(run / "census" / "data" / "bn2.safetensors")
    assert data["e_plus"].shape == (20, 32) and data["units"].tolist() == list(range(32))
    assert (run / "census" / "depth.png").stat().st_size > 1000
    # the pass's closed form equals the core's attribution of each unit on its own
    lm = mti.load_model("curvenet")
    files = json.loads((run / "census" / "files.json").read_text())
    images = torch.stack([read_image(curves / f, (64, 64)) for f in files[:4]])
    for unit in (0, 31):
        ref = mti.attribute(lm, images, f"bn2:{unit}@center", "conv2:in")
        e = ref.energies["conv2:in"]
        scale = float(torch.maximum(e.e_plus, e.e_minus).max())
        for key, want in (("e_plus", e.e_plus), ("e_minus", e.e_minus), ("activation", ref.activation)):
            assert_reordered(data[key][:4, unit], want, scale=scale, msg=key)
    return run


def test_two_jobs_give_the_table_one_process_gives_and_a_merge_again_does_nothing(one, curves, tmp_path, capsys):
    out = tmp_path / "shared"
    first = census(tmp_path / "j0", curves, jobs=2, job=0, unit_chunk=20, out=str(out))
    assert first.rows == [] and "job(s) [1] of 2 still to finish" in capsys.readouterr().out
    # this job's chunks are over its memory budget: split, said, and the same numbers
    census(tmp_path / "j1", curves, jobs=2, job=1, unit_chunk=20, out=str(out), max_memory_mb=0.05)
    assert "splitting it into chunks of 1 images" in capsys.readouterr().out
    same_table(one, out)
    again = census(tmp_path / "j2", curves, jobs=2, job=1, unit_chunk=20, out=str(out))
    assert again.stages["merge"]["layers_redone"] == [] and not again.stages["merge"]["written"]
    assert again.stages["data"]["computed_shards"] == 0


def test_a_killed_job_rerun_gives_the_same_table(one, curves, tmp_path, monkeypatch):
    calls = []
    original = UnitsReduce.__call__

    def dies_in_the_second_shard(self, lm, images):
        calls.append(1)
        if len(calls) == 3:  # chunks of 4 images, shards of 8: the first shard is written
            raise RuntimeError("killed")
        return original(self, lm, images)

    monkeypatch.setattr(UnitsReduce, "__call__", dies_in_the_second_shard)
    with pytest.raises(RuntimeError, match="killed"):
        census(tmp_path, curves)
    monkeypatch.setattr(UnitsReduce, "__call__", original)
    assert not (tmp_path / "census" / "units.json").exists()
    result = census(tmp_path, curves)
    assert result.stages["data"]["computed_shards"] == 2  # of 3: the first one was kept
    same_table(one, tmp_path)


@pytest.mark.slow
def test_cli_and_api_give_the_same_units_json(one, curves, tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    args = [
        "experiment=census",
        f"hydra.run.dir={tmp_path}",
        "census.layers=[bn2,act3:in]",
        f"census.data={curves}",
        "census.shard_size=8",
        "census.batch_size=4",
        "census.top_k=3",
        "census.search=false",
        "census.site=false",
        "logger.kind=none",
    ]
    out = subprocess.run([MTI, *args], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    cli = json.loads((tmp_path / "census" / "units.json").read_text())
    api = json.loads((one / "census" / "units.json").read_text())
    assert cli == api


def test_a_census_runs_its_search_side_and_builds_its_site(curves, tmp_path, capsys):
    tiny = {"search.steps": 3, "search.draws": 1, "search.inversions.steps": 2,
            "search.inversions.draws": 1}
    result = mti.census(
        "curvenet", ["bn2"], str(curves), run_dir=tmp_path, units=2, shard_size=8, batch_size=8,
        top_k=2, logger=None, **tiny,
    )
    # settings below the defaults are said once, at the start, with what they trade
    said = [line for line in capsys.readouterr().out.splitlines() if "below the defaults" in line]
    assert said == ["census search: 3 steps x 1 draws, inversions 2 x 1: below the defaults "
                    "(150 x 8, 100 x 8), whose rates of searches above the tensest data image "
                    "and of inversions of the right sign docs/quality.md measures; this run "
                    "trades them for time"]
    census = tmp_path / "census"
    found = json.loads((census / "search.json").read_text())["units"]
    assert sorted(found) == sorted(r["spec"] for r in result.rows)
    for entry in found.values():
        assert (census / entry["images"]["mti"]).is_file()
        assert entry["search_over_data"] == pytest.approx(
            entry["end_tension"] / entry["data_max_tension"], rel=1e-6
        )
        # centre units: every picture also cropped to the effective receptive field
        rf = entry["receptive_field"]
        assert rf["effective_px"] <= rf["theoretical_px"] and rf["effective_px"] < rf["input_px"][0]
        assert sorted(entry["crops"]) == sorted(entry["images"])
        box = rf["effective"]
        with Image.open(census / entry["crops"]["mti"]) as crop:
            assert crop.size == (box["width"], box["height"])
    index = (census / "index.html").read_text()
    pages = list((census / "pages").glob("*.html"))
    assert len(pages) == 2
    for page in pages:
        assert "effective receptive field" in page.read_text() and "_rf.png" in page.read_text()
    # the W&B table's record: the crops as image columns beside the full canvases, the field in px
    rows, columns = census_rows(census)
    for r in rows:
        assert r["rf_effective_px"] == found[r["spec"]]["receptive_field"]["effective_px"]
    assert all(Path(p).name == "mti_rf.png" for p in columns["mti_rf"] if p is not None)
    assert sum(p is not None for p in columns["mti_rf"]) == 2
    assert all(r["spec"] in index for r in result.rows)


def test_a_search_side_at_or_above_the_defaults_trades_nothing():
    assert trade_line(compose_config([])) is None
    assert trade_line(compose_config(["search.steps=300", "search.inversions.draws=16"])) is None
    assert "40 steps x 8 draws" in trade_line(compose_config(["search.steps=40"]))


def test_a_circuit_run_goes_on_its_units_page(curves, tmp_path):
    """A circuit of a census unit (``mti.circuit``), named in ``census.circuits``, puts the
    unit's strongest upstream channels, its ablation and its figure on the unit's page."""
    circuit = mti.circuit(
        "curvenet", "bn2:19@center", data=str(curves), k=2, run_dir=tmp_path / "circuit",
        logger=None, echo=False, visualize=False, control_seeds=1,
    )
    census = tmp_path / "run" / "census"
    with pytest.raises(MTIConfigError, match="holds no circuit/circuit.json"):
        mti.census("curvenet", ["bn2"], str(curves), run_dir=tmp_path / "run", **{
            **OPTIONS, "site": True, "circuits": [str(tmp_path)]})
    assert not census.exists()
    mti.census("curvenet", ["bn2"], str(curves), run_dir=tmp_path / "run", **{
        **OPTIONS, "site": True, "circuits": [str(tmp_path / "circuit")]})
    entry = json.loads((census / "circuits.json").read_text())["bn2:19@center"]
    assert [e["channel"] for e in entry["inhibitory"]] == circuit.record["inhibitory"]
    assert (census / entry["figure"]).is_file()
    page = next((census / "pages").glob("bn2_19_center-*.html")).read_text()
    assert "Upstream channels" in page and entry["figure"] in page
    assert sum("Upstream channels" in p.read_text() for p in (census / "pages").glob("*")) == 1


def test_bad_input_is_one_line_before_any_work_and_keeps_what_was_written(one, curves, tmp_path):
    before = (one / "census" / "units.json").read_bytes()
    with pytest.raises(MTIConfigError, match=r"unknown layer 'bn9'; closest names .*bn"):
        mti.census("curvenet", ["bn9"], str(curves), run_dir=one, **OPTIONS)
    with pytest.raises(MTIConfigError, match=r"depth 1.5 outside \(0, 1\]"):
        mti.census("curvenet", [1.5], str(curves), run_dir=one, **OPTIONS)
    with pytest.raises(MTIConfigError, match=r"census.units=40 is larger than layer 'bn2'"):
        mti.census("curvenet", ["bn2"], str(curves), run_dir=one, units=40, **OPTIONS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MTIConfigError, match="holds no image files"):
        mti.census("curvenet", ["bn2"], str(tmp_path / "empty"), run_dir=one, **OPTIONS)
    assert (one / "census" / "units.json").read_bytes() == before


class Scalar(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).sum(1)


class Fight(nn.Module):
    """Two copies of the image's brightness; unit 1 of ``conv`` adds one and subtracts the
    other (large E+ and E- that cancel), units 0 and 2 only add."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 2, 1)
        self.act = nn.ReLU()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.out = nn.ReLU()
        self.total = Scalar()
        with torch.no_grad():
            self.stem.weight.fill_(1.0)
            self.stem.bias.fill_(0.1)
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[0, 0] = 0.5
            self.conv.weight[1, 0] = 2.0
            self.conv.weight[1, 1] = -2.0
            self.conv.weight[2, :] = 0.3
            self.bn.bias.fill_(1.0)  # every unit passes the ReLU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.total(self.out(self.bn(self.conv(self.act(self.stem(x))))))


def test_a_unit_fed_by_opposing_inputs_ranks_first(curves, tmp_path):
    net = mti.load_model(Fight(), input_size=(3, 16, 16))
    result = mti.census(net, ["bn", "out"], str(curves), run_dir=tmp_path, **OPTIONS)
    assert {(r["layer"], r["unit"]) for r in result.rows[:2]} == {("bn", 1), ("out", 1)}
    first = result.rows[0]
    assert first["e_plus_mean"] > 1
    assert_reordered(first["e_minus_mean"], first["e_plus_mean"])  # the same terms, summed apart
    assert all(r["tension_p90"] == 0 for r in result.rows[2:])
    # bn: the closed form over conv; out (after the ReLU): a batched backward from act
    assert [(x["attr_layer"], x["closed_form"]) for x in result.table["layers"]] == [
        ("conv:in", True),
        ("act", False),
    ]
    with pytest.raises(MTIConfigError, match="'total' has value shape .*no channels"):
        mti.census(net, ["total"], str(curves), run_dir=tmp_path, **OPTIONS)


def test_the_batched_paths_memory_counts_the_forward_and_the_paths_largest_map():
    """The batched path's memory bound reads the forward it runs: every leaf output up to the
    unit layer, and the largest output after the attribution layer."""
    from mti_lightning.journeys.census.data import path_elements

    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2), nn.ReLU()
    )
    total, largest = path_elements(net, (3, 9, 9), "1", "2")
    assert total == 4 * 81 + 4 * 81 + 6 * 16  # conv, relu, conv (the forward stops there)
    assert largest == 6 * 16  # after the attribution layer "1": only the second conv
    total, largest = path_elements(net, (3, 9, 9), "1:in", "2")
    assert largest == 4 * 81  # the ReLU's own output now lies on the path
