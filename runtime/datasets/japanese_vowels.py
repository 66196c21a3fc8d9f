"""``vowels``: UCI Japanese Vowels (Kudo et al. 1999), the copy bundled inside ``sktime``.

Nine Japanese male speakers each uttered the vowel pair /ae/; every utterance is a series of
7..29 frames of 12 LPC cepstrum coefficients. **The label is the speaker (9 classes)**, not the
vowel. 640 utterances (sktime's 270 train + 370 test, pooled and re-split here).

Fixed-length features: each of the 12 channels is linearly resampled (``np.interp``) onto
``length`` equally spaced points of normalised time t in [0, 1], giving ``12 * length`` values
ordered channel-major (``x[c * length + k]``). Each channel is then min-max scaled over the
whole set: ``x_c = (v - min_c) / (max_c - min_c)``, which keeps the time shape of every channel.

Needs ``pip install sktime`` (pure-Python wheel; pulls pandas and scikit-base). aeon ships the
same files but requires numba/llvmlite and pins numpy, so sktime is the lighter provider.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .core import scale_unit
from .optional import require

N_CLASSES = 9
N_CHANNELS = 12
DESCRIPTION = ("UCI Japanese Vowels (bundled in sktime): 640 utterances of /ae/ by 9 male "
               "speakers, 12 LPC cepstra resampled to a fixed length, channel-wise min-max; "
               "label = speaker, 9 classes")


def resample_series(series: np.ndarray, length: int) -> np.ndarray:
    """Linear resampling of ``series[T]`` onto ``length`` points spanning the same time range."""
    series = np.asarray(series, dtype=np.float64)
    src = np.linspace(0.0, 1.0, len(series))
    return np.interp(np.linspace(0.0, 1.0, length), src, series)


@lru_cache(maxsize=1)
def _raw() -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Every utterance as an array ``[T_i, 12]`` and the 0-based speaker labels."""
    ds = require("sktime.datasets", "sktime", "vowels")
    frame, labels = ds.load_japanese_vowels(return_type="nested_univ")
    series = tuple(np.stack([np.asarray(frame.iat[i, c], dtype=np.float64)
                             for c in range(N_CHANNELS)], axis=1)
                   for i in range(len(frame)))
    y = np.asarray(labels).astype(np.int64) - 1
    return series, y


def load_vowels_xy(length: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``x[640, 12 * length]`` in [0, 1] and speaker labels ``y[640]`` in 0..8."""
    if isinstance(length, bool) or not isinstance(length, int) or not 2 <= length <= 64:
        raise ValueError(f"vowels: length must be an int in [2, 64], got {length!r}")
    return _features(length)


@lru_cache(maxsize=4)
def _features(length: int) -> tuple[np.ndarray, np.ndarray]:
    series, y = _raw()
    x = np.stack([np.stack([resample_series(s[:, c], length) for c in range(N_CHANNELS)])
                  for s in series])  # [N, 12, length]
    lo = x.min(axis=(0, 2), keepdims=True)
    hi = x.max(axis=(0, 2), keepdims=True)
    x = scale_unit(x, lo, hi).reshape(len(x), N_CHANNELS * length)
    y = y.copy()
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y
