"""MQTT capacity model: requests/s per coordinator and per broker, and coordinator replicas sharing replies.

    python bench/mqtt_scale.py                  # about a minute
    python bench/mqtt_scale.py --nodes 32 --seconds 5

One Mosquitto broker on loopback; ``--nodes`` echo edge nodes (latency ``--latency``) served from a child
process over MQTT; the coordinators run in this process. For every configuration it reports completed
replies/s and the CPU each party spent per reply (coordinator: this process's CPU time; broker: the
mosquitto process's utime + stime from /proc), from which the capacity of one core follows:
``replies/s per core = 1000 / (CPU ms per reply)``.

* ``request``: one :class:`MqttCoordinator`, ``request()`` with 2 in flight per node (futures, timeouts,
  retries: the training path).
* ``shared xR``: R :class:`SharedMqttCoordinator` replicas of one group; replica 0 submits (a window of 2
  per node), the broker hands every reply to one replica (``$share/GROUP/...``), replicas count them.

Repeats are interleaved (request, shared x1, x2, x3, request, ...); min / median / max over repeats.
A benchmark, not a test: numbers from this run, on a shared 2-core machine where broker, nodes and
coordinators compete for the same cores (so replicas cannot add capacity *here*; the per-reply CPU
costs are what carries over to a cluster).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pat_runtime.edge.service import NodeService  # noqa: E402
from pat_runtime.testing.mosquitto import mosquitto_broker  # noqa: E402
from pat_runtime.transport.mqtt import MqttCoordinator, MqttEdgeTransport  # noqa: E402
from pat_runtime.transport.mqtt.shared import SharedMqttCoordinator  # noqa: E402
from pat_runtime.fleet.simfleet import EchoDevice  # noqa: E402

TH = np.zeros(4, np.float32)
X = np.zeros((8, 4), np.float32)


def cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def serve_nodes(url: str, n: int, latency: float) -> None:
    """Child process: ``n`` echo nodes over MQTT until stdin closes."""
    stop = asyncio.Event()
    tasks = []
    for i in range(n):
        dev = EchoDevice(latency, 4, name=f"echo#{i}")
        await dev.connect()
        t = MqttEdgeTransport(url, f"n{i}", heartbeat=1.0, max_concurrency=2)
        tasks.append(asyncio.create_task(t.serve(NodeService(dev, f"n{i}"), stop)))
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)


async def run_request(url: str, n: int, seconds: float) -> int:
    async with MqttCoordinator(url, timeout=10.0, max_inflight=2) as c:
        await c.wait_for_nodes(n, timeout=60)
        done = 0
        t_end = time.perf_counter() + seconds

        async def loop(node):
            nonlocal done
            while time.perf_counter() < t_end:
                await c.request(node, "apply", [X, TH])
                done += 1

        await asyncio.gather(*(loop(f"n{i}") for i in range(n) for _ in range(2)))
        return done


async def run_shared(url: str, n: int, seconds: float, replicas: int) -> tuple[int, list[int]]:
    """Closed loop like ``run_request`` (2 outstanding per node), but every reply goes to the group."""
    got = [0] * replicas
    pending: dict[str, asyncio.Future] = {}

    def handler(k):
        def on_reply(node, header, arrays):
            got[k] += 1
            fut = pending.pop(header["id"], None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        return on_reply

    reps = [SharedMqttCoordinator(url, group="bench", on_reply=handler(k), client_id=f"rep{k}")
            for k in range(replicas)]
    try:
        for r in reps:
            await r.start()
        await reps[0].wait_for_nodes(n, timeout=60)
        t_end = time.perf_counter() + seconds
        loop = asyncio.get_running_loop()
        seq = iter(range(10 ** 9))

        async def slot(node):
            while time.perf_counter() < t_end:
                rid = f"b{next(seq)}"
                fut = pending[rid] = loop.create_future()
                await reps[0].submit(node, "apply", [X, TH], id=rid)
                await asyncio.wait_for(fut, 10.0)

        await asyncio.gather(*(slot(f"n{i}") for i in range(n) for _ in range(2)))
        return sum(got), got
    finally:
        for r in reps:
            await r.close()


def mmm(xs, fmt=".0f"):
    return f"{min(xs):{fmt}} / {statistics.median(xs):{fmt}} / {max(xs):{fmt}}"


async def main(args) -> None:
    print(f"# MQTT capacity: {args.nodes} echo nodes ({args.latency * 1e3:.0f} ms), Mosquitto on loopback, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.repeats} interleaved repeats\n")
    configs = [("request", 0), ("shared x1", 1), ("shared x2", 2), ("shared x3", 3)]
    res: dict[str, dict[str, list[float]]] = {c: {"rps": [], "coord": [], "broker": []} for c, _ in configs}
    spread: dict[str, list[int]] = {}
    async with mosquitto_broker() as broker:
        child = subprocess.Popen([sys.executable, __file__, "--serve", broker.url, "--nodes", str(args.nodes),
                                  "--latency", str(args.latency)], stdin=subprocess.PIPE)
        try:
            for _ in range(args.repeats):
                for name, reps in configs:
                    c0, b0, t0 = time.process_time(), cpu_s(broker.process.pid), time.perf_counter()
                    if reps == 0:
                        done = await run_request(broker.url, args.nodes, args.seconds)
                    else:
                        done, spread[name] = await run_shared(broker.url, args.nodes, args.seconds, reps)
                    wall = time.perf_counter() - t0
                    c1, b1 = time.process_time(), cpu_s(broker.process.pid)
                    res[name]["rps"].append(done / args.seconds)
                    res[name]["coord"].append((c1 - c0) * 1e3 / max(done, 1))
                    res[name]["broker"].append((b1 - b0) * 1e3 / max(done, 1))
                    print(f"  {name}: {done} replies in {args.seconds:.0f} s ({wall:.1f} s with setup)", flush=True)
        finally:
            child.stdin.close()
            child.wait(30)
    print(f"\n{'config':>10} {'replies/s':>20} {'coord CPU ms/reply':>22} {'broker CPU ms/reply':>22} "
          f"{'coord replies/s/core':>22} {'broker replies/s/core':>22}")
    for name, _ in configs:
        r = res[name]
        cm, bm = statistics.median(r["coord"]), statistics.median(r["broker"])
        print(f"{name:>10} {mmm(r['rps']):>20} {mmm(r['coord'], '.3f'):>22} {mmm(r['broker'], '.3f'):>22} "
              f"{1000 / cm:>22.0f} {1000 / bm:>22.0f}")
    print("\nreplies per replica in the last repeat:", {k: v for k, v in spread.items()})
    print("(coordinator CPU covers every replica in this process; per replica divide by R)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--latency", type=float, default=0.002)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        asyncio.run(serve_nodes(a.serve, a.nodes, a.latency))
    else:
        asyncio.run(main(a))
