"""Per-unit curves of a search, as the step computed them: the CSV logger gets, at its
cadence, ``activation/UNIT`` for a feature visualisation and ``match/UNIT`` for an inversion
(an MTI search's energies are checked end to end in tests/test_tracking.py)."""

from __future__ import annotations

import csv

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from mti_lightning.core.features import FeatureSpec, build_readout
from mti_lightning.core.inversion import inversion_objective
from mti_lightning.core.models import load_model
from mti_lightning.core.objectives import Activation
from mti_lightning.core.parameterizations import FourierImage
from mti_lightning.shells.draws import DrawDataModule
from mti_lightning.shells.search import MTISearch, unique_labels
from mti_lightning.shells.trainer import make_trainer

FEATURE = "layer2.0.conv1"
CAM = "layer1.1.act2"


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    return load_model("resnet18", input_size=(3, 32, 32))


def _curves(search: MTISearch, tmp_path, steps: int = 4) -> list[dict[str, str]]:
    logger = CSVLogger(save_dir=str(tmp_path), name="csv", version="")
    trainer = make_trainer(tmp_path, steps, logger=logger, log_every_n_steps=2)
    trainer.fit(search, datamodule=DrawDataModule(search.transform, 2, seed=0))
    with open(tmp_path / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_visualisation_logs_each_units_activation(lm, tmp_path):
    specs = [FeatureSpec(FEATURE, c) for c in (1, 2)]
    readout = build_readout(lm.model, lm.input_size, specs)
    search = MTISearch(
        lm, FourierImage(2, (32, 32)), Activation(1.0), readout, unit_names=["a", "b"], lr=0.1
    )
    rows = _curves(search, tmp_path)
    assert [int(r["step"]) for r in rows] == [1, 3]
    assert {k for k in rows[0] if "/" in k} == {"activation/a", "activation/b"}
    # the last logged value is the step's mean over its draws of the feature
    assert float(rows[-1]["activation/b"]) == pytest.approx(float(search.last_values[1]))


def test_inversion_logs_each_images_match(lm, tmp_path):
    specs = [FeatureSpec(FEATURE, 3)]
    readout = build_readout(lm.model, lm.input_size, specs)
    source = torch.rand(1, 3, 32, 32)
    objective = inversion_objective(lm, source, readout, CAM)
    search = MTISearch(lm, FourierImage(2, (32, 32)), objective, None, unit_names=["x+", "x-"])
    rows = _curves(search, tmp_path)
    assert {k for k in rows[0] if "/" in k} == {"match/x+", "match/x-"}
    assert all(float(r["match/x+"]) != 0.0 for r in rows)


def test_repeated_names_are_told_apart_and_the_cap_is_checked(lm):
    assert unique_labels(["u", "v", "u", "u"]) == ["u", "v", "u#1", "u#2"]
    readout = build_readout(lm.model, lm.input_size, [FeatureSpec(FEATURE, 0)])
    with pytest.raises(ValueError, match="2 unit names for 1 images"):
        MTISearch(lm, FourierImage(1, (32, 32)), Activation(), readout, unit_names=["a", "b"])
