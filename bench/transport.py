"""ZeroMQ transport benchmark: runtime round trips vs. a raw pyzmq ROUTER/DEALER echo of the same frames.

For each ``B x D`` float32 batch (default 256 x 784 = 784 KiB and 8 x 256 = 8 KiB) it measures, in the same run:

* ``raw``      : blocking pyzmq: a ROUTER sends ``[id, header, buffer]`` (copy=False) to a DEALER that
                 echoes the frames back untouched, both in plain blocking loops -- the floor any protocol
                 on ZeroMQ pays (the baseline of the ratio);
* ``raw-aio``  : the same echo with ``zmq.asyncio`` sockets on both ends (what a plain asyncio app pays);
* ``runtime``  : ``ZmqCoordinator.request(node, "ping", [x])`` served by ``ZmqEdgeTransport`` +
                 ``NodeService`` (ping returns its arrays): header encode / decode / validation, request-id
                 matching, per-node in-flight cap, idempotency cache, heartbeats -- the whole runtime path,
                 every request its own ZeroMQ message (``ZmqCoordinator(bundle=False)``);
* ``bundled``  : the same runtime with bundling on (the default): requests queued for the node in one
                 event-loop iteration go out as one ZeroMQ message and come back as one reply bundle
                 (same edge process, no added delay; see ``ZmqCoordinator``).

each sequentially (window 1) and pipelined (``--window`` requests in flight). Serving sides run in child
processes. Repeats are paired and interleaved: every repeat runs every path back to back (order rotated),
and the ratio raw/path is taken within a repeat, so background load hits both sides of a ratio alike.
Reported: median round trips/s, the ratio runtime/raw as min/median/max over the repeats (goal >= 0.85 at
window 8, >= 0.6 at window 1), and the CPU time per round trip of the client and the serving process (all
threads, incl. ZeroMQ's I/O thread) -- the cost that load on the machine cannot blur.

    python bench/transport.py [--n 1000] [--window 8] [--repeats 5] [--sizes 256x784,8x256]
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

from pat_runtime import wire  # noqa: E402
from pat_runtime.testing import free_port  # noqa: E402

NODE = "bench-node"


# ----- serving side (child processes) -------------------------------------------------------------------
def raw_echo_blocking(url: str) -> None:
    """Blocking DEALER that echoes every multipart message back unchanged (zero-copy)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, NODE.encode())
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(url)
    sock.send(b"ready")
    while True:
        frames = sock.recv_multipart(copy=False)
        if frames[0].bytes == b"quit":
            break
        sock.send_multipart(frames, copy=False)
    sock.close(0)
    ctx.term()


async def raw_echo_asyncio(url: str) -> None:
    """The same echo with zmq.asyncio."""
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, NODE.encode())
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(url)
    await sock.send(b"ready")
    while True:
        frames = await sock.recv_multipart(copy=False)
        if frames[0].bytes == b"quit":
            break
        await sock.send_multipart(frames, copy=False)
    sock.close(0)
    ctx.term()


async def runtime_edge(url: str) -> None:
    from pat_runtime.edge.service import NodeService
    from pat_runtime.testing import sim_device
    from pat_runtime.transport.zmq import ZmqEdgeTransport

    stop = asyncio.Event()
    dev = await sim_device("circuit")
    svc = NodeService(dev, NODE)

    async def quit_handler(header, arrays):
        stop.set()
        return {}, []

    svc.register("quit", quit_handler)
    await ZmqEdgeTransport(url, NODE, heartbeat=0.5).serve(svc, stop)


# ----- client side ---------------------------------------------------------------------------------------
def _router(ctx, url):
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(url)
    return sock


def _raw_msg(x):
    return [NODE.encode(), wire.encode(wire.make_header("ping", node=NODE), [x])[0], memoryview(x).cast("B")]


def bench_raw_blocking(sock, x: np.ndarray, n: int, window: int) -> float:
    msg = _raw_msg(x)
    t0 = time.perf_counter()
    sent = min(window, n)
    for _ in range(sent):
        sock.send_multipart(msg, copy=False)
    for _ in range(n):
        frames = sock.recv_multipart(copy=False)
        y = np.frombuffer(frames[2].buffer, dtype=np.float32)  # what any client does at least
        assert y.size == x.size
        if sent < n:
            sock.send_multipart(msg, copy=False)
            sent += 1
    return time.perf_counter() - t0


async def bench_raw_asyncio(sock, x: np.ndarray, n: int, window: int) -> float:
    msg = _raw_msg(x)
    t0 = time.perf_counter()
    sent = min(window, n)
    for _ in range(sent):
        await sock.send_multipart(msg, copy=False)
    for _ in range(n):
        frames = await sock.recv_multipart(copy=False)
        y = np.frombuffer(frames[2].buffer, dtype=np.float32)
        assert y.size == x.size
        if sent < n:
            await sock.send_multipart(msg, copy=False)
            sent += 1
    return time.perf_counter() - t0


async def bench_runtime(coord, x: np.ndarray, n: int, window: int, bundle: bool = False) -> float:
    coord.bundle = bundle  # the same coordinator and edge process for both runtime rows
    async def worker(k: int) -> None:
        for _ in range(k):
            _, (y,) = await coord.request(NODE, "ping", [x])
            assert y.shape == x.shape

    per = [n // window + (1 if i < n % window else 0) for i in range(window)]
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in per))
    return time.perf_counter() - t0


