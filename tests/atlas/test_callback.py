"""The atlas embedding callback: search images placed on an atlas through the same attribution
reduction as the dataset pass and the atlas's own UMAP, a trajectory every N steps, clear
errors for a search that does not match the atlas, and DDP placing exactly what one process
places."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import placed_search_args, run_mti
from tolerances import NETWORK, TRAJECTORY, assert_reordered

from mti_lightning.core.config_schema import ModelSchema
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.features import parse_feature
from mti_lightning.core.io import load_tensors
from mti_lightning.core.models import load_model
from mti_lightning.journeys.atlas import AtlasConfig, run_atlas
from mti_lightning.journeys.atlas.callback import AtlasEmbedding, check_search
from mti_lightning.journeys.atlas.embedding import MODEL_FILE, exact_knn
from mti_lightning.journeys.atlas.placement import load_atlas
from mti_lightning.shells.images import open_source


def test_data_images_land_near_their_own_atlas_position(curve_atlas: Path) -> None:
    """Data images of the atlas, loaded from their files and embedded through the callback's
    path, get the pass's vectors and land near their own layout position.

    The placement (``LayoutModel.transform``: UMAP's membership graph, then UMAP's
    ``init_graph_transform``) puts a vector at the membership-weighted mean of the layout
    positions of its k nearest data vectors, and exactly on a data point when it is that point
    (membership 1). Recomputed here on the original network (the pass ran on its fast copy), a
    data image's vector matches the pass's only to float rounding: it lands on its own point
    or, with a membership a rounding error under 1, at that weighted mean, which lies inside
    the layout region of its own neighbourhood. Hence the tolerances: each image within the
    radius of its neighbourhood in the layout (the distance from its position to the farthest
    of its k nearest data vectors' positions), and the median within 0.2 of the layout's RMS
    spread (root-mean-square distance to its centroid). Measured on a 2-core AVX2 EPYC: every
    image on its own point (distance 0); UMAP's stochastic ``transform`` refinement, left out,
    gave a median of 0.10 and a largest of 0.22 spreads over a third of the selection."""
    atlas = load_atlas(curve_atlas)
    layout = load_tensors(curve_atlas / "embedding" / "layout.safetensors")
    rows, raw = layout["rows"], layout["raw"].numpy()
    picks = np.arange(0, len(rows), len(rows) // 8)[:8]
    lm = load_model("curvenet")
    source = open_source(curve_atlas / "data" / "curves", lm.input_size[1:])
    images = torch.stack([source.load(int(rows[i])) for i in picks])
    out = AtlasEmbedding(atlas, every_n_steps=0).vectors(lm, images)
    # the same vectors as the dataset pass (which ran on the fast copy of the network)
    assert_reordered(
        out["vector"].double(),
        atlas.vectors[picks],
        tol=NETWORK,
        scale=float(atlas.vectors.abs().max()),
    )
    placed_raw, _ = atlas.model.transform(out["vector"].double().numpy())
    err = np.linalg.norm(placed_raw - raw[picks], axis=1)
    knn, _ = exact_knn(
        atlas.vectors.numpy(), atlas.model.reducer.n_neighbors, atlas.cfg.umap_metric
    )
    radius = np.array([np.linalg.norm(raw[knn[i]] - raw[i], axis=1).max() for i in picks])
    spread = np.sqrt(((raw - raw.mean(0)) ** 2).sum(1).mean())
    assert (err <= radius).all(), (err, radius)
    assert np.median(err) <= 0.2 * spread, (err, spread)
    records = atlas.place(out["vector"].double().numpy())
    assert all(r["nn_dist_hd"] < 1e-3 and r["on_map"] for r in records)


def test_a_search_that_does_not_match_the_atlas_is_an_error(curve_atlas: Path) -> None:
    atlas = load_atlas(curve_atlas)
    right = ModelSchema(name="curvenet")
    feature = [parse_feature("bn2:19@center")]
    check_search(atlas, right, feature, "pool1")
    with pytest.raises(MTIConfigError, match=r"model curvenet .*model.name=resnet18"):
        check_search(atlas, replace(right, name="resnet18"), feature, "pool1")
    with pytest.raises(MTIConfigError, match=r"feature bn2:19@center.* target is bn2:9@center"):
        check_search(atlas, right, [parse_feature("bn2:9@center")], "pool1")
    with pytest.raises(MTIConfigError, match=r"layer pool1.*attribution_layer=act1"):
        check_search(atlas, right, feature, "act1")
    with pytest.raises(MTIConfigError, match="atlas_every"):
        AtlasEmbedding(atlas, every_n_steps=-1)


def test_an_atlas_without_its_embedding_model_names_the_stage_to_rerun(
    curve_atlas: Path, tmp_path: Path
) -> None:
    old = tmp_path / "old_atlas"
    shutil.copytree(curve_atlas, old, ignore=shutil.ignore_patterns("data"))
    (old / "embedding" / MODEL_FILE).unlink()
    with pytest.raises(MTIConfigError, match=f"hydra.run.dir={old} stage=embedding"):
        load_atlas(old)


@pytest.mark.slow
def test_search_placed_on_the_atlas_one_process_and_ddp(
    curve_atlas: Path, placed_search: Path, tmp_path: Path
) -> None:
    """``mti callbacks.atlas=PATH``: a trajectory point every N steps (and at the end), the
    inversions placed, the results rows carrying the atlas columns; DDP over two processes
    (gloo, CPU) places the images where one process does (a mismatching target:
    ``test_a_search_that_does_not_match_the_atlas_is_an_error``)."""
    args = placed_search_args(curve_atlas)
    two = run_mti(
        [*args, "hydra.run.dir=two", "trainer.devices=2", "trainer.strategy=ddp"], tmp_path
    )
    assert two.returncode == 0, two.stderr[-3000:]
    placed = {}
    for name, run in (("one", placed_search), ("two", tmp_path / "two")):
        p = json.loads((run / "atlas" / "placement.json").read_text())
        assert p["steps"] == [0, 2, 4, 5]
        (img,) = p["images"]
        assert [t["step"] for t in img["trajectory"]] == [0, 2, 4, 5]
        assert {"plus", "minus"} <= set(img) and len(img["cell"]) == 2
        assert (run / "atlas" / "placement.png").stat().st_size > 10_000
        row = json.loads((run / "metrics.json").read_text())["images"][0]
        assert row["atlas_cell"] == str(tuple(img["cell"]))
        assert row["atlas_nn_dist"] == pytest.approx(img["nn_dist"])
        placed[name] = np.array(
            [[t["x"], t["y"]] for t in img["trajectory"]]
            + [[img[s]["x"], img[s]["y"]] for s in ("plus", "minus")]
        )
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["world_size"] == 2
    # same draws split 2 x 2 instead of 1 x 4: images agree to float summation order, and the
    # placement is a continuous function of them
    assert_reordered(placed["two"], placed["one"], tol=TRAJECTORY, scale=1.0)


@pytest.mark.slow
def test_viewer_marks_the_search(curve_atlas: Path, placed_search: Path, tmp_path: Path) -> None:
    """``stage=viewer atlas.searches=[RUN]``: the page carries each image's marker (position,
    trajectory, the image, its figures); a run placed on no atlas is a clear error."""
    run_dir = curve_atlas  # in place: the dataset pass's fingerprint holds its data's path
    cfg = AtlasConfig.from_dict(json.loads((run_dir / "atlas_config.json").read_text()))
    cfg.searches = [str(placed_search)]
    run_atlas(cfg, run_dir, "viewer")
    page = (run_dir / "atlas" / "atlas.html").read_text()
    data = json.loads(re.search(r'id="atlas-data">(.*?)</script>', page, re.S).group(1))
    (search,) = data["searches"]
    (marker,) = search["images"]
    placement = json.loads((placed_search / "atlas" / "placement.json").read_text())["images"][0]
    assert marker["x"] == placement["x"] and marker["cell"] == placement["cell"]
    assert len(marker["trajectory"]) == 4 and marker["src"].startswith("data:image/png;base64,")
    for key in ("feature", "activation", "e_plus", "e_minus", "nn_dist", "on_map"):
        assert marker[key] == placement[key]
    cfg.searches = [str(tmp_path)]
    with pytest.raises(MTIConfigError, match="holds no atlas placement"):
        run_atlas(cfg, run_dir, "viewer")


@pytest.mark.slow
def test_the_api_places_a_search_on_the_atlas_and_refuses_a_mismatch(
    curve_atlas: Path, tmp_path: Path
) -> None:
    """``mti.search(..., atlas=PATH, atlas_every=N)`` is ``callbacks.atlas``: the same placement
    as the command's; a target the atlas was not made for fails before the search starts."""
    import mti_lightning as mti

    options = {"steps": 3, "draws": 2, "logger": "csv", "search.inversions.steps": 2}
    result = mti.search(
        "curvenet",
        "bn2:19@center",
        atlas=curve_atlas,
        atlas_every=2,
        run_dir=tmp_path / "a",
        **options,
    )
    placement = json.loads((result.run_dir / "atlas" / "placement.json").read_text())
    assert placement["steps"] == [0, 2, 3] and len(placement["images"]) == 1
    assert result.rows[0]["atlas_cell"] == str(tuple(placement["images"][0]["cell"]))
    with pytest.raises(MTIConfigError, match=r"feature bn2:19@center.* target is bn2:9@center"):
        mti.search("curvenet", "bn2:9@center", atlas=curve_atlas, run_dir=tmp_path / "b", **options)
    assert not (tmp_path / "b" / "metrics.json").exists()
