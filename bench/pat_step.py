"""PAT step benchmark: what the runtime adds on top of the device and the twin.

One PNN (``build_pnn`` on ``sim:plate``, digits-sized input, 2 physical layers, the nominal twin) is trained
on random batches three ways, as paired interleaved repeats (every repeat runs every path back to back, the
order rotated; ratios are taken within a repeat and reported as min / median / max):

* ``runtime``  ``PATMethod.step`` -- exactly what ``pat train`` runs per batch (``PNN.aforward`` through a
               :class:`LocalDevice`, cross-entropy, backward through the twin, Adam, projection of θ);
* ``hand``     a hand-written synchronous loop with the same simulator, twin, model and optimizer: for every
               physical layer and channel ``sim.measure`` is called directly and inserted with ``pat_apply``;
* ``remote``   ``PATMethod.step`` with the device behind ZeroMQ (a ``pat edge`` process with the same
               simulator) instead of in-process.

Reported (goals from issue 14):

* ``step / (device + twin)``: wall time of a runtime step over the time spent inside ``sim.measure`` and the
  twin in that step (goal <= 1.15);
* ``runtime / hand`` in CPU time of this process (goal <= 1.05): ``pat train`` vs the hand loop;
* ``remote / local`` wall time per step (goal <= 1.1).

    python bench/pat_step.py [--steps 20] [--repeats 5] [--batch 64] [--no-remote]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from pat_runtime.devices.local import LocalDevice  # noqa: E402
from pat_runtime.transport.remote import RemoteDevice  # noqa: E402
from pat_runtime.pat import PATFunction, PhysicalLayer, build_pnn, pat_apply  # noqa: E402
from pat_runtime.testing import free_port  # noqa: E402
from pat_runtime.testing.zmq import EdgeProcess  # noqa: E402
from pat_runtime.trainers import PATMethod, TrainConfig  # noqa: E402
from pat_runtime.trainers.common import make_adam  # noqa: E402
from pat_runtime.twins import make_twin  # noqa: E402
from pat_runtime.sims import make_sim  # noqa: E402

SIM = dict(unit=0, seed=0, noise=0.0)
DEVICE = "sim:plate?unit=0&seed=0&noise=0"


class Timed:
    """Wraps a callable and sums the wall time spent inside it."""

    def __init__(self, fn):
        self.fn, self.t = fn, 0.0

    def __call__(self, *a):
        t0 = time.perf_counter()
        try:
            return self.fn(*a)
        finally:
            self.t += time.perf_counter() - t0


def make_model(dev, twin, seed: int = 0):
    model = build_pnn(64, 10, twin, device=dev, spec=dev.spec, layers=2, seed=seed)
    return model


def hand_step(model, sim_measure, opt, x, y) -> float:
    """The same PAT step without the runtime: direct simulator calls, synchronous."""
    h = x
    for s in model.stages:
        if isinstance(s, PhysicalLayer):
            xs = s._split(h)
            th = s.theta.clamp(*s.spec.theta_range)
            outs = []
            for c in range(s.channels):
                xc = xs[:, c]
                yc = sim_measure(xc.detach().numpy(), th[c].detach().numpy())
                outs.append(pat_apply(xc, th[c], torch.from_numpy(yc), s.twin))
            h = torch.cat(outs, dim=1)
        else:
            h = s(h)
    loss = F.cross_entropy(h, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    model.project_()
    return float(loss.detach())


async def main(args) -> None:
    torch.set_num_threads(1)
    sim = make_sim("plate", **SIM)
    dev = await LocalDevice(sim).connect()
    twin = make_twin("nominal", dev.spec)
    backward = Timed(PATFunction.backward)      # the twin's share: its forward + VJP in the PAT backward
    PATFunction.backward = staticmethod(backward)
    measure = Timed(sim.measure)
    sim.measure = measure                                  # the runtime path calls it through LocalDevice
    rng = np.random.default_rng(0)
    batches = [(torch.from_numpy(rng.random((args.batch, 64), dtype=np.float32)),
                torch.from_numpy(rng.integers(0, 10, args.batch))) for _ in range(args.steps)]
    cfg = TrainConfig(batch=args.batch, lr=0.01)
    rt = PATMethod(make_model(dev, twin), cfg)
    hand_model = make_model(dev, twin)
    hand_opt = make_adam(list(hand_model.parameters()), 0.01)   # the same optimizer as the runtime's

    async def run_runtime(method):
        for x, y in batches:
            await method.step(x, y)

    async def run_hand():
        for x, y in batches:
            hand_step(hand_model, measure, hand_opt, x, y)

    paths = {"runtime": lambda: run_runtime(rt), "hand": run_hand}
    edge = coord = None
    if not args.no_remote:
        from pat_runtime.transport.zmq import ZmqCoordinator

        port = free_port()
        edge = EdgeProcess(DEVICE, f"tcp://127.0.0.1:{port}", "bench", 0.5).start()
        coord = await ZmqCoordinator(f"tcp://127.0.0.1:{port}", timeout=30).start()
        remote = await RemoteDevice(coord, "bench", timeout=30).connect(timeout=60)
        rt_remote = PATMethod(make_model(remote, twin), cfg)
        paths["remote"] = lambda: run_runtime(rt_remote)
    try:
        for fn in paths.values():   # warm up
            await fn()
        wall = {k: [] for k in paths}
        cpu = {k: [] for k in paths}
        inside, inside_hand = [], []
        names = list(paths)
        for r in range(args.repeats):
            for k in names[r % len(names):] + names[:r % len(names)]:
                measure.t = backward.t = 0.0
                w0, c0 = time.perf_counter(), time.process_time()
                await paths[k]()
                wall[k].append(time.perf_counter() - w0)
                cpu[k].append(time.process_time() - c0)
                if k == "runtime":
                    inside.append(measure.t + backward.t)
                elif k == "hand":
                    inside_hand.append(measure.t + backward.t)
    finally:
        if coord is not None:
            await coord.close()
        if edge is not None:
            await edge.terminate()

    def mmm(v):
        return f"{min(v):.3f} / {statistics.median(v):.3f} / {max(v):.3f}"

    n = args.steps
    print(f"PAT step on sim:plate, 2 physical layers x {rt.model.physical_layers[0].channels} channels, batch "
          f"{args.batch}, {n} steps per run, {args.repeats} paired interleaved repeats, load avg "
          f"{os.getloadavg()[0]:.1f}")
    for k in paths:
        print(f"  {k:8s} {1e3 * statistics.median(wall[k]) / n:8.2f} ms/step (median)  "
              f"{1e3 * statistics.median(cpu[k]) / n:8.2f} CPU ms/step")
    print(f"  step / (device + twin inside it)      {mmm([w / i for w, i in zip(wall['runtime'], inside)])}"
          f"   (goal <= 1.15)")
    print(f"  hand loop: step / (device + twin)     {mmm([w / i for w, i in zip(wall['hand'], inside_hand)])}"
          f"   (reference: the digital part of the step, same for both)")
    print(f"  runtime / hand loop, CPU time         {mmm([a / b for a, b in zip(cpu['runtime'], cpu['hand'])])}"
          f"   (goal <= 1.05)")
    if "remote" in paths:
        print(f"  remote ZeroMQ / local, wall per step  "
              f"{mmm([a / b for a, b in zip(wall['remote'], wall['runtime'])])}   (goal <= 1.1)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--no-remote", action="store_true")
    asyncio.run(main(ap.parse_args()))