def _proc_cpu(pid: int) -> float:
    """CPU seconds used so far by all threads of process ``pid`` (Linux schedstat; nan elsewhere)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except OSError:
        return float("nan")
    return total / 1e9


def _sizes(spec: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in part.split("x")) for part in spec.split(",")]


def _mmm(values: list[float]) -> tuple[float, float, float]:
    return float(np.min(values)), float(np.median(values)), float(np.max(values))


async def main(args) -> list[dict]:
    from pat_runtime.transport.zmq import ZmqCoordinator

    here = os.path.abspath(__file__)
    urls = {k: f"tcp://127.0.0.1:{free_port()}" for k in ("raw", "raw-aio", "runtime")}
    sctx, actx = zmq.Context(), zmq.asyncio.Context()
    raw, raw_aio = _router(sctx, urls["raw"]), _router(actx, urls["raw-aio"])
    coord = await ZmqCoordinator(urls["runtime"], max_inflight=max(args.window, 1), timeout=30.0).start()
    children = [subprocess.Popen([sys.executable, here, "--serve", k, "--url", u]) for k, u in urls.items()]
    rows = []
    try:
        await asyncio.to_thread(raw.recv_multipart)  # the echoes' "ready"
        await asyncio.wait_for(raw_aio.recv_multipart(), 60)
        await coord.wait_for_node(NODE, timeout=60)
        servers = dict(zip(urls, children))
        servers["bundled"] = servers["runtime"]
        for batch, dim in _sizes(args.sizes):
            x = np.random.default_rng(0).standard_normal((batch, dim)).astype(np.float32)
            runs = {"raw": lambda n, w: asyncio.to_thread(bench_raw_blocking, raw, x, n, w),
                    "raw-aio": lambda n, w: bench_raw_asyncio(raw_aio, x, n, w),
                    "runtime": lambda n, w: bench_runtime(coord, x, n, w),
                    "bundled": lambda n, w: bench_runtime(coord, x, n, w, bundle=True)}
            n = args.n if x.nbytes > 64 * 1024 else args.n * 5
            for run in runs.values():  # warm up
                await run(50, 1)
            for window in (1, args.window):
                times = {k: [] for k in runs}
                cpu = {k: [0.0, 0.0] for k in runs}  # client, server CPU seconds over all repeats
                names = list(runs)
                for r in range(args.repeats):  # paired, interleaved: each repeat runs every path, order rotated
                    for name in names[r % len(names):] + names[:r % len(names)]:
                        c0, s0 = time.process_time(), _proc_cpu(servers[name].pid)
                        times[name].append(await runs[name](n, window))
                        cpu[name][0] += time.process_time() - c0
                        cpu[name][1] += _proc_cpu(servers[name].pid) - s0
                for name in runs:
                    per = 1e6 / (n * args.repeats)
                    ratios = [tr / tp for tr, tp in zip(times["raw"], times[name])]
                    rows.append({"path": name, "size": f"{batch}x{dim}", "kib": x.nbytes / 1024, "window": window,
                                 "rt_s": n / float(np.median(times[name])), "ratio": _mmm(ratios),
                                 "cpu_client_us": cpu[name][0] * per, "cpu_server_us": cpu[name][1] * per})
        stats = coord.stats.snapshot()
    finally:
        raw.send_multipart([NODE.encode(), b"quit"])
        await raw_aio.send_multipart([NODE.encode(), b"quit"])
        try:
            await coord.request(NODE, "quit", timeout=5, retries=0)
        except Exception:
            pass
        for c in children:
            try:
                c.wait(10)
            except subprocess.TimeoutExpired:
                c.kill()
        await coord.close()
        raw.close(0)
        raw_aio.close(0)
        sctx.term()
        actx.term()
    print(f"\nZeroMQ transport, float32 batches, {args.repeats} paired interleaved repeats; ratio = raw time / path "
          f"time in the same repeat (raw = blocking pyzmq echo), min/median/max; goal runtime >= 0.85 at window "
          f"{args.window}, >= 0.6 at window 1")
    print(f"{'path':<9}{'size':>10}{'KiB':>7}{'window':>7}{'rt/s(med)':>11}{'ratio min/med/max':>22}"
          f"{'CPU us/rt client':>18}{'server':>8}")
    for r in rows:
        ratio = "{:.2f} / {:.2f} / {:.2f}".format(*r["ratio"]) if r["path"] != "raw" else "1"
        print(f"{r['path']:<9}{r['size']:>10}{r['kib']:>7.0f}{r['window']:>7}{r['rt_s']:>11.0f}{ratio:>22}"
              f"{r['cpu_client_us']:>18.0f}{r['cpu_server_us']:>8.0f}")
    print(f"runtime latency p50 {stats['latency_p50_ms']:.2f} ms, p95 {stats['latency_p95_ms']:.2f} ms, "
          f"retries {stats['retries']}, timeouts {stats['timeouts']}; bundled rows: {stats['bundled']} requests "
          f"in {stats['bundles']} bundles (the rest went alone: a bundle of one is a plain message)")
    return rows


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="round trips per measurement (x5 for payloads <= 64 KiB)")
    ap.add_argument("--sizes", default="256x784,8x256", help="float32 batches BxD, comma-separated "
                                                             "(default: 784 KiB and 8 KiB)")
    ap.add_argument("--window", type=int, default=8, help="requests in flight when pipelining")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--serve", choices=("raw", "raw-aio", "runtime"), help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve == "raw":
        raw_echo_blocking(args.url)
    elif args.serve:
        asyncio.run(raw_echo_asyncio(args.url) if args.serve == "raw-aio" else runtime_edge(args.url))
    else:
        asyncio.run(main(args))


if __name__ == "__main__":
    cli()
