"""MTISearch through the Lightning Trainer: each kind of search moves its images the right
way, metrics are measured, callbacks act, and DDP draws split exactly."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from tolerances import TRAJECTORY, assert_reordered

from mti_lightning.core.features import FeatureSpec, build_readout
from mti_lightning.core.inversion import inversion_objective
from mti_lightning.core.models import load_model
from mti_lightning.core.objectives import Activation, Evaluation, Objective, Tension
from mti_lightning.core.parameterizations import FourierImage
from mti_lightning.core.transforms import TransformConfig
from mti_lightning.shells.callbacks import NonFiniteGuard, StopAtTarget, TransparencyMaps
from mti_lightning.shells.draws import DrawDataModule, DrawStream
from mti_lightning.shells.search import MTISearch
from mti_lightning.shells.trainer import make_trainer

FEATURE = "layer2.0.conv1"
CAM = "layer1.1.act2"


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    return load_model("resnet18", input_size=(3, 32, 32))


def _fit(search: MTISearch, steps: int, tmp_path, callbacks=(), draws: int = 4) -> L.Trainer:
    trainer = make_trainer(tmp_path, steps, callbacks=list(callbacks))
    trainer.fit(search, datamodule=DrawDataModule(search.transform, draws, seed=0))
    return trainer


def _readout(lm, channels):
    return build_readout(lm.model, lm.input_size, [FeatureSpec(FEATURE, c) for c in channels])


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_visualisation_moves_activation_with_sign(lm, tmp_path, sign):
    readout = _readout(lm, [1, 2])
    search = MTISearch(lm, FourierImage(2, (32, 32)), Activation(sign), readout, lr=0.1)
    _fit(search, 15, tmp_path)
    start, end = search.measured["start"]["activation"], search.measured["end"]["activation"]
    assert torch.all(sign * (end - start) > 0), (start, end)


def test_mti_search_raises_tension_and_measures_energies(lm, tmp_path):
    readout = _readout(lm, [0, 3, 5])
    search = MTISearch(
        lm, FourierImage(3, (32, 32)), Tension(CAM, hold=0.0), readout, metric_layer=CAM, lr=0.1
    )
    _fit(search, 20, tmp_path)
    start, end = search.measured["start"], search.measured["end"]
    assert set(end) == {"activation", "e_plus", "e_minus", "tension", "tension_ratio"}
    assert torch.all(end["tension"] > start["tension"])
    assert torch.allclose(end["tension"], torch.minimum(end["e_plus"], end["e_minus"]))


def test_inversion_search_splits_excitation_and_inhibition(lm, tmp_path):
    readout = _readout(lm, [3])
    source = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    objective = inversion_objective(lm, source, readout, CAM)
    measure = build_readout(lm.model, lm.input_size, [FeatureSpec(FEATURE, 3)] * 2)
    search = MTISearch(
        lm, FourierImage(2, (32, 32)), objective, None, lr=0.1, measure_readout=measure
    )
    _fit(search, 30, tmp_path)
    plus, minus = search.measured["end"]["activation"].tolist()
    assert plus > minus


def test_draw_stream_splits_one_global_batch_across_ranks():
    cfg = TransformConfig(scale=(0.5, 1.0), jitter=0.1, rotate=10)
    whole = DrawStream(cfg, 8, seed=3).batch(7)["draws"]
    parts = [DrawStream(cfg, 8, seed=3, rank=r, world_size=2).batch(7)["draws"] for r in (0, 1)]
    assert torch.equal(torch.cat(parts), whole)
    assert not torch.equal(DrawStream(cfg, 8, seed=3).batch(8)["draws"], whole)


def test_transparency_and_early_stop_callbacks(lm, tmp_path):
    readout = _readout(lm, [1])
    search = MTISearch(lm, FourierImage(1, (32, 32)), Activation(1.0), readout, lr=0.1)
    alpha, stop = TransparencyMaps(), StopAtTarget(activation=-1e9, every=2)
    trainer = _fit(search, 50, tmp_path, [alpha, stop])
    assert trainer.global_step == 2 and stop.stopped_at == 2
    assert alpha.alpha.shape == (1, 32, 32) and 0 <= alpha.alpha.min() < alpha.alpha.max() <= 1


class _BreaksAt(Objective):
    """The activation until step ``at`` of its calls, then NaN (a diverging objective)."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.calls = at, 0

    def score(self, ev: Evaluation) -> torch.Tensor:
        self.calls += 1
        value = ev.values.mean(1)
        return value * float("nan") if self.calls > self.at else value


