"""Trainer options: bf16 on a CPU without bf16 hardware is allowed but announced as slow."""

from __future__ import annotations

import warnings

import pytest

from mti_lightning.shells.trainer import check_trainer_options, cpu_has_bf16


def test_bf16_on_a_cpu_without_bf16_hardware_warns_that_it_is_emulated(monkeypatch) -> None:
    """A CPU without bf16 hardware, made on purpose (not this machine's): no AVX512-BF16 or
    AMX in its flags, and oneDNN's own test says no."""
    import torch

    from mti_lightning.shells import trainer

    monkeypatch.setattr(trainer, "cpu_flags", lambda: {"fpu", "sse2", "avx2"})
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert not cpu_has_bf16()
    with pytest.warns(UserWarning, match="bf16 is emulated there"):
        check_trainer_options("cpu", "bf16-mixed", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_trainer_options("cpu", "32", 1)


def test_native_bf16_cpus_are_recognised_from_their_flags(tmp_path, monkeypatch) -> None:
    """AVX512-BF16 or AMX in /proc/cpuinfo's flags: hardware bf16, so no 'emulated' warning."""
    from mti_lightning.shells import trainer

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile\n")
    assert {"avx2", "avx512_bf16", "amx_tile"} <= trainer.cpu_flags(info)
    assert trainer.cpu_flags(tmp_path / "missing") == set()
    assert cpu_has_bf16({"avx2", "avx512_bf16"}) and cpu_has_bf16({"amx_bf16"})
    monkeypatch.setattr(trainer, "cpu_flags", lambda: {"avx2", "amx_bf16", "amx_tile"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_trainer_options("cpu", "bf16-mixed", 1)
