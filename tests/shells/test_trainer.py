"""Trainer options: bf16 on a CPU without bf16 hardware is allowed but announced as slow."""

from __future__ import annotations

import warnings

import pytest

from mti_lightning.shells.trainer import check_trainer_options, cpu_has_bf16


def test_bf16_on_cpu_warns_only_where_it_is_emulated() -> None:
    if cpu_has_bf16():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_trainer_options("cpu", "bf16-mixed", 1)
    else:
        with pytest.warns(UserWarning, match="bf16 is emulated there"):
            check_trainer_options("cpu", "bf16-mixed", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_trainer_options("cpu", "32", 1)
