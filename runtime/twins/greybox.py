"""Grey-box twins: the simulator's nominal physics with learnable calibration.

    y = g ⊙ physics(x, θ; p) + o,     p_k = exp(log p_k) for positive nominal values (else p_k linear)

``p`` starts at the datasheet values ``sim.nominal_params()`` (``fixed_params`` stay fixed), ``g = 1``,
``o = 0``. :class:`NominalTwin` is the same model frozen at nominal values: the "simulate from the
datasheet" model an in-silico trainer would use.

The physics is the simulator's **datasheet model** ``physics`` (never its true forward with the
second-order effects, see :mod:`pat_runtime.sims.effects`): ``pat_runtime.sims.sim_class(spec.kind)`` built with
``datasheet_only=True``, no effects, zero variation/noise and the device's
construction options (``sim_options``: for a :class:`~pat_runtime.devices.local.LocalDevice` use
:func:`sim_options_of`; remote devices may publish them as ``spec.extra["sim_options"]``).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pat_runtime.devices.spec import DeviceSpec
from pat_runtime.sims import sim_class
from pat_runtime.sims.base import Simulator

from .base import Twin


def sim_options_of(device: Any) -> dict[str, Any]:
    """Construction options of a device's simulator (``{}`` when unknown)."""
    sim = getattr(device, "sim", None)
    if isinstance(sim, Simulator):
        return dict(sim.options)
    spec = getattr(device, "_spec", None)
    if spec is not None:
        return dict(spec.extra.get("sim_options", {}))
    return {}


def nominal_sim(spec: DeviceSpec, sim_options: dict[str, Any] | None = None) -> Simulator:
    """A noiseless, variation-free simulator of ``spec.kind`` whose spec matches ``spec``'s dimensions."""
    try:
        cls = sim_class(spec.extra.get("physics") or spec.kind)   # e.g. visa:plate declares physics="plate"
    except ValueError as e:
        raise ValueError(f"no physics model for device kind {spec.kind!r}: a grey-box twin needs a simulated kind "
                         f"({e}); use an 'mlp' twin instead") from None
    opts = dict(spec.extra.get("sim_options", {})) if sim_options is None else dict(sim_options)
    # the datasheet model only: no effects, and a simulator that refuses to run a true forward
    opts = {k: v for k, v in opts.items() if k not in cls.effect_defaults and k not in ("effects", "datasheet_only")}
    base = dict(variation=0.0, noise=0.0, noise_mult=0.0, drift=0.0, dac_bits=None, adc_bits=None, latency=0.0,
                effects=0, datasheet_only=True)
    sim = cls(**base, **opts)
    dims = lambda s: (s.in_dim, s.param_dim, s.out_dim)   # noqa: E731
    if dims(sim.spec) != dims(spec):
        try:
            sim = cls(**base, **{"in_dim": spec.in_dim, "param_dim": spec.param_dim, **opts})
        except TypeError:
            pass
    if dims(sim.spec) != dims(spec):
        raise ValueError(f"nominal {spec.kind} model has dims {dims(sim.spec)} but the device has {dims(spec)}; "
                         f"pass the device's sim_options")
    return sim


class GreyBoxTwin(Twin):
    kind = "greybox"
    default_lr = 2e-2

    def __init__(self, spec: DeviceSpec, sim_options: dict[str, Any] | None = None, calibrate_output: bool = True):
        super().__init__(spec)
        self.__dict__["sim"] = nominal_sim(spec, sim_options)
        self.sim_options = dict(self.sim.options)
        self.calibrate_output = bool(calibrate_output)
        self.log_p = nn.ParameterDict()
        self.lin_p = nn.ParameterDict()
        self.fixed_names: list[str] = []
        for k, v in self.sim.nominal_params().items():
            v = torch.as_tensor(v, dtype=torch.float32)
            if k in self.sim.fixed_params:
                self.register_buffer(f"fixed_{k}", v.clone())
                self.fixed_names.append(k)
            elif bool((v > 0).all()):
                self.log_p[k] = nn.Parameter(torch.log(v))
            else:
                self.lin_p[k] = nn.Parameter(v.clone())
        self.gain = nn.Parameter(torch.ones(spec.out_dim), requires_grad=self.calibrate_output)
        self.offset = nn.Parameter(torch.zeros(spec.out_dim), requires_grad=self.calibrate_output)

    def config(self):
        return {"sim_options": self.sim_options, "calibrate_output": self.calibrate_output}

    def params(self) -> dict[str, torch.Tensor]:
        """The physical parameters the twin currently believes in."""
        p = {k: torch.exp(v) for k, v in self.log_p.items()}
        p.update({k: v for k, v in self.lin_p.items()})
        p.update({k: getattr(self, f"fixed_{k}") for k in self.fixed_names})
        return p

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return self.gain * self.sim.physics(x, theta, self.params()) + self.offset


class NominalTwin(GreyBoxTwin):
    """The datasheet model, not fitted (all parameters frozen)."""

    kind = "nominal"

    def __init__(self, spec: DeviceSpec, sim_options: dict[str, Any] | None = None, calibrate_output: bool = True):
        super().__init__(spec, sim_options, calibrate_output)
        self.requires_grad_(False)
