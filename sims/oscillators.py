"""A ring of ``n`` coupled Duffing oscillators (e.g. a MEMS resonator array) released from a set displacement.

Encoding. ``x`` (``n`` values) sets the initial displacement of each node through its electrostatic
actuator, ``q_i(0) = a0_i * x_i`` (velocities zero). ``theta`` (``2n`` values) sets tuning voltages: the
first ``n`` the coupling springs between neighbours ``i`` and ``i+1`` (ring), the last ``n`` the on-site
stiffness of each node::

    c_i = c0_i * (1 + 0.9 * theta_i)                      (coupling spring i <-> i+1, always > 0)
    k_i = k0_i * (1 + 0.4 * theta_{n+i})                  (on-site stiffness, always > 0)

Dynamics (unit masses, ``t`` in units of the nominal period / 2 pi)::

    q_i'' = -k_i q_i - beta_i q_i^3 - gamma_i q_i' - c_i (q_i - q_{i+1}) - c_{i-1} (q_i - q_{i-1})

integrated with the semi-implicit (symplectic) Euler scheme
``v <- (1 - dt gamma) v + dt * force(q)``, ``q <- q + dt v``, ``steps`` steps of ``dt`` (default 160 x 0.25,
about 6.4 nominal periods; ``dt * omega_max < 1`` over the safe range, so the scheme is stable). The
damping (Q ~ 15) and the short horizon keep the map smooth and non-chaotic.

Readout: a capacitive sensor per node reports the RMS displacement over the last ``readout`` fraction of
the run (default 1/4)::

    y_i = g_i * sqrt(mean_{t in window} q_i(t)^2 + floor^2)

Second-order effects (true forward only; ``effect_defaults``, docs/sims.md): next-nearest-neighbour
coupling, squeeze-film damping, nonlinear tuning, readout crosstalk.

Hidden per-unit parameters: ``k0``, ``beta``, ``gamma``, ``c0``, ``a0``, ``g`` (all [n]), ``floor``.
Dims: in_dim = out_dim = n (default 16), param_dim = 2n. Ranges: x in [-1, 1] (actuator drive),
theta in [-1, 1] (tuning drive), y in [0, 1] (sensor output, V).
"""
from __future__ import annotations

import torch

from pat_runtime.devices.spec import DeviceSpec

from .base import Simulator
from .effects import neighbour_mix
from .tolerance import ToleranceMixin


class CoupledOscillatorSim(ToleranceMixin, Simulator):
    kind = "oscillators"
    default_variation = 0.1
    tolerance = {"k0": 0.2, "c0": 0.5, "beta": 1.0, "gamma": 0.5, "a0": 0.3, "g": 0.3}

    def make_spec(self, nodes: int = 16, steps: int = 160, dt: float = 0.25, readout: float = 0.25, **_):
        self.n, self.steps, self.dt = int(nodes), int(steps), float(dt)
        if self.n < 3:
            raise ValueError("oscillators: need at least 3 nodes for a ring")
        self.read_from = self.steps - max(1, int(round(readout * self.steps)))
        self._nxt = torch.roll(torch.arange(self.n), -1)          # index of node i+1
        self._prv = torch.roll(torch.arange(self.n), 1)           # index of node i-1
        return DeviceSpec(
            kind="sim:oscillators", in_dim=self.n, param_dim=2 * self.n, out_dim=self.n,
            x_range=(-1.0, 1.0), theta_range=(-1.0, 1.0), y_range=(0.0, 1.0),
            x_units="V (actuator)", theta_units="V (tuning)", y_units="V (sensor)",
            description=f"ring of {self.n} coupled Duffing oscillators; x = initial displacements, "
                        "theta = couplings and on-site stiffness; RMS readout at the end",
            extra={"steps": self.steps, "dt": self.dt},
        )

    def nominal_params(self):
        n = self.n
        f = lambda v: torch.full((n,), float(v))
        return {"k0": f(1.0), "beta": f(0.8), "gamma": f(0.07), "c0": f(0.25), "a0": f(1.0), "g": f(3.0),
                "floor": torch.tensor(0.02)}

    def physics(self, x, theta, p):
        """The datasheet model (see the module docstring)."""
        return self._simulate(x, theta, p, {})

    # -- second-order effects (true forward only; docs/sims.md) --------------------------------------
    #: nnn: next-nearest-neighbour coupling through the substrate (higher coupled modes),
    #:   ``c2_i = nnn * c0_i`` between ``i`` and ``i+2``;
    #: air: squeeze-film (amplitude-dependent) damping, ``gamma -> gamma (1 + air q^2)``;
    #: tuning: electrostatic tuning is not linear in the drive, ``theta -> theta + t (theta^2 - 1/3)``;
    #: crosstalk: capacitive readout crosstalk between neighbouring sensors (``effects.neighbour_mix``)
    effect_defaults = {"nnn": 0.025, "air": 0.5, "tuning": 0.05, "crosstalk": 0.05}

    def physics_with_effects(self, x, theta, p, effect):
        return self._simulate(x, theta, p, effect)

    def _simulate(self, x, theta, p, e):
        dt = x.dtype
        p = {k: v.to(dt) for k, v in p.items()}
        n, h = self.n, self.dt
        th = theta.to(dt)                                         # [P] or [B, P]
        if e.get("tuning"):
            th = th + e["tuning"] * (th * th - 1.0 / 3.0)
        c = p["c0"] * (1 + 0.9 * th[..., :n])                     # coupling i <-> i+1
        k = p["k0"] * (1 + 0.4 * th[..., n:])                     # on-site stiffness
        c_prev = c[..., self._prv]                                # coupling i-1 <-> i
        hc, hcp, hdiag = h * c, h * c_prev, h * (k + c + c_prev)  # velocity kicks per step
        hbeta, damp = h * p["beta"], 1 - h * p["gamma"]
        nnn, air = e.get("nnn", 0.0), e.get("air", 0.0)
        if nnn:
            h2 = h * nnn * p["c0"]
            hdiag = hdiag + 2 * h2
            nxt2 = torch.roll(torch.arange(n), -2)
            prv2 = torch.roll(torch.arange(n), 2)
        hair = h * p["gamma"] * air
        q = p["a0"] * x
        v = torch.zeros_like(q)
        acc = torch.zeros_like(q)
        # element-wise ring coupling (index_select), no BLAS call in the loop: a tiny matmul per step is
        # dominated by thread-pool overhead on a busy machine
        for s in range(self.steps):
            v = damp * v + hc * q.index_select(1, self._nxt) + hcp * q.index_select(1, self._prv) \
                - (hdiag + hbeta * q * q) * q
            if nnn:
                v = v + h2 * (q.index_select(1, nxt2) + q.index_select(1, prv2))
            if air:
                v = v - hair * q * q * v
            q = q + h * v
            if s >= self.read_from:
                acc = acc + q * q
        ms = acc / (self.steps - self.read_from)
        return neighbour_mix(p["g"] * torch.sqrt(ms + p["floor"] ** 2), e.get("crosstalk", 0.0))
