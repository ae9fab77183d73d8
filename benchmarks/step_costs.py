"""What a search step costs beyond its network: the step rebuilt part by part, each level timed.

The inversion step of ``mti search=invert`` (as ``bench_inversion`` runs it) is rebuilt from the
engine's own parts, one level adding one part to the one before, in a plain Python loop:

1. ``network``: the step network's forward to the layers the objective reads (``capture``)
   and the backward of their sum to a fixed input: the fast bare step;
2. ``+ objective``: the objective's score instead of the sum;
3. ``+ normalise``: inputs in [0, 1], normalised by the model's mean and std;
4. ``+ noise``: the step's noise, drawn from its seed;
5. ``+ transforms``: the batch rendered from fixed canvases through the step's draws;
6. ``+ image``: the canvases from the parameterisation (Fourier image, colour, sigmoid);
7. ``+ optimiser``: the optimiser's step and zeroing of the gradients;
8. ``+ bookkeeping``: the search's per-step records (last finite images, values);
9. ``ours``: the search fitted by the Trainer (``mti search=invert`` as users run it, no
   logger, the config's callbacks): level 8 plus Lightning's loop, hooks and logging.

Each level's cost is its time minus the level before's. Levels are timed interleaved, in
rounds of ``steps`` steps each, and the per-step time of each level is the median over the
rounds, so that load from other processes weighs on all alike.

Beside the levels, the floor of a step that keeps the same images, timed in the same rounds:
the kernels those images cannot do without at the step's shapes (the noise's generator, which
fixes its numbers; ``grid_sample`` and its input gradient, which fix the bilinear sums; the
Fourier image's inverse FFT and its adjoint), and what Lightning's loop costs a step on its own
(an empty search step, one parameter, fitted by a Trainer as ours is, minus the same step in a
plain loop). Network + kernels + loop is the least a step can cost without other numbers or
without Lightning, so ``floor / network`` bounds ``ours time / network`` from below.

    python -m benchmarks.profile_step --device cpu --breakdown [--models curvenet resnet18]
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import common
from mti_lightning.core.objectives import Evaluation
from mti_lightning.core.parameterizations import FourierImage
from mti_lightning.core.probes import capture
from mti_lightning.core.transforms import _base_grid, _theta, apply_draws, sample_noise
from mti_lightning.shells.draws import DrawDataModule, DrawStream
from mti_lightning.shells.trainer import make_trainer

# model, canvas, draws, input side (0: the model's own), steps per round, rounds
CONFIGS = {
    "cpu": [("curvenet", 64, 8, 0, 40, 7), ("resnet18", 224, 8, 0, 2, 5)],
    "cuda": [("curvenet", 64, 8, 0, 100, 7), ("resnet50", 224, 16, 0, 20, 5)],
    "quick": [("curvenet", 64, 8, 0, 4, 3)],
}
LEVELS = (
    "network",
    "+ objective",
    "+ normalise",
    "+ noise",
    "+ transforms",
    "+ image",
    "+ optimiser",
    "+ bookkeeping",
    "ours",
)
FLOOR = ("floor: kernels the same images need", "floor: Lightning's loop, empty step")
COLUMNS = ["model", "part", "ms_per_step", "cost_ms", "share_of_ours"]
PADDING = {"zeros": 0, "border": 1, "reflection": 2}


def levels(search: common.Search, device: str) -> dict[str, Callable[[], None]]:
    """One step of each level (1-8 of the module doc), on the search's own parts."""
    module = search.search
    module.to(device)
    module.step_net = module.build_step_net()
    lm, objective, transform = module.step_net.lm, module.objective, module.transform
    layers = module.step_layers()
    size = tuple(lm.input_size[1:])
    stream = DrawStream(transform, search.cfg.search.draws, search.cfg.seed)
    batch = stream.batch(0)
    draws = batch["draws"].to(device)
    k, d = module.n_images, draws.shape[0]
    optimizer = module.configure_optimizers()
    module._keep = [p.detach().clone() for p in module.param.parameters()]
    with torch.no_grad():
        canvases = module.param().detach()
        rendered = apply_draws(canvases, draws, size, transform)

    def run(x: torch.Tensor, leaf: torch.Tensor, images: torch.Tensor, score: bool) -> torch.Tensor:
        acts = capture(lm.model, x, layers)
        if not score:
            loss = sum(a.sum() for a in acts.values())
            torch.autograd.grad(loss, leaf)
            return loss
        ev = Evaluation(acts=acts, values=x.new_zeros(k, d), images=images)
        return -objective(ev).sum()

    def noise() -> torch.Tensor:
        n = sample_noise(transform, batch["total"], size, batch["noise_seed"], device)
        return n if n is not None else torch.zeros(d, 3, *size, device=device)

    def network() -> None:
        x = lm.normalize(rendered).requires_grad_(True)
        run(x, x, canvases, False)

    def with_objective() -> None:
        x = lm.normalize(rendered).requires_grad_(True)
        torch.autograd.grad(run(x, x, canvases, True), x)

    def with_normalise() -> None:
        x = rendered.clone().requires_grad_(True)
        torch.autograd.grad(run(lm.normalize(x), x, canvases, True), x)

    def with_noise() -> None:
        x = rendered.clone().requires_grad_(True)
        x_noisy = (x.view(k, d, 3, *size) + noise().unsqueeze(0)).view(k * d, 3, *size)
        torch.autograd.grad(run(lm.normalize(x_noisy), x, canvases, True), x)

    def with_transforms() -> None:
        images = canvases.clone().requires_grad_(True)
        x = apply_draws(images, draws, size, transform, noise())
        torch.autograd.grad(run(lm.normalize(x), images, images, True), images)

    def with_image() -> None:
        images = module.param()
        x = apply_draws(images, draws, size, transform, noise())
        run(lm.normalize(x), images, images, True).backward()
        optimizer.zero_grad()

    def with_optimiser() -> torch.Tensor:
        images = module.param()
        x = apply_draws(images, draws, size, transform, noise())
        loss = run(lm.normalize(x), images, images, True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    def with_bookkeeping() -> None:
        module._track_finite(with_optimiser(), 0)

    return {
        "network": network,
        "+ objective": with_objective,
        "+ normalise": with_normalise,
        "+ noise": with_noise,
        "+ transforms": with_transforms,
        "+ image": with_image,
        "+ optimiser": with_optimiser,
        "+ bookkeeping": with_bookkeeping,
    }


def kernels(search: common.Search, device: str) -> Callable[[], None]:
    """One call of each kernel the step's images cannot do without, at its shapes: the noise
    drawn from its seed, ``grid_sample`` of the canvases through the draws and the gradient to
    the canvases, and (Fourier image) ``irfft2`` of the spectra and its adjoint ``rfft2``."""
    module = search.search
    transform, lm = module.transform, module.lm
    size = tuple(lm.input_size[1:])
    batch = DrawStream(transform, search.cfg.search.draws, search.cfg.seed).batch(0)
    draws = batch["draws"].to(device)
    with torch.no_grad():
        canvases = module.param().detach().to(device)
    k, c, h, w = canvases.shape
    grid = _base_grid(draws.shape[0], *size, canvases.device, canvases.dtype)
    grid = grid.bmm(_theta(draws).transpose(1, 2)).view(draws.shape[0], *size, 2)
    stacked = canvases.reshape(1, k * c, h, w).expand(draws.shape[0], -1, -1, -1)
    grad_out = torch.ones(draws.shape[0], k * c, *size, device=device)
    padding = PADDING[transform.padding]
    fourier = isinstance(module.param, FourierImage)
    spectrum = torch.fft.rfft2(canvases, norm="ortho")

    def run() -> None:
        sample_noise(transform, batch["total"], size, batch["noise_seed"], device)
        F.grid_sample(stacked, grid, mode="bilinear", padding_mode=transform.padding)
        torch.ops.aten.grid_sampler_2d_backward(
            grad_out, stacked, grid, 0, padding, False, [True, False]
        )
        if fourier:
            torch.fft.rfft2(torch.fft.irfft2(spectrum, s=(h, w), norm="ortho"), norm="ortho")

    return run


class _EmptyStep(L.LightningModule):
    """A search step with nothing in it: one parameter, its sum as the loss, Adam."""

    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(1))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self.p.sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([self.p], lr=0.01)


