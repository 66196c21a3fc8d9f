"""ZeroMQ: a node id belongs to the key registered for it (CURVE) or to its first live holder; impostors fail.

Real ``pat edge`` processes; the attacker is another ``pat edge`` process (a compromised node's key claiming
someone else's id, an unregistered key) or a raw DEALER socket.
"""
from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest
import zmq
import zmq.asyncio

from pat_runtime.transport.remote import RemoteDevice
from pat_runtime import wire
from pat_runtime.testing import sim_device
from pat_runtime.testing.core import free_port
from pat_runtime.testing.zmq import start_node
from pat_runtime.transport.zmq import CurveClient, CurveServer, ZmqCoordinator, ZmqEdgeTransport, load_cert
from pat_runtime.sims import make_sim
from pat_runtime.testing import wait_until


HONEST, OTHER = "sim:circuit?unit=1&noise=0", "sim:circuit?unit=7&noise=0"


def _keys(tmp_path):
    import zmq.auth

    for name in ("coordinator", "node-1", "node-2", "stranger"):
        zmq.auth.create_certificates(str(tmp_path), name)
    (tmp_path / "keys.txt").write_text("\n".join(
        f"{n} {zmq.auth.load_certificate(str(tmp_path / f'{n}.key'))[0].decode()}" for n in ("node-1", "node-2")))
    return tmp_path


async def _measure_is_honest(coord, node="node-1") -> None:
    """A measurement through ``node`` comes from the honest unit (not from the impostor's)."""
    dev = RemoteDevice(coord, node, timeout=5, retries=1)
    await dev.connect(timeout=20)
    x = np.linspace(-0.5, 0.5, 2 * dev.spec.in_dim, dtype=np.float32).reshape(2, -1)
    theta = np.zeros(dev.spec.param_dim, np.float32)
    y = await dev.apply(x, theta)
    np.testing.assert_allclose(y, make_sim("circuit", unit=1, noise=0).measure(x, theta), rtol=1e-5, atol=1e-6)
    assert not np.allclose(y, make_sim("circuit", unit=7, noise=0).measure(x, theta))


async def test_curve_impostor_and_stranger_processes_fail_honest_node_served(tmp_path, edges):
    """``pat edge`` processes: the honest node-1, node-2's (registered) key claiming node-1, an unregistered key."""
    k = _keys(tmp_path)
    url = f"tcp://127.0.0.1:{free_port()}"
    curve = CurveServer.from_files(k / "coordinator.key_secret", k / "keys.txt")
    server = ["--curve-server-key", str(k / "coordinator.key")]
    async with ZmqCoordinator(url, curve=curve, liveness=3) as coord:
        honest = edges(HONEST, url, "node-1", *server, "--curve-cert", str(k / "node-1.key_secret"))
        impostor = edges(OTHER, url, "node-1", *server, "--curve-cert", str(k / "node-2.key_secret"))
        server_key = load_cert(k / "coordinator.key")[0]
        stranger = await _in_process_node(url, "node-9", 7, curve=CurveClient.create(
            server_key, *load_cert(k / "stranger.key_secret")))
        try:
            await coord.wait_for_node("node-1", timeout=60)
            await wait_until(lambda: "refused this node id" in impostor.output(), 60,
                             lambda: f"the impostor to be refused; its output: {impostor.output()}")
            await _measure_is_honest(coord)
            assert coord.stats.rejected >= 1 and coord.nodes["node-1"].meta["pid"] == honest.pid
            # the stranger's handshake is refused by ZAP: nothing it sends reaches the coordinator (barrier:
            # the honest node's heartbeats keep arriving while the stranger keeps sending its own)
            seq0 = coord.nodes["node-1"].meta.get("seq", 0)
            hb0 = stranger.node.transport.counters["heartbeats"]
            await wait_until(lambda: coord.nodes["node-1"].meta.get("seq", 0) >= seq0 + 3
                             and stranger.node.transport.counters["heartbeats"] >= hb0 + 3)
            assert "node-9" not in coord.nodes and coord.alive_nodes() == ["node-1"]
        finally:
            await stranger.stop()


async def _in_process_node(url, node_id, unit, **kw):
    return await start_node(await sim_device("circuit", unit=unit, noise=0.0), url, node_id, **kw)


