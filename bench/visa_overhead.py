"""What the PyVISA path costs on top of the plate physics: LocalDevice(sim:plate) vs visa:plate (pyvisa-py,
TCP loopback, simulated AWG + digitizer), same unit, same batches, paired and interleaved.

    python bench/visa_overhead.py [--batch 64] [--repeats 30]

Prints per-call latency (min / median / max, ms) of each path and the median ratio and difference.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import numpy as np

from pat_runtime.devices.factory import make_device
from pat_runtime.sims.scpi.plate import start_plate_bench, visa_uri


async def main(batch: int, repeats: int) -> None:
    bench, awg, dig = await start_plate_bench(unit=0, seed=0)
    local = make_device("sim:plate?unit=0&seed=0")
    visa = make_device(visa_uri(awg, dig))
    await local.connect()
    await visa.connect()
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch, 32)).astype(np.float32)
    th = rng.uniform(-1, 1, 32).astype(np.float32)
    t_local, t_visa = [], []
    for i in range(repeats + 2):
        pair = [(local, t_local), (visa, t_visa)]
        for dev, acc in (pair if i % 2 else pair[::-1]):
            t0 = time.perf_counter()
            await dev.apply(x, th)
            if i >= 2:   # warm-up
                acc.append((time.perf_counter() - t0) * 1e3)
    for name, ts in (("local sim:plate", t_local), ("visa:plate (pyvisa-py)", t_visa)):
        print(f"{name:<24} min {min(ts):7.2f}  median {statistics.median(ts):7.2f}  max {max(ts):7.2f} ms")
    ratio = statistics.median(v / loc for v, loc in zip(t_visa, t_local))
    diff = statistics.median(v - loc for v, loc in zip(t_visa, t_local))
    print(f"batch {batch}, {repeats} paired calls: visa/local median ratio {ratio:.2f}x, "
          f"median extra {diff:.2f} ms per call")
    await visa.close()
    await local.close()
    await awg.close()
    await dig.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=30)
    a = ap.parse_args()
    asyncio.run(main(a.batch, a.repeats))
