"""Scheduling across a simulated fleet: caps, reassignment, duplicates, stalls; each shard done once."""
import asyncio
from collections import Counter, defaultdict

import numpy as np
import pytest

from pat_runtime.devices.errors import RemoteDeviceError
from pat_runtime.fleet import FleetError, Shard, ShardScheduler
from pat_runtime.testing import wait_until

pytestmark = pytest.mark.timeout(60)

TH = np.zeros(4, np.float32)


def _shards(n, b=4, seed=0):
    rng = np.random.default_rng(seed)
    return [Shard(i, rng.uniform(-1, 1, (b, 4)).astype(np.float32), size=b) for i in range(n)]


async def test_caps_respected_and_every_shard_once(fleet_factory):
    fleet = await fleet_factory(4, cap=3, device="sim:circuit?in_dim=4&param_dim=4&substeps=1&latency=0.005")
    m = fleet.manager
    live, peak = Counter(), Counter()

    async def work(node, shard):
        live[node] += 1
        peak[node] = max(peak[node], live[node])
        try:
            return await m.apply(node, shard.payload, TH)
        finally:
            live[node] -= 1

    seen = Counter()
    res = await ShardScheduler(m).run(_shards(60), work, on_result=lambda s, n, r: seen.update([s.id]))
    assert sorted(res) == list(range(60)) and set(seen.values()) == {1}
    assert max(peak.values()) == 3 and len(peak) == 4      # caps reached, never exceeded, all nodes used
    assert all(r.shape == (4, 4) for r in res.values())


async def test_crashed_nodes_work_is_reassigned(fleet_factory):
    fleet = await fleet_factory(6, faults="crash=2,crash_min=2,crash_max=4,seed=1")
    m = fleet.manager
    sched = ShardScheduler(m, speculate=None)
    where = {}

    async def work(node, shard):
        return await m.apply(node, shard.payload, TH)

    res = await sched.run(_shards(80), work, on_result=lambda s, n, r: where.setdefault(s.id, n))
    assert len(res) == 80 and len(where) == 80
    crashed = fleet.crashed()
    assert len(crashed) == 2
    assert sched.stats.reassigned >= 1 and sched.stats.failures >= 1
    # after their crash, crashed nodes completed at most the applies they answered before it
    for n in crashed:
        assert sched.stats.by_node.get(n, 0) <= fleet.plan.crash_after[fleet.nodes[n].index]
    await wait_until(lambda: set(m.available()) == set(fleet.node_ids) - set(crashed), what="crashed nodes evicted")


async def test_restarted_node_rejoins_and_gets_work(fleet_factory):
    fleet = await fleet_factory(3, faults="crash=1,crash_min=1,crash_max=1,restart=0.2,seed=2")
    m = fleet.manager
    sched = ShardScheduler(m, speculate=None)

    async def work(node, shard):
        await asyncio.sleep(0.01)
        return await m.apply(node, shard.payload, TH)

    first = await sched.run(_shards(20), work)
    assert len(first) == 20 and len(fleet.crashes) == 1
    (crashed,) = [n for _, n in fleet.crashes]
    await wait_until(lambda: fleet.restarts and m.nodes[crashed].joins == 2 and m.is_available(crashed),
                     what=f"{crashed} restarted and rejoined")
    await sched.run(_shards(30, seed=1), work)
    assert sched.stats.by_node[crashed] > 0


async def test_slow_node_duplicates_are_ignored(fleet_factory):
    fleet = await fleet_factory(4, faults="slow=1,slow_factor=30,seed=0", cap=1,
                                device="sim:circuit?in_dim=4&param_dim=4&substeps=1&latency=0.01", timeout=2.0)
    m = fleet.manager
    results = defaultdict(list)

    async def work(node, shard):
        return await m.apply(node, shard.payload, TH)

    sched = ShardScheduler(m, speculate=3.0)
    res = await sched.run(_shards(24), work, on_result=lambda s, n, r: results[s.id].append(n))
    assert len(res) == 24 and all(len(v) == 1 for v in results.values())
    assert sched.stats.speculative >= 1
    (slow,) = [fleet.node_ids[i] for i in fleet.plan.slow]
    assert sched.stats.by_node[slow] <= 1          # its straggling shard was finished by a fast node


async def test_drops_and_corruption_still_complete_exactly_once(fleet_factory):
    fleet = await fleet_factory(5, faults="drop=0.1,corrupt=0.1,jitter=0.003,seed=4", timeout=0.05, retries=3)
    m = fleet.manager
    seen = Counter()

    async def work(node, shard):
        return await m.apply(node, shard.payload, TH)

    await ShardScheduler(m).run(_shards(60), work, on_result=lambda s, n, r: seen.update([s.id]))
    assert sorted(seen) == list(range(60)) and set(seen.values()) == {1}
    fc = fleet.fault_counters()
    assert fc["dropped"] > 0 and fc["corrupted"] > 0


async def test_stall_when_every_node_is_gone(fleet_factory):
    fleet = await fleet_factory(2)
    for n in fleet.node_ids:
        await fleet.crash(n)

    async def work(node, shard):
        return await fleet.manager.apply(node, shard.payload, TH)

    with pytest.raises(FleetError, match="no node available"):
        await ShardScheduler(fleet.manager, stall_timeout=1.0).run(_shards(5), work)


async def test_request_errors_are_not_retried_forever(fleet_factory):
    fleet = await fleet_factory(3)
    calls = Counter()

    async def bad(node, shard):
        calls[node] += 1
        return await fleet.manager.apply(node, np.full((2, 4), 7, np.float32), TH)

    with pytest.raises(RemoteDeviceError) as e:
        await ShardScheduler(fleet.manager).run(_shards(4), bad)
    assert e.value.code == "out_of_range" and all(fleet.manager.is_available(n) for n in fleet.node_ids)

    async def buggy(node, shard):
        raise ZeroDivisionError("bug in work")

    with pytest.raises(ZeroDivisionError):
        await ShardScheduler(fleet.manager).run(_shards(4), buggy)


async def test_duplicate_shard_ids_rejected(fleet_factory):
    fleet = await fleet_factory(1)
    with pytest.raises(ValueError, match="unique"):
        await ShardScheduler(fleet.manager).run([Shard(1), Shard(1)], lambda n, s: None)


async def test_several_shards_per_message_each_once_despite_crashes(fleet_factory):
    fleet = await fleet_factory(5, faults="crash=2,crash_min=2,crash_max=4,seed=1")
    m = fleet.manager
    sched = ShardScheduler(m, speculate=None, group=3)
    sizes, seen = [], Counter()

    async def work_many(node, shards):
        sizes.append(len(shards))
        ys = await m.apply_many(node, np.stack([s.payload for s in shards]), np.stack([TH] * len(shards)))
        return [(s.id, y) for s, y in zip(shards, ys)]

    res = await sched.run(_shards(61), on_result=lambda s, n, r: seen.update([s.id]), work_many=work_many)
    assert sorted(res) == list(range(61)) and set(seen.values()) == {1}
    assert all(r[0] == k and r[1].shape == (4, 4) for k, r in res.items())   # each shard gets its own result
    assert max(sizes) == 3 and sum(sizes) >= 61            # up to 3 shards per message; failed ones re-sent
    assert len(fleet.crashed()) == 2 and sched.stats.reassigned >= 1
    with pytest.raises(ValueError, match="group"):
        ShardScheduler(m, group=0)
