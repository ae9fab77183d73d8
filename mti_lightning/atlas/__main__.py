"""``python -m mti_lightning.atlas --run-dir DIR [--stage S] [--FIELD VALUE ...]``:
one flag per AtlasConfig field (lists as comma-separated values, booleans as true/false)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from typing import Any

from mti_lightning.atlas.config import AtlasConfig
from mti_lightning.atlas.stages import STAGES, run_atlas
from mti_lightning.core.errors import MTIConfigError


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean; use true or false")


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parser() -> argparse.ArgumentParser:
    """The argument parser: run directory, stage, and every config field with its default."""
    p = argparse.ArgumentParser(
        prog="python -m mti_lightning.atlas",
        description="Attribution atlas of one feature over a data set, in resumable stages.",
    )
    p.add_argument("--run-dir", required=True, help="directory of the run (created, resumed)")
    p.add_argument("--stage", choices=STAGES, help="run (or re-run) only this stage")
    defaults = AtlasConfig()
    for f in dataclasses.fields(AtlasConfig):
        default = getattr(defaults, f.name)
        kind: Any = {bool: _bool, int: int, float: float, list: _list}.get(type(default), str)
        shown = ",".join(default) if isinstance(default, list) else default
        p.add_argument(f"--{f.name}", type=kind, default=default, help=f"(default: {shown})")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(parser().parse_args(argv))
    run_dir, stage = args.pop("run_dir"), args.pop("stage")
    try:
        results = run_atlas(AtlasConfig(**args), run_dir, stage=stage)
    except MTIConfigError as err:
        print(f"mti atlas: {err}", file=sys.stderr)
        return 2
    summary = {
        k: {"skipped": v["skipped"], "wall_s": round(v["wall_s"], 2)} for k, v in results.items()
    }
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
