"""Shared parts of the benchmarks: options, the machine record, timing, memory, JSON and
tables, and building a search exactly as the ``mti`` command builds it.

"Ours" is always the product as users run it: Hydra composes ``conf/`` with overrides,
``search_job.prepare`` builds the ``MTISearch``, and a Trainer from ``make_trainer`` fits it
on a ``DrawDataModule``; a callback times whole steps after warm-up (from a batch's start to
a later batch's end), so the Trainer's own per-step overhead is counted. Figures of different
contenders are taken in one process, interleaved in chunks, so that load from other
processes weighs on all alike.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import resource
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from mti_lightning.core.config_schema import MTIConfig
from mti_lightning.core.fastnet import fast_network
from mti_lightning.core.heap import keep_freed_memory
from mti_lightning.core.models import LoadedModel
from mti_lightning.shells.trainer import cpu_has_bf16

REPO = Path(__file__).resolve().parents[1]

# per model: a feature of a later layer and the attribution ("cam") layer below it
FEATURES = {
    "resnet50": ("layer3.0.conv1", 5, "layer2.3.act3"),
    "resnet18": ("layer3.0.conv1", 5, "layer2.1.act2"),
    "curvenet": ("bn2", 19, "pool1"),
    "efficientnet_lite0_imagenet": ("blocks.4.0.conv_pw", 5, "blocks.3"),
}
PRECISIONS = {"fp32": "32", "bf16": "bf16-mixed"}

Runner = Callable[[int], float]
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = CLOCKS["wall"]


def clock() -> float:
    """Seconds on the timing clock (``--clock``): wall time, or this process's CPU time, which
    a machine loaded by other processes inflates far less (a fair measure at ``--threads 1``
    only: idle OpenMP threads spin, which counts as CPU time)."""
    return _clock()


def parse_args(
    description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None
) -> argparse.Namespace:
    """The options every benchmark takes (``--device``, ``--quick``, ``--out``, ...)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="tiny settings: a CPU smoke run")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "benchmarks")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (CPU runs)")
    parser.add_argument(
        "--clock", choices=tuple(CLOCKS), default="wall", help="time steps by wall or CPU time"
    )
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is visible")
    return args


def logging_switch(parser: argparse.ArgumentParser) -> None:
    """``--logging``: also time ours with its per-unit curves logged to W&B (offline)."""
    parser.add_argument(
        "--logging",
        action="store_true",
        help="also time the search with its per-unit curves logged to W&B (offline) every step",
    )


def setup(args: argparse.Namespace) -> None:
    """Threads, the timing clock, cuDNN autotuning and quiet logs for a benchmark process."""
    global _clock
    _clock = CLOCKS[getattr(args, "clock", "wall")]
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    else:
        torch.backends.cudnn.benchmark = True
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages of the machine."""
    return [round(v, 2) for v in os.getloadavg()]


def machine(device: str) -> dict[str, Any]:
    """Where and with what the figures were taken."""
    import timm

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    record = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpu_bf16": cpu_has_bf16(),
        "threads": torch.get_num_threads(),
        "clock": "cpu" if _clock is CLOCKS["cpu"] else "wall",
        "load_average_start": load_average(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "timm": timm.__version__,
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        record |= {
            "gpu": props.name,
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
        }
    return record


def sync(device: str) -> None:
    """Wait for the device (a no-op on CPU)."""
    if device == "cuda":
        torch.cuda.synchronize()


def reset_peak_memory(device: str) -> None:
    """Start a new peak-memory window (GPU only; CPU RSS has no reset)."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mb(device: str) -> float:
    """Peak GPU memory allocated since the last reset; on CPU the process's peak RSS (which
    only grows: a row's figure includes every earlier row's)."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Results:
    """One benchmark's JSON file, rewritten after every row so a timeout keeps what ran."""

    def __init__(self, out_dir: Path, name: str, args: argparse.Namespace, settings: dict):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / f"{name}.json"
        self.data: dict[str, Any] = {
            "benchmark": name,
            "machine": machine(args.device),
            "quick": args.quick,
            "settings": settings,
            "rows": [],
        }
        self.write()

    def add(self, row: dict[str, Any]) -> None:
        """Append a row (stamped with the load average now) and rewrite the file."""
        row = {**row, "load_average": load_average()}
        self.data["rows"].append(row)
        self.write()

    def write(self) -> None:
        """Write the JSON atomically (a temporary file renamed over the old one)."""
        self.data["machine"]["load_average_end"] = load_average()
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        tmp.replace(self.path)


