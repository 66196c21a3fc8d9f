"""ZeroMQ request bundles: several requests to one node in one message, each still a request of its own.

Bundles are validated like every other wire input: a hostile bundle gets a clear error (edge) or is dropped
and counted (coordinator), and honest peers keep being served. An edge that does not announce bundles gets
single messages.
"""
import asyncio

import msgpack
import numpy as np
import pytest
import zmq
import zmq.asyncio

from pat_runtime import wire
from pat_runtime.devices.errors import RemoteDeviceError
from pat_runtime.testing import free_port, sim_device, wait_until
from pat_runtime.testing.zmq import RawCoordinator, start_node, zmq_fleet


def _ping(rid, x=None):
    return wire.encode(wire.make_header("ping", id=rid), [] if x is None else [x])


def _bundle_hdr(parts, **extra):
    return msgpack.packb({"v": 1, "type": "bundle", "parts": parts, **extra})


def test_bundle_round_trip_and_malformed_bundles_raise_clear_errors():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    msgs = [_ping("a", x), _ping("b")]
    frames = wire.encode_bundle(msgs)
    assert len(frames) == 2
    parts = wire.split_bundle(frames)
    (ha, (xa,)), (hb, ys) = (wire.decode(p) for p in parts)
    assert (ha["id"], hb["id"], ys) == ("a", "b", []) and np.array_equal(xa, x)
    body = frames[1]
    lim = wire.Limits(max_bundle=2)
    sizes = [[len(f) for f in m] for m in msgs]
    cases = [
        ([_bundle_hdr("no"), b""], "bad_header"),                                   # parts is not a list
        ([_bundle_hdr([]), b""], "bad_header"),                                # empty bundle
        ([_bundle_hdr(sizes), body, b"x"], "frame_count"),                     # not [header, body]
        ([_bundle_hdr(sizes * 2), body + body], "too_large"),                  # over max_bundle (2)
        ([_bundle_hdr([[1] * 18]), b"x" * 18], "bad_header"),                  # more frames than max_arrays + 1
        ([_bundle_hdr([5]), body], "bad_header"),                              # a part that is not a size list
        ([_bundle_hdr([[-1]]), body], "size_mismatch"),                        # negative size
        ([_bundle_hdr([[len(body) + 1]]), body], "size_mismatch"),             # beyond the body
        ([_bundle_hdr(sizes), body + b"tail"], "size_mismatch"),               # trailing bytes
        ([_bundle_hdr(sizes, arrays=[{"dtype": "uint8", "shape": [1]}]), body], "bad_header"),
        ([msgpack.packb({"v": 2, "type": "bundle", "parts": sizes}), body], "bad_version"),
    ]
    for bad, code in cases:
        with pytest.raises(wire.WireError) as e:
            wire.split_bundle(bad, lim)
        assert e.value.code == code, bad[0]
    with pytest.raises(wire.WireError) as e:
        wire.split_bundle(frames, wire.Limits(max_total_bytes=len(body) - 1))
    assert e.value.code == "too_large"


async def test_concurrent_requests_travel_in_bundles_and_keep_their_own_replies_and_errors():
    async with zmq_fleet(1) as fleet:
        c, edge = fleet.coordinator, fleet.nodes["node0"].node.transport
        xs = [np.full((2, 4), i, np.float32) for i in range(7)]
        results = await asyncio.gather(*(c.request("node0", "ping", [x]) for x in xs),
                                       c.request("node0", "no-such-type"), return_exceptions=True)
        for x, (hdr, (y,)) in zip(xs, results[:7]):
            assert hdr["ok"] and np.array_equal(y, x)
        assert isinstance(results[7], RemoteDeviceError) and results[7].code == "unknown_type"
        assert c.stats.bundles >= 1 and c.stats.bundled >= 2 and edge.counters["bundles"] >= 1
        assert c.stats.malformed == 0 and c.stats.round_trips == 8


@pytest.mark.parametrize("side", ["edge", "coordinator"])
async def test_no_bundles_when_either_side_does_not_take_them(side):
    kw = {"edge_kw": {"bundle": False}} if side == "edge" else {"coordinator_kw": {"bundle": False}}
    async with zmq_fleet(1, **kw) as fleet:
        c = fleet.coordinator
        xs = [np.full((1, 4), i, np.float32) for i in range(8)]
        results = await asyncio.gather(*(c.request("node0", "ping", [x]) for x in xs))
        assert all(np.array_equal(y, x) for x, (_, (y,)) in zip(xs, results))
        assert c.stats.bundles == 0 and fleet.nodes["node0"].node.transport.counters["bundles"] == 0


async def _recv_any(raw, timeout=5.0):
    """Next message from the node that is not a heartbeat, bundles split: [(header, arrays), ...]."""
    while True:
        frames = await asyncio.wait_for(raw.sock.recv_multipart(), timeout)
        h = wire.decode_header(frames[1])
        if h["type"] == "bundle":
            return [wire.decode(p) for p in wire.split_bundle(frames[1:])]
        if h["type"] != "heartbeat":
            return [wire.decode(frames[1:])]


