"""Read an offline W&B run directory back: the records of its ``run-*.wandb`` file.

wandb (0.2x+) writes the file in its core process and ships no Python reader, so this reads
the format itself: a 7-byte header (``:W&B``, magic, version), then LevelDB log blocks of
32 KiB holding records (crc32, little-endian length, kind: full, first, middle, last), each
a ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[pb.Record]:
    """Every record of the ``.wandb`` file ``path``, in order."""
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is no W&B run file"
    out, pos, part = [], 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer: zero padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        body = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            part = body
        elif kind == FIRST:
            part = body
            continue
        elif kind == MIDDLE:
            part += body
            continue
        else:
            part += body
        record = pb.Record()
        record.ParseFromString(part)
        out.append(record)
        part = b""
    return out


def run_file(run_dir: Path) -> Path:
    """The one ``run-*.wandb`` file under ``run_dir/wandb/offline-run-*``."""
    (found,) = list(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
    return found


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def summary(run_dir: Path) -> dict[str, Any]:
    """The run's summary as W&B will hold it once synced: the last history values, then the
    explicit summary updates, in the file's order."""
    out: dict[str, Any] = {}
    for r in records(run_file(run_dir)):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            out |= {_key(i): json.loads(i.value_json) for i in r.history.item}
        elif kind == "summary":
            out |= {_key(i): json.loads(i.value_json) for i in r.summary.update}
            for i in r.summary.remove:
                out.pop(_key(i), None)
    return out


def config(run_dir: Path) -> dict[str, Any]:
    """The run's config (every key's last value)."""
    out: dict[str, Any] = {}
    for r in records(run_file(run_dir)):
        if r.WhichOneof("record_type") == "config":
            out |= {_key(i): json.loads(i.value_json) for i in r.config.update}
    return out


def artifacts(run_dir: Path) -> list[Any]:
    """The artifact records the run logged (name, type, manifest with local staging paths)."""
    return [
        r.artifact for r in records(run_file(run_dir)) if r.WhichOneof("record_type") == "artifact"
    ]
