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
for training, selection or calibration; mean of 3 passes). Per-unit references are cached by
``bench/deploy_refs.py`` (which can train them in parallel processes). Run (docs/deploy.md)::

    nice -n 10 .venv/bin/python bench/deploy_calibration.py --devices plate --out runs/deploy_bench/final_plate.json

``--quick`` runs a small version (4 targets, fewer epochs) to check the pipeline. ``--ship-reference U1,U2,..``
ships instead of the multi-unit model the best-validation one of the per-unit PAT runs on those (non-target)
units (``pat train-fleet --strategy best-unit``); ``--ref-seeds 0,1,2`` makes each unit's reference the mean
over several training seeds (per-unit PAT is noisy: docs/deploy.md).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploy_refs import ReferenceCache, combine_references, paired_gap, reference_gap, sim_fingerprint, \
    test_correct, unit_device  # noqa: E402
from pat_runtime.edge.calibration import calibrate_on_unit  # noqa: E402
from pat_runtime.artifact import load_artifact, pnn_from_artifact, pnn_to_artifact, save_artifact  # noqa: E402
from pat_runtime.calibration import Budget, CalibrationPlan, calibration_param_names, parse_groups, \
    reference_stats  # noqa: E402
from pat_runtime.datasets import load_task  # noqa: E402
from pat_runtime.fleet.robust import MultiUnitTrainer, evaluate_units  # noqa: E402
from pat_runtime.pat import build_pnn  # noqa: E402
from pat_runtime.twins import make_twin  # noqa: E402
from pat_runtime.sims import make_sim  # noqa: E402


def fleet_fingerprint(kind: str, units) -> str:
    """Simulator fingerprint of all the units a cached model depends on (stale caches are never read)."""
    return "-".join(sim_fingerprint(kind, u)[:6] for u in units)


