"""`pat deploy` against a real `pat edge --deploy-dir` process, and `pat stream` with resume and export."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pat_runtime.artifact import load_artifact, save_artifact
from pat_runtime.cli import app
from pat_runtime.testing import free_port, sim_device
from pat_runtime.testing.deploy import pnn_artifact
from pat_runtime.testing.zmq import EdgeProcess

DEVICE = "sim:circuit?unit=3&seed=1&noise=0"


def _make(tmp_path, name, version, seed, **dev_kw):
    dev = asyncio.run(sim_device("circuit", unit=3, seed=1, noise=0.0, **dev_kw))
    art, _ = pnn_artifact(dev, version=version, seed=seed)
    path = tmp_path / name
    save_artifact(path, art)
    return path, art


def test_pat_deploy_to_an_edge_process_over_zmq(tmp_path):
    v1, a1 = _make(tmp_path, "v1.pnn", "1", 1)
    v2, a2 = _make(tmp_path, "v2.pnn", "2", 2)
    small, _ = _make(tmp_path, "small.pnn", "9", 1, in_dim=8, param_dim=8)
    corrupt = tmp_path / "corrupt.pnn"
    corrupt.write_bytes(v1.read_bytes()[:-300])
    port = free_port()
    to = f"zmq://127.0.0.1:{port}/node1"
    edge = EdgeProcess(DEVICE, f"tcp://127.0.0.1:{port}", "node1", 0.2, "--deploy-dir", str(tmp_path / "edge")).start()
    run = CliRunner().invoke
    try:
        r = run(app, ["deploy", str(v1), "--to", to, "--wait", "30"])
        assert r.exit_code == 0, r.output
        assert f"node1: deployed version 1 ({a1.artifact_id[:12]})" in r.output
        r = run(app, ["deploy", str(corrupt), "--to", to])  # never leaves this machine
        assert r.exit_code == 2 and "corrupt" in r.output
        r = run(app, ["deploy", str(small), "--to", to, "--wait", "30"])  # the node refuses: wrong dims
        assert r.exit_code == 1 and "REFUSED spec_mismatch" in r.output and "still serving version 1" in r.output
        r = run(app, ["deploy", "--rollback", "--to", to, "--wait", "30"])
        assert r.exit_code == 1 and "REFUSED no_previous" in r.output
        r = run(app, ["deploy", str(v2), "--to", to, "--wait", "30"])
        assert r.exit_code == 0 and "deployed version 2" in r.output, r.output
        r = run(app, ["deploy", "--rollback", "--to", to, "--wait", "30"])
        assert r.exit_code == 0 and "rolled back to version 1" in r.output, r.output
        r = run(app, ["deploy", str(v2), "--inspect"])
        assert r.exit_code == 0 and json.loads(r.output)["model_version"] == "2"
    finally:
        rc = asyncio.run(edge.terminate())
        out = edge.output()
    assert rc == 0, out
    state = json.loads((tmp_path / "edge" / "state.json").read_text())
    assert state["history"] == [a1.artifact_id]


@pytest.mark.slow
def test_pat_stream_resumes_and_exports(tmp_path):
    run = CliRunner().invoke
    args = ["stream", "--device", "sim:plate?drift=0.001&noise=0", "--source", "sim-drift", "--dir", str(tmp_path),
            "--twin-samples", "256", "--checkpoint-every", "10", "--log-every", "10", "--refresh-every", "15"]
    r = run(app, args + ["--steps", "20"])
    assert r.exit_code == 0, r.output
    s1 = json.loads(r.output.strip().splitlines()[-1])["summary"]
    assert s1["steps"] == 20 and s1["offset"] == 20 and s1["refits"] == 1
    r = run(app, args + ["--steps", "15", "--export", str(tmp_path / "m.pnn")])
    assert r.exit_code == 0, r.output
    s2 = json.loads(r.output.strip().splitlines()[-1])["summary"]
    assert s2["resumed_from"] == 20 and s2["steps"] == 35 and s2["offset"] == 35 and s2["duplicates"] == 0
    art = load_artifact(tmp_path / "m.pnn")
    assert art.model_version == "stream-35" and art.device_kind == "sim:plate" and art.metadata["steps"] == 35
    assert art.artifact_id == s2["artifact_id"]
    assert np.all(np.abs(art.tensors["stages.1.theta"]) <= 1.0)  # θ stayed in the device's safe range
