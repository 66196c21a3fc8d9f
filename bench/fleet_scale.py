"""Fleet scale benchmark: in-process vs Ray-backed simulated fleets, and how large a Ray fleet this machine holds.

    python bench/fleet_scale.py                  # everything (several minutes on 2 cores)
    python bench/fleet_scale.py --quick          # smaller sweep, 2,000-node largest fleet
    python bench/fleet_scale.py --only largest --largest 10000

It starts its own 2-node Ray cluster on loopback (head + worker, each ``ray start``, 2 CPUs, 100 MB object
store: :class:`pat_runtime.testing.ray_cluster.LocalRayCluster`) and tears it down at the end.

1. **throughput and join time vs node count** - echo nodes (``echo:?latency=10ms``: latency only, the
   runtime's own overhead), 2 shards in flight per node, :class:`ShardScheduler`. ``inproc``: virtual nodes
   on the coordinator's event loop (:class:`pat_runtime.fleet.simfleet.SimFleet`). ``ray``: the same nodes in Ray actors
   (``--per-actor`` nodes each, SPREAD over both Ray nodes) on ZeroMQ (:class:`RayFleet`). Paired,
   interleaved repeats (inproc, ray, ray, inproc, ...): the table gives min / median / max of req/s and of
   the per-repeat ratio ray / inproc. Join = fleet start until every node joined (Ray: actors started).
2. **largest Ray fleet** - N echo nodes in 4 actors over the 2 Ray nodes: join time, one request to every
   node (twice), all still alive on heartbeats afterwards, memory of the actors (RSS) and of the coordinator.
3. **losing a Ray node mid-run** - 64 nodes over both Ray nodes; a stream of shards whose results are
   accepted exactly once (each shard id counted); the worker node (raylet + workers) is SIGKILLed in the
   middle. Reported: shards completed, duplicates (must be 0), missing (must be 0), wall, and how long Ray
   took to bring the lost actors back on the head.

A benchmark, not a test: it prints what it measured in this run (shared 2-core machine: expect noise).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pat_runtime.fleet import Shard, ShardScheduler  # noqa: E402
from pat_runtime.fleet.ray_backend import RayFleet, ray_available  # noqa: E402
from pat_runtime.testing.ray_cluster import LocalRayCluster  # noqa: E402
from pat_runtime.fleet.simfleet import SimFleet  # noqa: E402

ECHO = "echo:?latency={latency}&dim=4"
TH = np.zeros(4, np.float32)


def rss_mb(pid: int | str = "self") -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def stream(fleet: SimFleet, seconds: float, latency: float, rows: int = 8) -> float:
    """Keep every node busy for about ``seconds``; completed requests per second."""
    m = fleet.manager
    n = fleet.n
    x = np.random.default_rng(0).uniform(-1, 1, (rows, 4)).astype(np.float32)
    total = max(4 * n, int(seconds * n / max(latency, 1e-3)))

    async def work(node, shard):
        return await m.apply(node, x, TH)

    sched = ShardScheduler(m, speculate=None)
    await sched.run([Shard(("warm", i)) for i in range(2 * n)], work)
    t0 = time.perf_counter()
    await sched.run([Shard(i) for i in range(total)], work)
    return total / (time.perf_counter() - t0)


def make_fleet(backend: str, n: int, latency: float, per_actor: int, **kw) -> SimFleet:
    common = dict(cap=2, timeout=kw.pop("timeout", 10.0), heartbeat=kw.pop("heartbeat", 1.0), liveness=kw.pop("liveness", 15.0),
                  join_timeout=kw.pop("join_timeout", 600), **kw)
    if backend == "inproc":
        return SimFleet(n, ECHO.format(latency=latency), **common)
    return RayFleet(n, ECHO.format(latency=latency), nodes_per_actor=per_actor, num_cpus=0.25, **common)


async def one(backend: str, n: int, latency: float, per_actor: int, seconds: float) -> dict:
    t0 = time.perf_counter()
    async with make_fleet(backend, n, latency, per_actor) as fleet:
        join = time.perf_counter() - t0
        req_s = await stream(fleet, seconds, latency)
    return {"join_s": join, "req_s": req_s}


def mmm(xs: list[float], fmt: str = ".0f") -> str:
    return f"{min(xs):{fmt}} / {statistics.median(xs):{fmt}} / {max(xs):{fmt}}"


async def throughput(args) -> None:
    counts = [16, 64] if args.quick else [16, 64, 256]
    print(f"## 1. throughput and join time vs node count (echo {args.latency * 1e3:.0f} ms, 2 in flight/node, "
          f"Ray: {args.per_actor} nodes per actor, {args.repeats} paired repeats, min / median / max)")
    print(f"{'nodes':>6} {'ideal':>7} {'inproc req/s':>22} {'ray req/s':>22} {'ray/inproc':>20} "
          f"{'inproc join s':>18} {'ray join s':>18}")
    for n in counts:
        rows: dict[str, list[dict]] = {"inproc": [], "ray": []}
        ratios = []
        for r in range(args.repeats):
            order = ("inproc", "ray") if r % 2 == 0 else ("ray", "inproc")
            got = {}
            for b in order:
                got[b] = await one(b, n, args.latency, max(1, min(args.per_actor, n // 4 or 1)), args.seconds)
                rows[b].append(got[b])
            ratios.append(got["ray"]["req_s"] / got["inproc"]["req_s"])
        i_r, r_r = [x["req_s"] for x in rows["inproc"]], [x["req_s"] for x in rows["ray"]]
        i_j, r_j = [x["join_s"] for x in rows["inproc"]], [x["join_s"] for x in rows["ray"]]
        print(f"{n:>6} {n / args.latency:>7.0f} {mmm(i_r):>22} {mmm(r_r):>22} {mmm(ratios, '.2f'):>20} "
              f"{mmm(i_j, '.2f'):>18} {mmm(r_j, '.1f'):>18}", flush=True)


async def largest(args, n: int) -> dict:
    per = -(-n // 4)
    t0 = time.perf_counter()
    rss0 = rss_mb()
    fleet = make_fleet("ray", n, args.latency, per, heartbeat=5.0, liveness=60.0, join_timeout=1800, timeout=120.0)
    starting = asyncio.create_task(fleet.start())
    while not starting.done():                   # progress: nodes the coordinator knows so far
        await asyncio.wait({starting}, timeout=30)
        if not starting.done() and fleet.coordinator is not None:
            print(f"    {time.perf_counter() - t0:6.0f} s: {len(fleet.coordinator.alive_nodes())} nodes joined",
                  flush=True)
    await starting
    try:
        join = time.perf_counter() - t0
        m = fleet.manager
        x = np.zeros((1, 4), np.float32)
        ok = 0
        t1 = time.perf_counter()
        for _ in range(2):                       # one request to every node, twice, 1,000 at a time
            for k in range(0, n, 1000):
                res = await asyncio.gather(*(m.apply(node, x, TH) for node in fleet.node_ids[k:k + 1000]),
                                           return_exceptions=True)
                ok += sum(not isinstance(r, BaseException) for r in res)
        wall = time.perf_counter() - t1
        await asyncio.sleep(6.0)                 # one heartbeat period later: still everyone alive?
        m.refresh()
        alive = len(m.available())
        actors = fleet._procs.actors
        actor_rss = sum(rss_mb(a.pid) for a in actors)
        spread = len({a.ray_node for a in actors})
        coord_rss = rss_mb() - rss0
    finally:
        await fleet.close()
    return {"nodes": n, "actors": len(actors), "ray_nodes": spread, "join_s": join, "requests": ok,
            "req_s": ok / wall, "alive": alive, "actor_rss_mb": actor_rss, "coord_rss_mb": coord_rss}


async def node_loss(args, cluster: LocalRayCluster, worker) -> dict:
    import ray

    n = 64
    async with make_fleet("ray", n, args.latency, 16, heartbeat=0.2, liveness=1.5, join_timeout=600,
                          timeout=0.5) as fleet:
        m = fleet.manager
        worker_id = next(x["NodeID"] for x in ray.nodes() if x["Alive"] and
                         x["NodeManagerPort"] == worker.node_manager_port)
        lost = sorted(k for k, v in fleet.placement().items() if v == worker_id)
        x = np.zeros((4, 4), np.float32)
        counted: dict[int, int] = {}
        total = int(args.seconds * 4 * n / args.latency)
        t_kill = None

        async def work(node, shard):
            return await m.apply(node, x, TH)

        def accept(shard, node, result):
            nonlocal t_kill
            counted[shard.id] = counted.get(shard.id, 0) + 1
            if t_kill is None and len(counted) == total // 3:
                cluster.kill_node(worker)
                t_kill = time.monotonic()

        t0 = time.perf_counter()
        await ShardScheduler(m).run([Shard(i) for i in range(total)], work, on_result=accept)
        wall = time.perf_counter() - t0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not all(m.nodes[v].joins >= 2 and fleet.placement()[v] != worker_id
                                                      for v in lost):
            await asyncio.sleep(0.1)
        back = time.monotonic() - t_kill if t_kill else float("nan")
        return {"nodes": n, "lost_nodes": len(lost), "shards": total, "completed": len(counted),
                "duplicates": sum(v - 1 for v in counted.values() if v > 1),
                "missing": total - len(counted), "wall_s": wall, "back_after_s": back,
                "restarted": len({k for _, k in fleet.restarts})}


async def main(args) -> None:
    import ray

    print(f"# fleet scale: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; "
          f"2-node local Ray cluster (head + worker, 2 CPUs each)\n", flush=True)
    cluster = LocalRayCluster(num_cpus=2, object_store_mb=100)
    os.environ.update(cluster.driver_env())
    try:
        cluster.start()
        worker = cluster.add_node(num_cpus=2)
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        if args.only in (None, "throughput"):
            await throughput(args)
        if args.only in (None, "largest"):
            print("\n## 2. largest Ray fleet (echo nodes, 4 actors over 2 Ray nodes, heartbeats every 5 s)")
            sizes = [args.largest] if args.only == "largest" else ([500, 2000] if args.quick else
                                                                   [1000, 5000, args.largest])
            for n in sizes:
                try:
                    r = await largest(args, n)
                except Exception as e:
                    print(f"  {n} nodes failed: {type(e).__name__}: {e}", flush=True)
                    break
                print(f"  {r['nodes']} nodes in {r['actors']} actors on {r['ray_nodes']} Ray nodes: joined in "
                      f"{r['join_s']:.1f} s; {r['requests']}/{2 * r['nodes']} requests answered (2 per node, "
                      f"1,000 at a time) at {r['req_s']:.0f} req/s; "
                      f"{r['alive']} alive after a heartbeat period; actors RSS {r['actor_rss_mb']:.0f} MiB "
                      f"({r['actor_rss_mb'] * 1024 / r['nodes']:.0f} KiB/node), coordinator +"
                      f"{r['coord_rss_mb']:.0f} MiB", flush=True)
        if args.only in (None, "loss"):
            print("\n## 3. losing a Ray node mid-run (64 nodes, 16 per actor, worker node SIGKILLed at 1/3)")
            r = await node_loss(args, cluster, worker)
            print(f"  {r['lost_nodes']} of {r['nodes']} nodes lost with their Ray node; {r['completed']}/"
                  f"{r['shards']} shards completed, {r['duplicates']} duplicates, {r['missing']} missing, "
                  f"{r['wall_s']:.1f} s; Ray restarted {r['restarted']} nodes on the head, all back "
                  f"{r['back_after_s']:.1f} s after the kill", flush=True)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, default=0.01, help="simulated device latency (s)")
    ap.add_argument("--seconds", type=float, default=2.0, help="measurement window per configuration")
    ap.add_argument("--repeats", type=int, default=3, help="paired repeats per node count")
    ap.add_argument("--per-actor", type=int, default=16, help="nodes per Ray actor in the throughput sweep")
    ap.add_argument("--largest", type=int, default=10000, help="largest Ray fleet to try")
    ap.add_argument("--only", choices=["throughput", "largest", "loss"], default=None)
    ap.add_argument("--quick", action="store_true", help="smaller sweeps")
    a = ap.parse_args()
    if not ray_available():
        sys.exit("bench/fleet_scale.py needs Ray: pip install -e '.[ray]'")
    import torch

    torch.set_num_threads(1)
    asyncio.run(main(a))
