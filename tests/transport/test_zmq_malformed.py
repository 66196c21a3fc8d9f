"""Malformed traffic: nodes answer with error replies and keep serving; the coordinator drops and counts."""
import asyncio

import msgpack
import numpy as np
import zmq
import zmq.asyncio

from pat_runtime import wire
from pat_runtime.testing import sim_device, wait_until
from pat_runtime.testing.zmq import RawCoordinator, start_node, zmq_fleet


def _hdr(**kw):
    return msgpack.packb(wire.make_header(**kw), use_bin_type=True)


async def test_node_answers_garbage_with_error_replies_and_keeps_serving():
    raw = RawCoordinator()
    dev = await sim_device("circuit", noise=0.0)
    node = await start_node(dev, raw.url, "n1")
    try:
        ident, hello, _ = await raw.recv()
        assert ident.split(b"~")[0] == b"n1" and hello["type"] == "hello" and hello["spec"]["in_dim"] == 16
        x, th = np.zeros((2, 16), np.float32), np.zeros(16, np.float32)
        big = msgpack.packb({"v": 1, "type": "apply", "id": "big", "node": "n1",
                             "arrays": [{"dtype": "float32", "shape": [2**20, 2**20]}]})
        cases = [
            ([b"\xc1garbage"], "bad_header", ""),                                    # not msgpack
            ([msgpack.packb([1, 2, 3])], "bad_header", ""),                         # not a map
            ([msgpack.packb({"v": 99, "type": "apply", "id": "v"})], "bad_version", "v"),
            ([wire.encode(wire.make_header("apply", id="fc"), [x, th])[0], x.tobytes()], "frame_count", "fc"),
            ([big, b"\0" * 16], "array_too_large", "big"),                           # huge declared shape
            ([wire.encode(wire.make_header("apply", id="sz"), [x, th])[0], b"\0" * 3, th.tobytes()],
             "size_mismatch", "sz"),
            ([msgpack.packb({"v": 1, "type": "apply", "id": "dt", "arrays": [{"dtype": ["x"], "shape": [1]}]}),
              b"\0"], "bad_dtype", "dt"),
            ([msgpack.packb({"v": 1, "type": "apply", "id": "sh", "arrays": [{"dtype": "float32", "shape": [-1]}]}),
              b""], "bad_shape", "sh"),
            ([b"x" * (wire.DEFAULT_LIMITS.max_header_bytes + 1)], "header_too_large", ""),
        ]
        for frames, code, rid in cases:
            await raw.send(ident, *frames)
            _, reply, out = await raw.recv()
            assert reply["type"] == "reply" and reply["ok"] is False, frames[0][:40]
            assert reply["error"]["code"] == code and out == []
            if rid:  # the id of a readable header is echoed (an unreadable one gets a fresh id)
                assert reply["id"] == rid
        # an out-of-range apply from a raw client never reaches the device
        await raw.send(ident, *wire.encode(wire.make_header("apply", id="oor"), [np.full((2, 16), 3.0, np.float32), th]))
        _, reply, _ = await raw.recv()
        assert reply["id"] == "oor" and reply["error"]["code"] == "out_of_range" and dev.calls == 0
        # still serving, correctly
        await raw.send(ident, *wire.encode(wire.make_header("apply", id="ok"), [x, th]))
        _, reply, out = await raw.recv()
        assert reply["ok"] and reply["id"] == "ok"
        np.testing.assert_array_equal(out[0], dev.sim.measure(x, th))
        assert node.node.transport.counters["malformed"] == len(cases)
        assert not node.task.done()
    finally:
        await node.stop()
        raw.close()


async def test_coordinator_drops_and_counts_garbage_and_keeps_serving():
    async with zmq_fleet(1) as fleet:
        c = fleet.coordinator
        ctx = zmq.asyncio.Context()
        evil = ctx.socket(zmq.DEALER)
        evil.setsockopt(zmq.LINGER, 0)
        evil.setsockopt(zmq.IDENTITY, b"evil")
        evil.connect(c.bind)
        try:
            bad = [
                [b"\xc1\xc1"],
                [_hdr(type="reply", id="nope"), b"extra frame"],
                [msgpack.packb({"v": 1, "type": "hello", "id": "h", "spec": {"kind": "x"}})],  # invalid spec
                [msgpack.packb({"v": 1, "type": "hello", "id": "h2"})],  # no spec
                [msgpack.packb({"v": 1, "type": "reply", "id": "r", "arrays": [{"dtype": "float32", "shape": [2**40 - 1] * 4}]}), b""],
            ]
            for frames in bad:
                await evil.send_multipart(frames)
            # a reply to an id that is not pending, and a spoofed reply to someone else's request
            await evil.send_multipart([_hdr(type="reply", id="not-pending", ok=True)])
            await wait_until(lambda: c.stats.malformed >= len(bad) and c.stats.unmatched >= 1)
            assert c.stats.malformed == len(bad) and c.stats.unmatched == 1
            assert "evil" not in c.nodes
            hdr, _ = await c.request("node0", "ping")
            assert hdr["ok"]
        finally:
            evil.close(0)
            ctx.term()


async def test_replies_from_the_wrong_node_are_not_accepted():
    async with zmq_fleet(1) as fleet:
        c = fleet.coordinator
        fleet.nodes["node0"].device.sim.latency = 0.2
        ctx = zmq.asyncio.Context()
        evil = ctx.socket(zmq.DEALER)
        evil.setsockopt(zmq.LINGER, 0)
        evil.setsockopt(zmq.IDENTITY, b"evil")
        evil.connect(c.bind)
        try:
            sent = c.stats.sent_msgs
            task = asyncio.create_task(c.request("node0", "apply", [np.zeros((1, 16), np.float32), np.zeros(16, np.float32)]))
            await wait_until(lambda: c.stats.sent_msgs > sent)   # on its way to the node (0.2 s latency there)
            (rid,) = c.pending_ids()
            await evil.send_multipart(wire.encode(wire.reply_header({"id": rid, "type": "apply"}, node="node0"),
                                                  [np.full((1, 16), 9.0, np.float32)]))
            hdr, (y,) = await task
            assert hdr["id"] == rid and np.all(np.abs(y) < 2)  # the real node's answer
            assert c.stats.unmatched == 1
        finally:
            evil.close(0)
            ctx.term()
