"""Offline classification tasks for PNN training (nothing is ever downloaded at run time).

``load_task(name, seed=0, n_train=None, n_test=None) -> Task`` returns float32 features in
[0, 1] and int64 labels, split stratified and deterministically from ``seed``
(see :mod:`runtime.datasets.core`). ``TASKS`` lists the known names. ``batches`` iterates
mini-batches for training loops.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import digits
from .core import Task, batches, scale_unit, split_task

__all__ = ["TASKS", "Task", "batches", "load_task", "register_task", "scale_unit", "split_task"]


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

    ``options`` go to the task's loader (e.g. ``downsample=True`` for ``mnist5k``).
    Raises ValueError for an unknown name (listing the known ones) or impossible sizes.
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    x, y = entry.load_xy(**options)
    return split_task(name, entry.description, x, y, entry.n_classes, seed=seed,
                      n_train=n_train, n_test=n_test, test_fraction=entry.test_fraction,
                      meta=dict(options))


register_task("digits", digits.load_digits_xy, digits.N_CLASSES, digits.DESCRIPTION)
