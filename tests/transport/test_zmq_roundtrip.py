"""Round trips through ZmqCoordinator + in-process ZmqEdgeTransport nodes."""
import asyncio
import time

import numpy as np
import pytest

from pat_runtime.devices.errors import DeviceConnectionError, OutOfRangeError, RemoteDeviceError
from pat_runtime.transport.remote import RemoteDevice
from pat_runtime.testing import free_port, sim_device
from pat_runtime.testing.zmq import start_node, zmq_fleet
from pat_runtime.transport.zmq import ZmqCoordinator


def _batch(spec, b=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(*spec.x_range, (b, spec.in_dim)).astype(np.float32)
    th = rng.uniform(*spec.theta_range, spec.param_dim).astype(np.float32)
    return x, th


async def test_remote_apply_equals_local_measure():
    async with zmq_fleet(2, noise=0.0) as fleet:
        for nid, rn in fleet.nodes.items():
            dev = fleet.remote(nid)
            await dev.connect(timeout=5)
            assert dev.spec == rn.device.spec
            x, th = _batch(dev.spec, seed=3)
            y = await dev.apply(x, th)
            expect = rn.device.sim.measure(x, th)  # noiseless, no drift: deterministic
            assert y.dtype == np.float32 and y.shape == expect.shape and y.flags.writeable
            np.testing.assert_array_equal(y, expect)
            assert rn.device.calls == 1 and dev.calls == 1
        # the two units differ (hidden per-unit variation), so the replies really came from each node
        d0, d1 = fleet.remote("node0"), fleet.remote("node1")
        await d0.connect()
        await d1.connect()
        x, th = _batch(d0.spec)
        assert not np.allclose(await d0.apply(x, th), await d1.apply(x, th))
        s = fleet.coordinator.stats
        assert s.round_trips == s.requests == 4 and s.retries == s.timeouts == s.malformed == 0
        assert s.bytes_out > 4 * x.nbytes and s.bytes_in > 0 and len(s.latency) == 4


async def test_out_of_range_is_refused_locally_before_sending():
    async with zmq_fleet(1) as fleet:
        dev = fleet.remote("node0")
        await dev.connect()
        x, th = _batch(dev.spec)
        x[0, 0] = 7.0
        with pytest.raises(OutOfRangeError, match="node0"):
            await dev.apply(x, th)
        assert fleet.coordinator.stats.requests == 0 and fleet.nodes["node0"].device.calls == 0


async def test_ping_echoes_arrays_and_status_counts():
    async with zmq_fleet(1) as fleet:
        c = fleet.coordinator
        a = np.arange(12, dtype=np.int16).reshape(3, 4)
        b = np.linspace(0, 1, 5)
        hdr, out = await c.request("node0", "ping", [a, b])
        assert hdr["ok"] and hdr["node"] == "node0"
        np.testing.assert_array_equal(out[0], a)
        np.testing.assert_array_equal(out[1], b)
        assert out[0].dtype == np.int16 and out[1].dtype == np.float64
        hdr, _ = await c.request("node0", "status")
        assert hdr["counters"]["requests"] == 2 and "apply" in hdr["handlers"]
        with pytest.raises(RemoteDeviceError) as ei:
            await c.request("node0", "no-such-type")
        assert ei.value.code == "unknown_type" and ei.value.device == "node0"


async def test_pipelining_respects_the_inflight_cap():
    cap, n, delay = 3, 12, 0.05
    seen = {"now": 0, "max": 0}

    async def slow(header, arrays):
        seen["now"] += 1
        seen["max"] = max(seen["max"], seen["now"])
        await asyncio.sleep(delay)
        seen["now"] -= 1
        return {}, []

    def plugin(service):
        service.register("slow", slow)

    port = free_port()
    coord = await ZmqCoordinator(f"tcp://127.0.0.1:{port}", max_inflight=cap).start()
    node = await start_node(await sim_device("circuit"), coord.bind, "n", plugins=[plugin], max_concurrency=16)
    try:
        await coord.wait_for_node("n", timeout=5)
        t0 = time.perf_counter()
        await asyncio.gather(*(coord.request("n", "slow") for _ in range(n)))
        dt = time.perf_counter() - t0
    finally:
        await node.stop()
        await coord.close()
    assert seen["max"] == cap  # pipelined up to the cap (really concurrent), never beyond
    assert dt >= (n / cap) * delay * 0.9


async def test_edge_concurrency_bound():
    seen = {"now": 0, "max": 0}

    async def slow(header, arrays):
        seen["now"] += 1
        seen["max"] = max(seen["max"], seen["now"])
        await asyncio.sleep(0.03)
        seen["now"] -= 1
        return {}, []

    async with zmq_fleet(1, coordinator_kw={"max_inflight": 10}, edge_kw={"max_concurrency": 2}) as fleet:
        fleet.nodes["node0"].service.register("slow", slow)
        await asyncio.gather(*(fleet.coordinator.request("node0", "slow") for _ in range(8)))
    assert seen["max"] == 2


async def test_unknown_node_fails_fast_with_connection_error():
    port = free_port()
    async with ZmqCoordinator(f"tcp://127.0.0.1:{port}") as coord:
        with pytest.raises(DeviceConnectionError, match="ghost"):   # not a DeviceTimeoutError after the retries
            await coord.request("ghost", "ping", timeout=0.2, retries=1)
        assert coord.stats.unreachable > 0 and coord.stats.timeouts == 0


async def test_remote_device_join_timeout_names_node_and_cleans_up():
    from pat_runtime.devices.errors import DeviceTimeoutError
    from pat_runtime.devices.factory import make_device

    dev = make_device(f"zmq://127.0.0.1:{free_port()}/absent")
    with pytest.raises(DeviceTimeoutError, match="absent"):
        await dev.connect(timeout=0.3)
    assert not dev.coordinator.started  # the coordinator it created was closed again


async def test_bind_conflict_is_a_clear_error():
    port = free_port()
    async with ZmqCoordinator(f"tcp://127.0.0.1:{port}"):
        with pytest.raises(DeviceConnectionError, match="cannot bind"):
            await ZmqCoordinator(f"tcp://127.0.0.1:{port}").start()


async def test_shared_coordinator_serves_many_remote_devices():
    async with zmq_fleet(3, noise=0.0) as fleet:
        devs = [fleet.remote(n) for n in fleet.nodes]
        for d in devs:
            await d.connect()
        x, th = _batch(devs[0].spec, b=4)
        ys = await asyncio.gather(*(d.apply(x, th) for d in devs for _ in range(3)))
        assert len(ys) == 9 and all(y.shape == (4, devs[0].spec.out_dim) for y in ys)
        for d in devs:
            await d.close()  # not the owner: the coordinator stays up
        assert fleet.coordinator.started
        assert sorted(fleet.coordinator.alive_nodes()) == ["node0", "node1", "node2"]


def test_remote_device_uri_parsing():
    from pat_runtime.devices.factory import make_device

    d = make_device("zmq://127.0.0.1:5599/node-7?timeout=3&retries=1&liveness=2")
    assert isinstance(d, RemoteDevice) and d.node_id == "node-7" and d.timeout == 3 and d.retries == 1
    assert d.coordinator.bind == "tcp://127.0.0.1:5599" and d.coordinator.liveness == 2 and d.own_coordinator
    for bad in ("zmq://127.0.0.1:5599", "zmq://127.0.0.1/node", "zmq://127.0.0.1:5599/a/b"):
        with pytest.raises(ValueError):
            make_device(bad)
