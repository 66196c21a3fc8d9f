"""Bad input over MQTT: malformed payloads, size limits, credentials. Nothing crashes, errors are clear."""
from __future__ import annotations

import asyncio
import struct

import aiomqtt
import msgpack
import numpy as np
import pytest

from pat_runtime.devices.errors import DeviceConnectionError, RemoteDeviceError
from pat_runtime import wire
from pat_runtime.testing.mosquitto import mosquitto_broker
from pat_runtime.transport.mqtt import MqttAuthError, MqttCoordinator, MqttEdgeTransport, PayloadTooLargeError
from pat_runtime.edge.service import NodeService
from pat_runtime.testing import sim_device


async def _next(client: aiomqtt.Client, timeout: float = 5.0) -> aiomqtt.Message:
    return await asyncio.wait_for(client.messages.__anext__(), timeout)


async def test_malformed_payloads_get_error_replies_and_the_node_keeps_serving(broker, edge_node, coordinator):
    async with edge_node(broker.url, "tough") as node, coordinator(broker.url) as coord, \
            aiomqtt.Client(broker.host, broker.port) as raw:
        await coord.wait_for_node("tough")
        await raw.subscribe([("pat/tough/rep", 1), ("pat/tough/rep/raw1", 1)])
        # 1) not a PAT payload at all: error reply on the node's generic reply topic
        await raw.publish("pat/tough/req", b"hello, node", qos=1)
        msg = await _next(raw)
        hdr, arrays = wire.unpack(msg.payload)
        assert msg.topic.value == "pat/tough/rep"
        assert hdr["ok"] is False and hdr["error"]["code"] == "bad_magic" and hdr["node"] == "tough" and not arrays
        # 2) a readable header whose array is truncated: the reply carries the id, on rep/<cid>
        good = wire.pack(wire.make_header("apply", id="req-42", node="tough", cid="raw1"),
                         [np.zeros((4, 16), np.float32), np.zeros(16, np.float32)])
        await raw.publish("pat/tough/req", good[:-10], qos=1)
        msg = await _next(raw)
        hdr, _ = wire.unpack(msg.payload)
        assert msg.topic.value == "pat/tough/rep/raw1"
        assert (hdr["id"], hdr["ok"], hdr["error"]["code"]) == ("req-42", False, "size_mismatch")
        # 3) garbage msgpack header, 4) a header with a forbidden dtype, 5) empty payload
        hb = msgpack.packb({"v": 1, "type": "apply", "id": "x", "arrays": [{"dtype": "object", "shape": [1]}]})
        for bad, code in ((wire.MAGIC + struct.pack("<I", 3) + b"\xc1\xc1\xc1", "bad_header"),
                          (wire.MAGIC + struct.pack("<I", len(hb)) + hb + b"\0" * 8, "bad_dtype"),
                          (b"", "bad_magic")):
            await raw.publish("pat/tough/req", bad, qos=1)
            hdr, _ = wire.unpack((await _next(raw)).payload)
            assert hdr["error"]["code"] == code
        assert node.transport.counters["malformed"] == 5
        assert not node.task.done()
        x = np.zeros((4, 16), np.float32)
        _, (y,) = await coord.request("tough", "apply", [x, np.zeros(16, np.float32)])  # still serving
        assert y.shape == (4, 16)
        assert coord.nodes["tough"].alive


async def test_oversized_request_is_refused_before_anything_is_sent(broker, edge_node, coordinator):
    big = np.zeros((256, 784), np.float32)  # 784 KiB
    async with edge_node(broker.url, "small") as node, coordinator(broker.url, max_payload=100_000) as coord, \
            aiomqtt.Client(broker.host, broker.port) as sniffer:
        await sniffer.subscribe("pat/+/req", qos=1)
        await coord.wait_for_node("small")
        with pytest.raises(PayloadTooLargeError, match=r"\[small\] 'ping' request is 8029\d\d bytes > "
                                                        r"max_payload 100000.*nothing was sent") as ei:
            await coord.request("small", "ping", [big])
        assert isinstance(ei.value, ValueError) and ei.value.device == "small"
        hdr, (a,) = await coord.request("small", "ping", [big[:10]])  # the connection is fine
        assert a.shape == (10, 784)
        msg = await _next(sniffer)  # the only request that reached the broker is the small one
        assert len(msg.payload) < 100_000
        with pytest.raises(asyncio.TimeoutError):
            await _next(sniffer, 0.3)
        assert node.service.counters["requests"] == 1 and coord.stats.sent_msgs == 1


