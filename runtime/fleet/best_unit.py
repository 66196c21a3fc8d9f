"""Training for a fleet by selection: one PAT run per training unit alone, the best by validation shipped.

The other strategy of ``pat train-fleet`` (``--strategy best-unit``). Multi-unit PAT
(:mod:`pat_runtime.fleet.robust`) trains one shared θ on several units at once; on ``sim:shg`` at default
effects that shared θ is a compromise that calibrated units cannot lift above ~54-60 % on digits, while a
model trained by plain PAT on *one* unit, re-normalised and calibrated on another unit, reaches 63-71 % there
(docs/deploy.md, measured). Per-unit PAT is also noisy from run to run (seed-to-seed SD ~4 points on shg), so
the strategy trains one ``pat train --method pat`` run on each training unit (its validation-selected model),
keeps the run with the best **validation** accuracy (measured on its own unit, never the test split), and
attaches the same :class:`~pat_runtime.calibration.CalibrationPlan` as a multi-unit fleet model: the groups a
node calibrates and the re-normalisation statistics, measured on the chosen run's unit.

Training cost: one PAT run per training unit (``units x`` the device calls of ``pat train``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from pat_runtime.calibration import CalibrationPlan, reference_stats
from pat_runtime.datasets import Task
from pat_runtime.devices.base import Device
from pat_runtime.pat import PNN
from pat_runtime.trainers.run import ExperimentConfig, run_experiment


@dataclass
class BestUnitResult:
    """The chosen run: its model (attached to its unit), which unit, and every candidate's validation accuracy."""

    model: PNN
    index: int                              # position of the chosen unit in the ``devices`` given
    val_accs: list[float]                   # validation accuracy of each unit's run (on its own unit)
    calls: int                              # device calls of all runs together
    summaries: list[dict[str, Any]] = field(default_factory=list)


async def train_best_unit(devices: Sequence[Device], uris: Sequence[str], task: Task, *, epochs: int = 30,
                          layers: int = 2, batch: int = 64, seed: int = 0, lr: float | None = None,
                          progress: bool = False) -> BestUnitResult:
    """One PAT run (nominal twin, validation-selected model) on each of ``devices`` alone; the run with the
    highest validation accuracy wins (ties: the first). ``uris`` name the devices in each run's config."""
    if not devices or len(devices) != len(uris):
        raise ValueError("train_best_unit needs one URI per device and at least one device")
    runs, accs, calls = [], [], 0
    for dev, uri in zip(devices, uris):
        c0 = getattr(dev, "calls", 0)
        cfg = ExperimentConfig(device=uri, task=task.name, method="pat", twin="nominal", epochs=epochs,
                               layers=layers, batch=batch, seed=seed, lr=lr, eval_test="final")
        res = await run_experiment(cfg, task=task, device=dev, checkpoint=False, progress=progress)
        calls += getattr(dev, "calls", 0) - c0
        val = res.summary.get("val_acc")
        if val is None:
            raise RuntimeError(f"run on {uri} reported no validation accuracy (val_fraction 0?)")
        runs.append(res)
        accs.append(float(val))
    k = max(range(len(accs)), key=lambda i: accs[i])
    model = runs[k].model
    model.attach(device=devices[k])
    return BestUnitResult(model, k, accs, calls, [r.summary for r in runs])


async def best_unit_plan(model: PNN, device: Device, x: torch.Tensor, groups: str | Sequence[str],
                         **plan: Any) -> CalibrationPlan:
    """The calibration plan of a single-unit model: ``groups`` calibratable, re-normalisation reference
    statistics measured on ``device`` (the unit it was trained on) with inputs ``x``."""
    p = CalibrationPlan.for_model(model, groups, **plan)
    p.reference = await reference_stats(model, [device], x)
    return p


__all__ = ["BestUnitResult", "best_unit_plan", "train_best_unit"]
