"""``MTISearch``: a LightningModule whose parameters are the images.

It holds a batch of K images (a parameterisation), a frozen network, the features and an
objective (one target per image). Each training step takes a batch of transform draws, renders
the images through them in one kernel, runs the network only as deep as the objective reads,
and returns the negative score. Lightning's strategies all-reduce the image gradients, so DDP
over draws is the same maths as one larger draw batch. A parameterisation of input vectors
(``core.parameterizations.InputVectors``, a toy model's inputs) takes no draws, and its
``project`` puts the vectors back into their box after every optimiser step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from mti_lightning.core.attribution import attribute
from mti_lightning.core.compile_cache import compile_module
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.evaluation import evaluate
from mti_lightning.core.fastnet import FastNet, fast_network
from mti_lightning.core.features import Readout
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.objectives import Evaluation, Objective
from mti_lightning.core.probes import capture
from mti_lightning.core.relu import redirect_relus
from mti_lightning.core.transforms import TransformConfig, resize, sample_noise
from mti_lightning.shells.metrics import FeatureEnergies

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
# attributes set on every step that are never parameters, buffers or modules: Lightning names
# the running hook (``_current_fx_name``) around each of its ~22 hook calls a step, and
# ``nn.Module.__setattr__`` checks every value against the parameters, buffers and modules
_PLAIN_ATTRIBUTES = frozenset({"_current_fx_name", "_images", "last_values", "last_record"})


def unique_labels(names: Sequence[str]) -> list[str]:
    """``names`` with repeats told apart (``a``, ``a#1``, ``a#2``): per-unit keys of a search
    holding several images of one feature stay distinct."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        n = seen.get(name, 0)
        seen[name] = n + 1
        out.append(name if n == 0 else f"{name}#{n}")
    return out


class MTISearch(L.LightningModule):
    """Optimise K images for per-image objectives on a frozen network.

    ``readout`` is evaluated every step (None when the objective needs no feature value, e.g.
    an inversion); ``measure_readout`` (default ``readout``) gives the features measured at
    start and end, with energies at ``metric_layer`` (the tension layer of an MTI search).
    ``fast_net`` runs the steps on a copy of the network rewritten for speed (BatchNorms
    folded, ReLUs after max-pools, ...; exact at the probed layers; ``core.fastnet``);
    ``compile`` compiles that step network's forward.

    Each step also logs per-image curves of what it computed, mean over its draws (no extra
    forward or backward): ``activation/<unit>`` when the step reads the feature, and what the
    objective recorded (``e_plus``, ``e_minus``, ``tension``, ``tension_ratio`` of a tension
    term, ``match`` of an inversion), as tensors, on the steps the loggers write (every
    ``trainer.log_every_n_steps``), as is the loss (every step while a progress bar shows it).
    ``unit_names`` label the images (default ``0``, ``1``, ...); only the first
    ``max_unit_curves`` images get curves (0: none), so a search of many units does not make
    thousands of panels.
    """

    def __init__(
        self,
        model: LoadedModel,
        param: nn.Module,
        objective: Objective,
        readout: Readout | None = None,
        transform: TransformConfig | None = None,
        optimizer: str = "adam",
        lr: float = 0.05,
        metric_layer: str | None = None,
        redirect_relu_steps: int = 0,
        compile: bool = False,
        fast_net: bool = True,
        track_pixel_grads: bool = False,
        measure_readout: Readout | None = None,
        unit_names: Sequence[str] | None = None,
        max_unit_curves: int = 16,
    ):
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise MTIConfigError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if lr <= 0:
            raise MTIConfigError(f"lr={lr}; the learning rate must be > 0")
        self.lm = model
        self.net = model.model
        self.param = param
        self.objective = objective
        self.readout = readout
        self.measure_readout = measure_readout if measure_readout is not None else readout
        self.transform = transform or TransformConfig()
        self.optimizer_name, self.lr = optimizer, lr
        self.metric_layer = metric_layer
        self.redirect_relu_steps = redirect_relu_steps
        self.compile_net = compile
        self.fast_net = fast_net
        self.step_net: FastNet | None = None
        self.track_pixel_grads = track_pixel_grads
        self.strict_loading = False
        n = param.n
        self.start_metrics = FeatureEnergies(n)
        self.end_metrics = FeatureEnergies(n)
        self.register_buffer("pixel_grads", torch.zeros(n, *param.size), persistent=False)
        self.register_buffer("first_bad_step", torch.tensor(-1), persistent=True)
        self._keep: list[torch.Tensor] = []
        self.measured: dict[str, dict[str, torch.Tensor]] = {}
        self._images: torch.Tensor | None = None
        self.last_values: torch.Tensor | None = None
        self.last_record: dict[str, torch.Tensor] = {}
        self.unit_names: list[str] = []
        self.max_unit_curves = 0
        self.name_units(unit_names, max_unit_curves)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _PLAIN_ATTRIBUTES:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def n_images(self) -> int:
        return self.param.n

    def forward(self) -> torch.Tensor:
        """The current images ``(K, 3, H, W)`` in [0, 1]."""
        return self.param()

    def step_layers(self) -> list[str]:
        """The layers a training step reads: the objective's and the step readout's."""
        layers = set(self.objective.layers())
        if self.readout is not None:
            layers |= set(self.readout.layers)
        return sorted(layers)

    def build_step_net(self) -> FastNet:
        """The network the steps run on (see ``fast_net`` and ``compile``), on this device."""
        if self.fast_net:
            with torch.no_grad():
                example = self.lm.normalize(resize(self.param()[:2], self.lm.input_size[1:]))
            fast = fast_network(self.lm, self.step_layers(), example)
            if fast.note:
                rank_zero_warn(f"step network: {fast.note}")
        else:
            fast = FastNet(self.lm)
        if self.compile_net:
            fast.lm = dataclasses.replace(fast.lm, model=compile_module(fast.lm.model))
        return fast

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return OPTIMIZERS[self.optimizer_name](self.param.parameters(), lr=self.lr)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        images = self.param()
        if self.track_pixel_grads:
            images.retain_grad()
            self._images = images
        draws = batch["draws"]
        noise = sample_noise(
            self.transform, batch["total"], self.lm.input_size[1:], batch["noise_seed"], self.device
        )
        if noise is not None:
            noise = noise[batch["offset"] : batch["offset"] + draws.shape[0]]
        step_lm = self.step_net.lm if self.step_net is not None else self.lm
        with redirect_relus(step_lm.model, active=self.global_step < self.redirect_relu_steps):
            ev = evaluate(
                step_lm, images, self.objective, self.readout, draws, self.transform, noise
            )
            loss = -self.objective(ev).sum()
        self.last_values = ev.values.detach().mean(1)
        self.last_record = ev.record
        self._track_finite(loss, batch["step"])
        # ``self.log`` costs Lightning's bookkeeping per key and step, so values go to the
        # loggers on the steps they write only; a shown progress bar turns the loss into a
        # Python number (a host sync), so it gets the loss only when one is shown
        shown = self.trainer.progress_bar_callback is not None
        logs = self._logs_this_step()
        if shown or logs:
            self.log("loss", loss, on_step=True, on_epoch=False, prog_bar=shown)
        curves = self.unit_curves(ev) if logs else {}
        if curves:
            self.log_dict(curves, on_step=True, on_epoch=False, prog_bar=False)
        return loss

    def _logs_this_step(self) -> bool:
        """Whether the loggers write this step: Lightning's rule, ``(step + 1)`` a multiple of
        ``trainer.log_every_n_steps``. ``self.log`` costs a fraction of a millisecond to
        milliseconds of Python per key, so the loss and the per-unit curves are handed over
        only on those steps (the loggers would drop the other steps' values anyway)."""
        every = self.trainer.log_every_n_steps
        return every > 0 and (self.global_step + 1) % every == 0

    def name_units(self, names: Sequence[str] | None, max_curves: int = 16) -> None:
        """Label the images (repeats told apart) and cap how many get per-step curves."""
        if isinstance(max_curves, bool) or not isinstance(max_curves, int) or max_curves < 0:
            raise MTIConfigError(
                f"logger.max_unit_curves={max_curves!r}; need a whole number, 0 (none) or more"
            )
        n = self.n_images
        names = list(names) if names is not None else [str(k) for k in range(n)]
        if len(names) != n:
            raise MTIConfigError(f"{len(names)} unit names for {n} images; give one per image")
        self.unit_names, self.max_unit_curves = unique_labels(names), max_curves

    def unit_curves(self, ev: Evaluation) -> dict[str, torch.Tensor]:
        """``QUANTITY/UNIT`` -> this step's value (a 0-d tensor on the device) for the first
        ``max_unit_curves`` images: one W&B section per quantity, one key per unit."""
        n = min(self.max_unit_curves, self.n_images)
        if n == 0:
            return {}
        quantities = dict(ev.record)
        if self.readout is not None:
            quantities = {"activation": self.last_values, **quantities}
        return {f"{q}/{self.unit_names[k]}": v[k] for q, v in quantities.items() for k in range(n)}

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        project = getattr(self.param, "project", None)
        if project is not None:
            project()

    def on_after_backward(self) -> None:
        if self._images is not None and self._images.grad is not None:
            self.pixel_grads.add_(self._images.grad.detach().abs().sum(1))
            self._images = None

    def on_fit_start(self) -> None:
        self.step_net = self.build_step_net()
        self._keep = [p.detach().clone() for p in self.param.parameters()]

    def on_train_start(self) -> None:
        self.measured["start"] = self.measure(self.start_metrics)

    def _track_finite(self, loss: torch.Tensor, step: int) -> None:
        """Remember the images of the last step whose objective and images were finite, and
        the first step that was not, on the device (no host sync)."""
        with torch.no_grad():
            params = list(self.param.parameters())
            finite = torch.isfinite(loss)
            for p in params:
                finite &= torch.isfinite(p).all()
            for p, keep in zip(params, self._keep):
                torch.where(finite, p, keep, out=keep)
            self.first_bad_step.masked_fill_(~finite & (self.first_bad_step < 0), step)

    def restore_last_finite(self) -> None:
        """Put back the images of the last step whose objective and images were finite."""
        with torch.no_grad():
            for p, keep in zip(self.param.parameters(), self._keep):
                p.copy_(keep)

    def on_train_end(self) -> None:
        self.measured["end"] = self.measure(self.end_metrics)

    def measure(self, metric: FeatureEnergies | None = None) -> dict[str, torch.Tensor]:
        """Activation (and energies at ``metric_layer``) of the current images, whole canvas."""
        readout = self.measure_readout
        if readout is None:
            return {}
        metric = metric or FeatureEnergies(self.n_images).to(self.device)
        metric.reset()
        with torch.no_grad():
            x = self.param()
        images = x.dim() == 4
        if images:
            x = resize(x, self.lm.input_size[1:])
        if self.metric_layer is not None:
            att = attribute(self.lm, x, readout, [self.metric_layer])
            e = att.energies[self.metric_layer]
            metric.update(att.activation, e.e_plus, e.e_minus)
        else:
            with torch.no_grad():
                acts = capture(self.net, self.lm.normalize(x) if images else x, readout.layers)
                act = readout(acts, 1)[:, 0]
            metric.update(act, torch.zeros_like(act), torch.zeros_like(act))
        return {k: v.detach().reshape(-1).cpu() for k, v in metric.compute().items()}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints hold the images and optimiser state, not the frozen network."""
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("net.")]:
            del state[key]
