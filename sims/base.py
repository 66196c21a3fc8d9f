"""Base class for simulated physical systems: the "real hardware" of tests and benchmarks.

A simulator owns a differentiable physics model ``physics(x, theta, p)`` written in torch, a set of nominal
physical parameters ``p_nom`` (what a datasheet would say) and a *hidden* set ``p_true`` drawn per unit:

    p_true = p_nom * (1 + variation * N(0, 1))        (per unit, seeded by (seed, unit))

A measurement is what an instrument would return::

    x_q, theta_q = DAC(x), DAC(theta)                  (dac_bits over the safe range)
    y = physics(x_q, theta_q, p_true(t)) * (1 + noise_mult * N) + noise * scale * N
    y_meas = ADC(y)                                    (adc_bits over ``spec.y_range``)

and the hidden parameters drift as a bounded random walk in log space, ``log p <- log p + drift * N(0,1)``
per call, pulled back towards the unit's own value with rate ``drift_revert``.

Two forward models (see :mod:`pat_runtime.sims.effects`):

* :meth:`physics` is the **datasheet model** (first-order physics). Twins (nominal, grey-box, residual)
  are built from it and nothing else.
* :meth:`true_forward` is what :meth:`measure` evaluates: ``physics`` with the unit's hidden parameters plus
  the second-order effects in ``effect_defaults`` (each with its own strength option, ``effects=0`` turns
  all off). A simulator made with ``datasheet_only=True`` (what twins hold) refuses to run it.

Subclasses define ``spec`` (via :meth:`make_spec`), :meth:`nominal_params`, :meth:`physics` and, when they
have effects, ``effect_defaults`` and :meth:`physics_with_effects`.
"""
from __future__ import annotations

import abc
import threading

import numpy as np
import torch

from pat_runtime.devices.spec import DeviceSpec

from .effects import resolve_effects, vary_per_unit


def quantize(a: np.ndarray, lo: float, hi: float, bits: int | None) -> np.ndarray:
    """Uniform quantizer with ``2**bits`` levels over [lo, hi] (values outside are clipped)."""
    if not bits:
        return a
    levels = (1 << bits) - 1
    step = (hi - lo) / levels
    return (np.round((np.clip(a, lo, hi) - lo) / step) * step + lo).astype(a.dtype)


