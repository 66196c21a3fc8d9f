"""NodeService reply cache bounds (a small change made for the transport hot path)."""
import numpy as np

from pat_runtime.edge.service import NodeService
from pat_runtime import wire
from pat_runtime.testing import sim_device


async def test_reply_cache_is_bounded_in_bytes():
    dev = await sim_device("circuit")
    svc = NodeService(dev, "n1", cache_bytes=3 * 64 * 16 * 4)  # room for three 64x16 float32 replies
    x, th = np.zeros((64, 16), np.float32), np.zeros(16, np.float32)
    hs = [wire.make_header("apply") for _ in range(5)]
    for h in hs:
        r, _ = await svc.handle(h, [x, th])
        assert r["ok"]
    assert svc.cached_ids() == [h["id"] for h in hs[-3:]] and svc.cache_nbytes == 3 * x.nbytes
    await svc.handle(hs[-1], [x, th])  # still cached: a duplicate, the device is not driven
    assert dev.calls == 5 and svc.counters["duplicates"] == 1
    big = np.zeros((1000, 100), np.float32)  # a reply larger than the budget evicts all older ones
    h = wire.make_header("ping")
    _, (echo,) = await svc.handle(h, [big])
    assert echo is big and svc.cached_ids() == [h["id"]] and svc.cache_nbytes == big.nbytes
    _, (again,) = await svc.handle(h, [big])
    assert again is big and svc.counters["duplicates"] == 2
