"""Tension in the toy models of superposition: do superposed units fight on mixed inputs?

For every hidden unit (``hidden:j``, pre-activation) and output unit (``out:i``,
pre-activation) of a trained toy we measure excitation ``E+``, inhibition ``E-``, tension
``min(E+, E-)`` and tension ratio with the core attribution, at the input (``hidden:in``) and,
for output units, at the hidden layer (``hidden_act``), on three kinds of input:

- ``single``: one feature active (abs: ``+1`` and ``-1``; xor: each pair's patterns 01, 10, 11);
- ``pair``: two features active (every pair of features, every sign/pattern combination);
- ``mti``: a maximally tense input per unit, found by the engine (``MTISearch`` with Adam on
  the core ``Tension`` objective, the inputs parameterised as ``InputVectors``) over the valid
  input box (random starts plus, by default, the most tense data input), each step projected
  back into the box: tension in a piecewise-linear net peaks on the box's faces, which a
  projection reaches exactly and a tanh parameterisation never does.

With one active input the input-layer attribution has one non-zero entry, so its tension is
zero by construction; there, only the hidden layer can show a single feature's fight.
Superposition predicts tension on ``pair`` inputs: a hidden unit shared by two features carries
the other feature's interference into an output, which is inhibited to cancel it.

``python -m mti_lightning.world.toy_analysis --out DIR`` trains (or reloads) the toys and
writes ``DIR/toy_<kind>_tension.{csv,txt,png}``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import itertools
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from matplotlib.figure import Figure

from mti_lightning.core.attribution import attribution_from, energies
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.evaluation import evaluate
from mti_lightning.core.features import FeatureSpec, build_readout
from mti_lightning.core.io import atomic_write
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.objectives import Tension
from mti_lightning.core.parameterizations import InputVectors
from mti_lightning.core.probes import capture
from mti_lightning.core.transforms import TransformConfig, identity_draws
from mti_lightning.core.zoo.toys import TOY_KINDS, AbsToy, XorToy
from mti_lightning.shells.engine import optimise
from mti_lightning.shells.search import MTISearch
from mti_lightning.world.toy_data import XOR_PATTERNS
from mti_lightning.world.train_toys import (
    ToyConfig,
    load_toy,
    save_toy,
    torch_threads,
    train_toy,
)

INPUT_LAYER = "hidden:in"
HIDDEN_LAYER = "hidden_act"
INPUT_KINDS = ("single", "pair", "mti")
# input vectors take no transforms: no noise is drawn for them
NO_TRANSFORM = TransformConfig(gaussian_noise=0.0)
STATS = ("e_plus", "e_minus", "tension", "ratio", "act")
COLUMNS = (
    "toy",
    "unit",
    "layer",
    "inputs",
    "n",
    "superposed",
    "features",
    *(f"{agg}_{s}" for s in STATS for agg in ("mean", "max")),
    "own_max_tension",
    "other_max_tension",
    "best_input",
)


@dataclass(frozen=True)
class Unit:
    """A unit's name (``out:3``), its pre-activation feature, the features it reads, and for
    an output unit the feature it computes (``own``)."""

    name: str
    spec: FeatureSpec
    features: tuple[int, ...]
    superposed: bool
    own: int | None = None


@dataclass
class ToyAnalysis:
    """The table (one row per unit, layer and input kind) and every measured input."""

    rows: list[dict[str, Any]]
    points: list[dict[str, Any]]


def toy_units(model: torch.nn.Module, threshold: float = 0.25) -> list[Unit]:
    """Hidden and output units with the features each one reads.

    A hidden unit reads feature ``k`` if one of ``k``'s input weights is at least ``threshold``
    of the largest input weight; an output unit reads the features of the hidden units it
    weighs at least ``threshold`` of its largest weight. A hidden unit is *superposed* if it
    reads several features; an output unit if features other than its own reach it.
    """
    w1, w2 = model.hidden.weight.detach().abs(), model.out.weight.detach().abs()
    n_feat = model.n_features
    per_feature = torch.zeros(w1.shape[0], n_feat)
    for i in range(w1.shape[1]):
        f = model.feature_of_input(i)
        per_feature[:, f] = torch.maximum(per_feature[:, f], w1[:, i])
    reads = per_feature >= threshold * per_feature.max()
    hidden_feats = [tuple(torch.nonzero(r).flatten().tolist()) for r in reads]
    units = [
        Unit(f"hidden:{j}", FeatureSpec("hidden", j), feats, len(feats) > 1)
        for j, feats in enumerate(hidden_feats)
    ]
    for i in range(n_feat):
        used = torch.nonzero(w2[i] >= threshold * w2[i].max()).flatten().tolist()
        feats = tuple(sorted({f for j in used for f in hidden_feats[j]}))
        units.append(
            Unit(f"out:{i}", FeatureSpec("out", i), feats, any(f != i for f in feats), own=i)
        )
    return units


def probe_inputs(kind: str, n: int, active: int) -> torch.Tensor:
    """Every input with ``active`` (1 or 2) features on: abs ``+-1`` values, xor patterns."""
    if kind not in TOY_KINDS:
        raise MTIConfigError(f"unknown toy kind {kind!r}; valid: {', '.join(TOY_KINDS)}")
    values = [torch.tensor([1.0]), torch.tensor([-1.0])] if kind == "abs" else list(XOR_PATTERNS)
    width = len(values[0])
    rows = []
    for feats in itertools.combinations(range(n), active):
        for vals in itertools.product(values, repeat=active):
            x = torch.zeros(n * width)
            for f, v in zip(feats, vals):
                x[f * width : (f + 1) * width] = v
            rows.append(x)
    return torch.stack(rows)


def measure(
    model: torch.nn.Module, x: torch.Tensor, specs: Sequence[FeatureSpec], layer: str
) -> dict[str, torch.Tensor]:
    """Energies at ``layer`` and value of feature ``specs[k]`` on input ``x[k]``, each ``(K,)``."""
    readout = build_readout(model, (x.shape[1],), specs)
    with torch.enable_grad():
        xi = x.detach().clone().requires_grad_(True)
        acts = capture(model, xi, [layer, *readout.layers])
        values = readout(acts, 1)[:, 0]
        attr = attribution_from(acts, values, [layer])[layer]
    en = energies(attr.detach())
    return {
        "e_plus": en.e_plus,
        "e_minus": en.e_minus,
        "tension": en.tension,
        "ratio": en.ratio,
        "act": values.detach(),
    }


class MostTense(L.Callback):
    """Keep each input's most tense iterate (hard tension ``min(E+, E-)``): the iterate every
    step evaluated, and the final one, evaluated once more at the end."""

    def __init__(self) -> None:
        self.x: torch.Tensor | None = None
        self.tension: torch.Tensor | None = None

    def _keep(self, x: torch.Tensor, tension: torch.Tensor) -> None:
        if self.x is None or self.tension is None:
            self.x, self.tension = x.clone(), torch.full_like(tension, -1.0)
        better = tension > self.tension
        self.tension = torch.where(better, tension, self.tension)
        self.x = torch.where(better[:, None], x, self.x)

    def on_before_optimizer_step(self, trainer: L.Trainer, module: MTISearch, optimizer) -> None:
        self._keep(module().detach(), module.last_record["tension"])

    def on_train_end(self, trainer: L.Trainer, module: MTISearch) -> None:
        x = module().detach().requires_grad_(True)
        with torch.enable_grad():
            draws = identity_draws()  # input vectors take none; the signature asks for one
            ev = evaluate(module.lm, x, module.objective, module.readout, draws, module.transform)
            e_plus, e_minus = module.objective.energies(ev)
        self._keep(x.detach(), torch.minimum(e_plus, e_minus)[:, 0].detach())


def mti_search(
    model: torch.nn.Module,
    specs: Sequence[FeatureSpec],
    layer: str,
    starts: torch.Tensor | None = None,
    restarts: int = 32,
    steps: int = 300,
    lr: float = 0.05,
    mode: str = "linearized",
    temperature: float = 0.1,
    seed: int = 0,
) -> torch.Tensor:
    """The most tense input found for each feature, ``(K, input_dim)``, inside the input box.

    Runs ``restarts`` uniform random starts per feature (plus ``starts[k]`` for feature ``k``
    when given) as one batch of input vectors on the engine (``MTISearch``, Adam), maximising
    the core ``Tension`` objective at ``layer``, projected into ``model.input_range`` after
    each step, and keeps the iterate with the largest (hard) tension.
    """
    lo, hi = model.input_range
    k, dim = len(specs), model.input_dim
    gen = torch.Generator().manual_seed(seed)
    init = lo + (hi - lo) * torch.rand(k, restarts, dim, generator=gen)
    if starts is not None:
        init = torch.cat([starts.detach().view(k, 1, dim).clamp(lo, hi), init], 1)
    per = init.shape[1]
    net = copy.deepcopy(model).eval().requires_grad_(False)
    lm = LoadedModel(type(model).__name__, net, (dim,), (), (), trained=True)
    readout = build_readout(net, (dim,), [s for s in specs for _ in range(per)])
    search = MTISearch(
        lm,
        InputVectors(init.flatten(0, 1), lo, hi),
        Tension(layer, mode=mode, temperature=temperature),
        readout,
        NO_TRANSFORM,
        lr=lr,
        fast_net=False,
        max_unit_curves=0,
    )
    best = MostTense()
    with tempfile.TemporaryDirectory(prefix="mti-toy-") as work_dir:
        optimise(search, steps, 1, seed, work_dir, callbacks=[best])
    pick = best.tension.view(k, per).argmax(1)
    return best.x.view(k, per, dim)[torch.arange(k), pick]


def _fmt_input(x: torch.Tensor) -> str:
    return " ".join(f"{v:+.2f}".replace("+0.00", "0").replace("-0.00", "0") for v in x.tolist())


def _summarise(
    toy: str,
    unit: Unit,
    layer: str,
    kind: str,
    m: dict[str, torch.Tensor],
    x: torch.Tensor,
    own: torch.Tensor | None,
) -> dict[str, Any]:
    """One table row; ``own`` marks the inputs where an output unit's own feature is on."""
    row: dict[str, Any] = {
        "toy": toy,
        "unit": unit.name,
        "layer": layer,
        "inputs": kind,
        "n": len(x),
        "superposed": "yes" if unit.superposed else "no",
        "features": ",".join(map(str, unit.features)) or "-",
    }
    for s in STATS:
        row[f"mean_{s}"] = float(m[s].mean())
        row[f"max_{s}"] = float(m[s].max())
    for col, mask in (("own", own), ("other", None if own is None else ~own)):
        hit = mask is not None and bool(mask.any())
        row[f"{col}_max_tension"] = float(m["tension"][mask].max()) if hit else "-"
    row["best_input"] = _fmt_input(x[int(m["tension"].argmax())])
    return row


