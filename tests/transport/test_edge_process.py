"""`pat edge` as a separate process (``python -m pat_runtime.edge``) serving a RemoteDevice; SIGTERM exits cleanly."""
import asyncio

import numpy as np
import pytest

from pat_runtime.devices.factory import make_device
from pat_runtime.testing import free_port, wait_until
from pat_runtime.testing.zmq import EdgeProcess
from pat_runtime.sims import make_sim


async def test_pat_edge_process_serves_remote_device_and_exits_cleanly_on_sigterm():
    port = free_port()
    proc = EdgeProcess("sim:circuit?unit=3&noise=0", f"tcp://127.0.0.1:{port}", "edge-a", 0.1).start()
    dev = make_device(f"zmq://127.0.0.1:{port}/edge-a?timeout=5")
    try:
        await dev.connect(timeout=60)  # includes the child's start-up
        assert dev.spec.kind == "sim:circuit"
        ref = make_sim("circuit", unit=3, noise=0)  # the same hidden unit, in this process
        rng = np.random.default_rng(1)
        for _ in range(3):
            x = rng.uniform(-1, 1, (5, 16)).astype(np.float32)
            th = rng.uniform(-1, 1, 16).astype(np.float32)
            np.testing.assert_array_equal(await dev.apply(x, th), ref.measure(x, th))
        coord = dev.coordinator
        assert coord.alive_nodes() == ["edge-a"]
        rc = await proc.terminate(timeout=30)
        assert rc == 0, proc.output()
        await wait_until(lambda: not coord.nodes["edge-a"].alive)   # the node said bye on its way out
    finally:
        proc.kill()
        await dev.close()
    assert not dev.coordinator.started


def test_pat_edge_rejects_bad_arguments():
    from typer.testing import CliRunner

    from pat_runtime.cli import app

    url = f"tcp://127.0.0.1:{free_port()}"
    r = CliRunner().invoke(app, ["edge", "--device", "sim:nope", "--connect", url, "--node-id", "x"])
    assert r.exit_code != 0 and "nope" in r.output
    r = CliRunner().invoke(app, ["edge", "--device", "sim:circuit", "--connect", "http://x", "--node-id", "x"])
    assert r.exit_code != 0 and "unknown coordinator URL" in r.output
    r = CliRunner().invoke(app, ["edge", "--device", "sim:circuit", "--connect", url, "--node-id", "x",
                                 "--curve-cert", "/nonexistent"])
    assert r.exit_code != 0 and "--curve-server-key" in r.output


async def test_run_edge_in_process_with_curve_certificate_files(tmp_path):
    import zmq.auth

    from pat_runtime.edge.agent import run_edge
    from pat_runtime.cli.edge import _curve_client
    from pat_runtime.transport.zmq import CurveServer, ZmqCoordinator, load_cert

    server_pub_file, server_sec_file = zmq.auth.create_certificates(tmp_path, "server")
    node_pub_file, node_sec_file = zmq.auth.create_certificates(tmp_path, "node")
    spub, ssec = load_cert(server_sec_file)
    npub, _ = load_cert(node_pub_file)
    url = f"tcp://127.0.0.1:{free_port()}"
    stop = asyncio.Event()
    async with ZmqCoordinator(url, curve=CurveServer.create(spub, ssec, allowed=[npub])) as coord:
        curve = _curve_client(str(server_pub_file), node_sec_file)  # what `pat edge --curve-...` builds
        task = asyncio.create_task(run_edge("sim:circuit", url, "n1", heartbeat=0.1, stop=stop,
                                            handle_signals=False, curve=curve))
        try:
            await coord.wait_for_node("n1", timeout=10)
            hdr, _ = await coord.request("n1", "spec", timeout=2)
            assert hdr["spec"]["kind"] == "sim:circuit"
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


def test_transport_is_chosen_by_url_scheme():
    from pat_runtime.edge.agent import make_edge_transport
    from pat_runtime.transport.zmq import ZmqEdgeTransport

    t = make_edge_transport("tcp://127.0.0.1:5555", "n1", heartbeat=0.2)
    assert isinstance(t, ZmqEdgeTransport) and t.heartbeat == 0.2 and t.node_id == "n1"
    mqtt = pytest.importorskip("pat_runtime.transport.mqtt")
    t = make_edge_transport("mqtt://127.0.0.1:1883", "n1", heartbeat=0.2)
    assert isinstance(t, mqtt.MqttEdgeTransport)
    with pytest.raises(ValueError, match="unknown coordinator URL"):
        make_edge_transport("udp://x", "n1")


@pytest.mark.slow
def test_pat_train_on_a_remote_zmq_device(tmp_path):
    """`pat train --device zmq://...` against `pat edge` in another process (one short epoch)."""
    import json
    import signal

    from typer.testing import CliRunner

    from pat_runtime.cli import app

    port = free_port()
    proc = EdgeProcess("sim:circuit?noise=0.01", f"tcp://127.0.0.1:{port}", "trainee", 0.2).start()
    try:
        r = CliRunner().invoke(app, ["train", "--device", f"zmq://127.0.0.1:{port}/trainee?timeout=20", "--task",
                                     "digits", "--method", "pat", "--twin", "nominal", "--epochs", "1",
                                     "--no-progress", "--out", str(tmp_path / "run")])
        assert r.exit_code == 0, r.output
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["device_calls"] > 50 and summary["epochs_run"] == 1
        assert "zmq://127.0.0.1" in r.output
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(30) == 0, proc.output()
    finally:
        proc.kill()
