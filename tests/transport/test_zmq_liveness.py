"""Node liveness (heartbeats, bye) and recovery after node or coordinator restarts."""
import asyncio

import numpy as np
import pytest
import zmq
import zmq.asyncio

from pat_runtime.devices.errors import DeviceConnectionError
from pat_runtime import wire
from pat_runtime.testing import free_port, sim_device
from pat_runtime.testing.zmq import start_node
from pat_runtime.transport.zmq import ZmqCoordinator
from pat_runtime.testing import wait_until

SPEC = {"kind": "fake", "in_dim": 2, "param_dim": 1, "out_dim": 2}


class FakeNode:
    """A hand-driven DEALER node: hello, heartbeats and bye on command."""

    def __init__(self, url, node_id="fake"):
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.IDENTITY, node_id.encode())
        self.sock.connect(url)
        self.node_id = node_id

    async def send(self, type, **fields):
        await self.sock.send_multipart(wire.encode(wire.make_header(type, node=self.node_id, **fields)))

    def close(self):
        self.sock.close(0)
        self.ctx.term()


async def test_missed_heartbeats_mark_node_dead_and_heartbeats_revive_it():
    async with ZmqCoordinator(f"tcp://127.0.0.1:{free_port()}", liveness=0.3) as coord:
        fake = FakeNode(coord.bind)
        try:
            await fake.send("hello", spec=SPEC)
            await coord.wait_for_node("fake", timeout=3)
            for seq in range(1, 6):  # heartbeats keep it alive well past `liveness`
                await asyncio.sleep(0.1)  # the stimulus: a gap shorter than `liveness`
                await fake.send("heartbeat", seq=seq)
                await wait_until(lambda s=seq: coord.nodes["fake"].meta.get("seq") == s)  # the coordinator has it
            assert coord.alive_nodes() == ["fake"] and coord.nodes["fake"].alive
            assert coord.nodes["fake"].departures == 0  # never marked dead in between
            took = await wait_until(lambda: not coord.nodes["fake"].alive)  # heartbeats stop
            assert took > 0.2   # dead only once `liveness` has passed in silence
            assert coord.alive_nodes() == []
            from pat_runtime.devices.errors import DeviceTimeoutError
            with pytest.raises(DeviceTimeoutError):
                await coord.wait_for_node("fake", timeout=0.05)
            await fake.send("heartbeat", seq=6)  # a known node coming back
            await wait_until(lambda: coord.alive_nodes() == ["fake"])
            assert coord.nodes["fake"].meta["seq"] == 6 and coord.nodes["fake"].departures == 1
        finally:
            fake.close()


async def test_heartbeat_from_unknown_node_is_answered_with_hello():
    async with ZmqCoordinator(f"tcp://127.0.0.1:{free_port()}") as coord:
        fake = FakeNode(coord.bind)
        try:
            await fake.send("heartbeat", seq=1)
            frames = await asyncio.wait_for(fake.sock.recv_multipart(), 3)
            h, _ = wire.decode(frames)
            assert h["type"] == "hello"
            assert "fake" not in coord.alive_nodes()  # not registered until it says hello with a spec
        finally:
            fake.close()


async def test_bye_marks_dead_at_once_and_fails_inflight_requests():
    async with ZmqCoordinator(f"tcp://127.0.0.1:{free_port()}", liveness=30) as coord:
        fake = FakeNode(coord.bind)
        try:
            await fake.send("hello", spec=SPEC)
            await coord.wait_for_node("fake", timeout=3)
            req = asyncio.create_task(coord.request("fake", "ping", timeout=10))
            await asyncio.wait_for(fake.sock.recv_multipart(), 3)  # the request arrived; never answer it
            await fake.send("bye")
            with pytest.raises(DeviceConnectionError, match=r"\[fake\].*bye"):   # the bye, not the 10 s timeout
                await req
            assert coord.stats.timeouts == 0 and coord.stats.retries == 0
            assert not coord.nodes["fake"].alive and coord.alive_nodes() == []
        finally:
            fake.close()


async def test_node_restart_recovers_and_a_waiting_request_gets_through():
    url = f"tcp://127.0.0.1:{free_port()}"
    async with ZmqCoordinator(url, liveness=5, timeout=3, retries=0) as coord:
        node = await start_node(await sim_device("circuit", noise=0.0), url, "n1")
        await coord.wait_for_node("n1", timeout=5)
        await coord.request("n1", "ping")
        await node.stop()
        await wait_until(lambda: not coord.nodes["n1"].alive)  # bye, long before liveness
        # a request issued while the node is away waits (EHOSTUNREACH back-off) until it is back
        x = np.zeros((2, 16), np.float32)
        req = asyncio.create_task(coord.request("n1", "apply", [x, np.zeros(16, np.float32)]))
        await wait_until(lambda: coord.stats.unreachable >= 1)   # tried, refused by the socket, waiting
        assert not req.done()
        dev2 = await sim_device("circuit", noise=0.0)
        node2 = await start_node(dev2, url, "n1")
        try:
            info = await coord.wait_for_node("n1", timeout=5)
            assert info.alive
            _, (y,) = await asyncio.wait_for(req, 5)
            np.testing.assert_array_equal(y, dev2.sim.measure(x, np.zeros(16, np.float32)))
            assert coord.stats.unreachable > 0 and dev2.calls == 1
        finally:
            await node2.stop()


async def test_coordinator_restart_nodes_reannounce():
    url = f"tcp://127.0.0.1:{free_port()}"
    coord = await ZmqCoordinator(url).start()
    node = await start_node(await sim_device("circuit"), url, "n1", heartbeat=0.05)
    try:
        await coord.wait_for_node("n1", timeout=5)
        await coord.close()
        coord2 = await ZmqCoordinator(url).start()  # same endpoint, empty registry
        try:
            info = await coord2.wait_for_node("n1", timeout=5)  # heartbeat -> "hello?" -> hello
            assert info.spec.kind == "sim:circuit"
            hdr, _ = await coord2.request("n1", "ping", timeout=2)
            assert hdr["ok"]
            assert node.node.transport.counters["hellos"] >= 2
        finally:
            await coord2.close()
    finally:
        await node.stop()
