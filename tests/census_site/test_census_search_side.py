"""The census's search side on a real small census (CurveNet, curve images): batched searches in
chunks, per-unit numbers and images, search over data from the data side's tensors, resuming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_search_options
from PIL import Image

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.io import load_tensors, write_json
from mti_lightning.journeys.census.search_side import (
    IMAGE_FILES,
    chosen_rows,
    chunks,
    run_search_side,
)


def test_every_unit_gets_the_same_record(searched_census: Path) -> None:
    units = json.loads((searched_census / "units.json").read_text())["units"]
    found = json.loads((searched_census / "search.json").read_text())["units"]
    tensest = [r["spec"] for r in sorted(units, key=lambda r: r["rank"])[:4]]
    assert list(found) == tensest  # the 4 first by rank, in rank order
    keys = {tuple(sorted(e)) for e in found.values()}
    assert len(keys) == 1
    for entry in found.values():
        assert set(entry["images"]) == set(IMAGE_FILES)
        for rel in entry["images"].values():
            with Image.open(searched_census / rel) as img:
                assert img.size == (64, 64)
        assert entry["end_tension"] == pytest.approx(min(entry["end_e_plus"], entry["end_e_minus"]))
    chunks = list((searched_census / "search").glob("chunk-*.json"))
    assert len(chunks) >= 2  # 4 units at most 2 per search
    assert all(len(json.loads(c.read_text())["specs"]) <= 2 for c in chunks)


def test_search_over_data_is_over_the_datas_largest_tension(searched_census: Path) -> None:
    found = json.loads((searched_census / "search.json").read_text())["units"]
    for entry in found.values():
        values = load_tensors(searched_census / "data" / f"{entry['layer']}.safetensors")
        col = values["units"].tolist().index(entry["unit"])
        top = float(torch.minimum(values["e_plus"], values["e_minus"])[:, col].max())
        assert entry["data_max_tension"] == pytest.approx(top, rel=1e-6)
        assert entry["search_over_data"] == pytest.approx(entry["end_tension"] / top, rel=1e-6)


def test_a_rerun_continues_after_the_finished_chunks(search_runs) -> None:
    """The second call of the fixture (4 units) kept the first call's chunks (2 units) as they
    were and added only the chunks it lacked."""
    census, first = search_runs
    units = json.loads((census / "units.json").read_text())
    done = [p for p in first if p.parent.name == "search" and p.name.startswith("chunk-")]
    kept = [p for p in first if p.parent.parent.name == "units"] + done
    assert len(done) == len(chunks(chosen_rows(units, 2), 2))
    # the chunks' records, and 8 images of each of 2 units, each also cropped to its receptive field
    assert len(kept) == len(done) + 2 * 8 * 2
    assert all(p.stat().st_mtime_ns == first[p] for p in kept)
    second = {tuple(r["spec"] for r in rows) for _, rows in chunks(chosen_rows(units, 4), 2)}
    firsts = {tuple(r["spec"] for r in rows) for _, rows in chunks(chosen_rows(units, 2), 2)}
    assert len(list((census / "search").glob("chunk-*.json"))) == len(second | firsts)
    assert len(json.loads((census / "search.json").read_text())["units"]) == 4


def test_a_second_run_writes_nothing(searched_census: Path, curvenet, census_source) -> None:
    before = {p: p.stat().st_mtime_ns for p in searched_census.rglob("*")}
    run_search_side(searched_census, curvenet, tiny_search_options(), census_source)
    after = {p: p.stat().st_mtime_ns for p in searched_census.rglob("*")}
    assert after == before


def test_bad_options_fail_before_any_work(census_copy: Path, curvenet, census_source) -> None:
    with pytest.raises(MTIConfigError, match="units_per_search=0"):
        run_search_side(census_copy, curvenet, tiny_search_options(units_per_search=0))
    units = json.loads((census_copy / "units.json").read_text())
    units["units"][0]["top"][0]["index"] = (units["units"][0]["top"][0]["index"] + 1) % 6
    write_json(census_copy / "units.json", units)
    with pytest.raises(MTIConfigError, match="give the census's own data"):
        run_search_side(census_copy, curvenet, tiny_search_options(), census_source)
    (census_copy / "data" / "bn2.safetensors").unlink()
    with pytest.raises(MTIConfigError, match="bn2.safetensors is missing"):
        run_search_side(census_copy, curvenet, tiny_search_options(top_n=0), census_source)
    assert not (census_copy / "search").exists()
