"""On a CUDA device (skipped elsewhere; ``benchmarks/gpu.sh`` runs them): the step network is
exact there too, bf16 searches work, and a search step never blocks the host on the GPU."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from tolerances import TF32, assert_reordered

from mti_lightning.core.fastnet import fast_network
from mti_lightning.core.features import FeatureSpec, build_readout
from mti_lightning.core.models import load_model
from mti_lightning.core.objectives import Tension
from mti_lightning.core.parameterizations import FourierImage
from mti_lightning.core.probes import capture
from mti_lightning.shells.draws import DrawDataModule
from mti_lightning.shells.search import MTISearch
from mti_lightning.shells.trainer import make_trainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

FEATURE = "layer2.0.conv1"
CAM = "layer1.1.act2"


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return load_model("resnet18", device="cuda", input_size=(3, 64, 64))


class _NoSync(L.Callback):
    """From batch ``after`` on, a host-device sync between a batch's start and its end raises
    (``torch.cuda.set_sync_debug_mode("error")``); the first batches may sync (cuDNN's
    algorithm search, first allocations, the step network's constants)."""

    def __init__(self, after: int = 2):
        self.after = after
        self.checked = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx >= self.after:
            torch.cuda.set_sync_debug_mode("error")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        torch.cuda.set_sync_debug_mode("default")
        self.checked += batch_idx >= self.after


def _search(lm, precision: str, steps: int, tmp_path, callbacks=()) -> MTISearch:
    readout = build_readout(lm.model, lm.input_size, [FeatureSpec(FEATURE, c) for c in (0, 3)])
    search = MTISearch(
        lm, FourierImage(2, (64, 64)), Tension(CAM, hold=0.0), readout, metric_layer=CAM, lr=0.1
    )
    trainer = make_trainer(
        tmp_path, steps, accelerator="gpu", precision=precision, callbacks=list(callbacks)
    )
    try:
        trainer.fit(search, datamodule=DrawDataModule(search.transform, 4, seed=0))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return search


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_search_steps_never_block_the_host(net, tmp_path, precision):
    guard = _NoSync()
    _search(net, precision, 6, tmp_path, [guard])
    assert guard.checked == 4


def test_bf16_search_raises_tension_on_the_step_network(net, tmp_path):
    search = _search(net, "bf16-mixed", 20, tmp_path)
    start, end = search.measured["start"], search.measured["end"]
    assert search.step_net.folded and search.step_net.channels_last
    assert torch.all(end["tension"] > start["tension"]), (start["tension"], end["tension"])


def test_step_network_is_exact_on_cuda_with_tf32(net, randomize):
    lm = load_model("resnet18", device="cuda", input_size=(3, 64, 64))
    randomize(lm.model)
    layers = [CAM, FEATURE]
    x = lm.normalize(torch.rand(4, 3, 64, 64, device="cuda"))
    fast = fast_network(lm, layers, x[:2])
    assert len(fast.folded) == 19 and fast.note == ""
    with torch.no_grad():
        want, got = capture(lm.model, x, layers), capture(fast.lm.model, x, layers)
    for k in layers:
        assert_reordered(got[k], want[k], tol=TF32)