def _measure_probes(
    model: torch.nn.Module, group: Sequence[Unit], x: torch.Tensor, layer: str
) -> dict[str, torch.Tensor]:
    """Every unit of ``group`` on every input of ``x``: each stat shaped ``(units, inputs)``."""
    specs = [u.spec for u in group for _ in range(len(x))]
    m = measure(model, x.repeat(len(group), 1), specs, layer)
    return {k: v.view(len(group), len(x)) for k, v in m.items()}


def analyze_toy(
    model: torch.nn.Module,
    kind: str,
    *,
    restarts: int = 32,
    mti_steps: int = 300,
    lr: float = 0.05,
    seed_from_data: bool = True,
    mode: str = "linearized",
    seed: int = 0,
    threshold: float = 0.25,
) -> ToyAnalysis:
    """Energies of every unit on single, pair and MTI inputs, at each attribution layer.

    Hidden units are attributed at the input; output units at the input and at the hidden
    layer. ``seed_from_data`` also starts each MTI search from that unit's most tense
    single/pair input, so the search result is at least as tense as any probe input.
    """
    toy_class = {"abs": AbsToy, "xor": XorToy}.get(kind)
    if toy_class is None or not isinstance(model, toy_class):
        raise MTIConfigError(
            f"toy kind {kind!r} does not match the model {type(model).__name__}; "
            "valid: abs with AbsToy, xor with XorToy"
        )
    units = toy_units(model, threshold)
    outs = [u for u in units if u.own is not None]
    probes = {a: probe_inputs(kind, model.n_features, n) for a, n in (("single", 1), ("pair", 2))}
    active = {a: x.view(len(x), model.n_features, -1).abs().sum(-1) > 0 for a, x in probes.items()}
    rows: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    with torch_threads(1):
        for layer, group in ((INPUT_LAYER, units), (HIDDEN_LAYER, outs)):
            stats = {a: _measure_probes(model, group, x, layer) for a, x in probes.items()}
            starts = None
            if seed_from_data:
                cand_x = torch.cat(list(probes.values()))
                cand_t = torch.cat([stats[a]["tension"] for a in probes], 1)
                starts = cand_x[cand_t.argmax(1)]
            specs = [u.spec for u in group]
            found = mti_search(
                model, specs, layer, starts, restarts, mti_steps, lr, mode, seed=seed
            )
            mti = measure(model, found, specs, layer)
            for u, unit in enumerate(group):
                for name in INPUT_KINDS:
                    if name == "mti":
                        x, mu, own = (
                            found[u : u + 1],
                            {k: v[u : u + 1] for k, v in mti.items()},
                            None,
                        )
                    else:
                        x, mu = probes[name], {k: v[u] for k, v in stats[name].items()}
                        own = None if unit.own is None else active[name][:, unit.own]
                    rows.append(_summarise(kind, unit, layer, name, mu, x, own))
                    owns = [None] * len(x) if own is None else own.tolist()
                    points += [
                        {
                            "unit": unit.name,
                            "layer": layer,
                            "inputs": name,
                            "own": o,
                            "e_plus": float(ep),
                            "e_minus": float(em),
                        }
                        for ep, em, o in zip(mu["e_plus"], mu["e_minus"], owns)
                    ]
    return ToyAnalysis(rows, points)


