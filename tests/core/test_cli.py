"""`pat train`, `pat twin`, `pat results` through typer's CliRunner (small runs)."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from pat_runtime.cli import app

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def test_train_writes_jsonl_png_summary_model(tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--device", "sim:plate", "--task", "digits", "--method", "pat", "--epochs", "2",
                            "--batch", "128", "--twin", "nominal", "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    rows = [json.loads(line) for line in lines]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert {"train_loss", "train_acc", "test_acc", "twin_test_acc", "samples_per_s", "device_calls",
            "val_acc", "val_loss"} <= set(rows[0])
    assert (out / "curves.png").read_bytes()[:8] == PNG
    summary = json.loads((out / "summary.json").read_text())
    assert summary["command"].startswith("pat train --device sim:plate --task digits --method pat")
    assert summary["twin"]["kind"] == "nominal" and summary["twin"]["nmse_val"] > 0
    # the result is the model of the best-validation epoch; its test accuracy is that epoch's logged one
    best = max(rows, key=lambda row: (row["val_acc"], -row["val_loss"], row["epoch"]))
    assert summary["best_epoch"] == best["epoch"] and summary["val_acc"] == best["val_acc"]
    assert summary["test_acc"] == best["test_acc"] and summary["task"]["n_val"] == 270
    model = json.loads((out / "model.json").read_text())
    assert model["format"] == "pat-pnn/1" and model["spec"]["kind"] == "sim:plate"
    assert "test accuracy" in r.output
    # the run's deployable artifact verifies and rebuilds the same PNN
    import numpy as np

    from pat_runtime.artifact import load_artifact, pnn_from_artifact
    art = load_artifact(out / "model.pnn")
    assert art.manifest["metadata"]["test_acc"] == summary["test_acc"]
    rebuilt = pnn_from_artifact(art)
    theta = [v.detach().numpy() for k, v in rebuilt.state_dict().items() if k.endswith("theta")]
    assert len(theta) == 2  # --layers default: two physical layers on the same device
    assert all(np.all(np.isfinite(t)) and np.abs(t).max() <= 1.0 + 1e-6 for t in theta)


def test_train_digital_and_bad_inputs(tmp_path):
    r = runner.invoke(app, ["train", "--method", "digital", "--epochs", "1", "--out", str(tmp_path / "d"),
                            "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "d" / "summary.json").read_text())["twin"] is None
    r = runner.invoke(app, ["train", "--method", "magic", "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "unknown method" in r.output
    r = runner.invoke(app, ["train", "--device", "sim:warp-drive", "--out", str(tmp_path / "y"), "--no-progress"])
    assert r.exit_code == 2 and "unknown simulator" in r.output


def test_twin_command_saves_and_train_loads_it(tmp_path):
    path = tmp_path / "twin.pt"
    rep = tmp_path / "twin.json"
    r = runner.invoke(app, ["twin", "--device", "sim:plate", "--kind", "greybox", "--samples", "512", "--epochs", "3",
                            "--save", str(path), "--report", str(rep)])
    assert r.exit_code == 0, r.output
    assert "held-out NMSE" in r.output and path.exists()
    report = json.loads(rep.read_text())
    assert report["nmse_val"] < report["nmse_before"]
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--epochs", "1", "--twin-path", str(path), "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "summary.json").read_text())["twin"]["kind"] == f"file:{path}"


def test_results_regenerates_markdown_and_plots(tmp_path):
    """`pat results` end to end on a tiny grid (one unit, one seed, one depth, one epoch, tiny twins)."""
    md = tmp_path / "RESULTS.md"
    r = runner.invoke(app, ["results", "--out", str(md), "--device", "plate", "--units", "0", "--seeds", "1",
                            "--depths", "1", "--epochs", "1", "--spsa-epochs", "1", "--spsa-depths", "",
                            "--twin", "greybox", "--twin-samples", "256", "--twin-epochs", "1", "--no-hybrid",
                            "--workers", "1"])
    assert r.exit_code == 0, r.output
    text = md.read_text()
    assert "| plate | 1 |" in text and "n = 1 runs = 1 seeds × 1 units" in text
    assert "pat results --out" in text and "--epochs 1" in text and "--twin greybox" in text
    assert (tmp_path / "results_depth.png").read_bytes()[:8] == PNG
    assert (tmp_path / "results_gap.png").read_bytes()[:8] == PNG
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert sorted((x["method"], x["depth"]) for x in runs) == [("digital", 1), ("insilico", 1), ("pat", 1)]
    assert all(x["val_acc"] is not None and x["test_acc"] is not None for x in runs)


def test_results_resume_runs_only_the_missing_runs(tmp_path):
    """An interrupted grid resumed with `--resume` keeps its finished runs and runs only the missing ones;
    later jobs of a unit reuse the twin the first job fitted (the twin cache)."""
    md = tmp_path / "RESULTS.md"
    args = ["results", "--out", str(md), "--device", "plate", "--units", "0", "--seeds", "2", "--depths", "1",
            "--epochs", "1", "--spsa-depths", "", "--twin", "greybox", "--twin-samples", "256", "--twin-epochs", "1",
            "--n-train", "100", "--no-hybrid", "--workers", "1", "--twin-cache", str(tmp_path / "twins")]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    state = json.loads((tmp_path / "results.json").read_text())
    full = state["runs"]
    assert sorted((x["seed"], x["method"]) for x in full if x["method"] != "digital") == \
        [(0, "insilico"), (0, "pat"), (1, "insilico"), (1, "pat")]
    # interrupt it after seed 0: the state file says partial, the log holds seed 0's runs only
    kept = [x for x in full if x["seed"] == 0]
    (tmp_path / "results_runs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in kept))
    (tmp_path / "results.json").write_text(json.dumps({**state, "partial": True}))
    r = runner.invoke(app, args + ["--resume"])
    assert r.exit_code == 0, r.output
    assert f"resuming: {len(kept)} runs already done" in r.output
    resumed = json.loads((tmp_path / "results.json").read_text())
    assert not resumed["partial"]
    assert sorted((x["seed"], x["method"]) for x in resumed["runs"]) == sorted((x["seed"], x["method"]) for x in full)
    assert [x for x in resumed["runs"] if x["seed"] == 0] == kept          # not run again
    # other options than the interrupted grid's are refused, with the reason
    (tmp_path / "results.json").write_text(json.dumps({**state, "partial": True}))
    (tmp_path / "results_runs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in kept))
    r = runner.invoke(app, [a if a != "2" else "3" for a in args] + ["--resume"])
    assert r.exit_code != 0 and "options differ" in r.output
