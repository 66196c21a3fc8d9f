"""MQTT transport benchmark: runtime round trips vs. a raw aiomqtt request/echo through the same broker.

For one ``B x D`` float32 batch (default 256 x 784, 784 KiB) it measures, in the same run and against the
same Mosquitto broker (started here on a free loopback port):

* ``raw``     : an aiomqtt client publishes the payload (QoS 1) to ``bench/req``; an echo client publishes each
                payload it gets back unchanged to ``bench/rep`` -- the floor any protocol on aiomqtt pays;
* ``runtime`` : ``MqttCoordinator.request(node, "ping", [x])`` served by ``MqttEdgeTransport`` + ``NodeService``
                (ping returns its arrays): wire pack/unpack, validation, id matching, idempotency cache.

Both payloads are the same size (the runtime adds a ~100-byte header). Each is run sequentially (window 1)
and pipelined (``--window`` requests in flight). The serving side runs in a child process (``--server
inproc`` puts it in this event loop). Repeats alternate raw and runtime and keep each one's best, so
background load hits both alike. Both processes ``gc.freeze()`` after start-up: with torch imported, a
full garbage collection takes ~0.2 s, which would otherwise land at random in either mode. Reported: round trips/s, samples/s (best run) and the ratio runtime/raw
(goal >= 0.85) three ways: best vs best, the median of paired runs, and by CPU cost per round trip summed over
the client, the serving process and the broker (from /proc, so it is not inflated by other load on the machine).

    python bench/transport_mqtt.py [--n 50] [--window 4] [--repeats 5] [--server process|inproc] [--cache-size 64]
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

from runtime.testing.mosquitto import mosquitto_broker  # noqa: E402
from runtime.transport.mqtt import MqttCoordinator, MqttUrl  # noqa: E402

NODE = "bench-node"
RAW_REQ, RAW_REP, RAW_CTL = "bench/req", "bench/rep", "bench/ctl"


# ----- serving side --------------------------------------------------------------------------------------
async def raw_echo(url: str, stop: asyncio.Event | None = None) -> None:
    """Echo every payload on bench/req back to bench/rep (QoS 1); ``quit`` on bench/ctl ends it."""
    u = MqttUrl.parse(url)
    async with aiomqtt.Client(u.host, u.port, identifier="bench-echo") as client:
        await client.subscribe([(RAW_REQ, 1), (RAW_CTL, 1)])
        await client.publish(RAW_CTL + "/ready", b"1", qos=1, retain=True)
        async for msg in client.messages:
            if msg.topic.value == RAW_CTL:
                break
            await client.publish(RAW_REP, msg.payload, qos=1)
            if stop is not None and stop.is_set():
                break


async def runtime_edge(url: str, stop: asyncio.Event | None = None, cache_size: int = 64) -> None:
    from edge.service import NodeService
    from runtime.testing import sim_device
    from runtime.transport.mqtt import MqttEdgeTransport

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
async def bench_raw(client: aiomqtt.Client, x: np.ndarray, n: int, window: int) -> float:
    payload = x.tobytes()
    it = client.messages
    t0 = time.perf_counter()
    sent = 0
    for _ in range(min(window, n)):
        await client.publish(RAW_REQ, payload, qos=1)
        sent += 1
    for _ in range(n):
        msg = await it.__anext__()
        assert len(msg.payload) == len(payload)
        if sent < n:
            await client.publish(RAW_REQ, payload, qos=1)
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


async def main(args: argparse.Namespace) -> None:
    x = np.random.default_rng(0).uniform(-1, 1, (args.batch, args.dim)).astype(np.float32)
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
                await client.subscribe([(RAW_REP, 1), (RAW_CTL + "/ready", 1)])
                async for _ in client.messages:  # the echo is subscribed once its retained "ready" is out
                    break
                await bench_raw(client, x, 5, 1)
                await bench_runtime(coord, x, 5, 1)
                gc.collect()
                gc.freeze()  # torch & co. are imported: a full collection of them costs ~0.2 s, in either mode
                print(f"MQTT round trips of a {args.batch}x{args.dim} float32 batch ({x.nbytes / 1024:.0f} KiB), "
                      f"n={args.n} x {args.repeats} alternating runs, server={args.server}, "
                      f"NodeService cache_size={args.cache_size}, load avg {os.getloadavg()[0]:.1f}")
                for window in sorted({1, args.window}):
                    walls: dict[str, list[float]] = {"raw": [], "runtime": []}
                    cpus: dict[str, list[float]] = {"raw": [], "runtime": []}
                    for _ in range(args.repeats):
                        for k, fn in (("raw", lambda: bench_raw(client, x, args.n, window)),
                                      ("runtime", lambda: bench_runtime(coord, x, args.n, window))):
                            wall, cpu = await measure(fn, meter)
                            walls[k].append(wall)
                            cpus[k].append(cpu)
                    rate = {k: args.n / min(v) for k, v in walls.items()}
                    cpu_ms = {k: 1e3 * statistics.median(v) / args.n for k, v in cpus.items()}
                    for k in ("raw", "runtime"):
                        print(f"  window {window:2d} {k:8s}: {rate[k]:7.1f} round trips/s  {rate[k] * args.batch:8.0f} "
                              f"samples/s  {rate[k] * 2 * x.nbytes / 1e6:6.1f} MB/s  (best run)   "
                              f"{cpu_ms[k]:5.2f} CPU ms per round trip (all 3 processes, median)")
                    paired = statistics.median(r / t for r, t in zip(walls["raw"], walls["runtime"]))
                    print(f"  window {window:2d} ratio runtime/raw: {rate['runtime'] / rate['raw']:.3f} best vs best, "
                          f"{paired:.3f} median of paired runs, {cpu_ms['raw'] / cpu_ms['runtime']:.3f} by CPU cost "
                          f"(goal >= 0.85)")
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
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--window", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dim", type=int, default=784)
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
