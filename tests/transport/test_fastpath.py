"""Fast-path pieces: expired requests dropped at the node, reply cache lifetime, inline vs threaded sim calls,
one request per physical layer, TCP_NODELAY on MQTT sockets, liveness as one sweep."""
from __future__ import annotations

import asyncio
import socket
import time

import numpy as np
import pytest
import torch

from pat_runtime.devices.local import LocalDevice
from pat_runtime.transport.remote import RemoteDevice
from pat_runtime.edge.deadline import DeadlineClock
from pat_runtime.edge.service import NodeService
from pat_runtime import wire
from pat_runtime.pat import build_pnn
from pat_runtime.testing import sim_device, wait_until
from pat_runtime.testing.mosquitto import mosquitto_broker, require_mosquitto
from pat_runtime.transport.inproc import InprocCoordinator, InprocEdgeTransport
from pat_runtime.transport.mqtt import MqttCoordinator, MqttEdgeTransport
from pat_runtime.transport.mqtt.common import client_socket
from pat_runtime.sims import make_sim

X = np.full((4, 16), 0.25, np.float32)
TH = np.zeros(16, np.float32)


def _req(sent: float, ttl: float, type: str = "apply") -> dict:
    return wire.make_header(type, sent=sent, deadline=sent + ttl)


async def test_backlog_from_a_stall_is_dropped_not_run():
    dev = await sim_device("circuit")
    svc = NodeService(dev, "n1")
    now = time.time()
    r, _ = await svc.handle(_req(now, 5.0), [X, TH])         # fresh: runs (and sets the clock offset)
    assert r["ok"] and dev.calls == 1
    backlog = [_req(now - 30 + i * 0.01, 5.0) for i in range(999)]   # queued during a 30 s stall
    replies = [await svc.handle(h, [X, TH]) for h in backlog]
    assert all(not r["ok"] and r["error"]["code"] == "expired" for r, _ in replies)
    assert dev.calls == 1 and svc.counters["expired"] == 999


def test_deadline_clock_tolerates_a_skewed_node_clock():
    clock = DeadlineClock()
    skew = 3600.0                                   # the coordinator's clock is an hour behind the node's
    now = time.time()
    assert clock.remaining(_req(now - skew, 2.0)) > 1.0           # fresh despite the skew
    assert clock.remaining(_req(now - skew - 10, 2.0)) < 0        # 10 s old: late
    assert clock.remaining({"type": "apply"}) is None             # no deadline (older coordinator): never late


async def test_reply_cache_lives_for_the_retry_window_only():
    dev = await sim_device("circuit")
    svc = NodeService(dev, "n1")
    now = time.time()
    short = _req(now, 0.05)
    t0 = time.monotonic()
    await svc.handle(short, [X, TH])
    expiry = svc.cache_expiry(short["id"])
    assert short["id"] in svc.cached_ids() and t0 + 0.5 <= expiry <= time.monotonic() + 0.05 + 0.5  # deadline + 0.5 s
    await wait_until(lambda: time.monotonic() > expiry)   # its retry window closes
    await svc.handle(_req(time.time(), 5.0), [X, TH])   # any insert prunes expired entries
    assert short["id"] not in svc.cached_ids() and len(svc.cached_ids()) == 1


async def test_short_sim_calls_run_inline_blocking_ones_in_a_thread():
    sim = make_sim("circuit")
    dev = await LocalDevice(sim, inline_max=1e9).connect()     # measured: any call counts as short
    seen = []
    orig = sim.measure
    sim.measure = lambda x, t: (seen.append(_in_loop()), orig(x, t))[1]
    await dev.apply(X, TH)
    await dev.apply(X, TH)
    assert seen == [True, True] and dev.inline_ok()            # ran on the event loop's thread
    dev.inline_max = 0.0                                       # measured: every call counts as long
    await dev.apply(X, TH)
    assert seen[-1] is False and not dev.inline_ok()           # a worker thread
    sim.blocking = False                                       # declared short: inline whatever measured
    await dev.apply(X, TH)
    assert seen[-1] is True
    sim.blocking = True                                        # declared blocking: a worker thread
    await dev.apply(X, TH)
    assert seen[-1] is False


def _in_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


