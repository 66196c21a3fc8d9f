"""Node liveness over MQTT: heartbeats, the Last Will on a crash, clean exits, reconnects, late coordinators."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiomqtt
import numpy as np
import pytest

from pat_runtime.devices.errors import DeviceConnectionError
from pat_runtime.testing.mosquitto import mosquitto_broker
from pat_runtime.testing import wait_until

EDGE_PROC = Path(__file__).with_name("edge_proc.py")
ROOT = Path(__file__).resolve().parents[2]


def _spawn_edge(url: str, node: str, heartbeat: float = 0.1, latency: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(EDGE_PROC), url, node, str(heartbeat), str(latency)], env=env,
                            stdin=subprocess.DEVNULL)


async def _reap(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    await asyncio.to_thread(proc.wait, 10)


async def test_heartbeats_keep_a_node_alive_and_silence_kills_it(broker, coordinator):
    """SIGSTOP freezes the node process (its TCP connection stays up, so no Last Will): only the missing
    heartbeats tell the coordinator; SIGCONT brings it back."""
    proc = _spawn_edge(broker.url, "frozen", heartbeat=0.1)
    try:
        async with coordinator(broker.url, liveness=0.6) as coord:
            await coord.wait_for_node("frozen", timeout=60)
            seq0 = coord.nodes["frozen"].meta.get("seq", 0)   # heartbeat counter from the node
            await wait_until(lambda: coord.nodes["frozen"].meta.get("seq", 0) >= seq0 + 10)   # 1 s > liveness
            assert coord.alive_nodes() == ["frozen"] and coord.nodes["frozen"].alive
            proc.send_signal(signal.SIGSTOP)
            took = await wait_until(lambda: not coord.nodes["frozen"].alive, timeout=30)
            assert took > 0.3 and coord.alive_nodes() == []   # dead only once `liveness` has passed in silence
            proc.send_signal(signal.SIGCONT)
            await wait_until(lambda: coord.nodes["frozen"].alive, timeout=5)
            await coord.wait_for_node("frozen", timeout=1)
            hdr, _ = await coord.request("frozen", "ping", timeout=5)
            assert hdr["ok"]
    finally:
        proc.send_signal(signal.SIGCONT)
        await _reap(proc)


async def test_last_will_marks_a_killed_node_offline_at_once(broker, coordinator):
    """kill -9 the node process: the broker publishes its Last Will "offline SID"; the coordinator marks the
    node dead long before the (30 s) heartbeat liveness would, and fails its in-flight request at once."""
    proc = _spawn_edge(broker.url, "doomed", heartbeat=0.1, latency=30.0)
    try:
        async with coordinator(broker.url, liveness=30.0) as coord:
            await coord.wait_for_node("doomed", timeout=60)
            x, theta = np.zeros((2, 16), np.float32), np.zeros(16, np.float32)
            pending = asyncio.create_task(coord.request("doomed", "apply", [x, theta], timeout=60, retries=0))
            await wait_until(lambda: coord.stats.sent_msgs >= 1, timeout=5)
            await wait_until(lambda: coord.nodes["doomed"].meta.get("inflight") == 1, timeout=10)  # the node has it
            proc.kill()
            await wait_until(lambda: not coord.nodes["doomed"].alive, timeout=30)
            with pytest.raises(DeviceConnectionError, match=r"\[doomed\] node went offline"):
                await asyncio.wait_for(pending, 2)
            with pytest.raises(DeviceConnectionError, match="offline"):  # fails fast, no timeout wait
                await coord.request("doomed", "ping", timeout=30)
        # the retained status tells a coordinator that starts later, too
        async with coordinator(broker.url) as late:
            with pytest.raises(Exception, match="did not join"):
                await late.wait_for_node("doomed", timeout=0.5)
            assert late.session("doomed") is None
    finally:
        await _reap(proc)


async def test_abrupt_socket_loss_triggers_will_then_node_reconnects(broker, edge_node, coordinator):
    """Shut the node's socket under it (no DISCONNECT): the broker publishes the Last Will "offline SID1";
    the node reconnects with a new session id ("online SID2") and serves again."""
    async with aiomqtt.Client(broker.host, broker.port) as sniffer, edge_node(broker.url, "flaky", heartbeat=0.1) as node, \
            coordinator(broker.url, liveness=30) as coord:
        await sniffer.subscribe("pat/flaky/status", qos=1)
        await coord.wait_for_node("flaky")
        sid1 = coord.nodes["flaky"].meta["sid"]
        left = []
        real_left = coord._node_left
        coord._node_left = lambda n: (left.append(n), real_left(n))  # record the transition (it is brief)
        node.transport.client._client.socket().shutdown(socket.SHUT_RDWR)
        await wait_until(lambda: left == ["flaky"], timeout=5)
        await wait_until(lambda: coord.nodes["flaky"].alive and coord.nodes["flaky"].meta["sid"] != sid1, timeout=10)
        sid2 = coord.nodes["flaky"].meta["sid"]
        seen = []
        while len(seen) < 3:  # retained "online SID1", the Will "offline SID1", then "online SID2"
            seen.append((await asyncio.wait_for(sniffer.messages.__anext__(), 5)).payload.decode())
        assert seen == [f"online {sid1}", f"offline {sid1}", f"online {sid2}"]
        assert node.transport.counters["connects"] == 2
        hdr, (a,) = await coord.request("flaky", "ping", [np.arange(3.0)])
        np.testing.assert_array_equal(a, [0, 1, 2])


async def test_clean_exit_says_offline_and_clears_the_retained_hello(broker, edge_node, coordinator):
    async with coordinator(broker.url, liveness=30) as coord:
        async with edge_node(broker.url, "tidy") as node:
            await coord.wait_for_node("tidy")
        assert node.task.done() and node.task.exception() is None
        await wait_until(lambda: not coord.nodes["tidy"].alive, timeout=2)
    async with aiomqtt.Client(broker.host, broker.port) as c:  # nothing stale left on the broker but "offline"
        await c.subscribe("pat/tidy/#", qos=1)
        msgs = []
        with pytest.raises(asyncio.TimeoutError):
            while True:
                msgs.append(await asyncio.wait_for(c.messages.__anext__(), 0.5))
        assert [(m.topic.value, m.payload.split()[0]) for m in msgs] == [("pat/tidy/status", b"offline")]


async def test_late_coordinator_learns_running_nodes_from_retained_messages(broker, edge_node, coordinator):
    async with edge_node(broker.url, "early-1"), edge_node(broker.url, "early-2"):
        async with coordinator(broker.url) as first:  # make sure both are up before the late one starts
            await first.wait_for_node("early-1")
            await first.wait_for_node("early-2")
        async with coordinator(broker.url) as late:
            assert sorted(await late.wait_for_nodes(2, timeout=5)) == ["early-1", "early-2"]
            hdr, _ = await late.request("early-2", "ping")
            assert hdr["node"] == "early-2"


async def test_node_and_coordinator_survive_a_broker_restart(edge_node, coordinator):
    async with mosquitto_broker() as b1:
        port = b1.port
        async with edge_node(b1.url, "phoenix", heartbeat=0.1) as node, \
                coordinator(b1.url, liveness=1.0, timeout=2.0, retries=5) as coord:
            await coord.wait_for_node("phoenix")
            b1.process.terminate()
            await asyncio.to_thread(b1.process.wait, 10)
            await wait_until(lambda: not coord.nodes["phoenix"].alive, timeout=5)
            with pytest.raises(DeviceConnectionError, match="offline"):  # known offline: fails fast
                await coord.request("phoenix", "ping")
            async with mosquitto_broker(port=port):  # same port, empty broker (persistence false)
                await coord.wait_for_node("phoenix", timeout=10)  # both reconnected, node announced again
                hdr, _ = await coord.request("phoenix", "ping")
                assert hdr["ok"]
                assert node.transport.counters["connects"] == 2
                node.stop.set()
                await asyncio.wait_for(node.task, 10)


async def test_cancelled_node_still_says_offline(broker, edge_node, coordinator):
    async with coordinator(broker.url, liveness=30) as coord:
        async with edge_node(broker.url, "cancelled") as node:
            await coord.wait_for_node("cancelled")
            node.task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await node.task
            await wait_until(lambda: not coord.nodes["cancelled"].alive, timeout=2)
            assert "cancelled" in coord.nodes and coord.session("cancelled") is None  # told by the node
