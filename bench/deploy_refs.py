"""Per-unit reference models for bench/deploy_calibration.py: trained once, cached, never reused stale.

A per-unit reference is ``pat train --device sim:KIND?unit=N --method pat --twin nominal`` (digits,
2 physical layers, the run's validation-selected model), measured on the task's test split on its unit.
It is the expensive part of the bench (one full PAT run per unit), so results are cached, one JSON file per
reference (plus the model, ``.pnn``), under a key that includes a **simulator fingerprint**: a hash of the
unit's construction options, its effect strengths and the outputs of its true forward and of its datasheet
model on a fixed probe input. Any change of the simulators (effect strengths, new effects, per-unit
variation, defaults) changes the fingerprint, so a cache made before it is never read again. ``RECIPE``
names the training recipe; bump it when the reference training changes.

Each cached result holds the per-sample correctness on the test split, so the bench can give the paired
standard error of every gap (same test samples for the reference and the deployed model).
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pat_runtime.devices.local import LocalDevice
from pat_runtime.artifact import load_artifact, pnn_from_artifact, pnn_to_artifact, save_artifact
from pat_runtime.trainers.run import ExperimentConfig, run_experiment
import pat_runtime.sims.effects as sims_effects
from pat_runtime.sims import make_sim

_SIMS_DIR = Path(sims_effects.__file__).resolve().parent

#: the reference training recipe (bump when it changes: cached references of another recipe are not read)
RECIPE = "pat-nominal-valselect-v2"


def unit_device(kind: str, unit: int) -> LocalDevice:
    return LocalDevice(make_sim(kind, unit=unit), name=f"{kind}#{unit}", threaded=False)


def _code_digest(path: Path) -> str:
    """Hash of a module's code without its imports and docstrings (an import rename, such as issue 10's
    ``pat_runtime`` namespace, or a reworded docstring does not change it; any change of code or constants does)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        keep = [n for n in body if not isinstance(n, (ast.Import, ast.ImportFrom))]
        if keep and isinstance(keep[0], ast.Expr) and isinstance(getattr(keep[0], "value", None), ast.Constant) \
                and isinstance(keep[0].value.value, str):
            keep = keep[1:]
        node.body = keep or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def sim_fingerprint(kind: str, unit: int, **options: Any) -> str:
    """A short hash of what unit ``unit`` of ``sim:KIND`` (with ``options``) *is*: its construction options,
    effect strengths, noise, variation and hidden parameters, and the code of its simulator classes' modules
    and of the effects module (a change of the true forward or of a default strength changes the hash).
    Everything hashed is computed exactly (no float sums), so the hash does not depend on thread counts."""
    sim = make_sim(kind, unit=unit, **options)
    mods = {inspect.getmodule(c) for c in type(sim).__mro__} | {sims_effects}
    files = sorted(Path(m.__file__).resolve() for m in mods if m is not None and getattr(m, "__file__", None))
    src = [(f.name, _code_digest(f)) for f in files if f.is_relative_to(_SIMS_DIR)]
    desc = {"kind": kind, "unit": unit, "class": type(sim).__qualname__, "options": repr(sorted(sim.options.items())),
            "effects": sorted((k, round(v, 9)) for k, v in sim.effect.items()), "variation": sim.variation,
            "noise": [sim.noise, sim.noise_mult], "bits": [sim.dac_bits, sim.adc_bits],
            "spec": sim.spec.to_dict(), "code": src,
            "hidden": {k: np.asarray(v, np.float32).round(6).tolist() for k, v in sorted(sim.hidden_params.items())}}
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:12]


#: test-set passes averaged per accuracy (a unit's measurement noise moves one pass by about a point)
REPEATS = 3


async def test_correct(model, dev, x: np.ndarray, y: np.ndarray, repeats: int = REPEATS) -> np.ndarray:
    """Per-sample correctness of ``model`` measured on ``dev``, averaged over ``repeats`` physical passes
    (values in [0, 1]; their mean is the accuracy)."""
    model.attach(device=dev)
    model.eval()
    xt = torch.from_numpy(np.asarray(x, np.float32))
    hits = np.zeros(len(x))
    for _ in range(repeats):
        with torch.no_grad():
            logits = await model.aforward(xt)
        hits += logits.argmax(1).numpy() == np.asarray(y)
    return hits / repeats