async def test_curve_impostor_that_comes_first_does_not_block_the_honest_node(tmp_path):
    k = _keys(tmp_path)
    url = f"tcp://127.0.0.1:{free_port()}"
    curve = CurveServer.from_files(k / "coordinator.key_secret", k / "keys.txt")
    server_key = load_cert(k / "coordinator.key")[0]

    def client(name):
        return CurveClient.create(server_key, *load_cert(k / f"{name}.key_secret"))

    async with ZmqCoordinator(url, curve=curve, liveness=3) as coord:
        impostor = await _in_process_node(url, "node-1", 7, curve=client("node-2"))
        honest = None
        try:
            await wait_until(lambda: impostor.node.transport.counters["refused"] >= 1)
            assert "node-1" not in coord.nodes
            honest = await _in_process_node(url, "node-1", 1, curve=client("node-1"))
            await _measure_is_honest(coord)
            assert impostor.device.calls == 0 and honest.device.calls == 1
        finally:
            for n in (impostor, honest):
                if n is not None:
                    await n.stop()


async def test_without_curve_a_second_claim_of_a_live_id_is_refused_until_the_holder_leaves():
    url = f"tcp://127.0.0.1:{free_port()}"
    async with ZmqCoordinator(url, liveness=3) as coord:
        honest = await _in_process_node(url, "node-1", 1)
        impostor = None
        try:
            await coord.wait_for_node("node-1", timeout=10)
            impostor = await _in_process_node(url, "node-1", 7)
            await wait_until(lambda: impostor.node.transport.counters["refused"] >= 1)
            await _measure_is_honest(coord)
            assert impostor.device.calls == 0
            await honest.stop()  # bye: the id is free; the waiting node's next hello takes it (recovery)
            await wait_until(lambda: coord.alive_nodes() == ["node-1"]
                             and coord.nodes["node-1"].meta.get("seq", 0) > 0
                             and impostor.node.transport.routing_id is not None
                             and coord.route_of("node-1") == impostor.node.transport.routing_id, 15)
        finally:
            for n in (impostor, honest):
                if n is not None and not n.task.done():
                    await n.stop()


async def test_raw_socket_cannot_steal_a_route_or_forge_replies_and_byes():
    """ROUTER_HANDOVER is off and the edge's routing id is unguessable: guessing the plain node id gets nothing."""
    url = f"tcp://127.0.0.1:{free_port()}"
    async with ZmqCoordinator(url, liveness=3) as coord:
        node = await start_node(await sim_device("circuit", unit=1, noise=0.0), url, "node-1")
        try:
            await coord.wait_for_node("node-1", timeout=10)
            ctx = zmq.asyncio.Context.instance()
            evil = ctx.socket(zmq.DEALER)
            evil.setsockopt(zmq.IDENTITY, b"node-1")
            evil.setsockopt(zmq.LINGER, 0)
            evil.connect(url)
            await evil.send_multipart(wire.encode(wire.make_header("reply", id="x", node="node-1", ok=True)))
            await evil.send_multipart(wire.encode(wire.make_header("bye", node="node-1")))
            await evil.send_multipart(wire.encode(wire.make_header("heartbeat", node="node-1", seq=1)))
            # barrier: the coordinator answers the heartbeat from an unbound connection with "hello?"
            reply = await asyncio.wait_for(evil.recv_multipart(), 10)
            assert wire.decode(reply)[0]["type"] == "hello"
            assert coord.nodes["node-1"].alive and coord.stats.unmatched == 1 and coord.stats.rejected == 1
            _, (y,) = await coord.request("node-1", "apply", [np.zeros((1, 16), np.float32), np.zeros(16, np.float32)])
            assert node.device.calls == 1
            evil.close()
        finally:
            await node.stop()


def test_non_loopback_without_curve_needs_an_explicit_opt_in(caplog):
    port = free_port()
    with pytest.raises(ValueError, match="not a loopback address and CURVE is off"):
        ZmqCoordinator(f"tcp://0.0.0.0:{port}")
    with pytest.raises(ValueError, match="--insecure"):
        ZmqEdgeTransport(f"tcp://10.1.2.3:{port}", "node-1")
    with caplog.at_level(logging.WARNING, "pat_runtime.transport.zmq"):
        ZmqCoordinator(f"tcp://0.0.0.0:{port}", insecure=True)
    assert "insecure opt-in" in caplog.text
    ZmqCoordinator(f"tcp://127.0.0.1:{port}"), ZmqCoordinator(f"tcp://[::1]:{port}"), ZmqCoordinator("ipc:///tmp/x")
