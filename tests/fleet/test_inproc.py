"""In-memory transport: round trips through the wire codec, liveness, corruption, drops, crash/restart."""
import asyncio
import time

import numpy as np
import pytest

from pat_runtime.devices.errors import DeviceConnectionError, DeviceTimeoutError, RemoteDeviceError
from pat_runtime.edge.service import NodeService
from pat_runtime import wire
from pat_runtime.testing import sim_device
from pat_runtime.transport.inproc import InprocCoordinator, InprocEdgeTransport, from_frames, to_frames
from pat_runtime.fleet.simfleet import FaultInjector, FaultSpec
from pat_runtime.testing import wait_until

pytestmark = pytest.mark.timeout(30)


async def _node(coord, node_id="n1", unit=0, **kw):
    dev = await sim_device("circuit", unit=unit, in_dim=4, param_dim=4, substeps=1)
    svc = NodeService(dev, node_id)
    edge = InprocEdgeTransport(coord, node_id, heartbeat=0.05, **kw)
    stop = asyncio.Event()
    task = asyncio.create_task(edge.serve(svc, stop))
    return svc, edge, stop, task


def test_frames_roundtrip_and_crc():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    frames = to_frames(wire.make_header("apply"), [x])
    h, (y,) = from_frames(frames)
    assert h["type"] == "apply" and np.array_equal(x, y) and not y.flags.writeable
    bad = list(frames)
    bad[1] = bytes([bad[1][0] ^ 1]) + bad[1][1:]
    with pytest.raises(wire.WireError) as e:
        from_frames(bad)
    assert e.value.code == "corrupt"


async def test_request_reply_and_registry():
    async with InprocCoordinator("inproc://t-rr", timeout=1.0) as coord:
        svc, edge, stop, task = await _node(coord)
        info = await coord.wait_for_node("n1", timeout=2)
        assert info.spec.in_dim == 4 and info.meta["session"] == edge.session
        x = np.random.default_rng(0).uniform(-1, 1, (5, 4)).astype(np.float32)
        th = np.zeros(4, np.float32)
        h, (y,) = await coord.request("n1", "apply", [x, th])
        assert h["ok"] and y.shape == (5, 4)
        np.testing.assert_allclose(y, svc.device.sim.measure(x, th), atol=0.2)  # same unit, noisy
        with pytest.raises(RemoteDeviceError) as e:
            await coord.request("n1", "apply", [np.full((1, 4), 9, np.float32), th])
        assert e.value.code == "out_of_range"
        with pytest.raises(DeviceConnectionError):
            await coord.request("nobody", "ping")
        t0 = time.monotonic()
        await wait_until(lambda: coord.nodes["n1"].last_seen > t0 + 0.15)   # a heartbeat 3 periods later
        assert coord.alive_nodes() == ["n1"]       # heartbeats keep it alive
        stop.set()
        await task
        assert coord.alive_nodes() == [] and not coord.nodes["n1"].alive   # bye


async def test_edge_finds_coordinator_by_address():
    coord = InprocCoordinator("inproc://t-late")
    svc, edge, stop, task = await _node("inproc://t-late")   # edge first: it waits for the coordinator
    await wait_until(lambda: edge.waiting_for_coordinator)
    await coord.start()
    try:
        await coord.wait_for_node("n1", timeout=2)
        h, _ = await coord.request("n1", "ping")
        assert h["ok"]
    finally:
        stop.set()
        await task
        await coord.close()


async def test_dropped_reply_is_retried_and_not_reapplied():
    """A lost reply is recovered by the retry (same id): the device runs once."""
    spec = FaultSpec(drop=1.0)
    async with InprocCoordinator(timeout=0.1, retries=1) as coord:
        dev = await sim_device("circuit", in_dim=4, param_dim=4, substeps=1)
        svc = NodeService(dev, "n1")
        inj = FaultInjector(spec)
        edge = InprocEdgeTransport(coord, "n1", heartbeat=0.05, faults=inj)     # the edge's fault hook
        stop = asyncio.Event()
        task = asyncio.create_task(edge.serve(svc, stop))
        await coord.wait_for_node("n1", timeout=2)
        with pytest.raises(DeviceTimeoutError):
            await coord.request("n1", "apply", [np.zeros((2, 4), np.float32), np.zeros(4, np.float32)])
        assert dev.calls == 1 and svc.counters["duplicates"] == 1 and coord.counters["retries"] == 1
        assert inj.counters["dropped"] == 2      # the first reply and the retry's cached one
        stop.set()
        await task


