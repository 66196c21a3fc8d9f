"""Nonlinear electronic circuit: a driven series RLC loop with an anti-parallel diode pair across C.

The input ``x`` and the parameters ``theta`` are encoded in time as a piecewise-constant drive voltage
(``x_k`` and ``theta_k`` segments interleaved; theta is cycled if shorter than x). In normalised units::

    l di/dt = V(t) - r i - v
    c dv/dt = i - g_d * sinh(v / v_0)                (diode pair; integrated linearly-implicitly)
    y_k     = a * tanh(v(t_k) / v_a) + b             (readout amplifier, sampled after each x segment)

Hidden per-unit parameters: l, c, r, g_d, v_0 (diode), a, v_a, b (amplifier gain, saturation, offset).
Second-order effects (true forward only; ``effect_defaults``, docs/sims.md): resistor self-heating
(temperature coefficient), capacitor leakage and ESR, readout-ADC nonlinearity.
The integration uses ``substeps`` steps of size ``dt`` per segment.
"""
from __future__ import annotations

import torch

from pat_runtime.devices.spec import DeviceSpec

from .base import Simulator, broadcast_theta
from .effects import adc_inl


class CircuitSim(Simulator):
    kind = "circuit"
    default_variation = 0.15

    def make_spec(self, in_dim: int = 16, param_dim: int = 16, substeps: int = 4, dt: float = 0.25, **_):
        self.substeps, self.dt = int(substeps), float(dt)
        return DeviceSpec(
            kind="sim:circuit", in_dim=in_dim, param_dim=param_dim, out_dim=in_dim,
            x_range=(-1.0, 1.0), theta_range=(-1.0, 1.0), y_range=(-1.5, 1.5),
            x_units="V", theta_units="V", y_units="V",
            description="driven RLC loop with diode-pair nonlinearity, time-multiplexed drive",
        )

    def nominal_params(self):
        t = lambda v: torch.tensor(float(v))
        return {"l": t(1.0), "c": t(1.0), "r": t(0.4), "g_d": t(0.05), "v_0": t(0.3),
                "a": t(1.2), "v_a": t(0.8), "b": t(0.05)}

    def physics(self, x, theta, p):
        """The datasheet model (see the module docstring)."""
        return self._simulate(x, theta, p, {})

    # -- second-order effects (true forward only; docs/sims.md) --------------------------------------
    #: tempco: the resistor heats with the dissipated power, ``r -> r (1 + k T)``, ``T`` = low-pass of i^2
    #:   (time constant 8 segments);
    #: leak: capacitor leakage (dielectric absorption), an extra conductance ``-leak * v`` across C;
    #: esr: capacitor series resistance, the amplifier sees ``v + esr * i``;
    #: inl: readout-ADC integral nonlinearity (``effects.adc_inl``, fraction of full scale)
    effect_defaults = {"tempco": 1.0, "leak": 0.08, "esr": 0.04, "inl": 0.01}

    def physics_with_effects(self, x, theta, p, effect):
        return self._simulate(x, theta, p, effect)

    def _simulate(self, x, theta, p, e):
        B, n = x.shape
        th = broadcast_theta(theta, B)
        P = th.shape[1]
        idx = torch.arange(n) % P
        th = th[:, idx]                                          # cycle theta over the x segments
        drive = torch.stack([x, th], dim=2).reshape(B, 2 * n)    # x0, th0, x1, th1, ...
        i = torch.zeros(B, dtype=x.dtype)
        v = torch.zeros(B, dtype=x.dtype)
        dt, l, c, r, gd, v0 = self.dt, p["l"], p["c"], p["r"], p["g_d"], p["v_0"]
        tempco, leak, esr = e.get("tempco", 0.0), e.get("leak", 0.0), e.get("esr", 0.0)
        heat = torch.zeros(B, dtype=x.dtype)
        a_heat = dt / (8.0 * self.substeps * dt)
        samples = []
        for s in range(2 * n):
            V = drive[:, s]
            for _ in range(self.substeps):
                r_eff = r * (1 + tempco * heat) if tempco else r
                i = i + dt / l * (V - r_eff * i - v)
                u = (v / v0).clamp(-12, 12)
                Id, dId = gd * torch.sinh(u), gd / v0 * torch.cosh(u)
                if leak:
                    Id, dId = Id + leak * v, dId + leak
                v = (v + dt / c * (i - Id + dId * v)) / (1 + dt / c * dId)
                if tempco:
                    heat = heat + a_heat * (i * i - heat)
            if s % 2 == 1:
                samples.append(v + esr * i if esr else v)
        vs = torch.stack(samples, dim=1)
        y = p["a"] * torch.tanh(vs / p["v_a"]) + p["b"]
        return adc_inl(y, *self.spec.y_range, e.get("inl", 0.0))