def fmt(value: Any) -> str:
    """A table cell: 3 significant digits (whole numbers from 100 up), blank for None."""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return "" if value is None else str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A markdown table of ``columns`` of ``rows``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def interleave(runners: dict[str, Runner], steps: int, chunk: int) -> dict[str, float]:
    """Steps/s of each runner (``runner(n)`` runs ``n`` timed steps and returns their
    seconds), timed in alternating chunks so that outside load weighs on all alike."""
    spent = dict.fromkeys(runners, 0.0)
    done = 0
    while done < steps:
        n = min(chunk, steps - done)
        for name, run in runners.items():
            spent[name] += run(n)
        done += n
    return {name: steps / s for name, s in spent.items()}


def heap_kept(run: Runner) -> Runner:
    """``run`` with freed memory kept in the heap (``core.heap``), as ours runs on a CPU:
    each call warms the heap with one untimed step first, as ours' fits do."""

    def wrapped(n: int) -> float:
        with keep_freed_memory():
            run(1)
            return run(n)

    return wrapped


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence stdout (faccent and Lightning print progress messages)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


# --- the product as `mti` runs it ---------------------------------------------------------


def compose(overrides: Sequence[str]) -> MTIConfig:
    """The typed ``mti`` config for ``overrides``, composed as the command composes it."""
    from mti_lightning.face.api_config import compose_config

    return compose_config(overrides)


def check_models(benchmark: str, models: Sequence[str]) -> None:
    """Refuse, in one line and before any work, the rows whose model has no benchmark feature
    (``FEATURES``) or no config (``conf/model``)."""
    no_feature = sorted({m for m in models if m not in FEATURES})
    no_config = sorted({m for m in models if not (REPO / "conf" / "model" / f"{m}.yaml").is_file()})
    if no_feature or no_config:
        raise SystemExit(
            f"{benchmark}: cannot run the rows of "
            + "; ".join(
                [f"{', '.join(no_feature)} (no FEATURES row; rows exist for {', '.join(FEATURES)})"]
                * bool(no_feature)
                + [f"{', '.join(no_config)} (no conf/model file)"] * bool(no_config)
            )
        )


def pick_rows(benchmark: str, rows: list[tuple], models: Sequence[str] | None) -> list[tuple]:
    """The rows (tuples led by their model's name) of ``models`` (all when None); a name with
    no row is refused in one line, before any work, with the names that have one."""
    if not models:
        return rows
    names = [r[0] for r in rows]
    unknown = sorted(set(models) - set(names))
    if unknown:
        raise SystemExit(
            f"{benchmark}: no row for {', '.join(unknown)}; rows exist for "
            f"{', '.join(dict.fromkeys(names))}"
        )
    return [r for r in rows if r[0] in models]


def search_overrides(device: str, model: str, input_size: int = 0) -> list[str]:
    """Overrides shared by every benchmarked search: the model (``input_size`` > 0 overrides
    its input side), the device's trainer preset, no periodic snapshots (file writes every 50
    steps) and no post-search inversions."""
    size = [f"model.input_size=[3,{input_size},{input_size}]"] if input_size else []
    return [
        f"model={model}",
        *size,
        "trainer=gpu" if device == "cuda" else "trainer=cpu",
        "callbacks.snapshot_steps=[]",
        "callbacks.snapshot_every=0",
        "search.inversions.enabled=false",
    ]


class StepTimer(L.Callback):
    """Seconds from the start of batch ``warmup`` to the end of batch ``warmup + n - 1``
    (fit ``warmup + n`` steps): ``n`` whole steps with all Trainer overhead."""

    def __init__(self, warmup: int, n: int, device: str):
        self.first, self.last, self.device = warmup, warmup + n - 1, device
        self.start = self.end = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.first:
            sync(self.device)
            self.start = clock()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.last:
            sync(self.device)
            self.end = clock()

    @property
    def seconds(self) -> float:
        return self.end - self.start


