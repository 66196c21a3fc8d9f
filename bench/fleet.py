"""Fleet benchmark: device utilization, throughput vs node count, and the largest fleet on one machine.

    python bench/fleet.py                 # everything (a few minutes on 2 cores)
    python bench/fleet.py --quick         # smaller sweep

Workload: a stream of apply shards (``--rows`` x 4 inputs each) scheduled by :class:`ShardScheduler` with
2 shards in flight per node. Two simulated devices, both with ``--latency`` s of device latency per call:

* ``echo`` — latency only (``echo:?latency=..``, microseconds of compute): measures the runtime's overhead
* ``circuit`` — the circuit simulator (``in_dim=4, substeps=1``): about 0.5 ms of physics per call that, for
  in-process nodes, runs on the same CPU as the coordinator

The utilization part also runs the echo fleet with ``--group`` shards per message (``ShardScheduler(group=k)``
+ :meth:`FleetManager.apply_many`: one request carries k shards; the echo device measures them one after
another, so the device time per shard is unchanged and only the per-message runtime work is shared).

Columns: ``req/s`` counts shards; ``util`` = utilization from throughput, ``req/s x latency / nodes`` (the share of each device's
time that delivered results; unlike time-in-handler it does not count event-loop lag as busy), min / median /
max over ``--repeats`` runs; ``util(coord)`` = time with >= 1 request outstanding per node / wall (the
coordinator's view, an upper bound); ``req/s`` completed requests per second; ``ideal`` = nodes / latency;
``CPU us/req`` = CPU time of this process per request. The ``ceiling`` line is the util of 16 bare
tasks that only loop ``asyncio.sleep(latency)`` (no runtime at all): the event loop's timers fire late
(epoll rounds timeouts up to the next millisecond, plus the OS wake-up), so no asyncio-simulated device
reaches 1.0. Throughput vs node count runs the echo sizes as
interleaved repeats (each repeat visits every size, order rotated) and reports each size's median against
the peak over 16-256 nodes (goal: 1000 nodes >= 80 % of it).
Largest fleet: inproc virtual circuit nodes, each size in a fresh interpreter (join time, RSS, two requests
to every node, still alive on heartbeats 2.5 s later). Nodes in other processes / on other machines (Ray
actors) and in-process vs Ray: ``bench/fleet_scale.py``.

It is a benchmark, not a test: it prints tables with the numbers measured in this run.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pat_runtime.fleet import Shard, ShardScheduler  # noqa: E402
from pat_runtime.fleet.simfleet import SimFleet  # noqa: E402

CIRCUIT = "sim:circuit?in_dim=4&param_dim=4&substeps=1&latency={latency}"
ECHO = "echo:?latency={latency}&dim=4"
TH = np.zeros(4, np.float32)


def rss_mb() -> float:
    """Current resident memory of this process (MiB), from /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def stream(fleet: SimFleet, seconds: float, rows: int, latency: float, group: int = 1) -> dict:
    """Keep every node busy for about ``seconds``; return throughput and utilization (per shard).

    ``group`` > 1 sends that many shards per message (:meth:`FleetManager.apply_many`).
    """
    m = fleet.manager
    n = len(fleet.node_ids)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (rows, 4)).astype(np.float32)
    total = max(4 * n, int(seconds * n / max(latency, 1e-3)))      # about `seconds` at full speed

    async def work(node, shard):
        return await m.apply(node, x, TH)

    async def work_many(node, shards):
        return list(await m.apply_many(node, np.stack([x] * len(shards)), np.stack([TH] * len(shards))))

    sched = ShardScheduler(m, speculate=None, group=group)
    kw = {"work_many": work_many} if group > 1 else {"work": work}
    await sched.run([Shard(("warm", i)) for i in range(2 * n * group)], **kw)      # warm-up round
    m.metrics.reset()
    t0, c0 = time.perf_counter(), time.process_time()
    await sched.run([Shard(i) for i in range(total)], **kw)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    s = m.metrics.summary()
    req_s = total / wall
    return {"nodes": n, "requests": total, "wall": wall, "req_s": req_s, "util": req_s * latency / n,
            "cpu_us": 1e6 * cpu / total, "util_coord": s["utilization"], "p50_ms": s["latency"]["p50"] * 1e3,
            "p99_ms": s["latency"]["p99"] * 1e3}


def _mmm(v: list[float]) -> str:
    return f"{min(v):.2f}/{float(np.median(v)):.2f}/{max(v):.2f}"


