"""Edge inference benchmark: a deployed PNN's latency and throughput vs. the device's own apply time.

A PNN (``build_pnn``, one physical layer with ``C`` channels on sim:plate, digits-sized input) is packaged as
an artifact and measured, in one run, four ways per batch size ``B``::

    device   the physical calls alone: C x ``device.apply(x[B, in_dim], θ_c)`` -- the floor of any inference
    local    ``Installed.predict`` in this process (normalise, digital stages, C device calls, readout)
    zmq      an INFER request to a ``pat edge --deploy-dir`` node process over ZeroMQ (verify-once, deploy, infer)
    mqtt     the same node reached through a Mosquitto broker (skipped if mosquitto is missing)

Each is timed ``--n`` times sequentially after a warm-up; reported: median latency (ms), samples/s and the
overhead ratio ``latency / device`` (1.0 = the runtime adds nothing on top of the hardware). The device in
the node process is an identical simulator (same unit, seed, noiseless) so its apply time matches ``device``.

    python bench/edge_inference.py [--batches 1,64,512] [--n 50] [--no-mqtt]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from pat_runtime.devices.local import LocalDevice  # noqa: E402
from pat_runtime.edge.deployed import Installed  # noqa: E402
from pat_runtime.artifact import dumps, loads, pnn_from_artifact, pnn_to_artifact  # noqa: E402
from pat_runtime.deployer import deploy_via, infer_via  # noqa: E402
from pat_runtime.pat import build_pnn  # noqa: E402
from pat_runtime.signing import generate_key  # noqa: E402
from pat_runtime.testing import free_port  # noqa: E402
from pat_runtime.testing.zmq import EdgeProcess  # noqa: E402
from pat_runtime.twins import make_twin  # noqa: E402
from pat_runtime.sims import make_sim  # noqa: E402

DEVICE = "sim:plate?unit=0&seed=0&noise=0"
SIM = dict(unit=0, seed=0, noise=0.0)


async def timed(fn, n: int) -> float:
    for _ in range(3):
        await fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


async def main(args) -> None:
    torch.set_num_threads(1)
    dev = LocalDevice(make_sim("plate", **SIM), threaded=False)
    await dev.connect()
    pnn = build_pnn(64, 10, make_twin("mlp", dev.spec), spec=dev.spec, layers=1, seed=0)
    home = tempfile.mkdtemp(prefix="pat_home-")  # a throwaway signing key, trusted by the edge processes below
    os.environ["PAT_HOME"] = home
    data = dumps(pnn_to_artifact(pnn, "bench"), generate_key(home)[2])
    inst = Installed(loads(data, spec=dev.spec), pnn_from_artifact(loads(data), dev), 0.0)
    C = pnn.config["channels"]
    thetas = [pnn.physical_layers[0].theta[c].detach().numpy() for c in range(C)]
    rng = np.random.default_rng(0)
    rows: dict[int, dict[str, float]] = {b: {} for b in args.batches}
    for b in args.batches:
        x = rng.random((b, 64), dtype=np.float32)
        xd = rng.uniform(-1, 1, (b, dev.spec.in_dim)).astype(np.float32)

        async def device_only():
            for th in thetas:
                await dev.apply(xd, th)

        rows[b]["device"] = await timed(device_only, args.n)
        rows[b]["local"] = await timed(lambda: inst.predict(x), args.n)

    from pat_runtime.transport.zmq import ZmqCoordinator

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        edge = EdgeProcess(DEVICE, f"tcp://127.0.0.1:{port}", "bench", 0.5, "--deploy-dir", f"{tmp}/z").start()
        try:
            async with ZmqCoordinator(f"tcp://127.0.0.1:{port}") as coord:
                await coord.wait_for_node("bench", timeout=60)
                await deploy_via(coord, ["bench"], data)
                for b in args.batches:
                    x = rng.random((b, 64), dtype=np.float32)
                    rows[b]["zmq"] = await timed(lambda: infer_via(coord, "bench", x), args.n)
        finally:
            await edge.terminate()
        if not args.no_mqtt:
            await bench_mqtt(tmp, data, rows, args, rng)

    print(f"PNN: plate, {C} channels x [B, {dev.spec.in_dim}] per inference; median of {args.n} sequential runs")
    print(f"{'B':>5} {'mode':>7} {'latency ms':>11} {'samples/s':>10} {'x device':>9}")
    for b, r in rows.items():
        for mode, t in r.items():
            print(f"{b:5d} {mode:>7} {t * 1e3:11.3f} {b / t:10.0f} {t / r['device']:9.2f}")
    for b, r in rows.items():
        if "mqtt" in r and "zmq" in r:
            goal = "   (goal at batch 1: within 5x)" if b == 1 else ""
            print(f"batch {b}: MQTT / ZeroMQ latency {r['mqtt'] / r['zmq']:.2f}x{goal}")
    print(f"load average {os.getloadavg()[0]:.1f}")


async def bench_mqtt(tmp, data, rows, args, rng) -> None:
    from pat_runtime.testing.mosquitto import find_mosquitto, mosquitto_broker
    from pat_runtime.transport.mqtt import MqttCoordinator

    if not find_mosquitto():
        print("mosquitto not found: MQTT skipped")
        return
    async with mosquitto_broker() as broker:
        edge = EdgeProcess(DEVICE, broker.url, "bench", 0.5, "--deploy-dir", f"{tmp}/m").start()
        try:
            async with MqttCoordinator(broker.url) as coord:
                await coord.wait_for_node("bench", timeout=60)
                await deploy_via(coord, ["bench"], data)
                for b in args.batches:
                    x = rng.random((b, 64), dtype=np.float32)
                    rows[b]["mqtt"] = await timed(lambda: infer_via(coord, "bench", x), args.n)
        finally:
            await edge.terminate()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")], default=[1, 64, 512])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--no-mqtt", action="store_true")
    asyncio.run(main(ap.parse_args()))