def loop_cost(search: common.Search, device: str) -> tuple[common.Runner, common.Runner]:
    """Runners of the empty step fitted by a Trainer (made as ours is, same data module) and
    of the same step in a plain loop (its draws from the same stream): their difference is
    what Lightning's loop, hooks and batch handling cost a step."""
    module = _EmptyStep().to(device)
    cfg, transform = search.cfg, search.search.transform
    optimizer = module.configure_optimizers()
    stream = DrawStream(transform, cfg.search.draws, cfg.seed)

    def fitted(n: int) -> float:
        timer = common.StepTimer(2, n, device)
        trainer = make_trainer(
            search.run_dir,
            n + 2,
            accelerator=cfg.trainer.accelerator,
            precision="32",
            callbacks=[timer],
            log_every_n_steps=cfg.trainer.log_every_n_steps,
        )
        data = DrawDataModule(transform, cfg.search.draws, cfg.seed)
        with common.quiet():
            trainer.fit(module, datamodule=data)
        return timer.seconds

    def plain(n: int) -> float:
        common.sync(device)
        start = common.clock()
        for i in range(n):
            batch = stream.batch(i)
            batch["draws"] = batch["draws"].to(device)
            loss = module.training_step(batch, i)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        common.sync(device)
        return common.clock() - start

    return fitted, plain


