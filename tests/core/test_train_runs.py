"""pat train run folders: --config (flags win), config.toml, shell-quoted command, unique folders,
checkpoint per epoch, Ctrl-C then --resume equal to an uninterrupted run, resume refusals, TensorBoard."""
from __future__ import annotations

import json
import shlex

import pytest
from typer.testing import CliRunner

from pat_runtime.cli import app

runner = CliRunner()
FAST = ["--method", "digital", "--no-progress"]


def _acc(out):
    return [json.loads(line)["test_acc"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_config_file_flags_override_and_resolved_config_saved(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('[train]\nmethod = "digital"\nepochs = 3\nbatch = 32\ntwin-samples = 100\nseed = 1\n')
    out = tmp_path / "r"
    r = runner.invoke(app, ["train", "--config", str(cfg), "--epochs", "2", "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    saved = (out / "config.toml").read_text()
    assert 'method = "digital"' in saved and "epochs = 2" in saved and "batch = 32" in saved and "seed = 1" in saved
    assert len(_acc(out)) == 2
    # the saved config reproduces the run
    r2 = runner.invoke(app, ["train", "--config", str(out / "config.toml"), "--out", str(tmp_path / "again")])
    assert r2.exit_code == 0, r2.output
    assert _acc(tmp_path / "again") == _acc(out)


def test_recorded_command_is_shell_quoted(tmp_path):
    out = tmp_path / "q"
    dev = "sim:circuit?unit=3&noise=0.02"
    r = runner.invoke(app, ["train", "--device", dev, "--epochs", "1", "--out", str(out), *FAST])
    assert r.exit_code == 0, r.output
    cmd = json.loads((out / "summary.json").read_text())["command"]
    words = shlex.split(cmd)
    assert words[:4] == ["pat", "train", "--device", dev]


@pytest.mark.parametrize("bad,msg", [
    ("epochs = 0\n", "epochs = 0"),
    ("epoch = 3\n", "unknown option 'epoch'; valid options:"),
    ("lr = \"fast\"\n", "lr = 'fast'"),
    ("epochs = [\n", "not valid TOML"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, bad, msg):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(bad)
    r = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(tmp_path / "x"), *FAST])
    assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output


def test_default_run_folders_are_unique(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        r = runner.invoke(app, ["train", "--device", "sim:plate?unit=2", "--epochs", "1", *FAST])
        assert r.exit_code == 0, r.output
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all(name.startswith("sim_plate_unit_2-digits-digital-s0-") for name in runs)


def test_ctrl_c_saves_and_resume_continues_exactly(tmp_path, monkeypatch):
    full = tmp_path / "full"
    assert runner.invoke(app, ["train", "--epochs", "4", "--out", str(full), *FAST]).exit_code == 0

    import pat_runtime.loggers as loggers_mod

    class CtrlC:
        def log_epoch(self, row):
            if row["epoch"] == 2:
                raise KeyboardInterrupt

        def close(self):
            pass

    real = loggers_mod.make_loggers
    monkeypatch.setattr(loggers_mod, "make_loggers", lambda *a, **k: [*real(*a, **k), CtrlC()])
    part = tmp_path / "part"
    r = runner.invoke(app, ["train", "--epochs", "4", "--out", str(part), *FAST])
    assert r.exit_code == 130, r.output
    assert f"pat train --resume {part}" in r.output
    assert len(_acc(part)) == 2 and (part / "checkpoint.pt").exists()
    monkeypatch.setattr(loggers_mod, "make_loggers", real)

    r = runner.invoke(app, ["train", "--resume", str(part), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert _acc(part) == _acc(full)            # epochs 3 and 4 continue where 2 ended, as if never stopped
    assert (json.loads((part / "model.json").read_text())["state_dict"]
            == json.loads((full / "model.json").read_text())["state_dict"])
    # TensorBoard curves have one point per epoch, the resumed ones included
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(part / "tb"))
    ea.Reload()
    assert [e.step for e in ea.Scalars("accuracy/test_physical")] == [1, 2, 3, 4]


def test_resume_refusals(tmp_path):
    out = tmp_path / "r"
    assert runner.invoke(app, ["train", "--epochs", "1", "--out", str(out), *FAST]).exit_code == 0
    r = runner.invoke(app, ["train", "--resume", str(out), "--device", "sim:shg", "--epochs", "2", "--no-progress"])
    assert r.exit_code == 2
    assert "cannot resume" in r.output and "device='sim:plate'" in r.output and "sim:shg" in r.output
    r = runner.invoke(app, ["train", "--resume", str(out), "--task", "mnist1d", "--epochs", "2", "--no-progress"])
    assert r.exit_code == 2 and "task='digits'" in r.output
    r = runner.invoke(app, ["train", "--resume", str(tmp_path / "nothing"), "--no-progress"])
    assert r.exit_code == 2 and "no config.toml" in r.output
