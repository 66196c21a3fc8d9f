"""Held-out NMSE of every twin kind against the noise floor, per simulator (default settings).

    .venv/bin/python bench/twin_quality.py [kind ...] [--samples N] [--epochs E] [--unit U] [--json PATH]

For each simulator: one data set collected with the defaults of ``pat twin --kind best`` (θ every 16 rows,
Latin hypercube, 2 repeats), every candidate twin fitted on the same train rows, chosen on validation, and
its NMSE on the test rows (never used to choose) printed next to the noise floor, with fit times.
Targets (issue 8): MLP <= 2x floor on plate, <= 3x on the others.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time

import torch

from pat_runtime.testing import sim_device
from pat_runtime.twins import fit_best_twin
from pat_runtime.sims import SIMS


async def one(kind: str, samples: int | None, epochs: int | None, unit: int, seed: int) -> dict:
    dev = await sim_device(kind, unit=unit, seed=seed)
    t0 = time.perf_counter()
    _, rep, data = await fit_best_twin(dev, n_samples=samples, epochs=epochs, seed=seed)
    return {"sim": kind, "floor": rep.noise_floor, "best": rep.kind, "samples": len(data),
            "seconds": time.perf_counter() - t0,
            **{k: {"test": c["nmse_test"], "val": c["nmse_val"], "s": c["seconds"]} for k, c in rep.candidates.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("kinds", nargs="*", default=list(SIMS))
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--unit", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    cols = ["nominal", "greybox", "residual", "mlp"]
    print(f"{'sim':12s} {'floor':>7s} " + " ".join(f"{c:>15s}" for c in cols) + f" {'best':>9s} {'total s':>8s}")
    for k in a.kinds:
        r = asyncio.run(one(k, a.samples, a.epochs, a.unit, a.seed))
        rows.append(r)
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append(f"{v['test']:.4f} ({v['test'] / r['floor']:4.1f}x)" if v else f"{'-':>15s}")
        print(f"{k:12s} {r['floor']:7.4f} " + " ".join(f"{c:>15s}" for c in cells)
              + f" {r['best']:>9s} {r['seconds']:8.0f}", flush=True)
    print("cells: held-out (test split) NMSE (ratio to the noise floor); best = lowest validation NMSE")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