async def test_corrupted_frames_recovered_by_retry():
    spec = FaultSpec(corrupt=0.3, seed=3)
    async with InprocCoordinator(timeout=0.05, retries=8) as coord:
        svc, edge, stop, task = await _node(coord, faults=FaultInjector(spec))
        await coord.wait_for_node("n1", timeout=2)
        rng = np.random.default_rng(1)
        th = np.zeros(4, np.float32)
        for _ in range(30):
            x = rng.uniform(-1, 1, (3, 4)).astype(np.float32)
            _, (y,) = await coord.request("n1", "apply", [x, th])
            assert y.shape == (3, 4) and np.all(np.abs(y) <= 1.5)
        assert edge.counters["corrupt"] + coord.counters["corrupt"] > 0
        assert coord.counters["retries"] > 0
        stop.set()
        await task


async def test_malformed_frames_without_integrity_get_error_replies():
    """With the CRC off, damaged frames reach the decoder; the node answers errors and stays up."""
    async with InprocCoordinator(timeout=1.0, integrity=False) as coord:
        svc, edge, stop, task = await _node(coord)
        await coord.wait_for_node("n1", timeout=2)
        for junk in ([b"\xc1garbage"], [], [wire.encode(wire.make_header("apply"), [np.zeros(3, np.float32)])[0]]):
            edge.deliver([bytes(f) for f in junk])
        await wait_until(lambda: edge.counters["bad"] == 3)
        h, _ = await coord.request("n1", "ping")
        assert h["ok"] and not task.done()
        stop.set()
        await task


async def test_crash_goes_silent_then_dead_and_restart_rejoins():
    async with InprocCoordinator(timeout=0.05, retries=0, liveness=0.3) as coord:
        svc, edge, stop, task = await _node(coord, unit=5)
        await coord.wait_for_node("n1", timeout=2)
        s1 = coord.nodes["n1"].meta["session"]
        edge.crash()
        await task                                   # serve returns, no bye
        assert coord.alive_nodes() == ["n1"]
        with pytest.raises(DeviceTimeoutError):
            await coord.request("n1", "ping")
        await wait_until(lambda: coord.alive_nodes() == [], what="the silent node declared dead")
        svc2, edge2, stop2, task2 = await _node(coord, unit=5)
        await coord.wait_for_nodes(1, timeout=2)
        assert coord.nodes["n1"].meta["session"] != s1
        h, _ = await coord.request("n1", "ping")
        assert h["ok"]
        stop2.set()
        await task2


async def test_close_fails_pending_requests():
    coord = await InprocCoordinator(timeout=5.0).start()
    svc, edge, stop, task = await _node(coord)
    await coord.wait_for_node("n1", timeout=2)
    edge.crash()
    await task
    req = asyncio.create_task(coord.request("n1", "ping"))
    await wait_until(lambda: coord.stats.requests >= 1)   # in flight
    await coord.close()
    with pytest.raises(DeviceConnectionError):
        await req


async def test_bye_fails_requests_in_flight_at_once():
    from pat_runtime.fleet.simfleet import node_device

    async with InprocCoordinator(timeout=5.0, retries=0) as coord:
        dev = node_device("echo:?latency=2.0", 0)
        await dev.connect()
        edge = InprocEdgeTransport(coord, "n1", heartbeat=0.05)
        stop = asyncio.Event()
        svc = NodeService(dev, "n1")
        task = asyncio.create_task(edge.serve(svc, stop))
        await coord.wait_for_node("n1", timeout=2)
        req = asyncio.create_task(coord.request("n1", "apply", [np.zeros((1, 4), np.float32), np.zeros(4, np.float32)]))
        await wait_until(lambda: svc.counters["requests"] == 1)   # the node is working on it (2 s)
        stop.set()                                    # the node leaves cleanly (bye) mid-request
        await task
        with pytest.raises(DeviceConnectionError, match="bye"):   # the bye, not the 5 s timeout
            await req
        assert edge.counters["replies"] == 0 and coord.counters["retries"] == 0