async def sleep_ceiling(nodes: int, latency: float, seconds: float) -> float:
    """``util`` of ``nodes`` bare tasks that only loop ``await asyncio.sleep(latency)``: no runtime at all.

    The ceiling of any asyncio-simulated device on this machine: the loop's timers fire late (epoll rounds
    a timeout up to the next millisecond, plus the OS wake-up latency), so a 10 ms sleep takes ~10.5-11 ms.
    """
    count = 0
    stop = time.perf_counter() + seconds

    async def node() -> None:
        nonlocal count
        while time.perf_counter() < stop:
            await asyncio.sleep(latency)
            count += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(node() for _ in range(nodes)))
    return count * latency / nodes / (time.perf_counter() - t0)


async def repeated(repeats: int, fn) -> dict:
    """Run ``fn()`` ``repeats`` times; medians of every number, ``util`` also as min/median/max."""
    runs = [await fn() for _ in range(repeats)]
    out = {k: float(np.median([r[k] for r in runs])) for k in runs[0] if isinstance(runs[0][k], float)}
    out["nodes"] = runs[0]["nodes"]
    out["util_mmm"] = _mmm([r["util"] for r in runs])
    return out


async def utilization(nodes: int, device: str, latency: float, rows: int, seconds: float,
                      transport: str = "inproc", cap: int = 2, group: int = 1) -> dict:
    async with SimFleet(nodes, device.format(latency=latency), transport=transport,
                        cap=cap, timeout=5.0, heartbeat=0.5, liveness=5.0, join_timeout=120) as fleet:
        return await stream(fleet, seconds, rows, latency, group)


async def largest_one(nodes: int, latency: float, rows: int) -> dict:
    """One fleet size, run in a fresh interpreter (``--largest-one N``) so its memory is its own."""
    import torch

    torch.set_num_threads(1)
    r0 = rss_mb()
    t0 = time.perf_counter()
    async with SimFleet(nodes, CIRCUIT.format(latency=latency), cap=2, timeout=60.0, heartbeat=1.0,
                        liveness=30.0, join_timeout=600) as fleet:
        join = time.perf_counter() - t0
        r1 = rss_mb()
        m = fleet.manager
        x = np.zeros((rows, 4), np.float32)

        async def work(node, shard):
            return await m.apply(node, x, TH)

        m.metrics.reset()
        t1 = time.perf_counter()
        done = await ShardScheduler(m, speculate=None).run([Shard(i) for i in range(2 * nodes)], work)
        wall = time.perf_counter() - t1
        await asyncio.sleep(2.5)                  # heartbeats keep flowing: everyone still alive?
        m.refresh()
        alive = len(m.available())
        hb = fleet.coordinator.counters["received"]
    return {"nodes": nodes, "join_s": join, "rss_mb": r1, "kb_per_node": (r1 - r0) * 1024 / nodes,
            "rounds_s": wall / 2, "req_s": len(done) / wall, "alive": alive, "msgs": hb}


