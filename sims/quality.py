"""Quality metrics of a simulator, shared by the tests, ``bench/sims_quality.py`` and ``docs/sims.md``.

All metrics use the noiseless physics ``sim.physics(x, theta, sim.hidden_params)`` on random in-range
inputs (uniform over ``spec.x_range`` / ``spec.theta_range``)::

    mismatch      = ||y_nominal - y_true|| / ||y_true - mean(y_true)||     (nominal_forward vs the unit)
    effect_gap    = ||true_forward - y_true|| / ||y_true - mean||          (second-order effects, unit's own p)
    theta_effect  = ||y(theta_2) - y(theta_1)|| / ||y(theta_1) - mean||
    linear_resid  = ||y - best affine fit in x|| / ||y - column means||     (0 for a linear map)
    clip_fraction = fraction of outputs at or beyond the ends of spec.y_range
    spread        = (99th - 1st percentile of y) / (y_range width)
"""
from __future__ import annotations

import time

import numpy as np
import torch

from pat_runtime.devices.spec import DeviceSpec

from .base import Simulator


def random_inputs(spec: DeviceSpec, batch: int, seed: int = 0, dtype=torch.float32):
    """Uniform random ``x[batch, in]`` and ``theta[P]`` inside the safe ranges."""
    g = torch.Generator().manual_seed(seed)
    (xl, xh), (tl, th) = spec.x_range, spec.theta_range
    x = torch.rand(batch, spec.in_dim, generator=g, dtype=torch.float64) * (xh - xl) + xl
    t = torch.rand(spec.param_dim, generator=g, dtype=torch.float64) * (th - tl) + tl
    return x.to(dtype), t.to(dtype)


def true_physics(sim: Simulator, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return sim.physics(x, theta, sim.hidden_params)


def rel_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y - ref).norm() / (ref - ref.mean()).norm())


def mismatch(sim: Simulator, x: torch.Tensor, theta: torch.Tensor) -> float:
    """Normalised error of the nominal (datasheet) model against this unit's true physics."""
    with torch.no_grad():
        return rel_error(sim.nominal_forward(x, theta), true_physics(sim, x, theta))


def effect_gap(sim: Simulator, x: torch.Tensor, theta: torch.Tensor) -> float:
    """Normalised size of the second-order effects: true forward against the datasheet model (unit's p)."""
    with torch.no_grad():
        return rel_error(sim.true_forward(x, theta), true_physics(sim, x, theta))


def theta_effect(sim: Simulator, x: torch.Tensor, theta1: torch.Tensor, theta2: torch.Tensor) -> float:
    return rel_error(true_physics(sim, x, theta2), true_physics(sim, x, theta1))


def linear_residual(sim: Simulator, x: torch.Tensor, theta: torch.Tensor) -> float:
    y = true_physics(sim, x, theta).double()
    X = torch.cat([x.double(), torch.ones(x.shape[0], 1, dtype=torch.float64)], 1)
    fit = X @ torch.linalg.lstsq(X, y).solution
    return float((fit - y).norm() / (y - y.mean(0)).norm())


def output_stats(sim: Simulator, y: torch.Tensor | np.ndarray) -> dict[str, float]:
    y = np.asarray(y, dtype=np.float64)
    lo, hi = sim.spec.y_range
    span = hi - lo
    eps = 1e-6 * span
    return {
        "clip_fraction": float(((y <= lo + eps) | (y >= hi - eps)).mean()),
        "std": float(y.std() / span),
        "per_output_std": float(y.std(0).mean() / span),
        "spread": float((np.percentile(y, 99) - np.percentile(y, 1)) / span),
        "min": float(y.min()),
        "max": float(y.max()),
    }


def measure_ms(sim: Simulator, batch: int = 256, repeats: int = 20) -> float:
    """Median wall time of one ``measure`` call (ms) for a batch of ``batch``."""
    x, t = random_inputs(sim.spec, batch, seed=1)
    x, t = x.numpy(), t.numpy()
    sim.measure(x, t)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sim.measure(x, t)
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def report(kind: str, units: int = 8, batch: int = 512, **kwargs) -> dict[str, float]:
    """All metrics for ``make_sim(kind, **kwargs)``: mismatch averaged over ``units`` units."""
    from . import make_sim

    sim = make_sim(kind, noise=0.0, **kwargs)
    x, t1 = random_inputs(sim.spec, batch, seed=0)
    _, t2 = random_inputs(sim.spec, 1, seed=1)
    mm = [mismatch(make_sim(kind, unit=u, noise=0.0, **kwargs), x, t1) for u in range(units)]
    out = {"mismatch_mean": float(np.mean(mm)), "mismatch_min": float(np.min(mm)),
           "mismatch_max": float(np.max(mm))}
    out.update(output_stats(sim, sim.measure(x.numpy(), t1.numpy())))
    out["effect_gap"] = float(np.mean([effect_gap(make_sim(kind, unit=u, noise=0.0, **kwargs), x, t1)
                                       for u in range(units)]))
    out["theta_effect"] = theta_effect(sim, x, t1, t2)
    out["linear_resid"] = linear_residual(sim, x, t1)
    out["measure_ms_b256"] = measure_ms(make_sim(kind, **kwargs))
    return out