class Simulator(abc.ABC):
    """A simulated physical system with hidden unit-to-unit variation, noise, drift and quantization."""

    kind: str = "base"
    #: default relative spread of hidden parameters between units
    default_variation: float = 0.1
    #: names of parameters that are not varied between units (e.g. fixed geometry)
    fixed_params: tuple[str, ...] = ()
    #: second-order effects the datasheet model lacks: name -> default strength (0 = absent)
    effect_defaults: dict[str, float] = {}

    def __init__(
        self,
        unit: int = 0,
        seed: int = 0,
        variation: float | None = None,
        noise: float = 0.01,
        noise_mult: float = 0.0,
        drift: float = 0.0,
        drift_revert: float = 0.0,
        dac_bits: int | None = 12,
        adc_bits: int | None = 12,
        latency: float = 0.0,
        effects: float | str | bool = 1.0,
        datasheet_only: bool = False,
        **kwargs,
    ):
        self.unit = int(unit)
        self.seed = int(seed)
        self.variation = self.default_variation if variation is None else float(variation)
        self.noise = float(noise)
        self.noise_mult = float(noise_mult)
        self.drift = float(drift)
        self.drift_revert = float(drift_revert)
        self.dac_bits = dac_bits
        self.adc_bits = adc_bits
        self.latency = float(latency)
        given = {k: kwargs.pop(k) for k in list(kwargs) if k in self.effect_defaults}
        #: construction options of the datasheet model (dims etc.; effect strengths are not part of it)
        self.options = kwargs
        #: nominal strength of each effect (after the global ``effects`` scale); the unit's own in ``effect``
        self.effect_nominal = resolve_effects(self.effect_defaults, given, effects)
        self.effect = vary_per_unit(self.effect_nominal, self.variation, self.seed, self.unit)
        self.datasheet_only = bool(datasheet_only)
        self.spec: DeviceSpec = self.make_spec(**kwargs)
        self._rng = np.random.default_rng([self.seed, self.unit, 1])
        self._noise_rng = torch.Generator().manual_seed(int(np.random.default_rng([self.seed, self.unit, 2]).integers(2**62)))
        self._lock = threading.Lock()
        nominal = self.nominal_params()
        self.p_unit = {k: self._perturb(k, v) for k, v in nominal.items()}
        self._p_true = {k: v.clone() for k, v in self.p_unit.items()}
        self.calls = 0

    # ----- to implement -----------------------------------------------------------------------------
    @abc.abstractmethod
    def make_spec(self, **kwargs) -> DeviceSpec: ...

    @abc.abstractmethod
    def nominal_params(self) -> dict[str, torch.Tensor]:
        """Nominal (datasheet) physical parameters, all positive float tensors unless in fixed_params."""

    @abc.abstractmethod
    def physics(self, x: torch.Tensor, theta: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """Differentiable noiseless physics: ``x[B, in]``, ``theta[P]`` or ``[B, P]`` -> ``y[B, out]``."""

    def physics_with_effects(self, x: torch.Tensor, theta: torch.Tensor, p: dict[str, torch.Tensor],
                             effect: dict[str, float]) -> torch.Tensor:
        """The true forward: datasheet physics plus the effects at strengths ``effect``. Subclasses with
        effects override this; with every strength 0 it must equal :meth:`physics`."""
        return self.physics(x, theta, p)

    def true_forward(self, x: torch.Tensor, theta: torch.Tensor,
                     p: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Noiseless output of this unit: hidden parameters (or ``p``) plus its effects (tests and quality
        metrics only; a real device hides this, and twins never call it)."""
        if self.datasheet_only:
            raise RuntimeError(f"{type(self).__name__} was made as a datasheet model (for a twin): "
                               "it has no true forward")
        p = self._p_true if p is None else p
        if not any(self.effect.values()):
            return self.physics(x, theta, p)
        return self.physics_with_effects(x, theta, p, self.effect)

    # ----- measurement ------------------------------------------------------------------------------
    def _perturb(self, name: str, v: torch.Tensor) -> torch.Tensor:
        v = torch.as_tensor(v, dtype=torch.float32)
        if name in self.fixed_params or self.variation == 0:
            return v.clone()
        z = torch.as_tensor(self._rng.standard_normal(tuple(v.shape)), dtype=torch.float32)
        return v * (1.0 + self.variation * z).clamp(min=0.2)

    @property
    def hidden_params(self) -> dict[str, torch.Tensor]:
        """The current true parameters (tests and drift plots only: a real device hides these)."""
        return {k: v.clone() for k, v in self._p_true.items()}

    def measure(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """One physical measurement of a batch: ``x[B, in]``, ``theta[P]`` -> ``y[B, out]`` (float32)."""
        s = self.spec
        xq = quantize(np.asarray(x, np.float32), *s.x_range, self.dac_bits)
        tq = quantize(np.asarray(theta, np.float32), *s.theta_range, self.dac_bits)
        with self._lock, torch.no_grad():
            y = self.true_forward(torch.from_numpy(xq), torch.from_numpy(tq), self._p_true)
            if self.noise_mult:
                y = y * (1 + self.noise_mult * torch.randn(y.shape, generator=self._noise_rng))
            if self.noise:
                y = y + self.noise * self.noise_scale * torch.randn(y.shape, generator=self._noise_rng)
            self._step_drift()
            self.calls += 1
        y = y.numpy().astype(np.float32)
        if s.y_range is not None:
            y = quantize(y, *s.y_range, self.adc_bits)
        return y

    @property
    def noise_scale(self) -> float:
        """Scale of additive noise: a fraction of the output range."""
        if self.spec.y_range is None:
            return 1.0
        return self.spec.y_range[1] - self.spec.y_range[0]

    def _step_drift(self) -> None:
        if not self.drift:
            return
        for k, v in self._p_true.items():
            if k in self.fixed_params:
                continue
            z = torch.as_tensor(self._rng.standard_normal(tuple(v.shape)), dtype=torch.float32)
            logv = torch.log(v.abs().clamp(min=1e-12))
            target = torch.log(self.p_unit[k].abs().clamp(min=1e-12))
            logv = logv + self.drift * z - self.drift_revert * (logv - target)
            self._p_true[k] = torch.sign(self.p_unit[k]) * torch.exp(logv)

    def advance_drift(self, steps: int) -> None:
        """Let ``steps`` calls' worth of drift happen without measuring (e.g. time passing)."""
        with self._lock:
            for _ in range(int(steps)):
                self._step_drift()

    # ----- digital reference -------------------------------------------------------------------------
    def nominal_forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """The nominal physics model (what one would simulate from the datasheet)."""
        p = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in self.nominal_params().items()}
        return self.physics(x, theta, p)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} unit={self.unit} seed={self.seed} spec={self.spec.in_dim}->{self.spec.out_dim}>"


def broadcast_theta(theta: torch.Tensor, batch: int) -> torch.Tensor:
    """Return theta as ``[B, P]`` whether given as ``[P]`` or ``[B, P]``."""
    if theta.dim() == 1:
        return theta.unsqueeze(0).expand(batch, -1)
    return theta