def largest(nodes: int, latency: float, rows: int) -> dict:
    import json
    import subprocess

    out = subprocess.run([sys.executable, __file__, "--largest-one", str(nodes), "--latency", str(latency),
                          "--rows", str(rows)], capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    """``cols``: (key, header, format spec like ">10.1f"); the width is the number after the ">"."""
    width = [int(re.match(r">(\d+)", f).group(1)) for _, _, f in cols]
    lines = ["".join(f"{h:>{w}}" for (_, h, _), w in zip(cols, width))]
    for r in rows:
        lines.append("".join(f"{r[k]:{f}}" for k, _, f in cols))
    return "\n".join(lines)


async def main(args) -> None:
    import torch

    torch.set_num_threads(1)
    lat, rows, sec = args.latency, args.rows, args.seconds
    print(f"# fleet benchmark: device latency {lat * 1e3:.0f} ms, {rows} rows per request, cap 2 shards/node, "
          f"{os.cpu_count()} CPUs\n")
    util_cols = [("device", "device", ">9"), ("transport", "transport", ">13"), ("group", "shards/msg", ">11"),
                 ("req_s", "req/s", ">9.1f"),
                 ("ideal", "ideal", ">8.0f"), ("util_mmm", "util min/med/max", ">18"),
                 ("util_coord", "util(coord)", ">12.3f"), ("cpu_us", "CPU us/req", ">11.0f"),
                 ("p50_ms", "p50 ms", ">9.2f"), ("p99_ms", "p99 ms", ">9.2f")]

    if args.only in (None, "util"):
        print(f"## utilization from throughput, 16 nodes x {lat * 1e3:.0f} ms (goal >= 0.9), {args.repeats} repeats")
        res = []
        for name, dev, tr, g in [("echo", ECHO, "inproc", 1), ("echo", ECHO, "inproc", args.group),
                                 ("echo", ECHO, "zmq", 1), ("circuit", CIRCUIT, "inproc", 1)]:
            if g == 1 and name == "echo" and tr == "inproc" and res:
                continue  # --group 1: no second inproc echo row
            r = await repeated(args.repeats, lambda: utilization(16, dev, lat, rows, sec, tr, group=g))
            res.append({"device": name, "transport": tr, "group": g, "ideal": 16 / lat, **r})
        print(table(res, util_cols))
        ceil = [await sleep_ceiling(16, lat, sec) for _ in range(args.repeats)]
        print(f"ceiling: 16 bare tasks looping asyncio.sleep({lat * 1e3:.0f} ms), no runtime: util {_mmm(ceil)} "
              f"(timer lateness of the event loop on this machine)")

    if args.only in (None, "scale"):
        print("\n## echo throughput vs node count (inproc), interleaved repeats")
        counts = [16, 64, 256, 1000] if args.quick else [16, 32, 64, 128, 256, 512, 1000]
        runs: dict[int, list[dict]] = {n: [] for n in counts}
        for r in range(args.repeats):
            for n in counts[r % len(counts):] + counts[:r % len(counts)]:
                runs[n].append(await utilization(n, ECHO, lat, rows, sec))
        med = {n: float(np.median([x["req_s"] for x in v])) for n, v in runs.items()}
        peak = max(v for n, v in med.items() if 16 <= n <= 256)
        res = [{"nodes": n, "req_s": med[n], "ideal": n / lat, "of_peak": med[n] / peak,
                "util_mmm": _mmm([x["util"] for x in runs[n]]),
                "cpu_us": float(np.median([x["cpu_us"] for x in runs[n]])),
                "p50_ms": float(np.median([x["p50_ms"] for x in runs[n]]))} for n in counts]
        print(table(res, [("nodes", "nodes", ">7d"), ("req_s", "req/s(med)", ">12.1f"), ("ideal", "ideal", ">9.0f"),
                          ("of_peak", "of peak", ">9.2f"), ("util_mmm", "util min/med/max", ">18"),
                          ("cpu_us", "CPU us/req", ">11.0f"), ("p50_ms", "p50 ms", ">9.2f")]))
        if 1000 in med:
            print(f"1000 nodes: {med[1000]:.0f} req/s = {med[1000] / peak:.2f} of the peak over 16-256 nodes "
                  f"({peak:.0f} req/s; goal >= 0.80)")

    if args.only:
        return
    print("\n## largest fleet on one machine: inproc virtual circuit nodes (one event loop, fresh process each)")
    res = []
    for n in ([250, 1000] if args.quick else [250, 1000, 2000, 4000]):
        try:
            r = largest(n, lat, rows)
        except Exception as e:
            print(f"  {n} nodes failed: {e}")
            break
        res.append(r)
        print(f"  {n} nodes: joined in {r['join_s']:.2f} s, {r['alive']} alive after 2.5 s, RSS {r['rss_mb']:.0f} MiB",
              flush=True)
    print(table(res, [("nodes", "nodes", ">7d"), ("join_s", "join s", ">8.2f"), ("alive", "alive", ">7d"),
                      ("rss_mb", "RSS MiB", ">9.0f"), ("kb_per_node", "KiB/node", ">10.1f"),
                      ("rounds_s", "s/round", ">9.2f"), ("req_s", "req/s", ">9.0f")]))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, default=0.01, help="simulated device latency (s)")
    ap.add_argument("--rows", type=int, default=8, help="rows per request")
    ap.add_argument("--seconds", type=float, default=2.0, help="measurement window per configuration")
    ap.add_argument("--quick", action="store_true", help="smaller sweeps")
    ap.add_argument("--repeats", type=int, default=3, help="repeats per configuration (min/median/max)")
    ap.add_argument("--group", type=int, default=2, help="shards per message in the grouped utilization row")
    ap.add_argument("--only", choices=("util", "scale"), help="run only the utilization or the node-count part")
    ap.add_argument("--largest-one", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.largest_one:
        import json

        print(json.dumps(asyncio.run(largest_one(a.largest_one, a.latency, a.rows))))
    else:
        asyncio.run(main(a))
