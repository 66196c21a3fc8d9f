"""Tune SPSA's gains on the validation split (never on test).

``await tune_spsa(cfg)`` trains short SPSA runs (``epochs``, default a quarter of ``cfg.epochs``, at least
2) for every ``(a, c)`` candidate on the same device, task split and seed, with ``eval_test="none"`` so
the test split is not even measured, and returns the candidate with the best validation accuracy of its
selected epoch (ties: the smaller ``a``). ``pat train --method spsa --spsa-tune`` and ``pat results``
use it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pat_runtime.devices.base import Device
from pat_runtime.datasets import Task, load_task, with_validation

from .run import ExperimentConfig, run_experiment

#: default candidates: step gain a (normalised coordinates) and perturbation gain c
A_GRID: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
C_GRID: tuple[float, ...] = (0.2,)


@dataclass
class SPSATuning:
    best: dict[str, Any]
    trials: list[dict[str, Any]] = field(default_factory=list)
    epochs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def pick_best(trials: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The trial with the highest ``val_acc`` (ties: smaller ``a``, then smaller ``c``)."""
    if not trials:
        raise ValueError("no SPSA trials to choose from")
    return max(trials, key=lambda t: (t["val_acc"], -t["a"], -t["c"]))


async def tune_spsa(cfg: ExperimentConfig, a_grid: Sequence[float] = A_GRID, c_grid: Sequence[float] = C_GRID,
                    epochs: int | None = None, task: Task | None = None, device: Device | None = None,
                    progress: bool = False) -> SPSATuning:
    """Short SPSA runs for each ``(a, c)``; the best validation accuracy wins."""
    ep = int(epochs or max(2, cfg.epochs // 4))
    task = with_validation(task or load_task(cfg.task, seed=cfg.seed), cfg.val_fraction, seed=cfg.seed)
    if task.x_val is None:
        raise ValueError("SPSA tuning needs a validation split (val_fraction > 0)")
    trials = []
    for a in a_grid:
        for c in c_grid:
            trial = dataclasses.replace(cfg, method="spsa", spsa_a=float(a), spsa_c=float(c), epochs=ep,
                                        eval_test="none", patience=None)
            r = await run_experiment(trial, task=task, device=device)
            trials.append({"a": float(a), "c": float(c), "val_acc": r.summary["val_acc"],
                           "epoch": r.summary["best_epoch"]})
            if progress:
                print(f"spsa tune a={a:g} c={c:g}: val acc {r.summary['val_acc']:.3f}")
    return SPSATuning(best=pick_best(trials), trials=trials, epochs=ep)
