"""Train / validation / test: disjoint, stratified, deterministic; test untouched."""
from __future__ import annotations

import numpy as np
import pytest

from pat_runtime.datasets import load_task, split_task, with_validation


def _toy(n_per_class=(40, 60, 100)):
    y = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)])
    x = np.stack([np.arange(len(y)) / len(y), y / 10.0], axis=1).astype(np.float32)
    return x, y


def _ids(x, n):
    return set(np.rint(x[:, 0] * n).astype(int).tolist())


def test_validation_is_carved_from_train_only():
    x, y = _toy()
    t = split_task("toy", "d", x, y, 3, seed=4)
    v = with_validation(t, 0.25, seed=4)
    n = len(y)
    tr, va, te = _ids(v.x_train, n), _ids(v.x_val, n), _ids(v.x_test, n)
    assert len(va) == round(0.25 * t.n_train) == v.n_val and len(tr) == t.n_train - v.n_val
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert tr | va == _ids(t.x_train, n) and te == _ids(t.x_test, n)      # the test split is untouched
    assert np.array_equal(v.x_test, t.x_test) and np.array_equal(v.y_test, t.y_test)
    shares = np.bincount(v.y_val, minlength=3) / v.n_val
    assert np.abs(shares - np.array([0.2, 0.3, 0.5])).max() < 2 / v.n_val   # stratified
    again = with_validation(t, 0.25, seed=4)
    assert np.array_equal(again.x_val, v.x_val)
    assert not np.array_equal(with_validation(t, 0.25, seed=5).x_val, v.x_val)
    assert with_validation(v, 0.5) is v and with_validation(t, 0.0) is t


def test_bad_fractions():
    x, y = _toy()
    t = split_task("toy", "d", x, y, 3, seed=0)
    with pytest.raises(ValueError, match="validation fraction"):
        with_validation(t, 1.2)
    with pytest.raises(ValueError, match="n_classes"):
        with_validation(t, 0.005)


def test_load_task_val_fraction():
    t = load_task("digits", seed=0, val_fraction=0.2)
    assert (t.n_train, t.n_val, t.n_test) == (1078, 270, 449)
    assert load_task("digits", seed=0).x_val is None
