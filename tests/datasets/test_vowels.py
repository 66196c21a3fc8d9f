"""vowels task: UCI Japanese Vowels from sktime's bundled copy, resampled to a fixed length."""
from __future__ import annotations

import numpy as np
import pytest

from pat_runtime.datasets import load_task
from pat_runtime.datasets.japanese_vowels import N_CHANNELS, resample_series


def test_resample_series_is_linear_and_keeps_endpoints():
    s = np.array([0.0, 2.0, 4.0, 10.0])  # samples at t = 0, 1/3, 2/3, 1
    r = resample_series(s, 7)              # t = 0, 1/6, ..., 1
    assert r[0] == 0.0 and r[-1] == 10.0
    assert r[1] == pytest.approx(1.0) and r[2] == pytest.approx(2.0)
    assert r[5] == pytest.approx(7.0)
    assert np.allclose(resample_series(np.arange(5.0), 5), np.arange(5.0))


def test_bad_length_rejected():
    with pytest.raises(ValueError, match=r"length must be an int in \[2, 64\]"):
        load_task("vowels", length=1)


def test_features_follow_the_bundled_series():
    datasets = pytest.importorskip("sktime.datasets")
    from pat_runtime.datasets.japanese_vowels import load_vowels_xy

    frame, labels = datasets.load_japanese_vowels(return_type="nested_univ")
    assert len(frame) == 640
    x, y = load_vowels_xy(length=5)
    assert x.shape == (640, N_CHANNELS * 5)
    assert np.array_equal(y, np.asarray(labels).astype(int) - 1)
    assert np.bincount(y).tolist() == [61, 65, 118, 74, 59, 54, 70, 80, 59]
    # channel c of utterance i, resampled then min-max scaled over the whole set
    c = 3
    raw = np.stack([resample_series(np.asarray(frame.iat[i, c]), 5) for i in range(640)])
    want = (raw - raw.min()) / (raw.max() - raw.min())
    assert np.allclose(x[:, c * 5:(c + 1) * 5], want, atol=1e-6)
    for ch in range(N_CHANNELS):  # every channel spans [0, 1]
        block = x[:, ch * 5:(ch + 1) * 5]
        assert block.min() == 0.0 and block.max() == 1.0
    assert load_task("vowels", length=4).n_features == 48
