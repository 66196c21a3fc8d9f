"""Collect twin-training data from a device.

Each batch draws one ``θ ~ U(theta_range)`` (the device applies one θ per batch) and ``x ~ U(x_range)``
row-wise, then measures the same ``(x, θ)`` ``repeats`` times. The spread between repeats estimates the
noise floor: the held-out NMSE of the *ideal* twin (the true noiseless mean) against single measurements,

    floor = mean_{i,k} s²_ik / mean_{i,k} (y_ik - ȳ_k)²,      s²_ik = unbiased variance over repeats.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from devices.base import Device


@dataclass
class TwinData:
    """``x[N, in]``, ``theta[N, P]``, ``y[N, out]`` (first repeat), ``y_repeats[R, N, out]``, ``group[N]``
    (the batch each row was measured in: rows of one group share θ, so splits keep groups together)."""

    x: np.ndarray
    theta: np.ndarray
    y: np.ndarray
    y_repeats: np.ndarray
    group: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def noise_floor(self) -> float:
        """Estimated NMSE floor from repeats (``nan`` with a single repeat)."""
        if self.y_repeats.shape[0] < 2:
            return float("nan")
        noise = float(self.y_repeats.var(axis=0, ddof=1).mean())
        return noise / max(float(self.y.var(axis=0).mean()), 1e-30)

    @property
    def noise_std(self) -> float:
        if self.y_repeats.shape[0] < 2:
            return float("nan")
        return float(np.sqrt(self.y_repeats.var(axis=0, ddof=1).mean()))

    def split(self, val_frac: float = 0.2, seed: int = 0) -> tuple["TwinData", "TwinData"]:
        """Held-out split by measurement batch (rows that share θ stay together)."""
        groups = np.unique(self.group)
        rng = np.random.default_rng(seed)
        n_val = max(1, int(round(val_frac * len(groups)))) if len(groups) > 1 else 0
        val_groups = rng.choice(groups, size=n_val, replace=False)
        mask = np.isin(self.group, val_groups)
        if not mask.any() or mask.all():     # one group only: split rows instead
            mask = np.zeros(len(self), bool)
            mask[rng.permutation(len(self))[: max(1, int(round(val_frac * len(self))))]] = True
        return self.subset(~mask), self.subset(mask)

    def subset(self, mask: np.ndarray) -> "TwinData":
        return TwinData(self.x[mask], self.theta[mask], self.y[mask], self.y_repeats[:, mask], self.group[mask])

    def save(self, path) -> None:
        np.savez_compressed(path, x=self.x, theta=self.theta, y=self.y, y_repeats=self.y_repeats, group=self.group)

    @classmethod
    def load(cls, path) -> "TwinData":
        with np.load(path) as z:
            return cls(z["x"], z["theta"], z["y"], z["y_repeats"], z["group"])


async def collect(device: Device, n_samples: int = 4096, batch: int = 256, repeats: int = 2,
                  seed: int = 0) -> TwinData:
    """Measure ``n_samples`` random ``(x, θ)`` pairs on ``device`` (connected), ``repeats`` times each."""
    if n_samples < 1 or batch < 1 or repeats < 1:
        raise ValueError(f"n_samples, batch and repeats must be >= 1, got {n_samples}, {batch}, {repeats}")
    spec = device.spec
    batch = min(int(batch), spec.max_batch)
    rng = np.random.default_rng(seed)
    xs, ths, ys, groups = [], [], [], []
    done, g = 0, 0
    while done < n_samples:
        b = min(batch, n_samples - done)
        x = rng.uniform(*spec.x_range, size=(b, spec.in_dim)).astype(np.float32)
        th = rng.uniform(*spec.theta_range, size=spec.param_dim).astype(np.float32)
        reps = [await device.apply(x, th) for _ in range(repeats)]
        xs.append(x)
        ths.append(np.broadcast_to(th, (b, spec.param_dim)))
        ys.append(np.stack(reps))
        groups.append(np.full(b, g))
        done += b
        g += 1
    y_rep = np.concatenate(ys, axis=1).astype(np.float32)
    return TwinData(np.concatenate(xs), np.concatenate(ths).astype(np.float32), y_rep[0].copy(), y_rep,
                    np.concatenate(groups))