async def test_node_announces_its_limit_and_refuses_oversized_replies(broker, edge_node, coordinator):
    async def big_reply(header, arrays):
        return {}, [np.zeros(50_000, np.float32)]  # 200 kB

    async with edge_node(broker.url, "tiny", max_payload=60_000) as node, coordinator(broker.url) as coord:
        node.service.register("big", big_reply)
        info = await coord.wait_for_node("tiny")
        assert info.meta["max_payload"] == 60_000
        with pytest.raises(PayloadTooLargeError, match="max_payload 60000"):  # the node's limit, from its hello
            await coord.request("tiny", "ping", [np.zeros(20_000, np.float32)])
        with pytest.raises(RemoteDeviceError, match=r"\[tiny\] too_large: reply of 200\d\d\d bytes") as ei:
            await coord.request("tiny", "big")
        assert ei.value.code == "too_large"
        hdr, _ = await coord.request("tiny", "ping")
        assert hdr["ok"]


async def test_broker_packet_limit_with_matching_client_limit():
    """Mosquitto drops a client that sends a packet over ``max_packet_size``; a matching ``max_payload`` turns
    that into a clear error before sending, and the connection stays up."""
    async with mosquitto_broker(max_packet_size=200_000) as b:
        url = f"{b.url}?max_payload=190000"
        dev = await sim_device("circuit", noise=0.0)
        stop = asyncio.Event()
        task = asyncio.create_task(MqttEdgeTransport(url, "lim").serve(NodeService(dev, "lim"), stop))
        try:
            async with MqttCoordinator(url) as coord:
                await coord.wait_for_node("lim", timeout=10)
                with pytest.raises(PayloadTooLargeError):
                    await coord.request("lim", "ping", [np.zeros(60_000, np.float32)])
                hdr, (a,) = await coord.request("lim", "ping", [np.ones(40_000, np.float32)])
                assert a.sum() == 40_000 and coord.nodes["lim"].alive
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


async def test_credentials(edge_node, coordinator):
    async with mosquitto_broker(users={"trainer": "t-pass", "edge": "e:pass/1"}) as b:
        good_edge, good_coord = b.url_for("edge", "e:pass/1"), b.url_for("trainer", "t-pass")
        async with edge_node(good_edge, "secure"), coordinator(good_coord) as coord:
            await coord.wait_for_node("secure")
            hdr, _ = await coord.request("secure", "ping")
            assert hdr["ok"]
        for url in (b.url_for("trainer", "nope"), b.url_for("nobody", "t-pass"), b.url):
            with pytest.raises(MqttAuthError, match=r"refused the connection.*[Nn]ot authori.*username/password"):
                await MqttCoordinator(url).start()
        dev = await sim_device("circuit")
        with pytest.raises(MqttAuthError, match=r"\[secure\] broker .* refused") as ei:  # the node does not retry
            await asyncio.wait_for(MqttEdgeTransport(b.url_for("edge", "bad"), "secure").serve(
                NodeService(dev, "secure"), asyncio.Event()), 10)
        assert isinstance(ei.value, DeviceConnectionError)


async def test_unreachable_broker_is_a_connection_error(coordinator):
    from pat_runtime.testing import free_port

    with pytest.raises(DeviceConnectionError, match=r"\[coordinator\] cannot connect to MQTT broker mqtt://127"):
        await MqttCoordinator(f"mqtt://127.0.0.1:{free_port()}").start()
