"""The bundled sklearn digits task and the generic split behaviour it exercises."""
from __future__ import annotations

import numpy as np
import pytest

from pat_runtime.datasets import TASKS, Task, load_task


def test_digits_shapes_dtypes_ranges():
    t = load_task("digits")
    assert isinstance(t, Task)
    assert t.name == "digits" and "digits" in TASKS
    assert (t.n_features, t.n_classes) == (64, 10)
    assert t.x_train.shape == (1348, 64) and t.x_test.shape == (449, 64)
    assert t.y_train.shape == (1348,) and t.y_test.shape == (449,)
    assert t.x_train.dtype == np.float32 and t.y_train.dtype == np.int64
    for x in (t.x_train, t.x_test):
        assert x.min() == 0.0 and x.max() == 1.0
    assert set(np.unique(t.y_train)) == set(range(10))
    assert set(np.unique(t.y_test)) == set(range(10))


def test_digits_matches_sklearn_pixels():
    from sklearn.datasets import load_digits

    raw = load_digits()
    t = load_task("digits", seed=3)
    full = np.concatenate([t.x_train, t.x_test])
    # every returned row is a sklearn row divided by 16 (same multiset of rows)
    want = np.sort((raw.data / 16.0).astype(np.float32).view("V256").ravel())
    got = np.sort(np.ascontiguousarray(full).view("V256").ravel())
    assert np.array_equal(want, got)


def test_requested_sizes_are_exact_and_balanced():
    t = load_task("digits", seed=1, n_train=200, n_test=100)
    assert (t.n_train, t.n_test) == (200, 100)
    # digits classes hold 174..183 samples, so stratified counts are within 1 of n/10
    assert np.abs(np.bincount(t.y_train, minlength=10) - 20).max() <= 1
    assert np.abs(np.bincount(t.y_test, minlength=10) - 10).max() <= 1
