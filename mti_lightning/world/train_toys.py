"""Train the toy models of superposition with Lightning, best of several seeds, and save them.

Loss: importance-weighted MSE, ``mean_batch sum_i I_i (y_i - t_i)^2`` with ``I_i = decay**i``
per feature (abs) or per pair (xor, the same decay so that, as for abs, the less important
pairs are the ones pushed into superposition). All seeds train at once as one ensemble module
(the same data stream, disjoint parameters, one Adam: the summed loss gives each member exactly
its own gradient), then each is scored on one fixed held-out batch and the lowest loss is kept.
The toy is tiny, so training runs on the CPU whatever accelerators exist, on one thread: for
ops this small, intra-op threads only add synchronisation (on a busy 2-core machine a step
took 100 ms with two threads and 8 ms with one).

A trained toy is saved as ``toy_<kind>.safetensors`` (weights) and ``toy_<kind>.json`` (config
and losses), each written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader

from mti_lightning.core.io import atomic_write, save_tensors
from mti_lightning.core.zoo.toys import build_toy
from mti_lightning.shells.trainer import make_trainer
from mti_lightning.world.toy_data import DEFAULT_SPARSITY, SparseToyStream, sample_toy

EVAL_SIZE = 200_000


@dataclass(frozen=True)
class ToyConfig:
    """Everything that determines a trained toy (saved next to it; resuming compares it).

    ``sparsity`` None means the kind's default (0.01 abs, 0.05 xor)."""

    kind: str = "abs"
    n: int = 6
    m: int = 8
    sparsity: float | None = None
    steps: int = 2000
    seeds: int = 4
    batch_size: int = 1024
    lr: float = 1e-2
    importance_decay: float = 0.9
    data_seed: int = 0

    def __post_init__(self) -> None:
        if self.sparsity is None and self.kind in DEFAULT_SPARSITY:
            object.__setattr__(self, "sparsity", DEFAULT_SPARSITY[self.kind])


def importance(n: int, decay: float) -> torch.Tensor:
    """Feature importances ``decay**i``, i = 0..n-1."""
    return decay ** torch.arange(n, dtype=torch.float32)


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``mean_batch sum_i weight_i (pred_i - target_i)^2``."""
    return ((pred - target).square() * weight).sum(1).mean()


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads, then restore the previous count."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _build_seeded(cfg: ToyConfig, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_toy(cfg.kind, cfg.n, cfg.m)


class ToyEnsemble(L.LightningModule):
    """One toy per seed, trained side by side on the same batches."""

    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.members = nn.ModuleList(_build_seeded(cfg, s) for s in range(cfg.seeds))
        self.register_buffer("importance", importance(cfg.n, cfg.importance_decay))

    def member_losses(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of every member on one batch, shape ``(seeds,)``."""
        return torch.stack([weighted_mse(m(x), target, self.importance) for m in self.members])

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _idx: int) -> torch.Tensor:
        losses = self.member_losses(*batch)
        self.log("train/loss_best", losses.min())
        return losses.sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.cfg.lr)


def train_toy(
    kind: str = "abs",
    n: int = 6,
    m: int = 8,
    sparsity: float | None = None,
    steps: int = 2000,
    seeds: int = 4,
    *,
    batch_size: int = 1024,
    lr: float = 1e-2,
    importance_decay: float = 0.9,
    data_seed: int = 0,
    logger: Any = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``seeds`` toys of ``kind`` for ``steps`` Adam steps; return the best and its info.

    ``n`` counts features (abs) or pairs (xor); ``sparsity`` defaults to 0.01 (abs) or 0.05
    (xor). ``info`` holds the config, every seed's held-out loss, the best seed, its loss and
    ``zero_loss``, the loss of the trivial all-zero output on the same held-out batch.
    """
    cfg = ToyConfig(
        kind=kind,
        n=n,
        m=m,
        sparsity=sparsity,
        steps=steps,
        seeds=seeds,
        batch_size=batch_size,
        lr=lr,
        importance_decay=importance_decay,
        data_seed=data_seed,
    )
    stream = SparseToyStream(cfg.kind, cfg.n, cfg.sparsity, cfg.batch_size, cfg.data_seed)
    ensemble = ToyEnsemble(cfg)
    trainer = make_trainer(
        Path.cwd(),
        cfg.steps,
        logger=logger,
        log_every_n_steps=50,
        requeue_signal=None,
        max_epochs=-1,  # one endless stream: the steps end the run
        benchmark=None,
    )
    start = time.perf_counter()
    with torch_threads(1), warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(ensemble, DataLoader(stream, batch_size=None))
    seconds = time.perf_counter() - start
    gen = torch.Generator().manual_seed(2**31 - 1 - cfg.data_seed)
    x, target = sample_toy(cfg.kind, EVAL_SIZE, cfg.n, cfg.sparsity, gen)
    with torch.no_grad():
        losses = ensemble.member_losses(x, target)
        zero = weighted_mse(torch.zeros_like(target), target, ensemble.importance)
    best = int(losses.argmin())
    model = ensemble.members[best].eval()
    model.requires_grad_(False)
    info = {
        "config": asdict(cfg),
        "seed_losses": [float(v) for v in losses],
        "best_seed": best,
        "loss": float(losses[best]),
        "zero_loss": float(zero),
        "train_seconds": seconds,
    }
    return model, info


def toy_paths(out_dir: str | Path, kind: str) -> tuple[Path, Path]:
    """Weights and info paths of the ``kind`` toy saved in ``out_dir``."""
    out = Path(out_dir)
    return out / f"toy_{kind}.safetensors", out / f"toy_{kind}.json"


def save_toy(model: nn.Module, info: dict[str, Any], out_dir: str | Path) -> Path:
    """Save weights (safetensors) then info (json) atomically; return the weights path."""
    weights, meta = toy_paths(out_dir, info["config"]["kind"])
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(weights, model.state_dict())
    atomic_write(meta, lambda tmp: tmp.write_text(json.dumps(info, indent=2)))
    return weights


def load_toy(
    out_dir: str | Path, kind: str, config: ToyConfig | None = None
) -> tuple[nn.Module, dict[str, Any]] | None:
    """The toy saved in ``out_dir``, or None if absent or (given ``config``) trained otherwise."""
    weights, meta = toy_paths(out_dir, kind)
    if not (weights.is_file() and meta.is_file()):
        return None
    info = json.loads(meta.read_text())
    if config is not None and info.get("config") != asdict(config):
        return None
    cfg = ToyConfig(**info["config"])
    model = build_toy(cfg.kind, cfg.n, cfg.m)
    model.load_state_dict(load_file(str(weights)))
    model.eval().requires_grad_(False)
    return model, info
