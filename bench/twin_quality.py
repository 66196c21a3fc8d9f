"""Held-out NMSE of every twin kind against the noise floor, per simulator (default settings).

    .venv/bin/python bench/twin_quality.py [sim ...] [--twins mlp,greybox] [--samples N] [--epochs E]
                                           [--unit U] [--seed S] [--direct] [--json PATH]

For each simulator: one data set collected with the defaults of ``pat twin --kind best`` (θ every 16 rows,
Latin hypercube, 2 repeats), every candidate twin (``--twins``, default all) fitted on the same train rows,
chosen on validation, and its NMSE on the test rows (never used to choose) printed next to the noise floor,
as a ratio to it, with the device calls and seconds of collection and of each fit.
``--direct`` measures the same design through ``Simulator.measure`` with one θ per row, many groups per call
(:func:`~pat_runtime.twins.collect.collect_rows`: the same x, θ and groups, statistically the same as one
device call per group for these stateless simulators), for simulators whose per-call cost dominates (the
circuit costs ~0.4 s per call under load: 8192 calls take an hour through the device).
Targets (issue 8): MLP <= 2x floor on plate, <= 3x on the others.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time

import torch

from pat_runtime.testing import sim_device
from pat_runtime.twins import BEST_CANDIDATES, DEFAULTS, collect, fit_best_twin
from pat_runtime.twins.collect import collect_rows
from pat_runtime.sims import SIMS

TARGET = {"plate": 2.0}          # others: 3.0


async def one(kind: str, twins: list[str], samples: int | None, epochs: int | None, unit: int, seed: int,
              direct: bool = False) -> dict:
    dev = await sim_device(kind, unit=unit, seed=seed)
    n = int(samples or max(DEFAULTS[k]["n_samples"] for k in twins))
    t0 = time.perf_counter()
    if direct:
        data = collect_rows(dev.sim.measure, dev.spec, n, repeats=2, seed=seed)
        calls = dev.sim.calls
    else:
        data = await collect(dev, n, repeats=2, seed=seed)
        calls = dev.calls
    collect_s = time.perf_counter() - t0
    _, rep, _ = await fit_best_twin(dev, kinds=twins, data=data, epochs=epochs, seed=seed)
    return {"sim": kind, "floor": rep.noise_floor, "best": rep.kind, "samples": len(data), "calls": calls,
            "collect_s": collect_s, "seconds": time.perf_counter() - t0,
            **{k: {"test": c["nmse_test"], "val": c["nmse_val"], "train": c["nmse_train"], "s": c["seconds"],
                   "epochs": c["epochs"]} for k, c in rep.candidates.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("kinds", nargs="*", default=list(SIMS))
    ap.add_argument("--twins", default=",".join(BEST_CANDIDATES), help="comma-separated twin kinds to fit")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--unit", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--direct", action="store_true", help="collect through Simulator.measure, many θ per call")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    twins = [t for t in a.twins.split(",") if t]
    rows = []
    print(f"{'sim':12s} {'floor':>7s} " + " ".join(f"{c:>15s}" for c in twins)
          + f" {'target':>6s} {'best':>9s} {'calls':>6s} {'collect s':>9s} {'fit s':>17s}")
    for k in a.kinds:
        r = asyncio.run(one(k, twins, a.samples, a.epochs, a.unit, a.seed, a.direct))
        rows.append(r)
        cells = []
        for c in twins:
            v = r.get(c)
            cells.append(f"{v['test']:.4f} ({v['test'] / r['floor']:4.1f}x)" if v else f"{'-':>15s}")
        fit_s = "/".join(f"{r[c]['s']:.0f}" for c in twins if c in r)
        print(f"{k:12s} {r['floor']:7.4f} " + " ".join(f"{c:>15s}" for c in cells)
              + f" {TARGET.get(k, 3.0):5.0f}x {r['best']:>9s} {r['calls']:6d} {r['collect_s']:9.0f} {fit_s:>17s}",
              flush=True)
    print("cells: held-out (test split) NMSE (ratio to the noise floor); best = lowest validation NMSE; "
          "target: MLP ratio (issue 8)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
