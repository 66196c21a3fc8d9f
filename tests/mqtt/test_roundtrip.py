"""Requests through the MQTT transport: results, errors, idempotent retries, the in-flight cap, URLs."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from pat_runtime.devices.errors import DeviceConnectionError, DeviceTimeoutError, RemoteDeviceError
from pat_runtime.transport.mqtt import MqttCoordinator, MqttEdgeTransport, MqttUrl, split_device_url
from pat_runtime.sims import make_sim


def _batch(b=32, n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (b, n)).astype(np.float32), rng.uniform(-1, 1, n).astype(np.float32)


async def test_apply_round_trip_equals_direct_measurement(broker, edge_node, coordinator):
    x, theta = _batch()
    reference = make_sim("circuit", noise=0.0).measure(x, theta)  # same unit/seed -> same hidden physics
    async with edge_node(broker.url, "node-1") as node, coordinator(broker.url, timeout=5) as coord:
        info = await coord.wait_for_node("node-1", timeout=10)
        assert info.spec == node.device.spec and info.alive
        assert info.meta["heartbeat"] == 0.2 and "apply" in info.meta["handlers"]
        hdr, (y,) = await coord.request("node-1", "apply", [x, theta])
        assert hdr["ok"] and hdr["node"] == "node-1"
        assert y.dtype == np.float32 and y.shape == (32, 16)
        np.testing.assert_array_equal(y, reference)
        _, (y2,) = await coord.request("node-1", "apply", [x, theta])  # deterministic device: same again
        np.testing.assert_array_equal(y2, reference)
        hdr, _ = await coord.request("node-1", "spec")
        assert hdr["spec"] == node.device.spec.to_dict()
        assert node.service.counters["samples"] == 64
        assert coord.stats.round_trips == 3 and coord.stats.timeouts == 0


async def test_device_errors_come_back_as_remote_errors_naming_the_node(broker, edge_node, coordinator):
    x, theta = _batch()
    async with edge_node(broker.url, "node-7"), coordinator(broker.url, timeout=5) as coord:
        await coord.wait_for_node("node-7")
        with pytest.raises(RemoteDeviceError, match=r"\[node-7\] out_of_range") as ei:
            await coord.request("node-7", "apply", [x * 5, theta])
        assert ei.value.code == "out_of_range" and ei.value.device == "node-7"
        with pytest.raises(RemoteDeviceError, match="unknown_type"):
            await coord.request("node-7", "no-such-thing")
        with pytest.raises(RemoteDeviceError, match="bad_request"):
            await coord.request("node-7", "apply", [x])
        _, (y,) = await coord.request("node-7", "apply", [x, theta])  # still serving
        assert y.shape == x.shape


async def test_retry_reuses_the_request_id_and_applies_once(broker, edge_node, coordinator):
    x, theta = _batch(8)
    async with edge_node(broker.url, "slow", sim={"latency": 0.5}) as node, \
            coordinator(broker.url) as coord:
        await coord.wait_for_node("slow")
        # attempt 1 times out after 0.3 s, attempt 2 re-publishes the same id while the node is still busy
        _, (y,) = await coord.request("slow", "apply", [x, theta], timeout=0.3, retries=3)
        assert coord.stats.retries >= 1
        assert node.device.calls == 1  # the device was driven once
        assert node.service.counters["duplicates"] >= 1
        # an explicit re-send of a finished request id is answered from the node's reply cache
        _, (y1,) = await coord.request("slow", "apply", [x, theta], id="fixed-id-1")
        _, (y2,) = await coord.request("slow", "apply", [x, theta], id="fixed-id-1")
        np.testing.assert_array_equal(y1, y2)
        assert node.device.calls == 2


async def test_timeout_names_the_node(broker, coordinator):
    async with coordinator(broker.url) as coord:
        with pytest.raises(DeviceTimeoutError, match=r"\[ghost\] no reply to 'ping'.*2 attempt") as ei:
            await coord.request("ghost", "ping", timeout=0.2, retries=1)
        assert ei.value.device == "ghost"
        assert coord.stats.timeouts == 1 and coord.stats.retries == 1


async def test_in_flight_cap_per_node(broker, edge_node, coordinator):
    active = {"now": 0, "max": 0}

    async def slow(header, arrays):
        active["now"] += 1
        active["max"] = max(active["max"], active["now"])
        await asyncio.sleep(0.05)
        active["now"] -= 1
        return {"i": header["i"]}, list(arrays)

    async with edge_node(broker.url, "capped", max_concurrency=16) as node, \
            coordinator(broker.url, max_inflight=3, timeout=10) as coord:
        node.service.register("slow", slow)
        await coord.wait_for_node("capped")
        replies = await asyncio.gather(*(coord.request("capped", "slow", [np.full(4, i)], i=i) for i in range(24)))
        assert [h["i"] for h, _ in replies] == list(range(24))
        assert all(int(a[0][0]) == i for i, (_, a) in enumerate(replies))
        assert active["max"] == 3  # reached, never exceeded
        assert coord.stats.retries == 0


async def test_node_side_concurrency_limit(broker, edge_node, coordinator):
    active = {"now": 0, "max": 0}

    async def slow(header, arrays):
        active["now"] += 1
        active["max"] = max(active["max"], active["now"])
        await asyncio.sleep(0.03)
        active["now"] -= 1
        return {}, []

    async with edge_node(broker.url, "n", max_concurrency=2) as node, \
            coordinator(broker.url, max_inflight=12, timeout=10) as coord:
        node.service.register("slow", slow)
        await coord.wait_for_node("n")
        await asyncio.gather(*(coord.request("n", "slow") for _ in range(12)))
        assert active["max"] == 2


async def test_two_coordinators_get_only_their_own_replies(broker, edge_node, coordinator):
    x, theta = _batch(4)
    async with edge_node(broker.url, "shared"), coordinator(broker.url) as a, coordinator(broker.url) as b:
        await a.wait_for_node("shared")
        await b.wait_for_node("shared")
        await asyncio.gather(*(c.request("shared", "apply", [x, theta]) for c in (a, b, a, b)))
        assert a.stats.round_trips == 2 and b.stats.round_trips == 2
        assert a.stats.unmatched == 0 and b.stats.unmatched == 0  # replies go to rep/<cid>, not to everyone


async def test_request_before_start_and_after_close(broker):
    coord = MqttCoordinator(broker.url)
    with pytest.raises(DeviceConnectionError, match="not started"):
        await coord.request("n", "ping")
    await coord.start()
    await coord.close()
    await coord.close()  # idempotent
    with pytest.raises(DeviceConnectionError, match="not started"):
        await coord.request("n", "ping")


def test_url_parsing_and_validation():
    u = MqttUrl.parse("mqtt://al%40ice:p%3Aw@10.0.0.5:1999/node-3?prefix=lab")
    assert (u.host, u.port, u.username, u.password, u.node, u.option("prefix")) == \
        ("10.0.0.5", 1999, "al@ice", "p:w", "node-3", "lab")
    assert MqttUrl.parse("mqtts://h").port == 8883 and MqttUrl.parse("mqtt://h").port == 1883
    assert split_device_url("mqtt://u:p@h:1/n-1?prefix=x") == ("mqtt://u:p@h:1?prefix=x", "n-1")
    with pytest.raises(ValueError, match="not an MQTT URL"):
        MqttUrl.parse("tcp://h:1")
    with pytest.raises(ValueError, match="names a node"):
        MqttCoordinator("mqtt://h:1/node-1")
    for bad in ("a/b", "a+", "#", ""):
        with pytest.raises(ValueError, match="invalid node id"):
            MqttEdgeTransport("mqtt://h:1", bad)
    with pytest.raises(ValueError, match="invalid topic prefix"):
        MqttCoordinator("mqtt://h:1", prefix="pat/#")
    assert MqttCoordinator("mqtt://h:1?prefix=lab/pat").topics.req("n") == "lab/pat/n/req"
