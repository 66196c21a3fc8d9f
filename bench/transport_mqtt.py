"""MQTT transport benchmark: runtime round trips vs. a raw aiomqtt request/echo through the same broker.

For one ``B x D`` float32 batch (default 256 x 784, 784 KiB) it measures, in the same run and against the
same Mosquitto broker (started here on a free loopback port):

* ``raw``     : an aiomqtt client publishes the payload (QoS 1, ``await client.publish``) to ``bench/req``; an
                echo client publishes each payload it gets back unchanged to ``bench/rep`` -- plain aiomqtt;
* ``raw-nowait``: the same, but publishing through paho without awaiting the PUBACK on both ends (what the
                runtime does) -- the floor any protocol on aiomqtt pays;
* ``runtime`` : ``MqttCoordinator.request(node, "ping", [x])`` served by ``MqttEdgeTransport`` + ``NodeService``
                (ping returns its arrays): wire pack/unpack, validation, id matching, idempotency cache.

Both payloads are the same size (the runtime adds a ~100-byte header). Each is run sequentially (window 1)
and pipelined (``--window`` requests in flight). The serving side runs in a child process (``--server
inproc`` puts it in this event loop). Repeats alternate raw and runtime and keep each one's best, so
background load hits both alike. Both processes ``gc.freeze()`` after start-up: with torch imported, a
full garbage collection takes ~0.2 s, which would otherwise land at random in either mode. Reported: round trips/s, samples/s (best run) and the ratio runtime/raw
(goal >= 0.9 at 8 KiB) as min/median/max of paired runs (raw and runtime back to back in each repeat), and
by CPU cost per round trip summed over the client, the serving process and the broker (from /proc, so it is
not inflated by other load on the machine). Every client socket has TCP_NODELAY and the broker runs with
``set_tcp_nodelay true`` (without them each round trip waits 40-90 ms for Nagle + delayed ACK).

    python bench/transport_mqtt.py [--n 200] [--window 4] [--repeats 5] [--sizes 256x784,8x256]
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import time

import aiomqtt
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pat_runtime.testing.mosquitto import mosquitto_broker  # noqa: E402
from pat_runtime.transport.mqtt import MqttCoordinator, MqttUrl  # noqa: E402
from pat_runtime.transport.mqtt.common import publish_nowait, set_nodelay  # noqa: E402

NODE = "bench-node"
RAW_REQ, RAW_REP, RAW_CTL = "bench/req", "bench/rep", "bench/ctl"


# ----- serving side --------------------------------------------------------------------------------------
async def raw_echo(url: str, stop: asyncio.Event | None = None) -> None:
    """Echo every payload on bench/req back to bench/rep (QoS 1); ``quit`` on bench/ctl ends it."""
    u = MqttUrl.parse(url)
    async with aiomqtt.Client(u.host, u.port, identifier="bench-echo") as client:
        set_nodelay(client)
        await client.subscribe([(RAW_REQ, 1), (RAW_REQ + "/nowait", 1), (RAW_CTL, 1)])
        await client.publish(RAW_CTL + "/ready", b"1", qos=1, retain=True)
        async for msg in client.messages:
            if msg.topic.value == RAW_CTL:
                break
            if msg.topic.value == RAW_REQ:
                await client.publish(RAW_REP, msg.payload, qos=1)
            else:
                publish_nowait(client, RAW_REP, msg.payload, qos=1)
            if stop is not None and stop.is_set():
                break


async def runtime_edge(url: str, stop: asyncio.Event | None = None, cache_size: int = 64) -> None:
    from pat_runtime.edge.service import NodeService
    from pat_runtime.testing import sim_device
    from pat_runtime.transport.mqtt import MqttEdgeTransport

    stop = stop or asyncio.Event()
    svc = NodeService(await sim_device("circuit"), NODE, cache_size=cache_size)

    async def quit_handler(header, arrays):
        stop.set()
        return {}, []

    svc.register("quit", quit_handler)
    await MqttEdgeTransport(url, NODE, heartbeat=0.5).serve(svc, stop)


async def serve_both(url: str, stop: asyncio.Event | None = None, cache_size: int = 64) -> None:
    await asyncio.gather(raw_echo(url, stop), runtime_edge(url, stop, cache_size))


# ----- client side ---------------------------------------------------------------------------------------
async def bench_raw(client: aiomqtt.Client, x: np.ndarray, n: int, window: int, nowait: bool = False) -> float:
    payload = x.tobytes()
    it = client.messages

    async def pub():
        if nowait:
            publish_nowait(client, RAW_REQ + "/nowait", payload, qos=1)
        else:
            await client.publish(RAW_REQ, payload, qos=1)

    t0 = time.perf_counter()
    sent = 0
    for _ in range(min(window, n)):
        await pub()
        sent += 1
    for _ in range(n):
        msg = await it.__anext__()
        assert len(msg.payload) == len(payload)
        if sent < n:
            await pub()
            sent += 1
    return time.perf_counter() - t0


async def bench_runtime(coord: MqttCoordinator, x: np.ndarray, n: int, window: int) -> float:
    sem = asyncio.Semaphore(window)

    async def one() -> None:
        async with sem:
            _, (y,) = await coord.request(NODE, "ping", [x])
            assert y.shape == x.shape

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return time.perf_counter() - t0


def _proc_cpu(pid: int) -> float:
    """utime + stime of process ``pid`` in seconds (Linux /proc; 0.0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class CpuMeter:
    """CPU seconds used by this process, the serving process and the broker (load-independent cost)."""

    def __init__(self, pids: list[int]):
        self.pids = pids

    def read(self) -> float:
        return time.process_time() + sum(_proc_cpu(p) for p in self.pids)


async def measure(fn, meter: CpuMeter) -> tuple[float, float]:
    c0 = meter.read()
    wall = await fn()
    return wall, meter.read() - c0


def _mmm(v: list[float]) -> str:
    return f"{min(v):.2f} / {statistics.median(v):.2f} / {max(v):.2f}"


async def main(args: argparse.Namespace) -> None:
    async with mosquitto_broker() as broker:
        url = broker.url
        server = None
        stop = asyncio.Event()
        if args.server == "process":
            server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", url,
                                       "--cache-size", str(args.cache_size)])
            local = None
        else:
            local = asyncio.create_task(serve_both(url, stop, args.cache_size))
        meter = CpuMeter([broker.process.pid] + ([server.pid] if server is not None else []))
        coord = await MqttCoordinator(url, max_inflight=max(8, args.window)).start()
        try:
            await coord.wait_for_node(NODE, timeout=60)
            async with aiomqtt.Client(broker.host, broker.port, identifier="bench-client") as client:
                set_nodelay(client)
                await client.subscribe([(RAW_REP, 1), (RAW_CTL + "/ready", 1)])
                async for _ in client.messages:  # the echo is subscribed once its retained "ready" is out
                    break
                print(f"MQTT round trips, {args.repeats} paired interleaved repeats, server={args.server}, "
                      f"TCP_NODELAY on every client + set_tcp_nodelay true, load avg {os.getloadavg()[0]:.1f}; "
                      f"ratio = raw time / runtime time within a repeat, min / median / max")
                for spec in args.sizes.split(","):
                    batch, dim = (int(v) for v in spec.split("x"))
                    x = np.random.default_rng(0).uniform(-1, 1, (batch, dim)).astype(np.float32)
                    n = args.n if x.nbytes > 64 * 1024 else args.n * 5
                    paths = {"raw": lambda w: bench_raw(client, x, n, w),
                             "raw-nowait": lambda w: bench_raw(client, x, n, w, nowait=True),
                             "runtime": lambda w: bench_runtime(coord, x, n, w)}
                    for fn in paths.values():
                        await fn(1)
                    gc.collect()
                    gc.freeze()  # torch & co. are imported: a full collection costs ~0.2 s, in either mode
                    for window in sorted({1, args.window}):
                        walls: dict[str, list[float]] = {k: [] for k in paths}
                        cpus: dict[str, list[float]] = {k: [] for k in paths}
                        names = list(paths)
                        for r in range(args.repeats):
                            for k in names[r % 3:] + names[:r % 3]:
                                wall, cpu = await measure(lambda: paths[k](window), meter)
                                walls[k].append(wall)
                                cpus[k].append(cpu)
                        for k in paths:
                            rate = n / statistics.median(walls[k])
                            cpu_ms = 1e3 * statistics.median(cpus[k]) / n
                            print(f"  {x.nbytes / 1024:6.0f} KiB window {window:2d} {k:10s}: {rate:7.1f} rt/s (median)  "
                                  f"{cpu_ms:5.2f} CPU ms/rt (3 processes)")
                        for base in ("raw", "raw-nowait"):
                            paired = [r / t for r, t in zip(walls[base], walls["runtime"])]
                            cpu_ratio = statistics.median(cpus[base]) / statistics.median(cpus["runtime"])
                            print(f"  {x.nbytes / 1024:6.0f} KiB window {window:2d} runtime / {base:10s}: {_mmm(paired)}"
                                  f"   by CPU {cpu_ratio:.2f}   (goal >= 0.9 at 8 KiB)")
                await client.publish(RAW_CTL, b"quit", qos=1)
            await coord.request(NODE, "quit", timeout=5)
        finally:
            await coord.close()
            if server is not None:
                try:
                    server.wait(10)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
            if local is not None:
                stop.set()
                await local


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=50, help="round trips per run (x5 for payloads <= 64 KiB)")
    p.add_argument("--window", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sizes", default="256x784,8x256", help="float32 batches BxD (default 784 KiB and 8 KiB)")
    p.add_argument("--server", choices=["process", "inproc"], default="process")
    p.add_argument("--cache-size", type=int, default=64,
                   help="NodeService reply cache (each cached ping reply holds its batch: 1024 x 784 KiB = 800 MB)")
    p.add_argument("--serve", metavar="URL", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.serve:
        import torch

        torch.set_num_threads(1)
        gc.freeze()
        asyncio.run(serve_both(a.serve, cache_size=a.cache_size))
    else:
        asyncio.run(main(a))
