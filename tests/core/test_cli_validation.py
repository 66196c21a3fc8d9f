"""Invalid options: a one-line error and exit status 2, never a traceback."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pat_runtime.cli import app

runner = CliRunner()

CASES = [
    (["stream", "--batch", "0"], "--batch"),
    (["stream", "--checkpoint-every", "0"], "--checkpoint-every"),
    (["stream", "--steps", "0"], "--steps must be >= 1"),
    (["stream-publish", "--to", "mqtt://127.0.0.1:1/t", "--count", "0"], "--count"),
    (["results", "--epochs", "-1"], "--epochs"),
    (["train", "--device", "sim:plate?nosuch=1"], "unknown option 'nosuch'; valid options: adc_bits"),
    (["train", "--device", "sim:plate?unit=abc"], "option unit='abc' must be an integer"),
    (["train", "--device", "sim:plate?unit=-1"], "option unit=-1 must be >= 0"),
    (["train", "--device", "bogus:thing"], "unknown device URI 'bogus:thing'"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--lr", "0"], "--lr"),
    (["train", "--batch", "-4"], "--batch"),
    (["train", "--config", "/nonexistent/run.toml"], "config file /nonexistent/run.toml does not exist"),
    (["twin", "--samples", "0"], "--samples"),
    (["twin", "--device", "sim:shg?nosuch=1"], "unknown option 'nosuch'"),
    (["fleet", "--nodes", "0"], "--nodes"),
    (["fleet", "--timeout", "0"], "--timeout"),
    (["fleet", "--nodes", "2", "--device", "sim:plate?nosuch=1", "--twin", "nominal"], "unknown option 'nosuch'"),
    (["edge", "--device", "sim:plate", "--connect", "tcp://127.0.0.1:1", "--node-id", "n", "--heartbeat", "0"],
     "--heartbeat"),
    (["edge", "--device", "sim:plate?unit=x", "--connect", "tcp://127.0.0.1:1", "--node-id", "n", "-q"],
     "option unit='x' must be an integer"),
    (["instruments", "--unit", "-1"], "--unit"),
]


@pytest.mark.parametrize("args,msg", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_invalid_option_is_one_line_error(args, msg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert msg in r.output, r.output
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)
    assert not (tmp_path / "runs").exists()   # nothing half-made


def test_version():
    from importlib.metadata import version

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"pat-runtime {version('pat-runtime')}"


@pytest.mark.parametrize("command", ["twin", "fleet", "stream"])
def test_config_file_is_read_by_every_run_command(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "run.toml"
    cfg.write_text(f"[{command}]\nseed = -3\n")
    r = runner.invoke(app, [command, "--config", str(cfg)])
    assert r.exit_code == 2 and f"config file {cfg}: seed = -3" in r.output, r.output
    cfg.write_text("sed = 1\n")
    r = runner.invoke(app, [command, "--config", str(cfg)])
    assert r.exit_code == 2 and "unknown option 'sed'; valid options:" in r.output, r.output