class Search:
    """A search built from ``mti`` overrides, fitted again for each timed chunk."""

    def __init__(self, overrides: Sequence[str], device: str):
        from mti_lightning.journeys.search.job import prepare

        self.cfg = compose(overrides)
        self.device = device
        self.run_dir = Path(tempfile.mkdtemp(prefix="mti-bench-"))
        L.seed_everything(self.cfg.seed, workers=True, verbose=False)
        with quiet():
            self.prepared = prepare(self.cfg, self.run_dir)
        self.search = self.prepared.search
        self.lm = self.prepared.lm

    def trainer(
        self,
        max_steps: int,
        precision: str,
        callbacks: Sequence[L.Callback] = (),
        logger: Any = False,
    ) -> L.Trainer:
        """The Trainer ``run_search_job`` builds (by default without a logger, so nothing is
        written; a logger logs every step); ``precision`` as ``trainer.precision`` (it changes
        nothing ``prepare`` builds)."""
        from mti_lightning.shells.trainer import make_trainer

        t = self.cfg.trainer
        return make_trainer(
            self.run_dir,
            max_steps,
            accelerator=t.accelerator,
            devices=1,
            precision=precision,
            logger=logger,
            callbacks=[*self.prepared.callbacks.values(), *callbacks],
            checkpoint_every=0,
            log_every_n_steps=1 if logger else t.log_every_n_steps,
            progress_bar=False,
        )

    def fit(
        self,
        max_steps: int,
        precision: str,
        callbacks: Sequence[L.Callback] = (),
        logged: bool = False,
        curves: bool = False,
    ) -> float:
        """Fit ``max_steps`` steps; the wall seconds of ``trainer.fit``. ``logged``: the
        per-unit curves on and a W&B logger (offline, its run started before the fit) that
        writes them at every step, the worst case of ``trainer.log_every_n_steps``; else no
        logger, and curves only with ``curves`` (``self.log`` keeps them as tensors then)."""
        from mti_lightning.shells.draws import DrawDataModule

        logger: Any = False
        self.search.max_unit_curves = 16 if logged or curves else 0
        if logged:
            from lightning.pytorch.loggers import WandbLogger

            os.environ.setdefault("WANDB_SILENT", "true")
            logger = WandbLogger(save_dir=str(self.run_dir), offline=True, project="mti-bench")
            logger.experiment  # noqa: B018 (start the run outside the timed steps)
        trainer = self.trainer(max_steps, precision, callbacks, logger)
        data = DrawDataModule(self.search.transform, self.cfg.search.draws, self.cfg.seed)
        start = time.perf_counter()
        with quiet():
            trainer.fit(self.search, datamodule=data)
        sync(self.device)
        seconds = time.perf_counter() - start
        if logged:
            logger.experiment.finish()
        return seconds

    def runner(self, warmup: int, precision: str, logged: bool = False) -> Runner:
        """``n`` timed steps after ``warmup`` steps of a fresh fit (``logged``: see ``fit``)."""

        def run(n: int) -> float:
            timer = StepTimer(warmup, n, self.device)
            self.fit(warmup + n, precision, [timer], logged)
            return timer.seconds

        return run

    @property
    def batch(self) -> int:
        """Network inputs per step: images x draws."""
        return self.search.n_images * self.cfg.search.draws


def seed_image(path: Path, size: int, seed: int = 1) -> Path:
    """A smooth random RGB image file (the seed of an inversion or accentuation)."""
    from mti_lightning.core.io import save_png
    from mti_lightning.core.parameterizations import FourierImage

    with torch.no_grad():
        image = FourierImage(1, (size, size), seed=seed)()[0]
    save_png(path, image)
    return path


# --- the bare network ---------------------------------------------------------------------


class _Stop(Exception):
    pass


