"""`pat train-fleet --strategy best-unit`: one PAT run per training unit alone, the best by validation shipped,
with a calibration plan (groups + re-normalisation statistics of its unit) a node can calibrate from."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from pat_runtime.artifact import load_artifact
from pat_runtime.calibration import plan_of
from pat_runtime.cli import app

DEVICE = "sim:circuit?in_dim=4&param_dim=4&substeps=1&noise=0"


def test_best_unit_ships_the_best_validation_run_with_a_plan(tmp_path):
    out = tmp_path / "fleet"
    r = CliRunner().invoke(app, ["train-fleet", "--device", DEVICE, "--units", "1,2", "--held-out", "3",
                                 "--epochs", "1", "--strategy", "best-unit", "--groups", "ranges,readout",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    val = s["val_acc"]
    assert s["strategy"] == "best-unit" and set(val) == {"1", "2"}
    assert s["chosen_unit"] == max((1, 2), key=lambda u: (val[str(u)], -u))     # best validation, first on ties
    assert s["train_calls"] > 0 and s["history"] == []
    art = load_artifact(out / "model.pnn")
    plan = plan_of(art.metadata)
    assert plan is not None and plan.groups == ("ranges", "readout")
    assert plan.params == s["calibrated_parameters"] and plan.params
    assert plan.trained_on == [f"sim:circuit?in_dim=4&param_dim=4&substeps=1&noise=0&unit={s['chosen_unit']}"]
    assert plan.reference       # re-normalisation statistics measured on the chosen unit
    assert art.metadata["strategy"] == "best-unit" and art.metadata["chosen_unit"] == s["chosen_unit"]


def test_unknown_strategy_is_refused(tmp_path):
    r = CliRunner().invoke(app, ["train-fleet", "--device", DEVICE, "--units", "1,2", "--strategy", "luck",
                                 "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "--strategy must be multi-unit or best-unit" in r.output