def timed_loop(step: Callable[[], None], device: str) -> common.Runner:
    """``n`` calls of ``step`` (after one untimed call), with the heap kept as ours keeps it."""

    def run(n: int) -> float:
        step()
        common.sync(device)
        start = common.clock()
        for _ in range(n):
            step()
        common.sync(device)
        return common.clock() - start

    return common.heap_kept(run)


def breakdown(config: tuple, device: str, seed_dir: Path) -> list[dict[str, Any]]:
    """Rows (one per level) of one model's breakdown: median ms per step over the rounds."""
    model, canvas, draws, side, steps, rounds = config
    image = common.seed_image(seed_dir / f"seed_{canvas}.png", canvas)
    search = common.inversion_search(device, model, side, canvas, draws, image)
    runners = {name: timed_loop(step, device) for name, step in levels(search, device).items()}
    runners["ours"] = search.runner(2, "32")
    runners["kernels"] = timed_loop(kernels(search, device), device)
    runners["loop fitted"], runners["loop plain"] = loop_cost(search, device)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            times[name].append(run(steps) / steps * 1e3)
    median = {name: statistics.median(t) for name, t in times.items()}
    rows, before = [], 0.0
    for name in LEVELS:
        ms = median[name]
        rows.append(
            {
                "model": model,
                "canvas": canvas,
                "draws": draws,
                "batch": search.batch,
                "part": name if name != "ours" else "ours (+ Lightning's loop, hooks, logging)",
                "ms_per_step": ms,
                "cost_ms": ms - before,
                "share_of_ours": (ms - before) / median["ours"],
                "rounds_ms": times[name],
            }
        )
        before = ms
    rows.append(
        {
            "model": model,
            "part": "ours time / network",
            "ms_per_step": median["ours"] / median["network"],
        }
    )
    loop = median["loop fitted"] - median["loop plain"]
    floor = median["network"] + median["kernels"] + loop
    for name, ms in zip(FLOOR, (median["kernels"], loop)):
        rows.append({"model": model, "part": name, "ms_per_step": ms, "cost_ms": ms})
    rows.append({"model": model, "part": "floor: network + both", "ms_per_step": floor})
    rows.append(
        {"model": model, "part": "floor / network", "ms_per_step": floor / median["network"]}
    )
    return rows