class ReferenceCache:
    """Per-unit PAT references, one JSON (+ ``.pnn``) per ``kind/unit/epochs/seed/recipe/fingerprint``.

    Several processes may fill the same folder (e.g. one per device kind); a result is written atomically
    and read by whoever needs it."""

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) if folder else None
        self._fp: dict[tuple[str, int], str] = {}

    def key(self, kind: str, unit: int, epochs: int, seed: int) -> str:
        if (kind, unit) not in self._fp:
            self._fp[(kind, unit)] = sim_fingerprint(kind, unit)
        return f"{kind}-u{unit}-e{epochs}-s{seed}-{RECIPE}-{self._fp[(kind, unit)]}"

    def _path(self, key: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{key}.json"

    def lookup(self, kind: str, unit: int, epochs: int, seed: int) -> dict[str, Any] | None:
        p = self._path(self.key(kind, unit, epochs, seed))
        return json.loads(p.read_text()) if p is not None and p.exists() else None

    async def remeasure(self, r: dict[str, Any], task) -> dict[str, Any]:
        """Re-measure a cached reference's test accuracy with ``REPEATS`` passes (if it has fewer)."""
        if r.get("repeats") == REPEATS or self.folder is None:
            return r
        dev = unit_device(r["kind"], r["unit"])
        await dev.connect()
        model = self.model(r["kind"], r["unit"], r["epochs"], r["seed"], dev).set_concurrent(False)
        correct = await test_correct(model, dev, task.x_test, task.y_test)
        r.update(correct=correct.tolist(), test_acc=float(correct.mean()), repeats=REPEATS)
        self._write(r)
        return r

    def _write(self, r: dict[str, Any]) -> None:
        tmp = self.folder / f"{r['key']}.json.tmp"
        tmp.write_text(json.dumps(r))
        tmp.replace(self._path(r["key"]))

    async def get(self, kind: str, unit: int, task, epochs: int, seed: int) -> dict[str, Any]:
        """The cached reference, or train it now (and cache it)."""
        hit = self.lookup(kind, unit, epochs, seed)
        if hit is not None:
            return await self.remeasure(hit, task)
        key = self.key(kind, unit, epochs, seed)
        t0 = time.perf_counter()
        cfg = ExperimentConfig(device=f"sim:{kind}?unit={unit}", task="digits", method="pat", twin="nominal",
                               epochs=epochs, layers=2, seed=seed, eval_test="final")
        dev = unit_device(kind, unit)
        res = await run_experiment(cfg, task=task, device=dev)
        calls = dev.calls
        correct = await test_correct(res.model.set_concurrent(False), dev, task.x_test, task.y_test)
        out = {"key": key, "kind": kind, "unit": unit, "epochs": epochs, "seed": seed, "recipe": RECIPE,
               "test_acc": float(correct.mean()), "test_acc_run": res.summary.get("test_acc"),
               "val_acc": res.summary.get("val_acc"), "best_epoch": res.summary.get("best_epoch"),
               "correct": correct.tolist(), "repeats": REPEATS, "train_calls": calls,
               "seconds": time.perf_counter() - t0, "command": cfg.command()}
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            save_artifact(self.folder / f"{key}.pnn", pnn_to_artifact(res.model, f"ref-{kind}-{unit}",
                                                                       metadata={"reference": key}))
            self._write(out)
        return out

    def model(self, kind: str, unit: int, epochs: int, seed: int, device=None):
        """The cached reference model (None if not cached)."""
        if self.folder is None:
            return None
        p = self.folder / f"{self.key(kind, unit, epochs, seed)}.pnn"
        return pnn_from_artifact(load_artifact(p), device) if p.exists() else None


def paired_gap(ref: np.ndarray, ours: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Gap ``mean(ref) - mean(ours)`` on the same test samples, with its paired standard error (analytic:
    ``sqrt((d01 + d10 - (d10 - d01)^2) / n)`` over discordant rates) and a bootstrap 90 % interval."""
    ref, ours = np.asarray(ref, float), np.asarray(ours, float)
    d = ref - ours
    n = len(d)
    se = float(d.std(ddof=1) / np.sqrt(n))
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, n, (n_boot, n))].mean(1)
    return {"gap": float(d.mean()), "se": se, "lo90": float(np.quantile(boots, 0.05)),
            "hi90": float(np.quantile(boots, 0.95))}


def combine_references(refs: list[dict[str, Any]]) -> dict[str, Any]:
    """One per-unit reference from several training seeds of the same unit: its **expected** accuracy.

    Per-unit PAT is itself noisy (on ``sim:shg`` at default effects two seeds of one unit differ by several
    points), so the fair target "within 3 points of a model trained on that unit alone" compares with the mean
    over seeds, not with one (possibly lucky) run. Returns the mean test accuracy, the per-sample correctness
    averaged over the seeds (for the paired gap on the same test samples), every seed's accuracy, their
    standard deviation and the standard error of the mean over seeds (``seed_se``; 0 for a single seed, where
    it cannot be estimated: ``seed_sd`` is then NaN); ``first_correct`` is the first seed's per-sample correctness."""
    if not refs:
        raise ValueError("no reference to combine")
    accs = [float(r["test_acc"]) for r in refs]
    k = len(refs)
    sd = float(np.std(accs, ddof=1)) if k > 1 else float("nan")
    return {"key": "+".join(r["key"] for r in refs), "seeds": [r["seed"] for r in refs], "accs": accs,
            "test_acc": float(np.mean(accs)), "correct": np.mean([r["correct"] for r in refs], 0).tolist(),
            "first_correct": refs[0]["correct"],
            "seed_sd": sd, "seed_se": sd / np.sqrt(k) if k > 1 else 0.0}


def reference_gap(ref: dict[str, Any], ours: np.ndarray) -> dict[str, float]:
    """:func:`paired_gap` against a (combined) reference, its standard error widened by the uncertainty of the
    reference's mean over training seeds: ``se = sqrt(paired_se² + seed_se²)``."""
    g = paired_gap(ref["correct"], ours)
    g["paired_se"] = g["se"]
    g["se"] = float(np.sqrt(g["se"] ** 2 + float(ref.get("seed_se", 0.0)) ** 2))
    return g


def seed_table(cache: ReferenceCache, kind: str, units: list[int], epochs: int, seeds: list[int]) -> str:
    """Markdown: every cached reference of ``units`` x ``seeds`` (test accuracy), the mean and SD over seeds per
    unit, and how much of the spread of one-seed references is the unit and how much the seed."""
    lines = [f"| unit | {' | '.join(f'seed {s}' for s in seeds)} | mean | SD over seeds | max - min |",
             "|---|" + "---|" * (len(seeds) + 3)]
    means, sds, firsts = [], [], []
    for u in units:
        accs = [None if (r := cache.lookup(kind, u, epochs, s)) is None else r["test_acc"] for s in seeds]
        have = [a for a in accs if a is not None]
        cells = " | ".join("-" if a is None else f"{a:.1%}" for a in accs)
        if len(have) > 1:
            means.append(float(np.mean(have)))
            sds.append(float(np.std(have, ddof=1)))
            firsts.append(have[0])
            lines.append(f"| {u} | {cells} | {means[-1]:.1%} | {100 * sds[-1]:.1f} | "
                         f"{100 * (max(have) - min(have)):.1f} |")
        else:
            lines.append(f"| {u} | {cells} | - | - | - |")
    if sds:
        lines += ["", f"sim:{kind}: {len(sds)} units with >= 2 seeds; SD over seeds (mean over units) "
                      f"{100 * float(np.mean(sds)):.1f} points (pooled {100 * float(np.sqrt(np.mean(np.square(sds)))):.1f}); "
                      f"SD over units of the per-unit mean {100 * float(np.std(means, ddof=1)) if len(means) > 1 else float('nan'):.1f} "
                      f"points; of the first seed alone {100 * float(np.std(firsts, ddof=1)) if len(firsts) > 1 else float('nan'):.1f} "
                      f"points; per-unit means {min(means):.1%}-{max(means):.1%}, first seed alone "
                      f"{min(firsts):.1%}-{max(firsts):.1%}"]
    return "\n".join(lines)


async def _main() -> None:
    import argparse

    from pat_runtime.datasets import load_task

    ap = argparse.ArgumentParser(description="train (or read) the per-unit references of the deploy bench")
    ap.add_argument("--devices", default="plate,shg")
    ap.add_argument("--units", default="1-16", help="A-B or a comma list")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--cache", default="runs/deploy_bench/refs")
    ap.add_argument("--table", action="store_true",
                    help="train nothing: print the cached references of --units x --seeds (seed-to-seed spread)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if "-" in args.units:           # A-B, ascending or descending (two processes can share a list from both ends)
        a, b = (int(v) for v in args.units.split("-"))
        units = list(range(a, b + 1)) if a <= b else list(range(a, b - 1, -1))
    else:
        units = [int(u) for u in args.units.split(",")]
    cache = ReferenceCache(args.cache)
    if args.table:
        for kind in [k.strip() for k in args.devices.split(",") if k.strip()]:
            print(seed_table(cache, kind, units, args.epochs, [int(s) for s in args.seeds.split(",")]) + "\n")
        return
    for seed in [int(s) for s in args.seeds.split(",")]:
        task = load_task("digits", seed=0)
        for kind in [k.strip() for k in args.devices.split(",") if k.strip()]:
            for u in units:
                lock = cache.folder / f"{cache.key(kind, u, args.epochs, seed)}.lock"
                if cache.lookup(kind, u, args.epochs, seed) is None:
                    try:        # several processes may share one list: each unit is trained by one of them
                        lock.parent.mkdir(parents=True, exist_ok=True)
                        lock.open("x").close()
                    except FileExistsError:
                        print(f"sim:{kind} unit {u} seed {seed}: being trained by another process", flush=True)
                        continue
                try:
                    r = await cache.get(kind, u, task, args.epochs, seed)
                finally:
                    lock.unlink(missing_ok=True)
                print(f"sim:{kind} unit {u} seed {seed}: {r['test_acc']:.3f} (run {r['test_acc_run']}, "
                      f"{r['seconds']:.0f} s) {r['key']}", flush=True)


__all__ = ["RECIPE", "REPEATS", "ReferenceCache", "combine_references", "paired_gap", "reference_gap",
           "seed_table", "sim_fingerprint", "test_correct", "unit_device"]


if __name__ == "__main__":
    import asyncio
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    asyncio.run(_main())
