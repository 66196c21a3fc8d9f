"""Deploying one model to a fleet of non-identical units: per-unit calibration vs per-unit training.

For each device kind (stock ``sim:plate`` / ``sim:shg``, digits, 2 physical layers, nominal twin):

1. **status quo**: PAT on unit 0 alone (what a user had before), shipped unchanged to every target unit;
2. **per-unit reference**: PAT on each target unit alone (the target: within ``--tolerance`` points of it);
3. **fleet model**: multi-unit PAT on the training units (:class:`pat_runtime.fleet.robust.MultiUnitTrainer`,
   shared θ, per-unit copies of the calibratable parameters), trained once;
4. **deployment**: on every target unit (none of them seen in training), the node's procedure
   :func:`pat_runtime.edge.calibration.calibrate_on_unit` with the status-quo model serving: re-normalise, PAT steps on the
   calibratable parameters, verify on the held-out half of the calibration set, switch only if >= threshold
   and not worse than the serving model. Budget: ``--cal-samples`` labelled samples (from the training split)
   and ``--calls`` device calls per unit (enforced).

Every accuracy in the table is measured on the device on the task's **test split** (450 samples, never used
for training or calibration). Run (about 25 min on 2 shared cores)::

    nice -n 10 .venv/bin/python bench/deploy_calibration.py --out docs/deploy_results.json

``--quick`` runs a small version (4 targets, fewer epochs) to check the pipeline.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pat_runtime.devices.local import LocalDevice  # noqa: E402
from pat_runtime.edge.calibration import calibrate_on_unit  # noqa: E402
from pat_runtime.artifact import load_artifact, pnn_from_artifact, pnn_to_artifact, save_artifact  # noqa: E402
from pat_runtime.calibration import Budget, CalibrationPlan, calibration_param_names, parse_groups  # noqa: E402
from pat_runtime.datasets import load_task  # noqa: E402
from pat_runtime.fleet.robust import MultiUnitTrainer, evaluate_units  # noqa: E402
from pat_runtime.pat import build_pnn  # noqa: E402
from pat_runtime.trainers.run import ExperimentConfig, run_experiment  # noqa: E402
from pat_runtime.twins import make_twin  # noqa: E402
from pat_runtime.sims import make_sim  # noqa: E402


def unit_device(kind: str, unit: int) -> LocalDevice:
    return LocalDevice(make_sim(kind, unit=unit), name=f"{kind}#{unit}", threaded=False)


async def per_unit_model(kind: str, unit: int, task, epochs: int, seed: int):
    cfg = ExperimentConfig(device=f"sim:{kind}?unit={unit}", task="digits", method="pat", twin="nominal",
                           epochs=epochs, layers=2, seed=seed)
    dev = unit_device(kind, unit)
    res = await run_experiment(cfg, task=task, device=dev)
    return res.model, res.history[-1].test_acc


class ReferenceCache:
    """Per-unit PAT results (test accuracy) keyed by kind/unit/epochs/seed, kept in a JSON file so that a
    re-run (e.g. after a simulator change: delete the file) only trains what is missing."""

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None
        self.data = json.loads(self.path.read_text()) if self.path and self.path.exists() else {}

    def lookup(self, kind: str, unit: int, epochs: int, seed: int) -> float | None:
        if self.path and self.path.exists():
            self.data.update(json.loads(self.path.read_text()))
        return self.data.get(f"{kind}/{unit}/{epochs}/{seed}")

    async def accuracy(self, kind: str, unit: int, task, epochs: int, seed: int) -> float:
        key = f"{kind}/{unit}/{epochs}/{seed}"
        if key not in self.data and self.path and self.path.exists():   # another run may have added it
            self.data.update(json.loads(self.path.read_text()))
        if key not in self.data:
            self.data[key] = (await per_unit_model(kind, unit, task, epochs, seed))[1]
            if self.path:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_suffix(".tmp")
                if self.path.exists():
                    self.data = {**json.loads(self.path.read_text()), **self.data}
                tmp.write_text(json.dumps(self.data, indent=1))
                tmp.replace(self.path)
        return self.data[key]


async def bench_kind(kind: str, args, task, on_row=None) -> dict:
    t_kind = time.perf_counter()
    targets = list(range(args.first_target, args.first_target + args.units))
    cache = ReferenceCache(args.reference_cache)
    if args.only_reference:
        for u in targets:
            t0 = time.perf_counter()
            acc = await cache.accuracy(kind, u, task, args.epochs, args.seed)
            print(f"  reference sim:{kind} unit {u}: {acc:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        return {}
    train_units = [int(u) for u in args.train_units.split(",")]
    assert not set(targets) & set(train_units), "targets must be units the fleet model was not trained on"
    xte, yte = task.x_test, task.y_test
    print(f"== sim:{kind}: train units {train_units}, targets {targets[0]}..{targets[-1]}", flush=True)

    # 1. status quo: trained on unit 0 alone (kept in --model-cache so re-runs reuse it)
    t0 = time.perf_counter()
    mc = Path(args.model_cache) if args.model_cache else None
    sq_path = mc / f"{kind}_unit0_e{args.epochs}_s{args.seed}.pnn" if mc else None
    if not args.status_quo:
        sq_art, sq_acc = None, None
    elif sq_path is not None and sq_path.exists():
        sq_art = load_artifact(sq_path)
        sq_acc = sq_art.metadata["test_acc"]
    else:
        sq_model, sq_acc = await per_unit_model(kind, 0, task, args.epochs, args.seed)
        sq_art = pnn_to_artifact(sq_model, "unit0", metadata={"test_acc": sq_acc})
        if sq_path is not None:
            mc.mkdir(parents=True, exist_ok=True)
            save_artifact(sq_path, sq_art)
    if sq_art is not None:
        print(f"  status quo (unit 0 alone): {sq_acc:.3f} on unit 0 ({time.perf_counter() - t0:.0f} s)", flush=True)

    # 2. the fleet model (kept in --model-cache too)
    t0 = time.perf_counter()
    fkey = f"{kind}_fleet2_{'-'.join(map(str, train_units))}_{args.groups}_{int(args.per_unit)}_e{args.epochs}_s{args.seed}"
    f_path = Path(args.fleet_model) if args.fleet_model else (mc / f"{fkey}.pnn" if mc else None)
    if f_path is not None and f_path.exists():
        art = load_artifact(f_path)
        m = art.metadata
        plan = CalibrationPlan.from_dict(m["calibration"])
        plan.lr, plan.batch = args.cal_lr, args.cal_batch
        train_s, train_calls, train_accs = m.get("train_s", float("nan")), m.get("train_calls", -1), m.get("train_accs")
        if train_accs is None:
            devs = [unit_device(kind, u) for u in train_units + [args.held_out]]
            for d in devs:
                await d.connect()
            train_accs = await evaluate_units(pnn_from_artifact(art).set_concurrent(False), devs, task.x_test,
                                              task.y_test)
        print(f"  fleet model (cached {f_path}): test acc on training units "
              f"{[round(a, 3) for a in train_accs[:-1]]}, held-out unit {args.held_out}: {train_accs[-1]:.3f}",
              flush=True)
        return await deploy_units(kind, args, task, cache, targets, train_units, sq_art, sq_acc, art, plan,
                                  train_s, train_calls, train_accs, t_kind, on_row)
    spec = make_sim(kind).spec
    twin = make_twin("nominal", spec, sim_options={})
    twin.requires_grad_(False)
    model = build_pnn(task.n_features, task.n_classes, twin, spec=spec, layers=2, seed=args.seed)
    model.calibrate(torch.from_numpy(task.x_train[:512]))
    model.set_concurrent(False)
    devs = [unit_device(kind, u) for u in train_units]
    for d in devs:
        await d.connect()
    per_unit = calibration_param_names(model, args.groups) if args.per_unit else []
    trainer = MultiUnitTrainer(model, devs, twin, lr=args.lr, epochs=args.epochs, batch=64, seed=args.seed,
                               per_unit=per_unit)
    await trainer.train(task.x_train, task.y_train)
    train_s = time.perf_counter() - t0
    train_calls = sum(d.calls for d in devs)
    plan = CalibrationPlan.for_model(model, args.groups, lr=args.cal_lr, batch=args.cal_batch,
                                     trained_on=[f"sim:{kind}?unit={u}" for u in train_units])
    plan.reference = await trainer.reference(torch.from_numpy(task.x_train[:256]))
    held = unit_device(kind, args.held_out)
    await held.connect()
    train_accs = await evaluate_units(model, devs + [held], xte, yte)
    art = pnn_to_artifact(model, "fleet", metadata={"calibration": plan.to_dict(), "train_s": train_s,
                                                    "train_calls": train_calls, "train_accs": train_accs})
    if f_path is not None:
        save_artifact(f_path, art)
    print(f"  fleet model: {train_s:.0f} s, {train_calls} calls; test acc on training units "
          f"{[round(a, 3) for a in train_accs[:-1]]}, held-out unit {args.held_out}: {train_accs[-1]:.3f}", flush=True)
    return await deploy_units(kind, args, task, cache, targets, train_units, sq_art, sq_acc, art, plan,
                              train_s, train_calls, train_accs, t_kind, on_row)


async def deploy_units(kind, args, task, cache, targets, train_units, sq_art, sq_acc, art, plan, train_s,
                       train_calls, train_accs, t_kind, on_row) -> dict:
    xte, yte = task.x_test, task.y_test
    plan.lr, plan.batch = args.cal_lr, args.cal_batch
    if args.cal_groups:     # calibrate other groups than were per-unit in training
        plan.groups = parse_groups(args.cal_groups)
        plan.params = calibration_param_names(pnn_from_artifact(art), plan.groups)

    # 3. calibration data: labelled samples from the training split (never the test split)
    rng = np.random.default_rng(args.seed + 7)
    cal_idx = rng.choice(len(task.x_train), args.cal_samples, replace=False)
    xc, yc = task.x_train[cal_idx], task.y_train[cal_idx]
    budget = Budget(calls=args.calls, seconds=args.seconds, samples=args.cal_samples)

    rows = []
    for u in targets:
        t_u = time.perf_counter()
        dev = unit_device(kind, u)
        await dev.connect()
        serving = pnn_from_artifact(sq_art, dev).set_concurrent(False) if sq_art is not None else None
        cand = pnn_from_artifact(art, dev).set_concurrent(False)
        before = (await evaluate_units(serving, [dev], xte, yte))[0] if serving is not None else None
        shipped = (await evaluate_units(cand, [dev], xte, yte))[0]
        rep = await calibrate_on_unit(cand, dev, xc, yc, plan, budget, args.threshold, serving=serving,
                                      verify=args.verify, seed=args.seed, node=f"unit{u}",
                                      epochs=args.cal_epochs)
        after_cand = (await evaluate_units(cand, [dev], xte, yte))[0]
        final = after_cand if rep.switched else (before if before is not None else shipped)
        if args.train_reference:
            ref_acc = await cache.accuracy(kind, u, task, args.epochs, args.seed)
        else:                   # filled in from the cache when another run (--only-reference) has it
            ref_acc = cache.lookup(kind, u, args.epochs, args.seed)
        row = {"unit": u, "per_unit_trained": ref_acc, "status_quo": before, "fleet_shipped": shipped,
               "fleet_calibrated": after_cand, "final": final, "gap": None if ref_acc is None else ref_acc - final,
               "switched": rep.switched, "stage": rep.stage, "reason": rep.reason,
               "verify_serving": rep.serving, "verify_candidate": rep.chosen,
               "calls": rep.calls, "seconds": rep.seconds, "pat_steps": rep.pat_steps,
               "switched_to_worse_on_test": bool(rep.switched and before is not None and after_cand < before),
               "switched_to_worse_on_verify": bool(rep.switched and rep.serving is not None
                                                   and rep.chosen < rep.serving)}
        rows.append(row)
        print(f"  unit {u:2d}: per-unit {_f(ref_acc)} | status quo {_f(before)} | shipped {shipped:.3f} | "
              f"calibrated {after_cand:.3f} ({rep.stage}) | {'switched' if rep.switched else 'kept'} | "
              f"gap {_f(row['gap'])} | {rep.calls} calls {rep.seconds:.1f} s | {time.perf_counter() - t_u:.0f} s",
              flush=True)
        if on_row is not None:
            on_row(summarize(kind, args, train_units, train_s, train_calls, train_accs, sq_acc, rows, t_kind, cache))
    return summarize(kind, args, train_units, train_s, train_calls, train_accs, sq_acc, rows, t_kind, cache)


def summarize(kind, args, train_units, train_s, train_calls, train_accs, sq_acc, rows, t_kind, cache=None) -> dict:
    for r in rows:          # per-unit references another run may have finished meanwhile
        if r["per_unit_trained"] is None and cache is not None:
            r["per_unit_trained"] = cache.lookup(kind, r["unit"], args.epochs, args.seed)
            if r["per_unit_trained"] is not None:
                r["gap"] = r["per_unit_trained"] - r["final"]
    gaps = [r["gap"] for r in rows if r["gap"] is not None] or [float("nan")]
    return {"kind": f"sim:{kind}", "train_units": train_units, "held_out_unit": args.held_out,
            "fleet_train_s": train_s, "fleet_train_calls": train_calls,
            "fleet_test_acc_train_units": train_accs[:-1], "fleet_test_acc_held_out": train_accs[-1],
            "status_quo_unit0": sq_acc, "rows": rows,
            "max_gap": max(gaps), "mean_gap": statistics.mean(gaps),
            "within_tolerance": sum(g <= args.tolerance for g in gaps), "units": len(rows),
            "units_with_reference": sum(r["gap"] is not None for r in rows),
            "max_calls": max(r["calls"] for r in rows), "max_seconds": max(r["seconds"] for r in rows),
            "any_switch_to_worse_on_verify": any(r["switched_to_worse_on_verify"] for r in rows),
            "seconds": time.perf_counter() - t_kind}


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def _p(v) -> str:
    return "-" if v is None else f"{v:.1%}"


def table(res: dict) -> str:
    lines = [f"**{res['kind']}** — fleet model trained on units {res['train_units']} "
             f"({res['fleet_train_s']:.0f} s, {res['fleet_train_calls']} device calls); test accuracy on held-out "
             f"unit {res['held_out_unit']} before any calibration: {res['fleet_test_acc_held_out']:.1%}",
             "",
             "| unit | trained on this unit | status quo (unit-0 model) | fleet model as shipped | after calibration "
             "| serving after rollout | gap to per-unit | switched? | device calls | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['unit']} | {_p(r['per_unit_trained'])} | {_p(r['status_quo'])} | {r['fleet_shipped']:.1%} "
                     f"| {r['fleet_calibrated']:.1%} | {r['final']:.1%} | "
                     f"{'-' if r['gap'] is None else format(100 * r['gap'], '+.1f')} | "
                     f"{'switched (' + r['stage'] + ')' if r['switched'] else 'kept'} | {r['calls']} | "
                     f"{r['seconds']:.1f} |")
    lines.append("")
    lines.append(f"Units within 3 points of per-unit training: {res['within_tolerance']}/"
                 f"{res['units_with_reference']} with a per-unit reference ({res['units']} deployed) "
                 f"(max gap {100 * res['max_gap']:+.1f}, mean {100 * res['mean_gap']:+.1f} points); max device calls "
                 f"{res['max_calls']}, max seconds {res['max_seconds']:.1f}; a switch to a model measuring worse "
                 f"than the serving one: {'YES' if res['any_switch_to_worse_on_verify'] else 'never'}.")
    return "\n".join(lines)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", default="plate,shg")
    ap.add_argument("--units", type=int, default=16, help="number of target units")
    ap.add_argument("--first-target", type=int, default=1)
    ap.add_argument("--train-units", default="100,101,102,103")
    ap.add_argument("--held-out", type=int, default=99, help="a unit evaluated but not trained on")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--groups", default="ranges,readout")
    ap.add_argument("--cal-groups", default=None, help="groups the nodes calibrate (default: --groups)")
    ap.add_argument("--cal-epochs", type=int, default=200, help="upper bound; the call budget stops it first")
    ap.add_argument("--per-unit", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--cal-samples", type=int, default=256)
    ap.add_argument("--verify", type=float, default=0.5)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--cal-lr", type=float, default=0.02)
    ap.add_argument("--cal-batch", type=int, default=32)
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--tolerance", type=float, default=0.03)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference-cache", default="runs/deploy_reference.json",
                    help="per-unit training results are kept here (delete it after simulator changes)")
    ap.add_argument("--train-reference", action=argparse.BooleanOptionalAction, default=True,
                    help="train missing per-unit references here (else only read them from the cache)")
    ap.add_argument("--status-quo", action=argparse.BooleanOptionalAction, default=True,
                    help="train the unit-0 model and let every unit serve it before the rollout")
    ap.add_argument("--fleet-model", default=None, help="use this fleet artifact instead of training one")
    ap.add_argument("--model-cache", default="runs/deploy_bench",
                    help="the status-quo and fleet models are kept here and reused (delete after sim changes)")
    ap.add_argument("--only-reference", action="store_true", help="only train the per-unit references")
    ap.add_argument("--quick", action="store_true", help="4 targets, 10 epochs (pipeline check)")
    ap.add_argument("--out", default=None, help="write the results (JSON) here, and the tables next to it (.md)")
    args = ap.parse_args()
    if args.quick:
        args.units, args.epochs = 4, 10
    torch.set_num_threads(1)
    task = load_task("digits", seed=args.seed)
    t0 = time.perf_counter()
    results: list[dict] = []

    def write(partial: dict | None = None) -> str:
        res = results + ([partial] if partial else [])
        out = {"args": vars(args), "machine": platform.machine(), "seconds": time.perf_counter() - t0,
               "complete": partial is None, "results": res}
        md = "\n\n".join(table(r) for r in res)
        if args.out:     # written after every unit, so an interrupted run keeps what it measured
            Path(args.out).write_text(json.dumps(out, indent=1))
            Path(args.out).with_suffix(".md").write_text(md + "\n")
        return md

    for k in [k.strip() for k in args.devices.split(",") if k.strip()]:
        res = await bench_kind(k, args, task, on_row=write)
        if not args.only_reference:
            results.append(res)
    if args.only_reference:
        return
    print("\n" + write())


if __name__ == "__main__":
    asyncio.run(main())
