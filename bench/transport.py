"""ZeroMQ transport benchmark: runtime round trips vs. a raw pyzmq ROUTER/DEALER echo of the same frames.

For one ``B x D`` float32 batch (default 256 x 784, 784 KiB) it measures, in the same run:

* ``raw``     : an asyncio pyzmq ROUTER sends ``[id, header, buffer]`` (copy=False) to a DEALER that echoes
                the frames back untouched -- the floor any protocol on ZeroMQ pays;
* ``runtime`` : ``ZmqCoordinator.request(node, "ping", [x])`` served by ``ZmqEdgeTransport`` +
                ``NodeService`` (ping returns its arrays), i.e. full encode / decode / validation /
                request-id matching / idempotency cache on both sides.

each sequentially (window 1) and pipelined (``--window`` requests in flight). The serving side runs in a
child process (``--server inproc`` puts it in the same event loop instead). Repeats alternate raw and runtime
and keep each one's best, so background load hits both alike. Reported: round trips/s, samples/s,
MB/s (payload bytes moved, both directions) and the ratio runtime/raw (goal >= 0.85).

    python bench/transport.py [--n 1000] [--window 8] [--repeats 3] [--server process|inproc]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

import numpy as np
import zmq
import zmq.asyncio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from runtime import wire  # noqa: E402
from runtime.testing import free_port  # noqa: E402

NODE = "bench-node"


# ----- serving side --------------------------------------------------------------------------------------
async def raw_echo(url: str, stop: asyncio.Event | None = None) -> None:
    """DEALER that echoes every multipart message back unchanged (zero-copy)."""
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, NODE.encode())
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(url)
    await sock.send_multipart([b"ready"])
    try:
        while stop is None or not stop.is_set():
            frames = await sock.recv_multipart(copy=False)
            if frames[0].bytes == b"quit":
                break
            await sock.send_multipart(frames, copy=False)
    finally:
        sock.close(0)
        ctx.term()


async def runtime_edge(url: str, stop: asyncio.Event | None = None) -> None:
    from edge.service import NodeService
    from runtime.testing import sim_device
    from runtime.transport.zmq import ZmqEdgeTransport

    stop = stop or asyncio.Event()
    dev = await sim_device("circuit")
    svc = NodeService(dev, NODE)

    async def quit_handler(header, arrays):
        stop.set()
        return {}, []

    svc.register("quit", quit_handler)
    await ZmqEdgeTransport(url, NODE, heartbeat=0.5).serve(svc, stop)


# ----- client side ---------------------------------------------------------------------------------------
async def bench_raw(sock, x: np.ndarray, n: int, window: int) -> float:
    ident = NODE.encode()
    hb = wire.encode(wire.make_header("ping", node=NODE), [x])[0]
    msg = [ident, hb, memoryview(x).cast("B")]
    t0 = time.perf_counter()
    for _ in range(min(window, n)):
        await sock.send_multipart(msg, copy=False)
    sent = min(window, n)
    for _ in range(n):
        frames = await sock.recv_multipart(copy=False)
        y = np.frombuffer(frames[2].buffer, dtype=np.float32)  # what a client must do at least
        assert y.size == x.size
        if sent < n:
            await sock.send_multipart(msg, copy=False)
            sent += 1
    return time.perf_counter() - t0


async def bench_runtime(coord, x: np.ndarray, n: int, window: int) -> float:
    async def worker(k: int) -> None:
        for _ in range(k):
            _, (y,) = await coord.request(NODE, "ping", [x])
            assert y.shape == x.shape

    per = [n // window + (1 if i < n % window else 0) for i in range(window)]
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in per))
    return time.perf_counter() - t0


async def main(args) -> list[dict]:
    from runtime.transport.zmq import ZmqCoordinator

    x = np.random.default_rng(0).standard_normal((args.batch, args.dim)).astype(np.float32)
    here = os.path.abspath(__file__)

    # raw pair
    raw_url = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.asyncio.Context()
    raw = ctx.socket(zmq.ROUTER)
    raw.setsockopt(zmq.ROUTER_MANDATORY, 1)
    raw.setsockopt(zmq.LINGER, 0)
    raw.bind(raw_url)
    # runtime pair
    rt_url = f"tcp://127.0.0.1:{free_port()}"
    coord = await ZmqCoordinator(rt_url, max_inflight=max(args.window, 1), timeout=30.0).start()

    children: list[subprocess.Popen] = []
    tasks: list[asyncio.Task] = []
    stop = asyncio.Event()
    if args.server == "process":
        for role, url in (("raw", raw_url), ("runtime", rt_url)):
            children.append(subprocess.Popen([sys.executable, here, "--serve", role, "--url", url]))
    else:
        tasks = [asyncio.create_task(raw_echo(raw_url, stop)), asyncio.create_task(runtime_edge(rt_url, stop))]
    try:
        await asyncio.wait_for(raw.recv_multipart(), 60)  # the echo's "ready"
        await coord.wait_for_node(NODE, timeout=60)
        # warm up both paths
        await bench_raw(raw, x, 50, 1)
        await bench_runtime(coord, x, 50, 1)
        rows = []
        for window in (1, args.window):
            best = {"raw": float("inf"), "runtime": float("inf")}
            for _ in range(args.repeats):
                best["raw"] = min(best["raw"], await bench_raw(raw, x, args.n, window))
                best["runtime"] = min(best["runtime"], await bench_runtime(coord, x, args.n, window))
            for name in ("raw", "runtime"):
                rt_s = args.n / best[name]
                rows.append({"path": name, "window": window, "rt_s": rt_s, "samples_s": rt_s * args.batch,
                             "mb_s": rt_s * 2 * x.nbytes / 1e6, "ratio": best["raw"] / best[name]})
        stats = coord.stats.snapshot()
    finally:
        if args.server == "process":
            with_quit = raw.send_multipart([NODE.encode(), b"quit"])
            await asyncio.gather(with_quit, return_exceptions=True)
            try:
                await coord.request(NODE, "quit", timeout=5, retries=0)
            except Exception:
                pass
            for c in children:
                try:
                    c.wait(10)
                except subprocess.TimeoutExpired:
                    c.kill()
        else:
            stop.set()
            await raw.send_multipart([NODE.encode(), b"quit"])
            await asyncio.gather(*tasks, return_exceptions=True)
        await coord.close()
        raw.close(0)
        ctx.term()
    print(f"\nZeroMQ transport, batch {args.batch}x{args.dim} float32 ({x.nbytes / 1e6:.2f} MB each way), "
          f"n={args.n} round trips, best of {args.repeats}, server={args.server}")
    print(f"{'path':<9}{'window':>7}{'rt/s':>10}{'samples/s':>12}{'MB/s':>10}{'runtime/raw':>13}")
    for r in rows:
        ratio = f"{r['ratio']:.3f}" if r["path"] == "runtime" else ""
        print(f"{r['path']:<9}{r['window']:>7}{r['rt_s']:>10.0f}{r['samples_s']:>12.0f}{r['mb_s']:>10.0f}{ratio:>13}")
    print(f"coordinator latency p50 {stats['latency_p50_ms']:.2f} ms, p95 {stats['latency_p95_ms']:.2f} ms, "
          f"retries {stats['retries']}, timeouts {stats['timeouts']}")
    return rows


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="round trips per measurement")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dim", type=int, default=784)
    ap.add_argument("--window", type=int, default=8, help="requests in flight when pipelining")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--server", choices=("process", "inproc"), default="process")
    ap.add_argument("--serve", choices=("raw", "runtime"), help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(raw_echo(args.url) if args.serve == "raw" else runtime_edge(args.url))
        return
    asyncio.run(main(args))


if __name__ == "__main__":
    cli()