async def bench_kind(kind: str, args, task, on_row=None) -> dict:
    t_kind = time.perf_counter()
    targets = ([int(u) for u in args.targets.split(",")] if args.targets
               else list(range(args.first_target, args.first_target + args.units)))
    cache = ReferenceCache(args.reference_cache)
    if args.only_reference:
        for u in targets:
            r = await cache.get(kind, u, task, args.epochs, args.seed)
            print(f"  reference sim:{kind} unit {u}: {r['test_acc']:.3f} ({r['seconds']:.0f} s)", flush=True)
        return {}
    train_units = [int(u) for u in args.train_units.split(",")]
    assert not set(targets) & set(train_units), "targets must be units the fleet model was not trained on"
    xte, yte = task.x_test, task.y_test
    print(f"== sim:{kind}: train units {train_units}, targets {targets}", flush=True)

    # 1. status quo: trained on unit 0 alone (the unit-0 per-unit reference, from the same cache)
    t0 = time.perf_counter()
    mc = Path(args.model_cache) if args.model_cache else None
    if not args.status_quo:
        sq_art, sq_acc = None, None
    else:
        sq = await cache.get(kind, 0, task, args.epochs, args.seed)
        sq_acc = sq["test_acc"]
        sq_art = load_artifact(Path(args.reference_cache) / f"{sq['key']}.pnn")
        print(f"  status quo (unit 0 alone): {sq_acc:.3f} on unit 0 ({time.perf_counter() - t0:.0f} s)", flush=True)

    # 2. the fleet model (kept in --model-cache; the key holds the training units' simulator fingerprints)
    t0 = time.perf_counter()
    if args.ship_reference:     # or: one unit's own PAT model (the reference recipe) on a non-target unit
        art, plan, train_units, train_s, train_calls, train_accs = await shipped_reference(kind, args, task, cache)
        assert not set(targets) & set(train_units), "the shipped model's units must not be targets"
        return await deploy_units(kind, args, task, cache, targets, train_units, sq_art, sq_acc, art, plan,
                                  train_s, train_calls, train_accs, t_kind, on_row)
    fe = args.fleet_epochs or args.epochs
    fkey = (f"{kind}_fleet3_{'-'.join(map(str, train_units))}_{args.groups}_{int(args.per_unit)}_e{fe}"
            f"_b{args.fleet_batch}_s{args.seed}_{fleet_fingerprint(kind, train_units + [args.held_out])}")
    f_path = Path(args.fleet_model) if args.fleet_model else (mc / f"{fkey}.pnn" if mc else None)
    if f_path is not None and f_path.exists():
        art = load_artifact(f_path)
        m = art.metadata
        plan = CalibrationPlan.from_dict(m["calibration"])
        train_s, train_calls, train_accs = m.get("train_s", float("nan")), m.get("train_calls", -1), m.get("train_accs")
        if train_accs is None:
            devs = [unit_device(kind, u) for u in train_units + [args.held_out]]
            for d in devs:
                await d.connect()
            train_accs = await evaluate_units(pnn_from_artifact(art).set_concurrent(False), devs, task.x_test,
                                              task.y_test)
        print(f"  fleet model (cached {f_path}): test acc on training units "
              f"{[round(a, 3) for a in train_accs[:-1]]}, held-out unit {args.held_out}: {train_accs[-1]:.3f}; "
              f"training units with their own per-unit parameters: {m.get('train_accs_own')}",
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
    trainer = MultiUnitTrainer(model, devs, twin, lr=args.lr, epochs=fe, batch=args.fleet_batch, seed=args.seed,
                               per_unit=per_unit)
    await trainer.train(task.x_train, task.y_train, progress=True)
    train_s = time.perf_counter() - t0
    train_calls = sum(d.calls for d in devs)
    plan = CalibrationPlan.for_model(model, args.groups, lr=args.cal_lr, batch=args.cal_batch,
                                     trained_on=[f"sim:{kind}?unit={u}" for u in train_units])
    plan.reference = await trainer.reference(torch.from_numpy(task.x_train[:256]))
    held = unit_device(kind, args.held_out)
    await held.connect()
    train_accs = await evaluate_units(model, devs + [held], xte, yte)
    own = []            # each training unit with its own per-unit parameters: what the shared part can reach
    shipped = {n: p.detach().clone() for n, p in model.named_parameters()}
    named = dict(model.named_parameters())
    for k, d in enumerate(devs):
        with torch.no_grad():
            for n, v in trainer.unit_state(k).items():
                named[n].copy_(v)
        own += await evaluate_units(model, [d], xte, yte)
    with torch.no_grad():
        for n, v in shipped.items():
            named[n].copy_(v)
    art = pnn_to_artifact(model, "fleet", metadata={"calibration": plan.to_dict(), "train_s": train_s,
                                                    "train_calls": train_calls, "train_accs": train_accs,
                                                    "train_accs_own": own})
    if f_path is not None:
        save_artifact(f_path, art)
    print(f"  fleet model: {train_s:.0f} s, {train_calls} calls; test acc on training units "
          f"{[round(a, 3) for a in train_accs[:-1]]}, held-out unit {args.held_out}: {train_accs[-1]:.3f}; training "
          f"units with their own per-unit parameters: {[round(a, 3) for a in own]}", flush=True)
    if args.fleet_only:
        return {}
    return await deploy_units(kind, args, task, cache, targets, train_units, sq_art, sq_acc, art, plan,
                              train_s, train_calls, train_accs, t_kind, on_row)


async def shipped_reference(kind: str, args, task, cache: ReferenceCache):
    """The model shipped to every target when ``--ship-reference U1,U2,..`` is given: ``pat train --method pat``
    on ONE non-target unit alone (the per-unit reference recipe, seed ``--seed``), trained once on each of the
    candidate units and the one with the best **validation** accuracy (on its own unit) taken; then the same
    calibration plan as a fleet model (``--groups``), with the re-normalisation statistics measured on its unit.
    Training cost: one PAT run per candidate unit."""
    units = [int(u) for u in args.ship_reference.split(",")]
    refs = []
    for u in units:
        r = await cache.get(kind, u, task, args.epochs, args.seed) if args.train_reference \
            else cache.lookup(kind, u, args.epochs, args.seed)
        if r is None:
            raise SystemExit(f"--ship-reference: unit {u} (seed {args.seed}) is not cached; train it with "
                             f"bench/deploy_refs.py --devices {kind} --units {u} --seeds {args.seed}")
        refs.append(r)
    best = max(refs, key=lambda r: r["val_acc"])
    u = best["unit"]
    dev = unit_device(kind, u)
    await dev.connect()
    model = cache.model(kind, u, args.epochs, args.seed, dev).set_concurrent(False)
    plan = CalibrationPlan.for_model(model, args.groups, lr=args.cal_lr, batch=args.cal_batch,
                                     trained_on=[f"sim:{kind}?unit={u}"])
    plan.reference = await reference_stats(model, [dev], torch.from_numpy(task.x_train[:256]))
    held = unit_device(kind, args.held_out)
    await held.connect()
    train_accs = await evaluate_units(model, [dev, held], task.x_test, task.y_test)
    calls = sum(r["train_calls"] for r in refs)
    secs = sum(r["seconds"] for r in refs)
    art = pnn_to_artifact(model, f"ref-{kind}-{u}", metadata={
        "calibration": plan.to_dict(), "train_s": secs, "train_calls": calls, "train_accs": train_accs,
        "train_accs_own": [best["test_acc"]], "shipped_reference": best["key"],
        "candidates_val_acc": {r["unit"]: r["val_acc"] for r in refs}})
    print(f"  shipped model: PAT on unit {u} alone (best validation of units {units}: "
          f"{[round(r['val_acc'], 3) for r in refs]}); test acc on unit {u}: {train_accs[0]:.3f}, held-out unit "
          f"{args.held_out}: {train_accs[1]:.3f}; {calls} device calls for all candidates", flush=True)
    return art, plan, [u], secs, calls, train_accs


async def deploy_units(kind, args, task, cache, targets, train_units, sq_art, sq_acc, art, plan, train_s,
                       train_calls, train_accs, t_kind, on_row) -> dict:
    xte, yte = task.x_test, task.y_test
    plan.lr, plan.batch = args.cal_lr, args.cal_batch
    plan.affine_search, plan.spsa_c = args.affine_search, args.spsa_c
    if args.cal_groups:     # calibrate other groups than were per-unit in training
        plan.groups = parse_groups(args.cal_groups)
        plan.params = calibration_param_names(pnn_from_artifact(art), plan.groups)

    # 3. calibration data: labelled samples from the training split (never the test split)
    rng = np.random.default_rng(args.seed + 7)
    cal_idx = rng.choice(len(task.x_train), args.cal_samples, replace=False)
    xc, yc = task.x_train[cal_idx], task.y_train[cal_idx]
    budget = Budget(calls=args.calls, seconds=args.seconds, samples=args.cal_samples)

    rows = []

    def summary() -> dict:
        return {**summarize(kind, args, train_units, train_s, train_calls, train_accs, sq_acc, rows, t_kind, cache),
                "fleet_test_acc_train_units_own_params": art.metadata.get("train_accs_own"),
                "calibrated_groups": list(plan.groups), "calibrated_params": len(plan.params),
                "shipped_candidates_val_acc": art.metadata.get("candidates_val_acc")}

    for u in targets:
        t_u = time.perf_counter()
        dev = unit_device(kind, u)
        await dev.connect()
        serving = pnn_from_artifact(sq_art, dev).set_concurrent(False) if sq_art is not None else None
        cand = pnn_from_artifact(art, dev).set_concurrent(False)
        # one test pass for the models before calibration (context); REPEATS passes for what the unit serves after
        c_before = await test_correct(serving, dev, xte, yte, repeats=1) if serving is not None else None
        c_shipped = await test_correct(cand, dev, xte, yte, repeats=1)
        rep = await calibrate_on_unit(cand, dev, xc, yc, plan, budget, args.threshold, serving=serving,
                                      verify=args.verify, seed=args.seed, node=f"unit{u}",
                                      epochs=args.cal_epochs, check_every=args.check_every,
                                      select=args.select)
        c_after = await test_correct(cand, dev, xte, yte)
        c_final = c_after if rep.switched else (c_before if c_before is not None else c_shipped)
        before = None if c_before is None else float(c_before.mean())
        shipped, after_cand, final = float(c_shipped.mean()), float(c_after.mean()), float(c_final.mean())
        ref = await unit_reference(cache, kind, u, task, args)   # None: another run may fill it in later
        row = {"unit": u, "per_unit_trained": None, "status_quo": before, "fleet_shipped": shipped,
               "fleet_calibrated": after_cand, "final": final, "final_correct": c_final.tolist(),
               "gap": None, "gap_se": None,
               "switched": rep.switched, "stage": rep.stage, "reason": rep.reason,
               "verify_serving": rep.serving, "verify_shipped": rep.shipped, "verify_renormalized": rep.renormalized,
               "verify_calibrated": rep.calibrated, "verify_candidate": rep.chosen, "verify_loss": rep.verify_loss,
               "calls": rep.calls, "seconds": rep.seconds, "pat_steps": rep.pat_steps, "best_step": rep.best_step, "stopped": rep.stopped,
               "switched_to_worse_on_test": bool(rep.switched and before is not None and after_cand < before),
               "switched_to_worse_on_verify": bool(rep.switched and rep.serving is not None
                                                   and rep.chosen < rep.serving)}
        _fill_reference(row, ref)
        rows.append(row)
        print(f"  unit {u:2d}: per-unit {_f(row['per_unit_trained'])} | status quo {_f(before)} | shipped "
              f"{shipped:.3f} | calibrated {after_cand:.3f} ({rep.stage}; verify {_f(rep.shipped)}/"
              f"{_f(rep.renormalized)}/{_f(rep.calibrated)}) | {'switched' if rep.switched else 'kept'} | "
              f"gap {_f(row['gap'])} ± {_f(row['gap_se'])} | {rep.calls} calls {rep.pat_steps} steps (best {rep.best_step}) "
              f"{rep.seconds:.1f} s | {time.perf_counter() - t_u:.0f} s", flush=True)
        if on_row is not None:
            on_row(summary())
    return summary()


def ref_seeds(args) -> list[int]:
    """The training seeds of the per-unit reference (``--ref-seeds``; default: ``--seed`` alone)."""
    return [int(v) for v in str(args.ref_seeds).split(",")] if getattr(args, "ref_seeds", None) else [args.seed]


async def unit_reference(cache: ReferenceCache, kind: str, u: int, task, args, train: bool | None = None):
    """The unit's reference over all ``--ref-seeds`` (:func:`deploy_refs.combine_references`); trained here if
    missing and ``--train-reference``, else None unless every seed is cached."""
    train = args.train_reference if train is None else train
    refs = []
    for s in ref_seeds(args):
        r = await cache.get(kind, u, task, args.epochs, s) if train else cache.lookup(kind, u, args.epochs, s)
        if r is None:
            return None
        refs.append(r)
    return combine_references(refs)


def _fill_reference(row: dict, ref: dict | None) -> None:
    """The per-unit reference's test accuracy (mean over its seeds) and the paired gap (same test samples) with
    its standard error (widened by the seed-to-seed uncertainty of the reference's mean); also the gap to the
    first seed alone (what a one-seed reference would have said)."""
    if ref is None:
        return
    g = reference_gap(ref, np.asarray(row["final_correct"]))
    first = paired_gap(ref["first_correct"], row["final_correct"])
    row.update(per_unit_trained=ref["test_acc"], per_unit_seeds=ref["seeds"], per_unit_accs=ref["accs"],
               per_unit_seed_sd=ref["seed_sd"], gap=g["gap"], gap_se=g["se"], gap_paired_se=g["paired_se"],
               gap_lo90=g["lo90"], gap_hi90=g["hi90"], reference_key=ref["key"],
               per_unit_first_seed=ref["accs"][0], gap_first_seed=first["gap"])


def summarize(kind, args, train_units, train_s, train_calls, train_accs, sq_acc, rows, t_kind, cache=None) -> dict:
    for r in rows:          # per-unit references (all --ref-seeds) another run may have finished meanwhile
        if cache is not None:
            _fill_reference(r, _lookup_reference(cache, kind, r["unit"], args))
    gaps = [r["gap"] for r in rows if r["gap"] is not None] or [float("nan")]
    ses = [r["gap_se"] for r in rows if r["gap_se"] is not None] or [float("nan")]
    firsts = [r.get("gap_first_seed") for r in rows if r.get("gap_first_seed") is not None]
    sds = [r["per_unit_seed_sd"] for r in rows if r.get("per_unit_seed_sd") is not None
           and not np.isnan(r["per_unit_seed_sd"])]
    return {"kind": f"sim:{kind}", "train_units": train_units, "held_out_unit": args.held_out,
            "fleet_train_s": train_s, "fleet_train_calls": train_calls,
            "fleet_test_acc_train_units": train_accs[:-1], "fleet_test_acc_held_out": train_accs[-1],
            "status_quo_unit0": sq_acc, "rows": rows,
            "max_gap": max(gaps), "mean_gap": statistics.mean(gaps), "mean_gap_se": statistics.mean(ses),
            "within_tolerance": sum(g <= args.tolerance for g in gaps), "units": len(rows),
            "ref_seeds": ref_seeds(args), "mean_reference_seed_sd": statistics.mean(sds) if sds else None,
            "within_tolerance_first_seed": sum(g <= args.tolerance for g in firsts) if firsts else None,
            "units_with_reference": sum(r["gap"] is not None for r in rows),
            "max_calls": max(r["calls"] for r in rows), "max_seconds": max(r["seconds"] for r in rows),
            "any_switch_to_worse_on_verify": any(r["switched_to_worse_on_verify"] for r in rows),
            "any_switch_to_worse_on_test": any(r["switched_to_worse_on_test"] for r in rows),
            "seconds": time.perf_counter() - t_kind}


def _lookup_reference(cache: ReferenceCache, kind: str, u: int, args) -> dict | None:
    refs = [cache.lookup(kind, u, args.epochs, s) for s in ref_seeds(args)]
    if any(r is None for r in refs):
        return None
    return combine_references(refs)


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def _p(v) -> str:
    return "-" if v is None else f"{v:.1%}"


def table(res: dict) -> str:
    cands = res.get("shipped_candidates_val_acc")
    what = (f"shipped model: PAT on unit {res['train_units'][0]} alone, the best validation accuracy of one run on "
            f"each of units {', '.join(map(str, cands))} (`--ship-reference`; all runs together: " if cands else
            f"fleet model trained on units {res['train_units']} (")
    lines = [f"**{res['kind']}** — {what}{res['fleet_train_s']:.0f} s, {res['fleet_train_calls']} device calls); "
             f"test accuracy on held-out "
             f"unit {res['held_out_unit']} before any calibration: {res['fleet_test_acc_held_out']:.1%}",
             "",
             "| unit | trained on this unit | status quo (unit-0 model) | fleet model as shipped | after calibration "
             "| serving after rollout | gap to per-unit ± SE | switched? | device calls | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    seeds = res.get("ref_seeds") or []
    if len(seeds) > 1:
        lines[2] = lines[2].replace("| trained on this unit |", f"| trained on this unit (mean of seeds {seeds}; "
                                                                f"min-max) |")
    for r in res["rows"]:
        accs = r.get("per_unit_accs") or []
        ref = _p(r["per_unit_trained"]) + (f" ({min(accs):.1%}-{max(accs):.1%})" if len(accs) > 1 else "")
        lines.append(f"| {r['unit']} | {ref} | {_p(r['status_quo'])} | {r['fleet_shipped']:.1%} "
                     f"| {r['fleet_calibrated']:.1%} | {r['final']:.1%} | "
                     f"{'-' if r['gap'] is None else format(100 * r['gap'], '+.1f') + ' ± ' + format(100 * r['gap_se'], '.1f')} | "
                     f"{'switched (' + r['stage'] + ')' if r['switched'] else 'kept'} | {r['calls']} | "
                     f"{r['seconds']:.1f} |")
    lines.append("")
    lines.append(f"Units within 3 points of per-unit training: {res['within_tolerance']}/"
                 f"{res['units_with_reference']} with a per-unit reference ({res['units']} deployed) "
                 f"(max gap {100 * res['max_gap']:+.1f}, mean {100 * res['mean_gap']:+.1f} points, mean SE "
                 f"{100 * res['mean_gap_se']:.1f}"
                 + (f"; reference: mean of {len(seeds)} training seeds per unit, seed-to-seed SD "
                    f"{100 * res['mean_reference_seed_sd']:.1f} points on average; against the first seed alone: "
                    f"{res['within_tolerance_first_seed']}/{res['units_with_reference']} within 3 points"
                    if len(seeds) > 1 and res.get("mean_reference_seed_sd") is not None else "")
                 + f"); max device calls "
                 f"{res['max_calls']}, max seconds {res['max_seconds']:.1f}; a switch to a model measuring worse "
                 f"than the serving one: {'YES' if res['any_switch_to_worse_on_verify'] else 'never'}.")
    return "\n".join(lines)


def merge(files: list[str], dest: str) -> None:
    """One result file from several runs of the same deployment over different ``--targets`` (e.g. two halves
    of the units run in two processes): rows concatenated per device kind, in unit order."""
    runs = [json.loads(Path(f).read_text()) for f in files]
    out = {**runs[0], "merged_from": files, "seconds": max(r["seconds"] for r in runs),
           "complete": all(r.get("complete") for r in runs),
           "loadavg_start": [r.get("loadavg_start") for r in runs], "loadavg_now": [r.get("loadavg_now") for r in runs]}
    results = []
    for res in runs[0]["results"]:
        rows = [row for r in runs for other in r["results"] if other["kind"] == res["kind"] for row in other["rows"]]
        results.append({**res, "rows": sorted(rows, key=lambda row: row["unit"])})
    out["results"] = results
    Path(dest).write_text(json.dumps(out, indent=1))


def report_only(args) -> None:
    """Fill in references that were cached after the run (e.g. by a parallel ``bench/deploy_refs.py``)."""
    if args.merge:
        merge(args.merge.split(","), args.out)
    out = json.loads(Path(args.out).read_text())
    cache = ReferenceCache(args.reference_cache)
    for i, res in enumerate(out["results"]):
        kind = res["kind"].split(":", 1)[1]
        new = summarize(kind, args, res["train_units"], res["fleet_train_s"], res["fleet_train_calls"],
                        res["fleet_test_acc_train_units"] + [res["fleet_test_acc_held_out"]], res["status_quo_unit0"],
                        res["rows"], time.perf_counter() - res["seconds"], cache)
        out["results"][i] = {**res, **new, "seconds": res["seconds"]}
    Path(args.out).write_text(json.dumps(out, indent=1))
    md = "\n\n".join(table(r) for r in out["results"])
    Path(args.out).with_suffix(".md").write_text(md + "\n")
    print(md)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", default="plate,shg")
    ap.add_argument("--units", type=int, default=16, help="number of target units")
    ap.add_argument("--first-target", type=int, default=1)
    ap.add_argument("--targets", default=None, help="comma list of target units (instead of --units/--first-target)")
    ap.add_argument("--fleet-epochs", type=int, default=None, help="epochs of the fleet model (default: --epochs)")
    ap.add_argument("--fleet-batch", type=int, default=64)
    ap.add_argument("--check-every", type=int, default=25, help="early-stopping check every N calibration steps")
    ap.add_argument("--select", default="loss", choices=["loss", "accuracy"],
                    help="choose the calibrated state by verify cross-entropy or verify accuracy")
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
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--cal-lr", type=float, default=0.005)
    ap.add_argument("--cal-batch", type=int, default=32)
    ap.add_argument("--affine-search", default="pat", choices=["pat", "spsa"],
                    help="gradient of the theta_affine gains/offsets at the node: the twin's (pat) or SPSA")
    ap.add_argument("--spsa-c", type=float, default=0.05, help="SPSA perturbation of a θ gain/offset")
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--tolerance", type=float, default=0.03)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ref-seeds", default=None,
                    help="comma list of training seeds of the per-unit reference: the reference is their mean "
                         "accuracy (per-unit training's expected accuracy, not one run's); default: --seed")
    ap.add_argument("--reference-cache", default="runs/deploy_bench/refs",
                    help="per-unit references are kept here, keyed by a simulator fingerprint (never stale)")
    ap.add_argument("--train-reference", action=argparse.BooleanOptionalAction, default=True,
                    help="train missing per-unit references here (else only read them from the cache)")
    ap.add_argument("--status-quo", action=argparse.BooleanOptionalAction, default=True,
                    help="train the unit-0 model and let every unit serve it before the rollout")
    ap.add_argument("--fleet-model", default=None, help="use this fleet artifact instead of training one")
    ap.add_argument("--ship-reference", default=None, metavar="U1,U2,..",
                    help="ship, instead of a multi-unit fleet model, the per-unit PAT model (reference recipe) of "
                         "the candidate unit with the best validation accuracy (non-target units)")
    ap.add_argument("--model-cache", default="runs/deploy_bench",
                    help="fleet models are kept here, keyed by the simulator fingerprints of their units")
    ap.add_argument("--only-reference", action="store_true", help="only train the per-unit references")
    ap.add_argument("--fleet-only", action="store_true", help="only train (and cache) the fleet model")
    ap.add_argument("--quick", action="store_true", help="4 targets, 10 epochs (pipeline check)")
    ap.add_argument("--out", default=None, help="write the results (JSON) here, and the tables next to it (.md)")
    ap.add_argument("--merge", default=None, help="with --report-only: comma list of result files (same deployment, "
                                                  "other --targets) merged into --out first")
    ap.add_argument("--report-only", action="store_true",
                    help="re-read --out, fill in per-unit references cached since, rewrite the JSON and tables")
    args = ap.parse_args()
    if args.report_only:
        return report_only(args)
    if args.quick:
        args.units, args.epochs = 4, 10
    torch.set_num_threads(1)
    task = load_task("digits", seed=args.seed)
    t0 = time.perf_counter()
    results: list[dict] = []

    load0 = os.getloadavg()

    def write(partial: dict | None = None) -> str:
        res = results + ([partial] if partial else [])
        out = {"args": vars(args), "machine": platform.machine(), "cpus": os.cpu_count(),
               "loadavg_start": load0, "loadavg_now": os.getloadavg(), "seconds": time.perf_counter() - t0,
               "complete": partial is None, "results": res}
        md = "\n\n".join(table(r) for r in res)
        if args.out:     # written after every unit, so an interrupted run keeps what it measured
            Path(args.out).write_text(json.dumps(out, indent=1))
            Path(args.out).with_suffix(".md").write_text(md + "\n")
        return md

    for k in [k.strip() for k in args.devices.split(",") if k.strip()]:
        res = await bench_kind(k, args, task, on_row=write)
        if not (args.only_reference or args.fleet_only):
            results.append(res)
    if args.only_reference or args.fleet_only:
        return
    print("\n" + write())


if __name__ == "__main__":
    asyncio.run(main())
