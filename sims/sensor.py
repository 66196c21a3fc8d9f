"""Smart sensor front-end: MEMS accelerometer -> analog filter bank -> saturating PGA -> rectifier -> ADC.

``x`` is a short acceleration record (``n = in_dim`` samples at the front-end clock, in g). ``theta``
programs the analog preprocessing chain: for each of ``channels`` channels, ``taps`` switched-capacitor
FIR tap weights, one PGA gain code and one bias code (``param_dim = channels * (taps + 2)``).

1. MEMS proof mass (second order, resonance ``f0`` cycles/sample, quality ``Q``, sensitivity ``S``),
   impulse-invariant discretisation, causal, starting at rest::

       u[t] = sum_{j<=t} h[t-j] x[j],   h[k] = S * w0^2 / wd * exp(-w0 k / (2Q)) sin(wd k) / Z

   (``w0 = 2 pi f0``, ``wd = w0 sqrt(1 - 1/(4Q^2))``, ``Z`` normalises the nominal DC gain to ``S``).
2. Switched-capacitor FIR filter per channel (tap capacitors ``cap[c, j]`` ~ 1 with mismatch)::

       z_c[t] = sum_j theta_tap[c, j] * cap[c, j] * u[t - j]

3. Programmable-gain amplifier with soft saturation at ``vsat`` and an input offset ``vos[c]``::

       G_c = g0[c] * 4 ** theta_gain[c],    a_c[t] = vsat * tanh(G_c * (z_c[t] + 0.5 * theta_bias[c] + vos[c]) / vsat)

4. Diode-bridge rectifier (smooth knee ``vk``) and integrate-and-dump over ``windows`` equal windows::

       r_c[t] = sqrt(a_c[t]^2 + vk^2) - vk,      y[c, w] = adc_g * mean_{t in window w} r_c[t] + adc_off

Second-order effects (true forward only; ``effect_defaults``, docs/sims.md): proof-mass hysteresis,
channel crosstalk, switched-capacitor charge injection, ADC integral nonlinearity.

Output order: channel-major (``y[c * windows + w]``). Hidden per-unit parameters: ``f0``, ``Q``, ``S``,
``cap`` [channels, taps], ``g0`` [channels], ``vos`` [channels], ``vsat``, ``vk``, ``adc_g``, ``adc_off``.
Dims: in_dim = 32 samples, channels = 4, taps = 6 -> param_dim = 32, windows = 8 -> out_dim = 32.
Ranges: x in [-1, 1] g, theta in [-1, 1] (DAC codes), y in [0, 1] V (ADC).
"""
from __future__ import annotations

import math

import torch

from pat_runtime.devices.spec import DeviceSpec

from .base import Simulator, broadcast_theta
from .effects import adc_inl
from .tolerance import ToleranceMixin


