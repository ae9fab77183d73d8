"""A full disk: every journey's run ends with one line naming the file it could not write and
the space that needs, and what it wrote before stays whole and readable.

On a real filesystem that fills (a 300 KB tmpfs, mounted as root) for the ``mti`` command, and
with ``ENOSPC`` raised at the write layer (the rename of the package's atomic write) for each
journey through the Python API.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mti_lightning as mti
from mti_lightning.core import io
from mti_lightning.core.errors import DiskFullError
from mti_lightning.core.io import atomic_write, load_tensors, write_json
from mti_lightning.world.curve_dataset import write_image_folder

MTI = str(Path(sys.executable).parent / "mti")


def test_a_write_that_runs_out_of_space_names_the_file_and_keeps_the_old_version(tmp_path):
    path = write_json(tmp_path / "metrics.json", {"step": 1})

    def fills_up(tmp: Path) -> None:
        tmp.write_bytes(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError) as err:
        atomic_write(path, fills_up, needed=5000)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "needs 4.9 KB" in message
    assert "free there" in message
    assert json.loads(path.read_text()) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left
    other = OSError(errno.EACCES, "Permission denied")
    with pytest.raises(PermissionError):
        atomic_write(tmp_path / "b.json", lambda tmp: (_ for _ in ()).throw(other))


def readable(run_dir: Path) -> list[str]:
    """Every file the run left: JSON parses, tensors and checkpoints load; no temporaries."""
    files = [p for p in run_dir.rglob("*") if p.is_file() and "wandb" not in p.parts]
    assert not [p for p in files if p.name.endswith(".tmp")], files
    for p in files:
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".safetensors":
            load_tensors(p)
        elif p.suffix == ".ckpt":
            torch.load(p, map_location="cpu", weights_only=False)
    return [str(p.relative_to(run_dir)) for p in files]


@pytest.fixture
def small_disk(tmp_path):
    """A 300 KB tmpfs (needs root, as CI and the developers' machines run)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_the_main_job_on_a_full_disk_ends_with_one_line_and_whole_files(small_disk):
    run = small_disk / "run"
    env = dict(os.environ, PYTHONWARNINGS="ignore", WANDB_MODE="offline")
    out = subprocess.run([MTI, f"hydra.run.dir={run}"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"mti: error: no space left on device writing {run}/"), out.stderr
    assert "needs" in last and "free there" in last and "Traceback" not in out.stderr
    assert "snapshots/step_000000.png" in readable(run)


@pytest.fixture(scope="module")
def curves(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("curves"), 16, 2, None, 0.3)


JOURNEYS = {
    "search": lambda d, run: mti.search("curvenet", "bn2:19", steps=3, draws=1, logger=None,
                                        run_dir=run, **{"search.inversions.steps": 2}),
    "atlas": lambda d, run: mti.atlas(
        "curvenet", "bn2:19@center", data=str(d), run_dir=run, logger=None, grid=2,
        min_images=1, icon_steps=2, icon_draws=1, icon_canvas=32, atlas_size=64,
        top_activation=4, bottom_activation=4, top_l1=4, top_e_minus=4, umap_n_neighbors=3,
        batch_size=8, viewer_thumbnails=2),
    "census": lambda d, run: mti.census("curvenet", ["bn2"], str(d), run_dir=run, logger=None,
                                        shard_size=8, batch_size=8, top_k=2, search=False,
                                        site=False),
    "circuit": lambda d, run: mti.circuit("curvenet", "bn2:19@center", data=str(d), k=2,
                                          run_dir=run, logger=None, echo=False,
                                          visualize=False, control_seeds=1),
    "compare": lambda d, run: mti.compare(["curvenet"], layers="bn2", units=[19], n_images=8,
                                          search_units=0, logger=None, run_dir=run),
}


@pytest.mark.parametrize("journey", sorted(JOURNEYS))
def test_each_journey_stops_at_the_write_that_finds_no_space(journey, curves, tmp_path,
                                                              monkeypatch):
    """The third atomic write of the run fails as a full disk's rename would: the run ends
    with the one-line error, and the two files written before are whole."""
    replace, calls = os.replace, []

    def third_fails(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        replace(src, dst)

    monkeypatch.setattr(io.os, "replace", third_fails)
    with pytest.raises(DiskFullError, match="no space left on device writing") as err:
        JOURNEYS[journey](curves, tmp_path / "run")
    assert "\n" not in str(err.value) and str(calls[2]) in str(err.value)
    monkeypatch.setattr(io.os, "replace", replace)
    left = readable(tmp_path / "run")
    assert all(str(Path(c).relative_to(tmp_path / "run")) in left for c in calls[:2])
