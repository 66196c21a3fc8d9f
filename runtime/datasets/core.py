"""Task container, stratified splitting and mini-batching shared by every dataset loader.

A loader returns the *whole* dataset as ``(x, y)`` with ``x`` already scaled to ``[0, 1]``
(float32) and ``y`` integer labels ``0..C-1``. :func:`split_task` then draws a stratified,
seed-deterministic train/test split:

* ``n_test=None`` -> ``round(test_fraction * N)`` test samples (fewer if ``n_train`` leaves less).
* ``n_train=None`` -> every sample not in the test set.
* both given -> exactly that many, drawn stratified; ``n_train + n_test <= N`` is required.

Stratification uses :func:`sklearn.model_selection.train_test_split`, so every class keeps
(up to rounding) its share of the samples in both halves.

:func:`with_validation` then carves a stratified *validation* split out of the training part (never out
of the test part): all model selection (best epoch, early stopping, hyper-parameters) reads validation,
and the test split is only read to report the selected model.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True, eq=False)
class Task:
    """A classification task: float32 features in [0, 1] and int64 labels in [0, n_classes)."""

    name: str
    description: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    n_features: int
    meta: dict = field(default_factory=dict)
    #: validation split carved from the training data (:func:`with_validation`); None = none yet
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_val(self) -> int:
        return 0 if self.x_val is None else int(self.x_val.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    def __repr__(self) -> str:  # arrays are large; keep repr readable
        return (f"Task({self.name!r}, n_train={self.n_train}, n_val={self.n_val}, n_test={self.n_test}, "
                f"n_features={self.n_features}, n_classes={self.n_classes})")


def scale_unit(x: np.ndarray, lo: float | np.ndarray, hi: float | np.ndarray) -> np.ndarray:
    """Affine map ``(x - lo) / (hi - lo)`` clipped to [0, 1], returned as float32."""
    x = np.asarray(x, dtype=np.float64)
    span = np.where(np.asarray(hi - lo) > 0, hi - lo, 1.0)
    return np.clip((x - lo) / span, 0.0, 1.0).astype(np.float32)


def _check_count(label: str, n: int | None, total: int) -> None:
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{label} must be an int or None, got {type(n).__name__}")
    if n < 1 or n > total:
        raise ValueError(f"{label}={n} out of range: the task has {total} samples")


def split_task(name: str, description: str, x: np.ndarray, y: np.ndarray, n_classes: int,
               seed: int = 0, n_train: int | None = None, n_test: int | None = None,
               test_fraction: float = 0.25, meta: dict | None = None) -> Task:
    """Stratified, deterministic train/test split of a full dataset into a :class:`Task`."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.asarray(y).astype(np.int64)
    total = int(x.shape[0])
    if x.ndim != 2 or y.shape != (total,):
        raise ValueError(f"{name}: expected x[N, F] and y[N], got {x.shape} and {y.shape}")
    _check_count("n_train", n_train, total)
    _check_count("n_test", n_test, total)
    if n_train is not None and n_test is not None and n_train + n_test > total:
        raise ValueError(f"n_train + n_test = {n_train + n_test} exceeds the {total} samples "
                         f"of task {name!r}")
    default_test = max(1, int(round(test_fraction * total)))
    if n_test is None:
        n_test = default_test if n_train is None else min(default_test, total - n_train)
    if n_train is None:
        n_train = total - n_test
    if n_train < n_classes or n_test < n_classes:
        raise ValueError(f"{name}: n_train={n_train} and n_test={n_test} must each be >= "
                         f"n_classes={n_classes} for a stratified split")
    from sklearn.model_selection import train_test_split  # lazy: keeps `import pat_runtime.datasets` light

    idx = np.arange(total)
    rng = np.random.RandomState(int(seed) % 2**32)
    tr, rest_idx = train_test_split(idx, train_size=n_train, stratify=y, random_state=rng)
    spare = len(rest_idx) - n_test
    if spare >= n_classes:
        te, _ = train_test_split(rest_idx, train_size=n_test, stratify=y[rest_idx], random_state=rng)
    else:  # too few left over to stratify the drop; the kept part is almost all of rest anyway
        te = rng.permutation(rest_idx)[:n_test]
    # sklearn returns shuffled indices; keep that order (it is deterministic given the seed).
    return Task(name=name, description=description,
                x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te],
                n_classes=int(n_classes), n_features=int(x.shape[1]), meta=dict(meta or {}))


def with_validation(task: Task, fraction: float = 0.2, seed: int = 0) -> Task:
    """``task`` with a stratified validation split of ``round(fraction * n_train)`` samples moved out of
    its training data (the test data is untouched). A task that already has one is returned as is;
    ``fraction=0`` returns ``task`` unchanged (no validation split)."""
    if task.x_val is not None or fraction == 0:
        return task
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    n_val = int(round(fraction * task.n_train))
    if n_val < task.n_classes or task.n_train - n_val < task.n_classes:
        raise ValueError(f"{task.name}: a validation fraction of {fraction} leaves {n_val} validation / "
                         f"{task.n_train - n_val} training samples; each needs >= n_classes={task.n_classes}")
    from sklearn.model_selection import train_test_split

    idx = np.arange(task.n_train)
    rng = np.random.RandomState((int(seed) * 7919 + 17) % 2**32)
    tr, va = train_test_split(idx, test_size=n_val, stratify=task.y_train, random_state=rng)
    return replace(task, x_train=task.x_train[tr], y_train=task.y_train[tr],
                   x_val=task.x_train[va], y_val=task.y_train[va],
                   meta={**task.meta, "val_fraction": float(fraction)})


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = True,
            seed: int | None = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x_batch, y_batch)`` covering every sample exactly once; the last batch may be short.

    With ``shuffle=True`` the order is a permutation drawn from ``np.random.default_rng(seed)``
    (same seed -> same order). Pass a different seed per epoch for fresh orders.
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x and y lengths differ: {n} vs {len(y)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, batch_size):
        sel = order[start:start + batch_size]
        yield x[sel], y[sel]
