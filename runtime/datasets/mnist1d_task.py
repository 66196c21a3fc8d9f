"""``mnist1d``: the MNIST-1D benchmark (Greydanus 2020) generated locally by the ``mnist1d`` package.

``mnist1d.data.make_dataset(args)`` builds the data procedurally from 10 hand-made 1-D templates
(padding, random shear/scale/translation, correlated + iid noise, resampling to
``final_seq_length`` = 40 points). We never call ``get_dataset`` (which may download a pickle);
generation is deterministic from ``args.seed`` (default 42, the published set) and takes ~2.5 s,
so results are cached per process. ``make_dataset`` reseeds numpy's and ``random``'s global
RNGs; we restore both afterwards so loading has no side effects.

Features: ``x = (s - min) / (max - min)`` with min/max over the whole generated set, so every
value is in [0, 1] and the per-sample shape of the signal is kept.
"""
from __future__ import annotations

import random
from functools import lru_cache

import numpy as np

from .core import scale_unit
from .optional import require

N_CLASSES = 10
DESCRIPTION = ("MNIST-1D (Greydanus 2020) generated locally by the mnist1d package: 5000 1-D "
               "signals of 40 points from 10 digit templates, min-max scaled; 10 classes")


@lru_cache(maxsize=4)
def _generate(overrides: tuple[tuple[str, object], ...]) -> tuple[np.ndarray, np.ndarray]:
    data = require("mnist1d.data", "mnist1d", "mnist1d")
    args = data.get_dataset_args(as_dict=False)
    for key, value in overrides:
        setattr(args, key, value)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = data.make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x = np.concatenate([d["x"], d["x_test"]])
    y = np.concatenate([d["y"], d["y_test"]]).astype(np.int64)
    x = scale_unit(x, x.min(), x.max())
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def load_mnist1d_xy(num_samples: int = 5000, final_seq_length: int = 40, data_seed: int = 42,
                    iid_noise_scale: float = 2e-2, corr_noise_scale: float = 0.25,
                    shuffle_seq: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Full MNIST-1D set. Defaults are ``mnist1d.data.get_dataset_args()``'s (the published set);
    ``data_seed`` is that dict's ``seed`` (renamed: ``seed`` of ``load_task`` is the split seed)."""
    for label, v, lo in (("num_samples", num_samples, 10 * N_CLASSES),
                         ("final_seq_length", final_seq_length, 2)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"mnist1d: {label} must be an int >= {lo}, got {v!r}")
    for label, v in (("iid_noise_scale", iid_noise_scale), ("corr_noise_scale", corr_noise_scale)):
        if not v >= 0:
            raise ValueError(f"mnist1d: {label} must be >= 0, got {v!r}")
    return _generate((("num_samples", num_samples), ("final_seq_length", final_seq_length),
                      ("seed", int(data_seed)), ("iid_noise_scale", float(iid_noise_scale)),
                      ("corr_noise_scale", float(corr_noise_scale)),
                      ("shuffle_seq", bool(shuffle_seq))))
