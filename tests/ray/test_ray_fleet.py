"""Simulated fleets on a real two-node Ray cluster: nodes in Ray actors (several per actor) talking to the
coordinator over ZeroMQ; Ray restarts actors that die, on the surviving node when a whole node is lost.

Accuracy tolerance as in tests/fleet/test_training.py: 0.06 absolute on 300 test samples (about 3 binomial
standard errors; after the loss of a node other units measure the shards, so the runs differ by noise).
"""
import json

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray", reason="the 'ray' extra is not installed")

from pat_runtime.datasets import load_task  # noqa: E402
from pat_runtime.fleet import Shard, ShardScheduler  # noqa: E402
from pat_runtime.fleet.ray_backend import RayFleet  # noqa: E402
from pat_runtime.fleet.training import FleetTrainer, NominalTwins, twin_sim_options  # noqa: E402
from pat_runtime.pat import build_pnn  # noqa: E402
from pat_runtime.testing.fleet import sim_fleet  # noqa: E402
from pat_runtime.twins import make_twin  # noqa: E402
from pat_runtime.testing import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
TH = np.zeros(4, np.float32)
DEVICE = "sim:plate"
TOL = 0.06
EPOCHS = 3
# Ray actors start in seconds on a quiet machine and much later on a loaded one: generous joins,
# heartbeats and liveness so that load alone never looks like a death
RAY_OPTS = dict(timeout=0.5, retries=2, heartbeat=0.1, liveness=1.5, join_timeout=300, num_cpus=0.5)


def _shards(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Shard(i, rng.uniform(-1, 1, (4, 4)).astype(np.float32)) for i in range(n)]


async def test_crash_fault_ends_the_actor_and_ray_restarts_it(ray_cluster):
    """A node alone in its actor that crashes ends the actor process; Ray (max_restarts) starts it again:
    same unit, new pid, rejoins the fleet, serves again; the crash does not repeat."""
    async with RayFleet(2, "echo:?latency=0.002", nodes_per_actor=1,
                        faults="crash=1,crash_min=3,crash_max=3,restart=0,seed=1", **RAY_OPTS) as fleet:
        m = fleet.manager
        (victim,) = [fleet.node_ids[i] for i in fleet.plan.crash_after]
        actor = fleet.actor_of(victim)
        old_pid = actor.pid

        async def work(node, shard):
            return await m.apply(node, shard.payload, TH)

        seen = []
        res = await ShardScheduler(m).run(_shards(40), work, on_result=lambda s, n, r: seen.append(s.id))
        assert len(res) == 40 and sorted(seen) == list(range(40))
        await wait_until(lambda: m.nodes[victim].joins == 2 and m.is_available(victim) and actor.pid != old_pid,
                         180, f"{victim}'s actor to be restarted by Ray and rejoin")
        assert [n for _, n in fleet.restarts] == [victim] and victim in [n for _, n in fleet.crashes]
        again = await ShardScheduler(m).run(_shards(20, seed=1), work)
        assert len(again) == 20 and m.nodes[victim].joins == 2       # no second crash


def test_pat_fleet_cli_on_the_ray_cluster(ray_cluster, tmp_path):
    """``pat fleet --backend ray --address ...``: 4 nodes in 2 actors on the running cluster."""
    from typer.testing import CliRunner

    from pat_runtime.cli import app

    cluster, _ = ray_cluster
    out = tmp_path / "fleet.json"
    r = CliRunner().invoke(app, ["fleet", "--backend", "ray", "--address", cluster.address, "--nodes", "4",
                                 "--nodes-per-actor", "2", "--actor-cpus", "0.25", "--device", "sim:plate",
                                 "--n-train", "64", "--n-test", "32", "--epochs", "1", "--twin", "nominal",
                                 "--timeout", "0.5", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "in Ray actors (2 per actor" in r.output and "ledger ok (64 samples exactly once" in r.output
    assert json.loads(out.read_text())["config"]["backend"] == "ray"


def _model(spec, task):
    torch.manual_seed(0)
    twin = make_twin("nominal", spec, sim_options=twin_sim_options(DEVICE))
    model = build_pnn(task.n_features, task.n_classes, twin=twin, spec=spec, layers=1, hybrid=True, seed=0)
    model.calibrate(torch.from_numpy(task.x_train[:256]))
    return model


async def _train(fleet, task, on_shard=None):
    m = fleet.manager
    tr = FleetTrainer(m, _model(m.nodes[fleet.node_ids[0]].spec, task), NominalTwins(twin_sim_options(DEVICE)),
                      lr=0.02, batch_size=64, shard_size=16, seed=0)
    tr.on_shard = on_shard
    hist = await tr.fit(task.x_train, task.y_train, EPOCHS)
    return hist, await tr.evaluate(task.x_test, task.y_test)


async def test_pat_across_two_ray_nodes_survives_losing_one(ray_cluster):
    """8 plate nodes in 2 actors (4 each) spread over head and worker; the worker node is SIGKILLed mid-epoch 0.
    Every sample is applied exactly once per epoch, the run finishes, the lost actors come back on the head,
    and the accuracy matches the same training on an in-process fleet."""
    cluster, worker = ray_cluster
    task = load_task("digits", seed=0, n_train=400, n_test=300)
    async with sim_fleet(8, DEVICE, timeout=0.3, heartbeat=0.05, liveness=0.4) as local:
        ref_hist, acc_ref = await _train(local, task)
    assert [h.ledger["samples"] for h in ref_hist] == [400] * EPOCHS

    worker_id = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and
                     n["NodeManagerPort"] == worker.node_manager_port)
    async with RayFleet(8, DEVICE, nodes_per_actor=4, **RAY_OPTS) as fleet:
        m = fleet.manager
        before = fleet.placement()
        assert len(set(before.values())) == 2, before                   # spread over both raylets
        victims = sorted(n for n, where in before.items() if where == worker_id)
        assert victims, before
        accepted, killed = 0, []

        def chaos(epoch, batch, shard, node):
            nonlocal accepted
            accepted += 1
            if not killed and epoch == 0 and accepted == 10:             # mid-epoch 0 (of 25 shards)
                killed.extend(cluster.kill_node(worker))                # the whole node: raylet, workers

        hist, acc = await _train(fleet, task, on_shard=chaos)
        assert killed
        assert [h.ledger["samples"] for h in hist] == [400] * EPOCHS    # exactly once, every epoch
        assert [h.ledger["epoch"] for h in hist] == list(range(EPOCHS))
        await wait_until(lambda: all(m.nodes[v].joins >= 2 and m.is_available(v) for v in victims)
                         and all(fleet.placement()[v] != worker_id for v in victims),
                         240, f"Ray to restart {victims} on the head node")
        after = fleet.placement()
        assert set(after.values()) == set(before.values()) - {worker_id}, after
        assert sorted({n for _, n in fleet.restarts}) == victims
        info = (acc_ref, acc, [(h.reassigned, h.failures, dict(h.by_node)) for h in hist])
        assert acc_ref > 0.75, info
        assert abs(acc - acc_ref) <= TOL, info
        # the restarted nodes serve again (on the head now)
        for v in victims:
            spec = m.nodes[v].spec
            y = await m.apply(v, np.zeros((2, spec.in_dim), np.float32), np.zeros(spec.param_dim, np.float32))
            assert y.shape == (2, spec.out_dim)