def test_nonfinite_guard_stops_and_keeps_last_finite_images(lm, tmp_path):
    readout = _readout(lm, [1])
    search = MTISearch(lm, FourierImage(1, (32, 32)), _BreaksAt(5), readout, lr=0.1)
    snapshots = {}

    class Keep(L.Callback):
        def on_train_batch_end(self, trainer, module, *args):
            snapshots[trainer.global_step] = module().detach().clone()

    guard = NonFiniteGuard(every=3)
    trainer = _fit(search, 40, tmp_path, [Keep(), guard])
    assert guard.bad_step == 5
    assert trainer.global_step == 6
    final = search().detach()
    assert torch.isfinite(final).all()
    assert torch.equal(final, snapshots[5 - 1])


class _Losses(L.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.values.append(float(outputs["loss"]))


def test_fast_step_network_gives_the_same_search(tmp_path, randomize):
    """The step network (BatchNorms folded, the stem's ReLU after its pool, phase-gradient
    stem, channels-last) changes the speed of the steps and of the +/- inversions of the
    search's images (an inversion search on a network exact at its layer), not their values."""
    torch.manual_seed(0)
    net = load_model("resnet18", input_size=(3, 32, 32))
    randomize(net.model)
    readout = _readout(net, [0, 3])
    runs = {}
    for fast in (True, False):
        search = MTISearch(
            net,
            FourierImage(2, (32, 32), seed=0),
            Tension(CAM, hold=0.0),
            readout,
            metric_layer=CAM,
            lr=0.05,
            fast_net=fast,
        )
        losses = _Losses()
        _fit(search, 5, tmp_path / str(fast), [losses])
        images = search().detach()
        objective = inversion_objective(net, images, readout, CAM)
        inv = MTISearch(net, FourierImage(4, (32, 32), seed=0), objective, None, fast_net=fast)
        _fit(inv, 5, tmp_path / f"inv{fast}", draws=2)
        runs[fast] = (losses.values, images, search.step_net, inv().detach())
        assert bool(inv.step_net.folded) is fast and (inv.step_net.phase_grad == ["conv1"]) is fast
    assert runs[True][2].folded and runs[True][2].channels_last
    assert runs[True][2].relus_after_pools == [("act1", "maxpool")]
    assert runs[True][2].phase_grad == ["conv1"]
    assert not runs[False][2].folded and runs[False][2].lm is net
    assert isinstance(net.model.layer1[0].bn1, torch.nn.BatchNorm2d)  # the original is kept
    # the folded, channels-last network sums in another order: five steps' rounding
    assert_reordered(runs[True][0], runs[False][0], tol=TRAJECTORY)
    assert_reordered(runs[True][1], runs[False][1], tol=TRAJECTORY, scale=1.0)
    assert_reordered(runs[True][3], runs[False][3], tol=TRAJECTORY, scale=1.0)


@pytest.mark.slow
def test_compiled_step_network_runs_the_same_search(lm, tmp_path):
    """``compile=True`` compiles the step network's forward; the steps give the same losses."""
    readout = _readout(lm, [1])
    runs = {}
    for compiled in (False, True):
        search = MTISearch(
            lm, FourierImage(1, (32, 32), seed=0), Activation(1.0), readout, compile=compiled
        )
        losses = _Losses()
        _fit(search, 3, tmp_path / str(compiled), [losses])
        runs[compiled] = (losses.values, search.step_net)
    assert hasattr(runs[True][1].lm.model, "_orig_mod")
    assert not hasattr(runs[False][1].lm.model, "_orig_mod")
    assert_reordered(runs[True][0], runs[False][0], tol=TRAJECTORY)
