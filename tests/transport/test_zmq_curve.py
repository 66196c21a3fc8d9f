"""CURVE: encrypted, authenticated links; unknown or unauthenticated nodes are rejected."""
import asyncio

import pytest

from pat_runtime.devices.errors import DeviceTimeoutError
from pat_runtime.testing import free_port, sim_device
from pat_runtime.testing.zmq import start_node
from pat_runtime.transport.zmq import CurveClient, CurveServer, ZmqCoordinator, curve_keypair


async def _node(url, node_id, curve):
    return await start_node(await sim_device("circuit"), url, node_id, curve=curve)


async def test_authenticated_node_serves_and_strangers_are_rejected():
    server_pub, server_sec = curve_keypair()
    good_pub, good_sec = curve_keypair()
    url = f"tcp://127.0.0.1:{free_port()}"
    coord = await ZmqCoordinator(url, curve=CurveServer.create(server_pub, server_sec, allowed=[good_pub])).start()
    good = await _node(url, "good", CurveClient.create(server_pub, good_pub, good_sec))
    stranger = await _node(url, "stranger", CurveClient.create(server_pub))  # valid CURVE, unknown key
    plain = await _node(url, "plain", None)  # no CURVE at all
    try:
        await coord.wait_for_node("good", timeout=5)
        hdr, _ = await coord.request("good", "ping", timeout=2)
        assert hdr["ok"]
        for nid in ("stranger", "plain"):
            with pytest.raises(DeviceTimeoutError):
                await coord.wait_for_node(nid, timeout=0.5)
        assert sorted(coord.nodes) == ["good"]
        assert stranger.node.transport.counters["served"] == plain.node.transport.counters["served"] == 0
    finally:
        for n in (good, stranger, plain):
            await n.stop()
        await coord.close()


async def test_pinned_keys_bind_node_ids():
    server_pub, server_sec = curve_keypair()
    k1 = curve_keypair()
    url = f"tcp://127.0.0.1:{free_port()}"
    coord = await ZmqCoordinator(url, curve=CurveServer.create(server_pub, server_sec, allowed={"n1": k1[0]})).start()
    honest = await _node(url, "n1", CurveClient.create(server_pub, *k1))
    impostor = await _node(url, "n2", CurveClient.create(server_pub, *k1))  # n1's key, another name
    try:
        await coord.wait_for_node("n1", timeout=5)
        with pytest.raises(DeviceTimeoutError):
            await coord.wait_for_node("n2", timeout=0.5)
        assert coord.stats.rejected > 0 and "n2" not in coord.nodes
        hdr, _ = await coord.request("n1", "ping", timeout=2)
        assert hdr["ok"]
    finally:
        await honest.stop()
        await impostor.stop()
        await coord.close()


def test_bad_keys_are_clear_errors():
    with pytest.raises(ValueError, match="40-character"):
        CurveClient.create("short")
    pub, sec = curve_keypair()
    with pytest.raises(ValueError):
        CurveServer.create(pub, sec, allowed=["nope"])