def _cell(value: Any, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The table as CSV text (floats to 6 decimals)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows([_cell(r[c], 6) for c in COLUMNS] for r in rows)
    return buf.getvalue()


def table_text(rows: Sequence[dict[str, Any]]) -> str:
    """The table as aligned text (floats to 3 decimals), one block per attribution layer."""
    cells = [[_cell(r[c], 3) for c in COLUMNS] for r in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(COLUMNS)]
    head = "  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths))
    lines = [head, "-" * len(head)]
    for i, line in enumerate(cells):
        if i and rows[i]["layer"] != rows[i - 1]["layer"]:
            lines.append("")
        lines.append("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    return "\n".join(lines) + "\n"


def summary_text(rows: Sequence[dict[str, Any]]) -> str:
    """Mean over units of the max tension per input kind, by layer, unit type and
    superposition; for output units also split by whether the unit's own feature is on."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["layer"], r["unit"].split(":")[0], r["superposed"]), []).append(r)

    def mean(sel: list[dict[str, Any]], col: str, kind: str) -> str:
        vals = [r[col] for r in sel if r["inputs"] == kind and isinstance(r[col], float)]
        return f"{sum(vals) / len(vals):.3f}" if vals else "-"

    lines = [
        "mean over units of max tension: single / pair / mti;"
        " for output units also own feature on | off: single, pair"
    ]
    for (layer, utype, sup), sel in sorted(groups.items()):
        line = f"  {utype:6s} units at {layer:10s} superposed={sup:3s} ({len(sel) // 3}): "
        line += " / ".join(mean(sel, "max_tension", k) for k in INPUT_KINDS)
        if utype == "out":
            for col in ("own", "other"):
                on = "on " if col == "own" else "off"
                cells = (mean(sel, f"{col}_max_tension", k) for k in ("single", "pair"))
                line += f";  {on}: " + ", ".join(cells)
        lines.append(line)
    return "\n".join(lines) + "\n"


SCATTER_STYLE: dict[str, dict[str, Any]] = {
    "pair": {"color": "tab:orange", "s": 10, "alpha": 0.35},
    "single": {"color": "tab:blue", "s": 12, "alpha": 0.6},
    "single, another feature (out unit)": {"color": "tab:cyan", "s": 12, "alpha": 0.6},
    "mti": {"color": "tab:red", "s": 60, "alpha": 0.9, "marker": "*"},
}


def _category(point: dict[str, Any]) -> str:
    if point["inputs"] == "single" and point["own"] is False:
        return "single, another feature (out unit)"
    return point["inputs"]


def plot_analysis(analysis: ToyAnalysis, title: str, path: Path) -> None:
    """Grouped bars of max tension (single / pair / MTI) per unit, and the E+ vs E- scatter,
    one column per attribution layer; written atomically as PNG."""
    layers = [INPUT_LAYER, HIDDEN_LAYER]
    fig = Figure(figsize=(14, 9))
    axes = fig.subplots(2, 2, gridspec_kw={"height_ratios": [1, 1.1]})
    for col, layer in enumerate(layers):
        rows = [r for r in analysis.rows if r["layer"] == layer]
        units = list(dict.fromkeys(r["unit"] for r in rows))
        sup = {r["unit"]: r["superposed"] == "yes" for r in rows}
        ax = axes[0, col]
        width = 0.8 / len(INPUT_KINDS)
        for k, kind in enumerate(INPUT_KINDS):
            sel = [next(r for r in rows if r["unit"] == u and r["inputs"] == kind) for u in units]
            xs = [i + (k - 1) * width for i in range(len(units))]
            ax.bar(
                xs,
                [r["max_tension"] for r in sel],
                width,
                color=SCATTER_STYLE[kind]["color"],
                label=kind,
            )
            own = [
                (x, r["own_max_tension"])
                for x, r in zip(xs, sel)
                if isinstance(r["own_max_tension"], float)
            ]
            if own:
                ax.bar(
                    [x for x, _ in own],
                    [v for _, v in own],
                    width,
                    fill=False,
                    hatch="///",
                    edgecolor="black",
                    lw=0.5,
                    label=None if k else "out unit, own feature on",
                )
        ax.set_xticks(range(len(units)), [u + ("*" if sup[u] else "") for u in units], rotation=60)
        ax.set_ylabel("max tension  min(E+, E-)")
        ax.set_title(f"attribution at {layer}  (* = superposed unit)")
        if all(r["max_tension"] == 0 for r in rows if r["inputs"] == "single"):
            ax.text(0.5, 0.97, "single: 0 (one non-zero input)", transform=ax.transAxes, va="top")
        ax.set_ylim(0, 1.35 * max(r["max_tension"] for r in rows))
        ax.legend(loc="upper left")
        ax = axes[1, col]
        for cat in SCATTER_STYLE:
            pts = [p for p in analysis.points if p["layer"] == layer and _category(p) == cat]
            ax.scatter(
                [p["e_plus"] for p in pts],
                [p["e_minus"] for p in pts],
                label=cat,
                **SCATTER_STYLE[cat],
            )
        lim = max([p["e_plus"] for p in analysis.points] + [p["e_minus"] for p in analysis.points])
        ax.plot([0, lim], [0, lim], color="gray", lw=0.6, ls="--")
        ax.set_xlabel("E+ (excitation)")
        ax.set_ylabel("E- (inhibition)")
        ax.set_title(f"every unit x input at {layer}: tense inputs lie far out on both axes")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def run_toy(out_dir: str | Path, cfg: ToyConfig, **analysis_kw: Any) -> ToyAnalysis:
    """Train (or reload, if ``out_dir`` holds a toy of this config) the toy, analyse it and
    write ``toy_<kind>_tension.{csv,txt,png}`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_toy(out, cfg.kind, cfg)
    if loaded is None:
        model, info = train_toy(**asdict(cfg))
        save_toy(model, info, out)
    else:
        model, info = loaded
    analysis = analyze_toy(model, cfg.kind, **analysis_kw)
    header = (
        f"toy {cfg.kind}: n={cfg.n} m={cfg.m} S={cfg.sparsity} steps={cfg.steps} "
        f"best seed {info['best_seed']} of {cfg.seeds}; loss {info['loss']:.3g} "
        f"(all-zero output {info['zero_loss']:.3g})"
    )
    stem = out / f"toy_{cfg.kind}_tension"
    csv_text, text = table_csv(analysis.rows), table_text(analysis.rows)
    report = f"{header}\n\n{summary_text(analysis.rows)}\n{text}"
    atomic_write(stem.with_suffix(".csv"), lambda tmp: tmp.write_text(csv_text))
    atomic_write(stem.with_suffix(".txt"), lambda tmp: tmp.write_text(report))
    plot_analysis(analysis, header, stem.with_suffix(".png"))
    return analysis


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: train or reload the toys in ``--out`` and write their tension tables and plots."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="run directory (toy weights, tables, plots)")
    p.add_argument("--kind", choices=[*TOY_KINDS, "all"], default="all")
    p.add_argument("--steps", type=int, default=ToyConfig.steps, help="training steps")
    p.add_argument("--seeds", type=int, default=ToyConfig.seeds, help="seeds (keep the best)")
    p.add_argument("--n", type=int, default=ToyConfig.n, help="features (abs) or pairs (xor)")
    p.add_argument("--m", type=int, default=ToyConfig.m, help="hidden units")
    p.add_argument("--sparsity", type=float, help="P(feature active); default 0.01 abs, 0.05 xor")
    p.add_argument("--restarts", type=int, default=32, help="random starts per MTI search")
    p.add_argument("--mti-steps", type=int, default=300, help="Adam steps per MTI search")
    args = p.parse_args(argv)
    kinds = TOY_KINDS if args.kind == "all" else (args.kind,)
    for kind in kinds:
        cfg = ToyConfig(
            kind=kind,
            n=args.n,
            m=args.m,
            sparsity=args.sparsity,
            steps=args.steps,
            seeds=args.seeds,
        )
        analysis = run_toy(args.out, cfg, restarts=args.restarts, mti_steps=args.mti_steps)
        print(
            f"{kind}: {len(analysis.rows)} rows -> {Path(args.out) / f'toy_{kind}_tension'}.csv/.txt/.png"
        )
        print(summary_text(analysis.rows))


if __name__ == "__main__":
    main()
