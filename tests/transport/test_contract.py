"""One contract, every transport: the request engine behaves the same over inproc, ZeroMQ and MQTT (real Mosquitto).

Roundtrip (apply and apply_many), timeout, retry with the same id (the device runs once), error mapping
(node error codes, expired requests), per-node in-flight caps, and node loss.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, AsyncIterator

import numpy as np
import pytest

from pat_runtime.devices.errors import DeviceConnectionError, DeviceTimeoutError, RemoteDeviceError
from pat_runtime.edge.service import NodeService
from pat_runtime.testing import free_port, sim_device, wait_until
from pat_runtime.testing.mosquitto import mosquitto_broker, require_mosquitto
from pat_runtime.transport.inproc import InprocCoordinator, InprocEdgeTransport
from pat_runtime.transport.mqtt import MqttCoordinator, MqttEdgeTransport
from pat_runtime.transport.zmq import ZmqCoordinator, ZmqEdgeTransport

TRANSPORTS = ["inproc", "zmq", pytest.param("mqtt", marks=pytest.mark.mqtt)]


class Wrapped:
    """A service seen through a hook: ``before(header)`` is awaited before every request (no fast path)."""

    def __init__(self, inner: NodeService, before=None):
        self.inner, self.before = inner, before
        self.active = self.peak = 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    async def handle(self, header: dict[str, Any], arrays: list) -> Any:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if self.before is not None:
                await self.before(header)
            return await self.inner.handle(header, arrays)
        finally:
            self.active -= 1


@contextlib.asynccontextmanager
async def link(kind: str, **coord_kw: Any) -> AsyncIterator[tuple[Any, Any]]:
    """(coordinator, start(service) -> stop coroutine) for ``kind``."""
    stops: list = []

    def starter(make_edge):
        async def start(service, node_id: str = "n1"):
            stop = asyncio.Event()
            task = asyncio.create_task(make_edge(node_id).serve(service, stop))

            async def halt():
                stop.set()
                await asyncio.wait_for(task, 20)
            stops.append(halt)
            await coord.wait_for_node(node_id, timeout=10)
            return halt
        return start

    if kind == "inproc":
        coord = await InprocCoordinator(**coord_kw).start()
        start = starter(lambda n: InprocEdgeTransport(coord, n, heartbeat=0.1))
        broker = contextlib.nullcontext()
    elif kind == "zmq":
        url = f"tcp://127.0.0.1:{free_port()}"
        coord = await ZmqCoordinator(url, **coord_kw).start()
        start = starter(lambda n: ZmqEdgeTransport(url, n, heartbeat=0.1, drain=0.2, bye_linger=0.2))
        broker = contextlib.nullcontext()
    else:
        require_mosquitto()
        broker = mosquitto_broker()
    async with broker as b:
        if kind == "mqtt":
            coord = await MqttCoordinator(b.url, **coord_kw).start()
            start = starter(lambda n: MqttEdgeTransport(b.url, n, heartbeat=0.1, drain=0.2))
        try:
            yield coord, start
        finally:
            for halt in stops:
                with contextlib.suppress(Exception):
                    await halt()
            await coord.close()


X = np.full((4, 16), 0.25, np.float32)
TH = np.zeros(16, np.float32)


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_roundtrip_apply_and_apply_many(kind):
    async with link(kind, timeout=5) as (coord, start):
        dev = await sim_device("circuit", noise=0.0)
        await start(NodeService(dev, "n1"))
        hdr, (y,) = await coord.request("n1", "apply", [X, TH])
        assert hdr["ok"] and hdr["re"] == "apply"
        np.testing.assert_array_equal(y, dev.sim.measure(X, TH))
        xs, ths = np.stack([X, -X]), np.stack([TH, TH + 0.5])
        _, (ys,) = await coord.request("n1", "apply_many", [xs, ths])
        assert ys.shape == (2, 4, dev.spec.out_dim)
        np.testing.assert_array_equal(ys[1], dev.sim.measure(-X, TH + 0.5))
        assert coord.stats.round_trips == 2 and coord.stats.timeouts == 0 and coord.pending_ids() == []


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_timeout_after_all_attempts(kind):
    async with link(kind, timeout=0.2, retries=2) as (coord, start):
        dev = await sim_device("circuit")
        svc = Wrapped(NodeService(dev, "n1"), before=lambda h: asyncio.Event().wait())   # never answers
        await start(svc)
        with pytest.raises(DeviceTimeoutError, match="3 attempt"):
            await coord.request("n1", "apply", [X, TH])
        assert coord.stats.timeouts == 1 and coord.stats.retries == 2 and coord.pending_ids() == []
        assert dev.calls == 0


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_retry_reuses_the_id_and_the_device_runs_once(kind):
    first: list[str] = []

    async with link(kind, timeout=0.25, retries=4) as (coord, start):
        async def slow_first(header):
            if header.get("type") == "apply" and not first:
                first.append(header["id"])
                # held past its attempt: the coordinator re-sends the same id
                await wait_until(lambda: coord.stats.retries >= 1, timeout=30)

        dev = await sim_device("circuit", noise=0.0)
        svc = Wrapped(NodeService(dev, "n1"), before=slow_first)
        await start(svc)
        hdr, (y,) = await coord.request("n1", "apply", [X, TH])
        assert hdr["id"] == first[0] and coord.stats.retries >= 1
        # the re-sent copy reaches the node (in flight or after the first): it gets the first copy's reply
        await wait_until(lambda: svc.inner.counters["duplicates"] >= 1 and svc.active == 0, timeout=30)
        assert dev.calls == 1 and svc.inner.counters["duplicates"] >= 1
        np.testing.assert_array_equal(y, dev.sim.measure(X, TH))


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_error_replies_map_to_typed_errors(kind):
    async with link(kind, timeout=5) as (coord, start):
        dev = await sim_device("circuit")
        await start(NodeService(dev, "n1"))
        with pytest.raises(RemoteDeviceError) as e:
            await coord.request("n1", "apply", [np.full((2, 16), 5.0, np.float32), TH])
        assert e.value.code == "out_of_range" and e.value.device == "n1"
        with pytest.raises(RemoteDeviceError) as e:
            await coord.request("n1", "no-such-type")
        assert e.value.code == "unknown_type"
        await coord.request("n1", "ping")   # a fresh request: the node learns the clock offset
        past = time.time() - 60
        with pytest.raises(DeviceTimeoutError, match="deadline"):
            await coord.request("n1", "apply", [X, TH], sent=past, deadline=past + 1)
        assert dev.calls == 0 and coord.stats.errors == 3


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_in_flight_cap_per_node(kind):
    async with link(kind, timeout=10, max_inflight=2) as (coord, start):
        dev = await sim_device("circuit", latency=0.05)
        svc = Wrapped(NodeService(dev, "n1"))
        await start(svc)
        outs = await asyncio.gather(*(coord.request("n1", "apply", [X, TH]) for _ in range(6)))
        assert all(h["ok"] for h, _ in outs) and dev.calls == 6
        assert svc.peak <= 2 and coord.stats.queued == 4 and coord.pending_ids() == []


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_node_loss_fails_its_requests_at_once(kind):
    async with link(kind, timeout=60, retries=0) as (coord, start):
        dev = await sim_device("circuit")
        svc = Wrapped(NodeService(dev, "n1"), before=lambda h: asyncio.Event().wait())
        halt = await start(svc)
        req = asyncio.create_task(coord.request("n1", "apply", [X, TH]))
        await wait_until(lambda: svc.active >= 1)   # the node holds it
        await halt()   # bye / offline: the 60 s timeout is not waited for
        with pytest.raises(DeviceConnectionError):
            await req
        assert coord.pending_ids() == [] and "n1" not in coord.alive_nodes()