def truncated_forward(model: nn.Module, layer: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> value of module layer`` running the network only up to it (a hook stores the
    output and ends the forward; no clone, nothing else)."""
    module = dict(model.named_modules())[layer]
    store: list[torch.Tensor] = []

    def hook(_m: nn.Module, _args: Any, out: torch.Tensor) -> None:
        store.append(out)
        raise _Stop

    def forward(x: torch.Tensor) -> torch.Tensor:
        handle = module.register_forward_hook(hook)
        try:
            model(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        return store.pop()

    return forward


def bare_runner(
    model: nn.Module,
    layer: str,
    batch: int,
    input_size: Sequence[int],
    device: str,
    bf16: bool,
) -> Runner:
    """Forward to ``layer`` and backward to the input of ``batch`` inputs: the limit a step
    that reads ``layer`` can reach."""
    forward = truncated_forward(model, layer)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=bf16)

    def run(n: int) -> float:
        model.to(device)
        x = torch.rand(batch, *input_size, device=device, requires_grad=True)
        sync(device)
        start = clock()
        for _ in range(n):
            with autocast:
                out = forward(x)
            torch.autograd.grad(out.float().sum(), x)
        sync(device)
        return clock() - start

    return run


def fast_bare_runner(
    lm: LoadedModel,
    layer: str,
    batch: int,
    device: str,
    bf16: bool,
) -> Runner:
    """``bare_runner`` on the step network ours runs (``core.fastnet``), with the heap kept
    as ours keeps it on a CPU: the limit for our step once the network itself is faster."""
    lm.model.to(device)
    example = torch.rand(2, *lm.input_size, device=device)
    fast = fast_network(lm, [layer], example)
    return heap_kept(bare_runner(fast.lm.model, layer, batch, lm.input_size, device, bf16))


# --- faccent, the paper's library -----------------------------------------------------------


def import_faccent() -> types.ModuleType:
    """Import faccent (installed ``--no-deps``, see benchmarks/README.md). Its ``utils``
    imports ``ipywidgets`` for a notebook widget the benchmarks never build; where that is
    not installed an empty module stands in, so IPython and Jupyter need not be."""
    with contextlib.suppress(ImportError):
        import ipywidgets  # noqa: F401
    sys.modules.setdefault("ipywidgets", types.ModuleType("ipywidgets"))
    import faccent
    import faccent.cam
    import faccent.objectives
    import faccent.param
    import faccent.render
    import faccent.transform

    return faccent


def faccent_layer(name: str) -> str:
    """faccent's name of a module: the ``named_modules`` path joined with ``_``."""
    return name.replace(".", "_")


def input_range(mean: Sequence[float], std: Sequence[float]) -> tuple[float, float]:
    """faccent's ``model_input_range`` closest to a mean/std normalisation (channel mean)."""
    lo = sum(-m / s for m, s in zip(mean, std)) / len(mean)
    hi = sum((1 - m) / s for m, s in zip(mean, std)) / len(mean)
    return lo, hi


class Stamps:
    """Times between calls ``first`` and ``first + n`` of a wrapped function."""

    def __init__(self, first: int, n: int, device: str):
        self.first, self.last, self.device = first, first + n, device
        self.calls = 0
        self.marks: dict[int, float] = {}

    def tick(self) -> None:
        if self.calls in (self.first, self.last):
            sync(self.device)
            self.marks[self.calls] = clock()
        self.calls += 1

    @property
    def seconds(self) -> float:
        return self.marks[self.last] - self.marks[self.first]


def inversion_search(
    device: str, model: str, side: int, canvas: int, draws: int, image: Path
) -> Search:
    """The +/- inversion of ``image`` for ``model``'s benchmark feature, as ``mti
    search=invert`` builds it, on a ``canvas`` x ``canvas`` image with ``draws`` draws."""
    layer, channel, cam = FEATURES[model]
    return Search(
        [
            "search=invert",
            *search_overrides(device, model, side),
            f"param.canvas=[{canvas},{canvas}]",
            f"search.draws={draws}",
            f"search.image={image}",
            f"search.attribution_layer={cam}",
            f"target.layer={layer}",
            f"target.channel=[{channel}]",
            "target.position=center",
        ],
        device,
    )
