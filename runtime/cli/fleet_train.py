"""`pat train-fleet`: train one PNN for a fleet of non-identical units (multi-unit PAT), calibratable per unit.

    pat train-fleet --device sim:plate --units 100-103 --held-out 99 --groups ranges,readout --out runs/fleet

PAT runs on every training unit at once (each batch split over the units; see
:mod:`pat_runtime.fleet.robust`); the ``--groups`` parameters (range maps, readout scale/offset, ...) are
per-unit during training and named in the artifact as what a node may calibrate. Writes ``OUT/model.pnn``
(with its calibration plan and the reference statistics for label-free re-normalisation) and
``OUT/summary.json`` (test accuracy on each training unit and on the held-out unit, as shipped).

``--strategy best-unit`` trains instead one plain PAT run on each training unit alone (``pat train``'s recipe,
validation-selected) and ships the run with the best validation accuracy, with the same calibration plan
(:mod:`pat_runtime.fleet.best_unit`; on ``sim:shg`` it calibrates to far better accuracy than the multi-unit
model, docs/deploy.md).
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Optional

import typer

from pat_runtime import defaults as D


def register(app: typer.Typer) -> None:
    @app.command("train-fleet")
    def train_fleet(
        device: str = typer.Option("sim:plate", "--device", "-d", help="sim:KIND[?options]; units are set by --units"),
        units: str = typer.Option("100-103", help="training units, e.g. 100-103 or 0,5,7"),
        held_out: int = typer.Option(99, help="a unit evaluated but never trained on"),
        task: str = typer.Option("digits", help="task name"),
        epochs: int = typer.Option(30, min=1),
        batch: int = typer.Option(64, min=1),
        lr: float = typer.Option(D.LR_MULTI_UNIT, min=0.0, help="Adam learning rate"),
        layers: int = typer.Option(D.LAYERS, min=1),
        seed: int = typer.Option(0),
        groups: str = typer.Option("ranges,readout", help="per-unit (calibratable) parameters: "
                                                          "input, ranges, readout, theta, theta_affine (per-channel θ gain/offset)"),
        per_unit: bool = typer.Option(True, help="train per-unit copies of the --groups parameters"),
        cal_lr: float = typer.Option(D.LR_CALIBRATION, help="learning rate nodes use for calibration "
                                                 "(docs/deploy.md: 0.02 overshoots on sim:plate)"),
        affine_search: str = typer.Option("pat", help="how nodes search the theta_affine gains/offsets: pat (twin "
                                                      "gradient) or spsa (measured loss, 2 more passes per step)"),
        strategy: str = typer.Option("multi-unit", help="multi-unit: PAT on all --units at once (shared θ); "
                                                         "best-unit: one PAT run per unit alone, the best by "
                                                         "validation shipped (--lr, --per-unit: multi-unit only)"),
        version: str = typer.Option("1", help="model_version of the artifact"),
        out: Path = typer.Option(Path("runs/fleet"), help="output directory"),
    ) -> None:
        """Multi-unit PAT: one model for many units; writes OUT/model.pnn with a calibration plan."""
        from pat_runtime.calibration import parse_groups
        from pat_runtime.fleet.simnodes import parse_units

        try:
            parse_groups(groups)
            unit_list = parse_units(units)
            if affine_search not in ("pat", "spsa"):
                raise ValueError(f"--affine-search must be pat or spsa, not {affine_search!r}")
            if strategy not in ("multi-unit", "best-unit"):
                raise ValueError(f"--strategy must be multi-unit or best-unit, not {strategy!r}")
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
        if held_out in unit_list:
            raise typer.BadParameter(f"--held-out {held_out} is one of the training units")
        if not device.startswith("sim:"):
            raise typer.BadParameter("train-fleet runs on simulated units (sim:KIND); over real nodes use the "
                                     "fleet trainer (pat_runtime.fleet.training.FleetTrainer)")
        summary = asyncio.run(_train(device, unit_list, held_out, task, epochs, batch, lr, layers, seed, groups,
                                     per_unit, cal_lr, version, out, affine_search, strategy))
        typer.echo(json.dumps({k: summary[k] for k in ("test_acc_train_units", "test_acc_held_out", "artifact",
                                                       "calibrated_parameters", "seconds")}, indent=1))


async def _train(device, units, held_out, task_name, epochs, batch, lr, layers, seed, groups, per_unit, cal_lr,
                 version, out, affine_search="pat", strategy="multi-unit"):
    import torch

    from pat_runtime.sims.uri import parse_sim_uri
    from pat_runtime.devices.local import LocalDevice
    from pat_runtime.artifact import pnn_to_artifact, save_artifact
    from pat_runtime.calibration import CalibrationPlan, calibration_param_names
    from pat_runtime.datasets import load_task
    from pat_runtime.fleet.best_unit import best_unit_plan, train_best_unit
    from pat_runtime.fleet.robust import MultiUnitTrainer, evaluate_units
    from pat_runtime.fleet.training import twin_sim_options
    from pat_runtime.pat import build_pnn
    from pat_runtime.twins import make_twin
    from pat_runtime.sims import make_sim

    t0 = time.perf_counter()
    task = load_task(task_name, seed=seed)
    kind, opts = parse_sim_uri(device)
    opts.pop("unit", None)

    def uri(u):
        q = "&".join(f"{k}={v}" for k, v in {**opts, "unit": u}.items())
        return f"sim:{kind}?{q}"

    def unit_dev(u):   # sequential measurements: a local simulator's noise is then reproducible
        return LocalDevice(make_sim(kind, **{**opts, "unit": u}), name=f"{kind}#{u}", threaded=False)

    devs = [unit_dev(u) for u in units]
    held = unit_dev(held_out)
    for d in devs + [held]:
        await d.connect()
    sim_options = twin_sim_options(device)
    extra: dict = {"strategy": strategy}
    if strategy == "best-unit":
        best = await train_best_unit(devs, [uri(u) for u in units], task, epochs=epochs, layers=layers, batch=batch,
                                     seed=seed, progress=True)
        model = best.model.set_concurrent(False)
        plan = await best_unit_plan(model, devs[best.index], torch.from_numpy(task.x_train[:256]), groups,
                                    twin="nominal", sim_options=sim_options, lr=cal_lr,
                                    trained_on=[uri(units[best.index])], affine_search=affine_search)
        names, history = plan.params, []
        extra.update(chosen_unit=units[best.index], val_acc=dict(zip(map(str, units), best.val_accs)),
                     train_calls=best.calls)
    else:
        twin = make_twin("nominal", devs[0].spec, sim_options=sim_options)
        twin.requires_grad_(False)
        model = build_pnn(task.n_features, task.n_classes, twin, spec=devs[0].spec, layers=layers, seed=seed)
        model.calibrate(torch.from_numpy(task.x_train[:512]))
        model.set_concurrent(False)
        names = calibration_param_names(model, groups)
        trainer = MultiUnitTrainer(model, devs, twin, lr=lr, epochs=epochs, batch=batch, seed=seed,
                                   per_unit=names if per_unit else [])
        history = await trainer.train(task.x_train, task.y_train, progress=True)
        plan = CalibrationPlan.for_model(model, groups, twin="nominal", sim_options=sim_options, lr=cal_lr,
                                         trained_on=[uri(u) for u in units], affine_search=affine_search)
        plan.reference = await trainer.reference(torch.from_numpy(task.x_train[:256]))
    accs = await evaluate_units(model, devs + [held], task.x_test, task.y_test)
    out.mkdir(parents=True, exist_ok=True)
    art = pnn_to_artifact(model, version, metadata={
        "task": task_name, "calibration": plan.to_dict(), "trained_on": [uri(u) for u in units],
        "test_acc_held_out_uncalibrated": accs[-1], **extra})
    aid = save_artifact(out / "model.pnn", art)
    summary = {"device": device, "units": units, "held_out": held_out, "task": task_name, "epochs": epochs,
               "test_acc_train_units": dict(zip(map(str, units), accs[:-1])), "test_acc_held_out": accs[-1],
               "artifact": str(out / "model.pnn"), "artifact_id": aid, "calibrated_parameters": names,
               "history": [h.to_dict() for h in history], "seconds": time.perf_counter() - t0, **extra}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
