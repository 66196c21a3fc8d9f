"""Simulated physical systems (the "hardware" of tests and benchmarks).

``make_sim("plate", unit=3, seed=0, noise=0.01)`` builds one; :data:`SIMS` lists the kinds;
:func:`sim_device` (``sim:plate?unit=3``) puts one behind a :class:`~pat_runtime.devices.LocalDevice`.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from pat_runtime._lazy import lazy_exports

from .base import Simulator

#: kind -> "module:Class" (imported lazily)
SIMS: dict[str, str] = {
    "circuit": "pat_runtime.sims.circuit:CircuitSim",
    "plate": "pat_runtime.sims.plate:PlateSim",
    "shg": "pat_runtime.sims.shg:SHGSim",
    "oscillators": "pat_runtime.sims.oscillators:CoupledOscillatorSim",
    "sensor": "pat_runtime.sims.sensor:SmartSensorSim",
}


def sim_class(kind: str) -> type[Simulator]:
    kind = kind.removeprefix("sim:")
    if kind not in SIMS:
        raise ValueError(f"unknown simulator {kind!r}; known: {', '.join(sorted(SIMS))}")
    mod, cls = SIMS[kind].split(":")
    return getattr(importlib.import_module(mod), cls)


def make_sim(kind: str, **kwargs) -> Simulator:
    return sim_class(kind)(**kwargs)


_LAZY = {name: ".uri" for name in ("check_sim_uri", "parse_sim_uri", "sim_device", "sim_option_defaults")}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)   # the sim: device scheme (imports this module)
__all__ = ["SIMS", "Simulator", "make_sim", "sim_class", *sorted(_LAZY)]

if TYPE_CHECKING:
    from .uri import check_sim_uri, parse_sim_uri, sim_device, sim_option_defaults
