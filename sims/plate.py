"""Oscillating mechanical plate (Wright et al. 2022): a speaker drives a clamped plate, a microphone listens.

Encoding. ``x`` (in_dim values) and ``theta`` (param_dim values) are drive voltages held for one window of
``tw`` seconds each, their windows interleaved in time (positions ``(i+1/2)/n`` merged in order), followed
by silent windows so that the period holds ``W >= 2 * out_dim`` windows. The sequence is played cyclically
and the microphone records one period in steady state, sampled ``L`` times per window (``N = W L``).

Speaker (saturating voice coil)::

    F(t) = g_s * tanh(s * v(t)) / s

Plate: ``M`` flexural modes of a rectangular plate (aspect ``ar``), mode ``(m, n)`` with nominal frequency
``nu_mn ~ (m/1)^2 + (n/ar)^2`` (in cycles per window), quality factor ``Q``, coupling to the speaker
``b = phi_mn(r_speaker)`` and to the microphone ``c = phi_mn(r_mic)`` (``phi = sin(m pi x) sin(n pi y)``)::

    q_m'' + (w_m / Q_m) q_m' + w_m^2 q_m = b_m (F(t) + F_nl(t)),        w_m = 2 pi nu_m

so in the frequency domain (harmonic ``k`` of the period, ``w = 2 pi k / W``)::

    H_ss(w) = sum_m b_m^2 / D_m(w),   H_ms(w) = -w^2 sum_m c_m b_m / D_m(w),   D_m = w_m^2 - w^2 + i w w_m / Q_m

Geometric (Duffing) nonlinearity: the speaker attachment point has a cubic hardening stiffness ``k3``; it is
treated to first order (one Born/Picard step, smooth, bounded, never chaotic)::

    w_s(t)  = IFFT[H_ss F](t)                      (linear displacement at the speaker)
    F_nl(t) = -k3 * w_s(t)^3
    P(w)    = H_ms(w) * FFT[F + F_nl](w)           (microphone pressure ~ plate acceleration)

Readout: a spectrum analyser integrates ``|P|^2`` over ``out_dim`` equal frequency bands between
``nu_lo`` and ``nu_hi`` (cycles per window); each band has a fixed calibration gain ``e_j`` (flat-fielded
against the *nominal* plate under white drive, so the bands have comparable level), and a logarithmic
detector reports the band level (``W^2 / 4`` makes the band power of a full-scale drive O(1))::

    y_j = a * (log10(e_j^2 * (W^2 / 4) * sum_{k in band j} |P_k|^2 + floor^2) - ref)

Second-order effects (true forward only, not in this datasheet model; ``effect_defaults``, docs/sims.md):
coil heating, window-to-window amplifier memory, extra unmodelled modes, microphone preamp saturation and
band crosstalk.

Hidden per-unit parameters: ``nu`` [M], ``Q`` [M], ``b`` [M], ``c`` [M] (mode frequencies, quality factors,
speaker and microphone couplings), ``k3``, ``g_s``, ``s`` (speaker), ``a``, ``floor``, ``ref`` (microphone
chain). Dims: in_dim = param_dim = out_dim = 32 by default (configurable), ``modes`` = 16.
Ranges: x, theta in [-1, 1] V (speaker drive), y in [0, 2] V (log detector output, ADC).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from pat_runtime.devices.spec import DeviceSpec

from .base import Simulator, broadcast_theta
from .effects import cyclic_ema, neighbour_mix
from .tolerance import ToleranceMixin


def _plate_modes(count: int, aspect: float) -> list[tuple[int, int]]:
    """The ``count`` lowest (m, n) flexural modes of a simply supported ``1 x aspect`` plate."""
    cands = [(m, n) for m in range(1, 12) for n in range(1, 12)]
    cands.sort(key=lambda mn: mn[0] ** 2 + (mn[1] / aspect) ** 2)
    return cands[:count]


def interleave_order(n_x: int, n_t: int) -> torch.Tensor:
    """Positions of the x and theta windows: index into ``cat([x, theta])``, ordered in time."""
    pos = [((i + 0.5) / n_x, 0, i) for i in range(n_x)] + [((j + 0.5) / n_t, 1, n_x + j) for j in range(n_t)]
    pos.sort()
    return torch.tensor([p[2] for p in pos], dtype=torch.long)


class PlateSim(ToleranceMixin, Simulator):
    kind = "plate"
    default_variation = 0.1
    #: mode frequencies are held to ~2 %, couplings to ~5 %, electronics to ~10 %
    tolerance = {"nu": 0.12, "Q": 0.5, "b": 0.5, "c": 0.5, "g_s": 0.5, "a": 0.3, "ref": 0.5, "floor": 0.5}

    def make_spec(self, in_dim: int = 32, param_dim: int = 32, out_dim: int = 32, modes: int = 16,
                  samples_per_window: int = 8, tw: float = 1e-3, aspect: float = 1.37,
                  nu_lo: float = 0.02, nu_hi: float = 1.0, **_):
        self.modes, self.L, self.tw, self.aspect = int(modes), int(samples_per_window), float(tw), float(aspect)
        self.in_dim, self.param_dim, self.out_dim = int(in_dim), int(param_dim), int(out_dim)
        self.order = interleave_order(self.in_dim, self.param_dim)
        self.W = max(self.in_dim + self.param_dim, 2 * self.out_dim)
        self.N = self.W * self.L
        k = torch.arange(self.N // 2 + 1)
        self.nu_k = k.double() / self.W                                   # cycles per window
        edges = torch.linspace(nu_lo, nu_hi, self.out_dim + 1, dtype=torch.float64)
        band = torch.bucketize(self.nu_k, edges, right=True) - 1          # band index, -1/out_dim = outside
        inside = (band >= 0) & (band < self.out_dim) & (k > 0)
        if int(inside.sum()) < self.out_dim:
            raise ValueError("plate: too few harmonics for the requested bands")
        self.k_used = k[inside]
        self.band_mat = torch.zeros(len(self.k_used), self.out_dim, dtype=torch.float64)
        self.band_mat[torch.arange(len(self.k_used)), band[inside]] = 1.0
        if bool((self.band_mat.sum(0) == 0).any()):
            raise ValueError("plate: an output band holds no harmonic; raise samples_per_window or the dims")
        self._eq_cache: dict[torch.dtype, torch.Tensor] = {}
        return DeviceSpec(
            kind="sim:plate", in_dim=self.in_dim, param_dim=self.param_dim, out_dim=self.out_dim,
            x_range=(-1.0, 1.0), theta_range=(-1.0, 1.0), y_range=(0.0, 2.0),
            x_units="V", theta_units="V", y_units="V",
            description=f"speaker-driven {self.modes}-mode plate, interleaved drive windows, "
                        f"band-RMS microphone spectrum",
            extra={"modes": self.modes, "window_s": self.tw, "bands_cycles_per_window": [nu_lo, nu_hi]},
        )

    def nominal_params(self):
        mn = _plate_modes(self.modes, self.aspect)
        lam = torch.tensor([m ** 2 + (n / self.aspect) ** 2 for m, n in mn], dtype=torch.float64)
        nu = 0.08 * lam / lam[0]                                   # fundamental at 0.08 cycles/window
        spk, mic = (0.31, 0.23), (0.67, 0.58)
        shape = lambda r: torch.tensor([math.sin(m * math.pi * r[0]) * math.sin(n * math.pi * r[1])
                                        for m, n in mn], dtype=torch.float64)
        t = lambda v: torch.tensor(float(v))
        return {
            "nu": nu.float(), "Q": torch.full((self.modes,), 10.0),
            "b": shape(spk).float(), "c": shape(mic).float(),
            "k3": t(0.003), "g_s": t(1.0), "s": t(0.7),
            "a": t(1.0), "floor": t(2.0), "ref": t(0.5),
        }

    # -- pieces --------------------------------------------------------------------------------------
    def _transfer(self, p, dtype):
        cd = torch.complex128 if dtype == torch.float64 else torch.complex64
        w = (2 * math.pi * self.nu_k).to(dtype)                           # [K] rad per window
        wm = 2 * math.pi * p["nu"].to(dtype)                              # [M]
        D = wm[:, None] ** 2 - w[None] ** 2 + 1j * (w[None] * wm[:, None] / p["Q"].to(dtype)[:, None])
        D = D.to(cd)
        b, c = p["b"].to(dtype), p["c"].to(dtype)
        h_ss = ((b ** 2)[:, None] / D).sum(0)
        h_ms = -(w ** 2) * ((c * b)[:, None] / D).sum(0)
        return h_ss, h_ms

    def _band_gain(self, dtype):
        """Fixed calibration ``e_j``: flat response of the nominal plate to a white window sequence."""
        if dtype not in self._eq_cache:
            p = {k: v.double() for k, v in self.nominal_params().items()}
            _, h_ms = self._transfer(p, torch.float64)
            nu = self.nu_k[self.k_used]
            zoh = torch.sinc(nu) ** 2                                     # ZOH power response
            pw = (h_ms[self.k_used].abs() ** 2 * zoh) @ self.band_mat
            self._eq_cache[dtype] = (pw.mean() / pw).sqrt().to(dtype)
        return self._eq_cache[dtype]

    def drive(self, x, theta):
        """The window sequence ``v`` [B, W] (x and theta interleaved, then silence)."""
        B = x.shape[0]
        th = broadcast_theta(theta, B).to(x.dtype)
        v = torch.cat([x, th], 1)[:, self.order]
        if self.W > v.shape[1]:
            v = torch.cat([v, v.new_zeros(B, self.W - v.shape[1])], 1)
        return v

    def physics(self, x, theta, p):
        """The datasheet model (see the module docstring)."""
        dt = x.dtype
        p = {k: v.to(dt) for k, v in p.items()}
        f = self._force(self.drive(x, theta), p)
        h_ss, h_ms = self._transfer(p, dt)
        P = self._pressure(f, h_ss, h_ms, p)[:, self.k_used]
        return self._readout((P.real ** 2 + P.imag ** 2) @ self.band_mat.to(dt), p)

    def _force(self, v, p, heat=None):
        s = p["s"]
        f = p["g_s"] * torch.tanh(s * v) / s
        if heat is not None:
            f = f * heat
        return f.repeat_interleave(self.L, dim=1)                         # [B, N] zero-order hold

    def _pressure(self, f, h_ss, h_ms, p):
        """Microphone pressure harmonics (all ``N // 2 + 1``) for the force ``f[B, N]``."""
        F = torch.fft.rfft(f, dim=1) / self.N                             # [B, K] harmonic amplitudes
        F = F.clone()
        F[:, 0] = 0                                                       # speaker is AC coupled
        ws = torch.fft.irfft(F * h_ss, n=self.N, dim=1) * self.N          # displacement at the speaker
        Fnl = torch.fft.rfft(-p["k3"] * ws ** 3, dim=1) / self.N
        return h_ms * (F + Fnl)

    def _readout(self, power, p):
        eq = self._band_gain(power.dtype)
        return p["a"] * (torch.log10(eq ** 2 * power * self._power_scale + p["floor"] ** 2) - p["ref"])

    # -- second-order effects (true forward only; docs/sims.md) --------------------------------------
    #: heating: coil heating lowers the force, ``f *= 1 - h T``, T = low-pass of v^2 (tau 6 windows);
    #: memory: the drive amplifier carries over part of the previous window, ``v_w += m v_{w-1}``;
    #: extra_modes: extra (torsional / in-plane-coupled) modes the 16-mode model lacks, couplings scaled by ``s``;
    #: saturation: microphone preamp clips softly, ``p(t) -> P0 tanh(p / P0)``, P0 = p_ref / s;
    #: crosstalk: detector channels leak into their neighbours, ``y_j += c (y_{j-1} + y_{j+1} - 2 y_j)``
    effect_defaults = {"heating": 0.1, "memory": 0.06, "extra_modes": 0.04, "saturation": 0.15, "crosstalk": 0.04}
    _extra_modes = 6
    _heat_tau = 6.0

    def _extra_mode_params(self, dtype):
        """Fixed extra modes of the design (frequencies inside the analysed band), varied per unit."""
        if not hasattr(self, "_xm"):
            g = torch.Generator().manual_seed(8081)
            M = self._extra_modes
            nu = 0.12 + 0.8 * torch.rand(M, generator=g, dtype=torch.float64)
            b = (2 * torch.rand(M, generator=g, dtype=torch.float64) - 1) * 0.8
            c = (2 * torch.rand(M, generator=g, dtype=torch.float64) - 1) * 0.8
            u = np.random.default_rng([self.seed, self.unit, 4])
            nu = nu * torch.from_numpy(1 + 0.02 * u.standard_normal(M) * (self.variation > 0))
            self._xm = {"nu": nu, "Q": torch.full((M,), 25.0, dtype=torch.float64), "b": b, "c": c}
        return {k: v.to(dtype) for k, v in self._xm.items()}

    def _p_ref(self) -> float:
        """RMS microphone pressure of the nominal plate under uniform random drive (saturation scale)."""
        if not hasattr(self, "_pref"):
            g = torch.Generator().manual_seed(7)
            v = torch.rand(64, self.W, generator=g, dtype=torch.float64) * 2 - 1
            p = {k: v_.double() for k, v_ in self.nominal_params().items()}
            h_ss, h_ms = self._transfer(p, torch.float64)
            P = self._pressure(self._force(v, p), h_ss, h_ms, p)
            pt = torch.fft.irfft(P, n=self.N, dim=1) * self.N
            self._pref = float(pt.pow(2).mean().sqrt())
        return self._pref

    def physics_with_effects(self, x, theta, p, effect):
        dt = x.dtype
        p = {k: v.to(dt) for k, v in p.items()}
        v = self.drive(x, theta)
        if effect.get("memory"):
            v = v + effect["memory"] * torch.roll(v, 1, dims=1)
        heat = None
        if effect.get("heating"):
            heat = 1 - effect["heating"] * cyclic_ema(v * v, self._heat_tau)
        f = self._force(v, p, heat)
        if effect.get("extra_modes"):
            xm = self._extra_mode_params(dt)
            pm = dict(p)
            for k in ("nu", "Q", "b"):
                pm[k] = torch.cat([p[k], xm[k]])
            pm["c"] = torch.cat([p["c"], effect["extra_modes"] * xm["c"]])
            h_ss, h_ms = self._transfer(pm, dt)
        else:
            h_ss, h_ms = self._transfer(p, dt)
        P = self._pressure(f, h_ss, h_ms, p)
        if effect.get("saturation"):
            p0 = self._p_ref() / effect["saturation"]
            pt = torch.fft.irfft(P, n=self.N, dim=1) * self.N
            P = torch.fft.rfft(p0 * torch.tanh(pt / p0), dim=1) / self.N
        P = P[:, self.k_used]
        power = (P.real ** 2 + P.imag ** 2) @ self.band_mat.to(dt)
        return neighbour_mix(self._readout(power, p), effect.get("crosstalk", 0.0))

    @property
    def _power_scale(self) -> float:
        # harmonic amplitudes scale as 1/W for a fixed window amplitude; make band power O(1)
        return float(self.W ** 2) / 4.0
