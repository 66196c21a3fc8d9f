"""``digits``: scikit-learn's bundled 8x8 handwritten digits (UCI optdigits test part).

1797 images, 10 classes, pixel values 0..16 -> ``x = pixel / 16`` gives 64 features in [0, 1].
Ships inside scikit-learn; nothing is downloaded.
"""
from __future__ import annotations

import numpy as np

from .core import scale_unit

N_CLASSES = 10
DESCRIPTION = ("scikit-learn load_digits: 1797 8x8 handwritten digits (UCI optdigits), "
               "64 features = pixel/16, 10 classes")


def load_digits_xy() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return scale_unit(bunch.data, 0.0, 16.0), bunch.target.astype(np.int64)
