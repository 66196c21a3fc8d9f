"""Collect twin-training data from a device.

The device applies one θ per call, so θ is drawn anew every ``theta_every`` rows (one device call per
group of rows): many distinct θ, not a few θ with many x each, is what lets a black-box twin learn the
θ dependence. With ``design="lhs"`` (default) the θ of all groups and the x of all rows come from Latin
hypercube designs over the safe ranges (``scipy.stats.qmc``, space filling); ``design="random"`` draws them
uniformly. Each call is measured ``repeats`` times. The spread between repeats estimates the
noise floor: the held-out NMSE of the *ideal* twin (the true noiseless mean) against single measurements,

    floor = mean_{i,k} s²_ik / mean_{i,k} (y_ik - ȳ_k)²,      s²_ik = unbiased variance over repeats.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from pat_runtime.devices.base import Device
from pat_runtime.devices.spec import DeviceSpec


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


def design_points(n: int, dim: int, lo: float, hi: float, design: str, rng: np.random.Generator) -> np.ndarray:
    """``n`` points in ``[lo, hi]^dim``: a Latin hypercube (``"lhs"``) or i.i.d. uniform (``"random"``)."""
    if design == "lhs":
        from scipy.stats import qmc

        u = qmc.LatinHypercube(d=dim, seed=rng).random(n)
    elif design == "random":
        u = rng.random((n, dim))
    else:
        raise ValueError(f"unknown design {design!r}: expected 'lhs' or 'random'")
    return (lo + (hi - lo) * u).astype(np.float32)


def _design(spec, n_samples: int, every: int, seed: int, design: str) -> tuple[np.ndarray, np.ndarray, int]:
    """The rows ``x[N, in]`` and group θ ``th[G, P]`` of a design (one θ per ``every`` rows)."""
    if n_samples < 1 or every < 1:
        raise ValueError(f"n_samples and theta_every must be >= 1, got {n_samples}, {every}")
    rng = np.random.default_rng(seed)
    n_groups = -(-int(n_samples) // every)
    x_all = design_points(int(n_samples), spec.in_dim, *spec.x_range, design, rng)
    th_all = design_points(n_groups, spec.param_dim, *spec.theta_range, design, rng)
    return x_all, th_all, every


def collect_rows(measure: Callable[[np.ndarray, np.ndarray], np.ndarray], spec: DeviceSpec, n_samples: int = 4096,
                 repeats: int = 2, seed: int = 0, theta_every: int = 16, design: str = "lhs",
                 chunk: int = 4096) -> TwinData:
    """The same design as :func:`collect` (same ``x``, θ and groups for the same arguments), measured by a
    ``measure(x[B, in], theta[B, P])`` that takes one θ *per row*, e.g. ``Simulator.measure``: many groups
    per call. For benchmarks on simulators whose per-call cost dominates (``bench/twin_quality.py
    --direct``); statistically the same as one device call per group when the simulator keeps no state
    between calls (no drift, no latency), as the stock simulators at their defaults."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    every = min(int(theta_every), spec.max_batch)
    x, th, every = _design(spec, n_samples, every, seed, design)
    group = np.arange(len(x)) // every
    th_rows = th[group]
    step = max(every, int(chunk) // every * every)
    y_rep = np.stack([np.concatenate([np.asarray(measure(x[i:i + step], th_rows[i:i + step]), np.float32)
                                      for i in range(0, len(x), step)]) for _ in range(repeats)])
    return TwinData(x, th_rows.astype(np.float32), y_rep[0].copy(), y_rep, group)


async def collect(device: Device, n_samples: int = 4096, batch: int | None = None, repeats: int = 2,
                  seed: int = 0, theta_every: int | None = None, design: str = "lhs") -> TwinData:
    """Measure ``n_samples`` ``(x, θ)`` pairs on ``device`` (connected), ``repeats`` times each.

    θ changes every ``theta_every`` rows (default 16; ``batch`` is the older name of the same thing)."""
    every = theta_every if theta_every is not None else (batch if batch is not None else 16)
    if n_samples < 1 or every < 1 or repeats < 1:
        raise ValueError(f"n_samples, theta_every and repeats must be >= 1, got {n_samples}, {every}, {repeats}")
    spec = device.spec
    x_all, th_all, every = _design(spec, n_samples, min(int(every), spec.max_batch), seed, design)
    xs, ths, ys, groups = [], [], [], []
    done, g = 0, 0
    while done < n_samples:
        b = min(every, n_samples - done)
        x = x_all[done:done + b]
        th = th_all[g]
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
