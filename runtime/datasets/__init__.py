"""Offline classification tasks for PNN training (nothing is ever downloaded at run time).

``load_task(name, seed=0, n_train=None, n_test=None) -> Task`` returns float32 features in
[0, 1] and int64 labels, split stratified and deterministically from ``seed``
(see :mod:`runtime.datasets.core`). ``TASKS`` lists the known names. ``batches`` iterates
mini-batches for training loops.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import digits, japanese_vowels, mnist1d_task, mnist5k, synth_vowels
from .core import Task, batches, scale_unit, split_task
from .optional import MissingDatasetPackage

__all__ = ["TASKS", "MissingDatasetPackage", "Task", "batches", "load_task", "register_task",
           "scale_unit", "split_task", "task_info"]


@dataclass(frozen=True)
class _Entry:
    load_xy: Callable[..., tuple[np.ndarray, np.ndarray]]
    n_classes: int
    description: str
    test_fraction: float = 0.25


_REGISTRY: dict[str, _Entry] = {}
TASKS: list[str] = []


def register_task(name: str, load_xy: Callable[..., tuple[np.ndarray, np.ndarray]],
                  n_classes: int, description: str, test_fraction: float = 0.25) -> None:
    """Add a task: ``load_xy(**options)`` returns the full ``(x in [0,1], y)`` dataset."""
    if name in _REGISTRY:
        raise ValueError(f"task {name!r} is already registered")
    _REGISTRY[name] = _Entry(load_xy, n_classes, description, test_fraction)
    TASKS.append(name)


def load_task(name: str, seed: int = 0, n_train: int | None = None, n_test: int | None = None,
              **options) -> Task:
    """Load task ``name`` and split it stratified and deterministically from ``seed``.

    ``options`` go to the task's loader (e.g. ``size=14`` for ``mnist5k``). Raises ValueError
    for an unknown name (listing the known ones), an unknown option or impossible sizes, and
    :class:`MissingDatasetPackage` (an ImportError) naming the pip package an optional task needs.
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    params = inspect.signature(entry.load_xy).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    unknown = sorted(set(options) - set(params)) if not takes_any else []
    if unknown:
        allowed = ", ".join(params) or "none"
        raise ValueError(f"task {name!r} got unknown option(s) {unknown}; allowed: {allowed}")
    x, y = entry.load_xy(**options)
    return split_task(name, entry.description, x, y, entry.n_classes, seed=seed,
                      n_train=n_train, n_test=n_test, test_fraction=entry.test_fraction,
                      meta=dict(options))


def task_info(name: str) -> dict:
    """Name, class count, description and loader options of a task, without loading it."""
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    params = inspect.signature(entry.load_xy).parameters
    return {"name": name, "n_classes": entry.n_classes, "description": entry.description,
            "options": {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY
                        or p.kind is p.POSITIONAL_OR_KEYWORD}}


register_task("digits", digits.load_digits_xy, digits.N_CLASSES, digits.DESCRIPTION)
register_task("mnist1d", mnist1d_task.load_mnist1d_xy, mnist1d_task.N_CLASSES,
              mnist1d_task.DESCRIPTION, test_fraction=0.2)
register_task("mnist5k", mnist5k.load_mnist5k_xy, mnist5k.N_CLASSES, mnist5k.DESCRIPTION,
              test_fraction=0.2)
register_task("vowels", japanese_vowels.load_vowels_xy, japanese_vowels.N_CLASSES,
              japanese_vowels.DESCRIPTION)
register_task("vowels-synth", synth_vowels.load_synth_vowels_xy, synth_vowels.N_CLASSES,
              synth_vowels.DESCRIPTION)
