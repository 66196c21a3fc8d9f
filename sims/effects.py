"""Second-order physical effects that a simulator's datasheet model lacks (the *reality gap*).

Every simulator has two forward models:

* ``physics(x, theta, p)`` — the **datasheet model**: the documented first-order physics with parameters
  ``p``. Nominal and grey-box twins are built from it (with ``p = p_nom`` or fitted ``p``).
* ``true_forward(x, theta)`` — what :meth:`~pat_runtime.sims.base.Simulator.measure` evaluates: the datasheet model with
  the unit's hidden parameters **plus** the effects listed in the class's ``effect_defaults`` (amplifier
  heating, memory, unmodelled modes, crosstalk, saturation, hysteresis, ...). No twin may call it.

Each effect has a strength (0 = absent). Options (also as device-URI query keys)::

    sim:plate                       # every effect at its default (realistic) strength
    sim:plate?crosstalk=0.1         # one effect changed
    sim:plate?effects=0             # all off: the device is exactly its datasheet model (+ unit variation)
    sim:plate?effects=2             # all effects twice as strong (``effects`` is a global scale)

Each unit's effect strengths vary like its parameters: ``s_unit = s * max(0.2, 1 + 2 variation N(0, 1))``
(drawn from a stream of its own, so the datasheet parameters of a unit do not change with the effects).
The helpers below are the shared building blocks; docs/sims.md lists every effect with its equation.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch

_OFF = {"off", "false", "no", "none", "0"}
_ON = {"on", "true", "yes", "1"}


def effect_scale(value: Any) -> float:
    """The global ``effects`` switch: ``0/off/false`` -> 0, ``on/true`` -> 1, a number -> that scale."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _OFF:
            return 0.0
        if v in _ON:
            return 1.0
        try:
            value = float(v)
        except ValueError:
            raise ValueError(f"effects={value!r}: expected on/off or a non-negative scale") from None
    s = float(value)
    if not math.isfinite(s) or s < 0:
        raise ValueError(f"effects={value!r}: expected on/off or a non-negative scale")
    return s


def resolve_effects(defaults: Mapping[str, float], given: Mapping[str, Any], scale: Any = 1.0) -> dict[str, float]:
    """Strengths of every effect: ``scale * given.get(name, default)`` (unknown names are an error)."""
    unknown = set(given) - set(defaults)
    if unknown:
        raise ValueError(f"unknown effect(s) {sorted(unknown)}; known: {', '.join(sorted(defaults))}")
    k = effect_scale(scale)
    out = {}
    for name, d in defaults.items():
        v = float(given.get(name, d))
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"effect {name}={given.get(name)!r}: strengths are non-negative numbers")
        out[name] = k * v
    return out


def vary_per_unit(strengths: Mapping[str, float], variation: float, seed: int, unit: int) -> dict[str, float]:
    """Unit-to-unit spread of the effect strengths (its own random stream, seeded by ``(seed, unit)``)."""
    rng = np.random.default_rng([seed, unit, 3])
    z = rng.standard_normal(len(strengths))
    return {k: v * max(0.2, 1.0 + 2.0 * variation * float(zi)) for (k, v), zi in zip(sorted(strengths.items()), z)}


# ----- building blocks ----------------------------------------------------------------------------------
def neighbour_mix(y: torch.Tensor, c: float) -> torch.Tensor:
    """Crosstalk to adjacent channels: ``y_j + c (y_{j-1} + y_{j+1} - 2 y_j)`` (edge channels mirror)."""
    if not c:
        return y
    left = torch.cat([y[:, 1:2], y[:, :-1]], 1)
    right = torch.cat([y[:, 1:], y[:, -2:-1]], 1)
    return y + c * (left + right - 2 * y)


def compress(y: torch.Tensor, lo: float, hi: float, s: float) -> torch.Tensor:
    """Soft compression towards the top of ``[lo, hi]`` (preamp / detector saturation)::

        u = (y - lo) / (hi - lo),   u' = u (1 + s) / (1 + s u)      (u' = u at s = 0; 0 and 1 are kept)
    """
    if not s:
        return y
    u = ((y - lo) / (hi - lo)).clamp(min=0.0)
    return lo + (hi - lo) * u * (1 + s) / (1 + s * u)


def adc_inl(y: torch.Tensor, lo: float, hi: float, s: float) -> torch.Tensor:
    """ADC integral nonlinearity: a bow plus a ripple of ``s`` (fraction of full scale)::

        y' = y + s (hi - lo) [4 u (1 - u) + 0.5 sin(6 pi u)],   u = (y - lo) / (hi - lo)
    """
    if not s:
        return y
    u = (y - lo) / (hi - lo)
    return y + s * (hi - lo) * (4 * u * (1 - u) + 0.5 * torch.sin(6 * math.pi * u))


def cyclic_ema(v: torch.Tensor, tau: float) -> torch.Tensor:
    """Steady-state first-order low-pass (time constant ``tau`` samples) of a periodic signal ``v[B, T]``."""
    T = v.shape[1]
    a = math.exp(-1.0 / tau)
    k = (1 - a) * a ** torch.arange(T, dtype=v.dtype) / (1 - a ** T)
    return torch.fft.irfft(torch.fft.rfft(v, dim=1) * torch.fft.rfft(k), n=T, dim=1)


__all__ = ["adc_inl", "compress", "cyclic_ema", "effect_scale", "neighbour_mix", "resolve_effects", "vary_per_unit"]
