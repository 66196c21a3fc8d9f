import json

import pytest
from typer.testing import CliRunner

from pat_runtime.cli import app

pytestmark = pytest.mark.timeout(120)


def test_pat_fleet_runs_with_faults(tmp_path):
    out = tmp_path / "fleet.json"
    r = CliRunner().invoke(app, ["fleet", "--nodes", "4", "--faults", "drop=0.05,crash=1,crash_max=5,corrupt=0.02,slow=1",
                                 "--n-train", "128", "--n-test", "64", "--epochs", "2", "--twin", "nominal",
                                 "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert r.output.count("ledger ok (128 samples exactly once") == 2
    assert "utilization" in r.output and "final physical test accuracy" in r.output
    s = json.loads(out.read_text())
    assert s["config"]["nodes"] == 4 and len(s["epochs"]) == 2
    assert s["faults"]["crashes"] == 1 and s["metrics"]["ok"] > 0
    assert 0.0 <= s["final_test_acc"] <= 1.0


def test_pat_fleet_pipeline_mode():
    r = CliRunner().invoke(app, ["fleet", "--nodes", "3", "--mode", "pipeline", "--layers", "2", "--n-train", "64",
                                 "--n-test", "32", "--epochs", "1", "--twin", "nominal"])
    assert r.exit_code == 0, r.output
    assert "ledger ok (64 samples exactly once" in r.output


@pytest.mark.parametrize("args, msg", [
    (["--faults", "drop=2"], "probability"),
    (["--faults", "boom=1"], "bad fault"),
    (["--transport", "carrier-pigeon"], "inproc or zmq"),
    (["--backend", "slurm"], "local or ray"),
    (["--address", "auto"], "needs --backend ray"),
])
def test_pat_fleet_rejects_bad_options(args, msg):
    r = CliRunner().invoke(app, ["fleet", "--nodes", "2", *args])
    assert r.exit_code == 2 and msg in r.output


def test_pat_fleet_reports_impossible_faults():
    r = CliRunner().invoke(app, ["fleet", "--nodes", "2", "--faults", "crash=3", "--twin", "nominal"])
    assert r.exit_code == 2 and "exceed the 2 nodes" in r.output
