"""Fleets on ZeroMQ with the nodes in this process (nodes in other processes: tests/ray/, Ray actors)."""
from collections import Counter

import numpy as np
import pytest

from pat_runtime.fleet import Shard, ShardScheduler
from pat_runtime.testing.fleet import FAST_DEVICE, sim_fleet
from pat_runtime.fleet.simfleet import SimFleet

pytestmark = pytest.mark.timeout(120)
TH = np.zeros(4, np.float32)


def _shards(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Shard(i, rng.uniform(-1, 1, (4, 4)).astype(np.float32)) for i in range(n)]


def test_corruption_is_refused_on_zmq():
    with pytest.raises(ValueError, match="inproc"):
        SimFleet(2, transport="zmq", faults="corrupt=0.1")


async def test_zmq_in_process_nodes_drops_and_crash_restart():
    async with sim_fleet(4, FAST_DEVICE, transport="zmq", timeout=0.1,
                         faults="drop=0.1,crash=1,crash_min=3,crash_max=3,restart=0.05,seed=3") as fleet:
        m = fleet.manager
        seen = Counter()

        async def work(node, shard):
            return await m.apply(node, shard.payload, TH)

        res = await ShardScheduler(m).run(_shards(80), work, on_result=lambda s, n, r: seen.update([s.id]))
        assert len(res) == 80 and set(seen.values()) == {1}
        fc = fleet.fault_counters()
        assert fc["dropped"] > 0 and fc["crashes"] == 1 and fc["restarts"] == 1
