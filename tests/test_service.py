import numpy as np

from pat_runtime.edge.service import NodeService
from pat_runtime import wire
from pat_runtime.testing import sim_device


async def test_apply_and_idempotent_retry():
    dev = await sim_device("circuit")
    svc = NodeService(dev, "n1")
    x = np.zeros((4, 16), np.float32)
    th = np.zeros(16, np.float32)
    h = wire.make_header("apply")
    r1, (y1,) = await svc.handle(h, [x, th])
    r2, (y2,) = await svc.handle(h, [x, th])  # same id: cached, device not driven twice
    assert r1["ok"] and r2["ok"] and r1["id"] == h["id"]
    np.testing.assert_array_equal(y1, y2)
    assert dev.calls == 1 and svc.counters["duplicates"] == 1


async def test_errors_become_replies():
    dev = await sim_device("circuit")
    svc = NodeService(dev, "n1")
    r, out = await svc.handle(wire.make_header("nope"), [])
    assert not r["ok"] and r["error"]["code"] == "unknown_type" and out == []
    r, _ = await svc.handle(wire.make_header("apply"), [np.full((2, 16), 5, np.float32), np.zeros(16, np.float32)])
    assert r["error"]["code"] == "out_of_range" and "circuit" in r["error"]["message"]
    r, _ = await svc.handle(wire.make_header("apply"), [np.zeros((2, 3), np.float32), np.zeros(16, np.float32)])
    assert r["error"]["code"] == "bad_shape"
    r, _ = await svc.handle(wire.make_header("apply"), [])
    assert r["error"]["code"] == "bad_request"
    assert dev.calls == 0
    r, _ = await svc.handle(wire.make_header("status"), [])
    assert r["ok"] and r["counters"]["errors"] == 4
