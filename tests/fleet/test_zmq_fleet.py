"""Fleets on ZeroMQ: in-process nodes and separate processes (killed with SIGKILL mid-epoch)."""
import asyncio
import multiprocessing as mp
import os
from collections import Counter

import numpy as np
import pytest
import torch

from runtime.datasets import load_task
from runtime.fleet import Shard, ShardScheduler
from runtime.fleet.training import FleetTrainer, NominalTwins, twin_sim_options
from runtime.pat import build_pnn
from runtime.testing.fleet import FAST_DEVICE, sim_fleet
from runtime.twins import make_twin
from sims.fleet import SimFleet

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


@pytest.mark.slow
async def test_processes_killed_mid_epoch_training_exactly_once():
    task = load_task("digits", seed=0, n_train=192, n_test=64)
    device = "sim:plate"
    async with sim_fleet(4, device, transport="zmq", processes=4, timeout=0.3, heartbeat=0.05,
                         liveness=0.4, join_timeout=60) as fleet:
        m = fleet.manager
        pids = [c.process.pid for c in fleet._procs.children]
        spec = m.nodes[fleet.node_ids[0]].spec
        twin = make_twin("nominal", spec, sim_options=twin_sim_options(device))
        model = build_pnn(task.n_features, task.n_classes, twin=twin, spec=spec, hybrid=True, layers=1)
        model.calibrate(torch.from_numpy(task.x_train[:128]))
        tr = FleetTrainer(m, model, NominalTwins(twin_sim_options(device)), batch_size=64, shard_size=16)
        go = asyncio.Event()
        accepted = 0

        def chaos(epoch, batch, shard, node):
            nonlocal accepted
            accepted += 1
            if accepted == 5:
                go.set()

        async def killer():
            await go.wait()
            for victim in fleet.node_ids[:2]:
                await fleet.crash(victim)           # SIGKILL its process

        tr.on_shard = chaos
        k = asyncio.create_task(killer())
        try:
            hist = await tr.fit(task.x_train, task.y_train, 2)
        finally:
            await asyncio.gather(k, return_exceptions=True)
        assert [h.ledger["samples"] for h in hist] == [192, 192]
        assert sorted(fleet.crashed()) == fleet.node_ids[:2]
        assert set(hist[1].by_node) <= set(fleet.node_ids[2:])
        assert hist[1].loss < hist[0].loss
    # every child is gone after close (killed ones and the two that were SIGTERMed)
    assert not [p for p in mp.active_children() if p.pid in pids]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_crashed_process_is_restarted_by_the_supervisor():
    """A one-node child that crashes (os._exit) is started again: same unit, new pid, rejoins the fleet."""
    async with sim_fleet(2, "echo:?latency=0.002", transport="zmq", processes=2, timeout=0.2,
                         faults="crash=1,crash_min=3,crash_max=3,restart=0.2,seed=1", join_timeout=60) as fleet:
        m = fleet.manager
        (victim,) = [fleet.node_ids[i] for i in fleet.plan.crash_after]
        old_pid = fleet._procs._child_of(victim).process.pid

        async def work(node, shard):
            return await m.apply(node, shard.payload, TH)

        res = await ShardScheduler(m).run(_shards(40), work)
        assert len(res) == 40
        for _ in range(100):                      # bounded wait for the restart and the rejoin
            if m.nodes[victim].joins == 2 and m.is_available(victim):
                break
            await asyncio.sleep(0.05)
        assert [n for _, n in fleet.crashes] == [victim] and [n for _, n in fleet.restarts] == [victim]
        assert m.nodes[victim].joins == 2 and fleet._procs._child_of(victim).process.pid != old_pid
        again = await ShardScheduler(m).run(_shards(20, seed=1), work)
        assert len(again) == 20
