"""The pure parts of the stages: selection, layout normalisation, gridding, cell means,
icon targets and the atlas border colours."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tolerances import assert_reordered

from mti_lightning.journeys.atlas.compose import compose_atlas
from mti_lightning.journeys.atlas.embedding import exact_knn, normalise_layout
from mti_lightning.journeys.atlas.icons import (
    assign_cells,
    canvas_box,
    cell_means,
    icon_targets,
    occupied_cells,
)
from mti_lightning.journeys.atlas.selection import select


def _results() -> dict[str, torch.Tensor]:
    act = torch.tensor([3.0, -2.0, 0.5, 1.0, -4.0, 0.0])
    e_plus = torch.tensor([5.0, 1.0, 0.2, 9.0, 0.1, 2.0])
    e_minus = torch.tensor([2.0, 3.0, 0.1, 8.0, 4.0, 2.0])
    return {
        "activation": act,
        "L/e_plus": e_plus,
        "L/e_minus": e_minus,
        "L/e_plus_l2": e_plus / 2,
        "L/e_minus_l2": e_minus / 2,
    }


def test_selection_is_the_union_of_criteria() -> None:
    picked = select(
        _results(), "L", {"top_activation": 1, "bottom_activation": 2, "top_e_minus": 1}
    )
    assert picked["rows"].tolist() == [0, 1, 3, 4]
    assert picked["top_activation"].tolist() == [True, False, False, False]
    assert picked["bottom_activation"].tolist() == [False, True, False, True]
    assert picked["top_e_minus"].tolist() == [False, False, True, False]


def test_selection_by_energy_and_tension() -> None:
    r = _results()
    assert select(r, "L", {"top_l1": 2})["rows"].tolist() == [0, 3]
    assert select(r, "L", {"top_l2": 1})["rows"].tolist() == [3]
    assert select(r, "L", {"top_e_plus": 1})["rows"].tolist() == [3]
    assert select(r, "L", {"top_tension": 2})["rows"].tolist() == [0, 3]
    assert select(r, "L", {"top_activation": 100})["rows"].numel() == 6


def test_layout_is_clipped_and_normalised() -> None:
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(200, 2))
    xy[0] = [1e3, -1e3]
    out = normalise_layout(xy, 0.02)
    assert out.min() == 0.0 and out.max() == 1.0
    assert out[0].tolist() == [1.0, 0.0]
    inner = out[1:]
    assert (inner > 0.05).mean() > 0.8 and (inner < 0.95).mean() > 0.8


def test_grid_cells_read_like_the_plot() -> None:
    layout = np.array([[0.0, 1.0], [0.99, 0.0], [1.0, 1.0], [0.3, 0.7], [0.55, 0.45]])
    cells = assign_cells(layout, 4)
    assert cells.tolist() == [0, 15, 3, 5, 10]
    ids, counts = occupied_cells(np.array([3, 3, 5, 7, 7, 7]), 2)
    assert ids.tolist() == [3, 7] and counts.tolist() == [2, 3]


def test_cell_means_average_each_cells_members() -> None:
    values = torch.arange(12.0).view(6, 2)
    cells = np.array([3, 3, 5, 7, 7, 7])
    means = cell_means(values, cells, np.array([3, 7]))
    assert torch.allclose(means, torch.tensor([[1.0, 2.0], [8.0, 9.0]]))


def test_icon_targets_boost_inhibition_and_split() -> None:
    m = torch.tensor([[[[1.0, -2.0]]]])  # (K=1, C=1, h=1, w=2) inside the window
    t = icon_targets(m, (1, 2, 0, 2), (1, 3, 2), boost=3.0, split=True)
    assert t.shape == (3, 1, 3, 2)
    assert t[0, 0, 1].tolist() == [1.0, 6.0] and t[0, 0, 0].abs().sum() == 0
    assert t[1, 0, 1].tolist() == [1.0, 0.0] and t[2, 0, 1].tolist() == [0.0, 2.0]


def test_canvas_box_scales_input_pixels() -> None:
    assert canvas_box(torch.tensor([8, 24, 16, 32]), (32, 32), 64) == (16, 48, 32, 64)


def test_atlas_borders_are_red_for_excitation_blue_for_inhibition() -> None:
    images = torch.full((2, 3, 8, 8), 0.5)
    alpha = torch.ones(2, 8, 8)
    board = np.asarray(compose_atlas(images, alpha, np.array([0, 3]), np.array([2.0, -1.0]), 2, 40))
    assert board.shape == (40, 40, 3)
    red, blue = board[0, 0].astype(int), board[20, 20].astype(int)
    assert red[0] > red[2] + 50 and blue[2] > blue[0] + 50
    assert board[0, 39].tolist() == [255, 255, 255]  # empty cell stays white
    assert abs(int(board[10, 10, 0]) - 128) <= 1  # icon inside the border


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "correlation", "manhattan", "chebyshev"])
def test_exact_knn_matches_scipy(metric: str) -> None:
    from scipy.spatial.distance import cdist

    x = np.random.default_rng(1).normal(size=(30, 5))
    idx, dist = exact_knn(x, 4, metric)
    full = cdist(x, x, metric={"manhattan": "cityblock"}.get(metric, metric))
    np.fill_diagonal(full, 0.0)
    assert (idx[:, 0] == np.arange(30)).all()
    assert_reordered(dist, np.sort(full, axis=1)[:, :4])
    assert_reordered(np.take_along_axis(full, idx.astype(int), 1), dist)
