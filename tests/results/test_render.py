"""RESULTS.md rendering from a small fake results.json: cells, n, intervals, targets, figures, --render-only."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from pat_runtime.cli import app
from pat_runtime.cli.results import write_report
from pat_runtime.results.render import cells, gaps, render

PNG = b"\x89PNG\r\n\x1a\n"


def _fake() -> dict:
    runs = []
    for dev, base in (("plate", 0.9), ("shg", 0.85)):
        for unit in (0, 1):
            for seed in (0, 1):
                for depth in (1, 2):
                    jitter = 0.01 * (seed - 0.5) + 0.005 * unit
                    for method, acc in (("pat", base + jitter), ("insilico", base - 0.04 * depth + jitter)):
                        runs.append({"device": dev, "unit": unit, "seed": seed, "depth": depth, "method": method,
                                     "twin": "residual", "twin_nmse": 0.006, "noise_floor": 0.005,
                                     "twin_candidates": {"greybox": 0.02, "residual": 0.006, "mlp": 0.01},
                                     "val_acc": acc + 0.01, "test_acc": acc, "twin_test_acc": base,
                                     "seconds": 3.0, "device_calls": 100, "command": f"pat train --device sim:{dev}"})
                runs.append({"device": dev, "unit": unit, "seed": 0, "depth": 1, "method": "spsa", "twin": "residual",
                             "twin_nmse": 0.006, "noise_floor": 0.005, "val_acc": 0.4, "test_acc": 0.38,
                             "twin_test_acc": 0.3, "seconds": 9.0, "device_calls": 900, "command": "pat train spsa"})
    for seed in (0, 1):
        for depth in (1, 2):
            runs.append({"device": "digital", "unit": None, "seed": seed, "depth": depth, "method": "digital",
                         "twin": None, "twin_nmse": None, "noise_floor": None, "val_acc": 0.97, "test_acc": 0.96,
                         "twin_test_acc": None, "seconds": 1.0, "device_calls": 0, "command": "pat train digital"})
    spec = {"devices": ["plate", "shg"], "units": [0, 1], "seeds": [0, 1], "depths": [1, 2], "spsa_depths": [1],
            "task": "digits", "epochs": 3, "spsa_epochs": 2, "batch": 64, "spsa_tune_epochs": 1, "workers": 2,
            "sim_options": ""}
    tuning = {d: {"best": {"a": 1.0, "c": 0.2}, "trials": [{"a": 0.5, "c": 0.2, "val_acc": 0.3},
                                                          {"a": 1.0, "c": 0.2, "val_acc": 0.35}]}
              for d in ("plate", "shg")}
    return {"spec": spec, "runs": runs, "spsa_tuning": tuning, "seconds": 60.0,
            "task": {"n_train": 1078, "n_val": 270, "n_test": 449},
            "hybrid": {"task": "mnist5k", "device": "sim:plate", "description": "Hybrid.",
                       "runs": [{"method": "pat", "test_acc": 0.92}, {"method": "pat", "test_acc": 0.93},
                                {"method": "digital", "test_acc": 0.94}, {"method": "digital", "test_acc": 0.945}]}}


def test_cells_and_paired_gaps():
    data = _fake()
    acc = cells(data["runs"])
    assert acc[("plate", "pat", 2)].n == 4 and acc[("digital", "digital", 1)].n == 2
    g = gaps(data["runs"])
    assert abs(g[("plate", 2)].mean - 0.08) < 1e-9 and g[("plate", 2)].n == 4
    assert g[("plate", 2)].half < 1e-6          # identical jitter on both sides cancels in the pairing


def test_render_states_n_intervals_targets_and_reasons():
    text = render(_fake(), "pat results --seeds 2")
    assert "`pat results --seeds 2`" in text
    assert "n = 4 runs = 2 seeds × 2 units" in text and "95 % Student-t interval" in text
    assert "| plate | 2 | 90.3 [" in text and "+8.0 [" in text
    assert "1078 train / 270 validation / 449 test" in text
    assert "PAT − in-silico +8.0" in text and "| yes |" in text and "| no |" in text   # shg PAT 85 < 88
    assert "Why the cells differ" in text and "second-order effects" in text
    assert "a=1: 35.0 %" in text and "Hybrid PAT is" in text and "residual 2/2" in text
    assert "selected on test" in text


def test_write_report_and_render_only(tmp_path):
    md = tmp_path / "RESULTS.md"
    write_report(_fake(), md, "pat results --seeds 2")
    for name in ("results_depth.png", "results_gap.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
    assert json.loads((tmp_path / "results.json").read_text())["command"] == "pat results --seeds 2"
    md.unlink()
    r = CliRunner().invoke(app, ["results", "--render-only", "--out", str(md)])
    assert r.exit_code == 0, r.output
    assert "| shg | 1 |" in md.read_text()
    r = CliRunner().invoke(app, ["results", "--render-only", "--out", str(tmp_path / "none" / "R.md")])
    assert r.exit_code == 2 and "does not exist" in r.output