async def test_edge_answers_malformed_bundles_with_errors_and_keeps_serving():
    raw = RawCoordinator()
    node = await start_node(await sim_device("circuit", noise=0.0), raw.url, "n1")
    try:
        frames = await asyncio.wait_for(raw.sock.recv_multipart(), 5)
        ident, hello = frames[0], wire.decode(frames[1:])[0]
        assert hello["type"] == "hello" and hello["bundle"] == wire.DEFAULT_LIMITS.max_bundle
        good = wire.encode_bundle([_ping("p1", np.ones(3, np.float32)), _ping("p2")])
        for bad, code in [([_bundle_hdr("x"), b""], "bad_header"),
                          ([good[0], good[1] + b"!"], "size_mismatch"),
                          ([good[0], good[1], b"extra"], "frame_count"),
                          ([_bundle_hdr([[1]] * (wire.DEFAULT_LIMITS.max_bundle + 1)), b"x" * 65], "too_large")]:
            await raw.send(ident, *bad)
            (reply, out), = await _recv_any(raw)
            assert reply["ok"] is False and reply["error"]["code"] == code and "bundle" in reply["error"]["message"]
        # a bundle with one broken part: the good parts are answered together, the broken one on its own
        mixed = wire.encode_bundle([_ping("p3"), [b"\xc1 not msgpack"], _ping("p4")])
        await raw.send(ident, *mixed)
        got = {}
        while len(got) < 3:
            for h, _ in await _recv_any(raw):
                got[h["id"]] = h
        assert got.pop("p3")["ok"] and got.pop("p4")["ok"]
        (err,) = got.values()  # an unreadable header gets an error reply with a fresh id
        assert err["error"]["code"] == "bad_header"
        # a bundle inside a bundle is not a request type
        await raw.send(ident, *wire.encode_bundle([[good[0]], _ping("p5")]))
        got = {}
        while len(got) < 2:
            for h, _ in await _recv_any(raw):
                got[h["id"]] = h
        assert got.pop("p5")["ok"]
        (err,) = got.values()
        assert err["error"]["code"] == "unknown_type"
        # still serving, a reply bundle for a clean bundle
        await raw.send(ident, *good)
        (h1, (y1,)), (h2, y2) = await _recv_any(raw)
        assert (h1["id"], h2["id"]) == ("p1", "p2") and np.array_equal(y1, np.ones(3)) and y2 == []
        assert node.node.transport.counters["malformed"] == 5 and not node.task.done()  # 4 bundles, 1 part
    finally:
        await node.stop()
        raw.close()


async def test_coordinator_drops_hostile_bundles_and_keeps_serving():
    async with zmq_fleet(1) as fleet:
        c = fleet.coordinator
        spec = fleet.nodes["node0"].device.spec.to_dict()
        ctx = zmq.asyncio.Context()
        evil = ctx.socket(zmq.DEALER)
        evil.setsockopt(zmq.LINGER, 0)
        evil.connect(c.bind)
        try:
            # from a connection bound to no node: rejected without looking inside
            await evil.send_multipart(wire.encode_bundle([wire.encode(wire.reply_header({"id": "x"}))] * 2))
            await wait_until(lambda: c.stats.rejected >= 1)
            await evil.send_multipart(wire.encode(wire.make_header("hello", node="evil", spec=spec, bundle=8)))
            await wait_until(lambda: "evil" in c.nodes)
            reply = wire.encode(wire.reply_header({"id": "not-pending"}, node="evil"))
            hello = wire.encode(wire.make_header("hello", node="node0", spec=spec))
            for bad in ([_bundle_hdr("x"), b""],                                      # malformed: whole bundle
                        [*wire.encode_bundle([reply, reply])[:1], b""],              # sizes do not fit
                        wire.encode_bundle([reply, hello, [b"\xc1"]])):              # 2 bad parts, 1 unmatched
                await evil.send_multipart(bad)
            await wait_until(lambda: c.stats.malformed >= 4 and c.stats.unmatched >= 1)
            assert c.stats.malformed == 4 and c.stats.unmatched == 1 and c.stats.rejected == 1
            assert c.route_of("node0") == fleet.nodes["node0"].node.transport.routing_id  # no takeover
            results = await asyncio.gather(*(c.request("node0", "ping") for _ in range(4)))
            assert all(h["ok"] for h, _ in results)
        finally:
            evil.close(0)
            ctx.term()


async def test_unsent_bundle_backs_off_and_reaches_a_restarted_older_node_as_single_messages():
    from pat_runtime.transport.zmq import ZmqCoordinator

    url = f"tcp://127.0.0.1:{free_port()}"
    async with ZmqCoordinator(url, liveness=5, timeout=5, retries=0) as coord:
        node = await start_node(await sim_device("circuit", noise=0.0), url, "n1")
        await coord.wait_for_node("n1", timeout=5)
        await node.stop()
        await wait_until(lambda: not coord.nodes["n1"].alive)
        # 4 requests while the node is away: one bundle, refused by the socket (EHOSTUNREACH), backing off
        xs = [np.full((1, 4), i, np.float32) for i in range(4)]
        reqs = [asyncio.create_task(coord.request("n1", "ping", [x])) for x in xs]
        await wait_until(lambda: coord.stats.unreachable >= 1)
        assert not any(r.done() for r in reqs) and coord.stats.bundles == 0
        # the node comes back as a version without bundles: every request reaches it on its own
        node2 = await start_node(await sim_device("circuit", noise=0.0), url, "n1", bundle=False)
        try:
            results = await asyncio.wait_for(asyncio.gather(*reqs), 10)
            assert all(np.array_equal(y, x) for x, (_, (y,)) in zip(xs, results))
            assert coord.stats.bundles == 0 and coord.stats.timeouts == 0
            assert node2.node.transport.counters["bundles"] == 0
        finally:
            await node2.stop()