async def test_one_request_per_physical_layer():
    coord = await InprocCoordinator().start()
    stop = asyncio.Event()
    dev = await sim_device("circuit", in_dim=4, param_dim=4, noise=0.0)
    task = asyncio.create_task(InprocEdgeTransport(coord, "n1", heartbeat=0.1).serve(NodeService(dev, "n1"), stop))
    try:
        remote = await RemoteDevice(coord, "n1").connect()
        twin = lambda x, th: torch.tanh(x + th)   # noqa: E731 - gradients are not checked here
        model = build_pnn(12, 3, twin, device=remote, layers=2)       # 3 channels per layer
        assert model.physical_layers[0].channels == 3
        before = coord.stats.requests
        y = await model.aforward(torch.rand(5, 12))
        assert y.shape == (5, 3)
        assert coord.stats.requests - before == 2 and dev.calls == 6   # 2 layers x 3 channels, 2 requests
    finally:
        stop.set()
        await task
        await coord.close()


async def test_mqtt_sockets_have_tcp_nodelay():
    require_mosquitto()
    async with mosquitto_broker() as b:
        coord = await MqttCoordinator(b.url).start()
        edge = MqttEdgeTransport(b.url, "n1", heartbeat=0.1)
        stop = asyncio.Event()
        task = asyncio.create_task(edge.serve(NodeService(await sim_device("circuit"), "n1"), stop))
        try:
            await coord.wait_for_node("n1", timeout=10)
            for client in (coord.client, edge.client):
                sock = client_socket(client)
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert "set_tcp_nodelay true" in (b.workdir / "mosquitto.conf").read_text()
        finally:
            stop.set()
            await task
            await coord.close()


async def test_liveness_sweep_only_looks_at_the_stalest_nodes():
    coord = await InprocCoordinator(liveness=60.0).start()
    stop = asyncio.Event()
    dev = await sim_device("circuit")
    ids = [f"n{i}" for i in range(100)]
    tasks = []
    try:
        for n in ids:   # joined one after the other; no heartbeat within the test (a 600 s period)
            edge = InprocEdgeTransport(coord, n, heartbeat=600)
            tasks.append(asyncio.create_task(edge.serve(NodeService(dev, n), stop)))
            await coord.wait_for_node(n, timeout=10)
        assert coord.nodes_by_age() == ids                    # least recently heard from first
        coord.nodes["n0"].last_seen -= 120                    # silent for two minutes (liveness: 60 s)
        assert coord.sweep_now() == ["n0"]
        assert not coord.nodes["n0"].alive and all(coord.nodes[f"n{i}"].alive for i in range(1, 100))
        assert coord.nodes["n0"].departures == 1 and coord.nodes_by_age() == ids[1:]
        await coord.request("n1", "ping")
        assert coord.nodes_by_age()[-1] == "n1"       # replies/heartbeats move a node to the fresh end
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await coord.close()


@pytest.mark.parametrize("inline", [True, False])
async def test_apply_many_matches_per_channel_apply(inline):
    dev = await LocalDevice(make_sim("circuit", noise=0.0), threaded=not inline).connect()
    xs = np.stack([X, X * -1, X * 0.5])
    ths = np.stack([TH, TH + 0.1, TH - 0.2])
    ys = await dev.apply_many(xs, ths)
    for c in range(3):
        np.testing.assert_array_equal(ys[c], dev.sim.measure(xs[c], ths[c]))
    with pytest.raises(Exception, match="apply_many"):
        await dev.apply_many(X, TH)


async def test_several_shards_in_one_fleet_message():
    from pat_runtime.fleet.simfleet import SimFleet

    async with SimFleet(2, "sim:circuit?in_dim=4&param_dim=4&substeps=1&noise=0", cap=2, timeout=5.0) as fleet:
        node = fleet.node_ids[0]
        coord = fleet.manager.coordinator
        xs = np.random.default_rng(0).uniform(-1, 1, (3, 5, 4)).astype(np.float32)
        ths = np.zeros((3, 4), np.float32)
        before = coord.stats.requests
        ys = await fleet.manager.apply_many(node, xs, ths)
        assert ys.shape == (3, 5, 4) and coord.stats.requests - before == 1
        sim = fleet.nodes[node].service.device.sim
        for s in range(3):
            np.testing.assert_array_equal(ys[s], sim.measure(xs[s], ths[s]))
