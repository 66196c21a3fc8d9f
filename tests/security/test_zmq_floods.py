"""ZeroMQ floods: oversized frames, heartbeat key floods, fake hellos, non-finite measurements.

State is asserted bounded by sizes and counters (not by timing); the honest node keeps being served.
"""
from __future__ import annotations

import asyncio

import numpy as np
import pytest
import zmq
import zmq.asyncio

from pat_runtime.devices.errors import RemoteDeviceError
from pat_runtime.transport.remote import RemoteDevice
from pat_runtime import wire
from pat_runtime.testing import sim_device
from pat_runtime.testing.core import free_port
from pat_runtime.testing.zmq import start_node
from pat_runtime.transport.meta import FIELDS
from pat_runtime.transport.zmq import ZmqCoordinator
from pat_runtime.wire import Limits
from pat_runtime.testing import wait_until


X = np.zeros((1, 16), np.float32)
THETA = np.zeros(16, np.float32)


def _dealer(url: str, ident: bytes) -> zmq.asyncio.Socket:
    s = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.IDENTITY, ident)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(url)
    return s


async def _honest(coord: ZmqCoordinator, url: str):
    node = await start_node(await sim_device("circuit", unit=1, noise=0.0), url, "node-1")
    await coord.wait_for_node("node-1", timeout=10)
    return node


async def _barrier(sock: zmq.asyncio.Socket) -> None:
    """A heartbeat from an unbound connection is answered with "hello?": everything sent before it arrived."""
    await sock.send_multipart(wire.encode(wire.make_header("heartbeat", node="x")))
    while wire.decode(await asyncio.wait_for(sock.recv_multipart(), 10))[0]["type"] != "hello":
        pass


async def test_oversized_frame_disconnects_the_sender_before_it_is_buffered():
    url = f"tcp://127.0.0.1:{free_port()}"
    limits = Limits(max_array_bytes=1 << 20)  # MAXMSGSIZE = 1 MiB
    async with ZmqCoordinator(url, limits=limits) as coord:
        node = await _honest(coord, url)
        evil = _dealer(url, b"evil")
        try:
            await _barrier(evil)
            before = coord.stats.recv_msgs
            await evil.send_multipart([wire.encode(wire.make_header("reply", id="x", node="node-1"))[0],
                                       b"\0" * (8 << 20)])  # one 8 MiB frame
            # honest traffic goes on; the big frame never becomes a message
            for _ in range(3):
                await coord.request("node-1", "apply", [X, THETA])
            assert coord.stats.unmatched == 0 and coord.stats.malformed == 0
            assert coord.stats.recv_msgs - before >= 3 and node.device.calls == 3
        finally:
            evil.close()
            await node.stop()


async def test_heartbeat_key_flood_keeps_only_known_typed_fields():
    url = f"tcp://127.0.0.1:{free_port()}"
    async with ZmqCoordinator(url) as coord:
        node = await _honest(coord, url)
        spec = node.device.spec.to_dict()
        evil = _dealer(url, b"flooder")
        try:
            def junk(seq):  # 3,000 new keys per message (before: all merged into the node's metadata)
                return {f"k{seq}_{i}": i for i in range(3000)}

            await evil.send_multipart(wire.encode(wire.make_header("hello", node="flooder", spec=spec, **junk(-1))))
            for seq in range(20):
                await evil.send_multipart(wire.encode(wire.make_header(
                    "heartbeat", node="flooder", seq=seq, inflight="lots", handlers=["x" * 1000], **junk(seq))))
            await wait_until(lambda: coord.stats.meta_dropped >= 21 * 3000)
            meta = coord.nodes["flooder"].meta
            assert set(meta) <= set(FIELDS) and "inflight" not in meta and "handlers" not in meta
            assert meta["seq"] == 19
            await coord.request("node-1", "apply", [X, THETA])
        finally:
            evil.close()
            await node.stop()


async def test_fake_hello_flood_is_bounded_and_never_joined_ids_are_forgotten():
    url = f"tcp://127.0.0.1:{free_port()}"
    async with ZmqCoordinator(url, liveness=0.5) as coord:
        coord.max_nodes, coord.forget_after = 50, 0.5
        node = await _honest(coord, url)
        spec = node.device.spec.to_dict()
        evil = _dealer(url, b"flooder")
        try:
            for i in range(500):  # one connection claiming 500 ids (without CURVE ids are first come)
                await evil.send_multipart(wire.encode(wire.make_header("hello", node=f"fake-{i}", spec=spec)))
            await wait_until(lambda: coord.stats.recv_msgs >= 501)
            assert len(coord.nodes) <= 50 and coord.registry_sizes()["routes"] <= 50
            assert coord.stats.malformed >= 450  # refused beyond max_nodes (counted)
            # the fakes never heartbeat: dead after `liveness`, forgotten after `forget_after`
            await wait_until(lambda: set(coord.nodes) == {"node-1"}, 20)
            sizes = coord.registry_sizes()
            assert sizes["events"] == 1 and sizes["routes"] <= 2
            await coord.request("node-1", "apply", [X, THETA])
        finally:
            evil.close()
            await node.stop()


class _NanSim:
    """Wraps a sim so that its measurements are NaN/inf (a broken or hostile node)."""

    def __init__(self, sim, value):
        self._sim, self._value = sim, value

    def __getattr__(self, name):
        return getattr(self._sim, name)

    def measure(self, x, theta):
        y = np.asarray(self._sim.measure(x, theta), np.float32).copy()
        y[0, 0] = self._value
        return y


@pytest.mark.parametrize("value", [np.nan, np.inf])
async def test_non_finite_measurements_are_refused_at_the_coordinator(value):
    url = f"tcp://127.0.0.1:{free_port()}"
    async with ZmqCoordinator(url) as coord:
        dev = await sim_device("circuit", unit=1, noise=0.0)
        dev.sim = _NanSim(dev.sim, value)
        node = await start_node(dev, url, "node-1")
        try:
            remote = RemoteDevice(coord, "node-1", timeout=5, retries=0)
            await remote.connect(timeout=10)
            with pytest.raises(RemoteDeviceError, match="non-finite") as e:
                await remote.apply(X, THETA)
            assert e.value.code == "non_finite"
        finally:
            await node.stop()