class SmartSensorSim(ToleranceMixin, Simulator):
    kind = "sensor"
    default_variation = 0.1
    tolerance = {"f0": 0.5, "Q": 1.0, "S": 0.3, "cap": 0.5, "g0": 0.5, "vos": 1.0, "vsat": 0.3, "vk": 1.0,
                 "adc_g": 0.2, "adc_off": 1.0}

    def make_spec(self, in_dim: int = 32, channels: int = 4, taps: int = 6, windows: int = 8, **_):
        self.n, self.channels, self.taps, self.windows = int(in_dim), int(channels), int(taps), int(windows)
        if self.windows > self.n:
            raise ValueError("sensor: more windows than input samples")
        if self.taps > self.n:
            raise ValueError("sensor: more FIR taps than input samples")
        # integrate-and-dump: window w averages samples [edges[w], edges[w+1])
        edges = torch.linspace(0, self.n, self.windows + 1).round().long()
        self.pool = torch.zeros(self.n, self.windows, dtype=torch.float64)
        for w in range(self.windows):
            self.pool[edges[w]:edges[w + 1], w] = 1.0 / float(edges[w + 1] - edges[w])
        lag = torch.arange(self.n)
        self.lag = lag[None, :] - lag[:, None]                       # [j, t] = t - j
        return DeviceSpec(
            kind="sim:sensor", in_dim=self.n, param_dim=self.channels * (self.taps + 2),
            out_dim=self.channels * self.windows,
            x_range=(-1.0, 1.0), theta_range=(-1.0, 1.0), y_range=(0.0, 1.0),
            x_units="g", theta_units="DAC code (norm.)", y_units="V (ADC)",
            description="MEMS accelerometer -> SC FIR filter bank -> saturating PGA -> rectifier -> "
                        "integrate-and-dump ADC",
            extra={"channels": self.channels, "taps": self.taps, "windows": self.windows},
        )

    def nominal_params(self):
        t = lambda v: torch.tensor(float(v))
        C = self.channels
        return {
            "f0": t(0.15), "Q": t(2.0), "S": t(1.0), "cap": torch.ones(C, self.taps),
            "g0": torch.full((C,), 0.8), "vos": torch.full((C,), 0.03), "vsat": t(0.8), "vk": t(0.05),
            "adc_g": t(1.1), "adc_off": t(0.03),
        }

    def impulse_response(self, p, dtype):
        k = torch.arange(self.n, dtype=dtype)
        w0 = 2 * math.pi * p["f0"]
        zeta = 1 / (2 * p["Q"])
        wd = w0 * torch.sqrt(1 - zeta ** 2)
        h = w0 ** 2 / wd * torch.exp(-zeta * w0 * k) * torch.sin(wd * (k + 1))
        h0 = self._h_norm(dtype)
        return p["S"] * h / h0

    def _h_norm(self, dtype):
        """Nominal DC gain of the discretised proof mass (a fixed calibration constant)."""
        if not hasattr(self, "_h0"):
            p = {k: v.double() for k, v in self.nominal_params().items()}
            k = torch.arange(4096, dtype=torch.float64)
            w0 = 2 * math.pi * p["f0"]
            zeta = 1 / (2 * p["Q"])
            wd = w0 * torch.sqrt(1 - zeta ** 2)
            self._h0 = float((w0 ** 2 / wd * torch.exp(-zeta * w0 * k) * torch.sin(wd * (k + 1))).sum())
        return self._h0

    def physics(self, x, theta, p):
        """The datasheet model (see the module docstring)."""
        return self._forward(x, theta, p, {})

    # -- second-order effects (true forward only; docs/sims.md) --------------------------------------
    #: hysteresis: mechanical play of the proof mass (backlash of width ``2 h``),
    #:   ``u'[t] = clamp(u'[t-1], u[t] - h, u[t] + h)``;
    #: crosstalk: substrate coupling between the filter channels, ``z_c += k * mean_{c' != c} z_c'``;
    #: charge: switched-capacitor charge injection, ``tap -> tap + q * |tap|``;
    #: inl: ADC integral nonlinearity (``effects.adc_inl``, fraction of full scale)
    effect_defaults = {"hysteresis": 0.03, "crosstalk": 0.1, "charge": 0.04, "inl": 0.01}

    def physics_with_effects(self, x, theta, p, effect):
        return self._forward(x, theta, p, effect)

    def _forward(self, x, theta, p, e):
        dt = x.dtype
        p = {k: v.to(dt) for k, v in p.items()}
        B, n = x.shape
        C, K = self.channels, self.taps
        th = broadcast_theta(theta, B).to(dt)
        tap = th[:, : C * K].reshape(B, C, K)
        if e.get("charge"):
            tap = tap + e["charge"] * tap.abs()
        tap = tap * p["cap"]                                                  # [B, C, K]
        gcode = th[:, C * K: C * K + C]
        bcode = th[:, C * K + C:]
        # 1. proof mass: causal Toeplitz convolution u = x @ T, T[j, t] = h[t - j] (t >= j)
        h = self.impulse_response(p, dt)
        lag = self.lag
        T = torch.where(lag >= 0, h[lag.clamp(min=0)], torch.zeros((), dtype=dt))
        u = x @ T                                                             # [B, n]
        if e.get("hysteresis"):
            hw = e["hysteresis"]
            out, prev = [], torch.zeros(B, dtype=dt)
            for t in range(n):
                prev = torch.minimum(torch.maximum(prev, u[:, t] - hw), u[:, t] + hw)
                out.append(prev)
            u = torch.stack(out, 1)
        # 2. FIR per channel: z[b, c, t] = sum_j tap[b, c, j] u[b, t - j]
        up = torch.nn.functional.pad(u, (K - 1, 0))
        U = up.unfold(1, K, 1).flip(-1)                                       # [B, n, K]: u[t - j]
        z = torch.einsum("btk,bck->bct", U, tap)
        if e.get("crosstalk") and C > 1:
            z = z + e["crosstalk"] * (z.sum(1, keepdim=True) - z) / (C - 1)
        # 3. PGA with soft saturation
        G = p["g0"] * torch.pow(4.0, gcode)                                   # [B, C]
        a = p["vsat"] * torch.tanh(G[..., None] * (z + (0.5 * bcode + p["vos"])[..., None]) / p["vsat"])
        # 4. rectifier and integrate-and-dump ADC
        r = torch.sqrt(a * a + p["vk"] ** 2) - p["vk"]
        y = r @ self.pool.to(dt)                                              # [B, C, windows]
        y = (p["adc_g"] * y + p["adc_off"]).reshape(B, C * self.windows)
        return adc_inl(y, *self.spec.y_range, e.get("inl", 0.0))
