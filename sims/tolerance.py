"""Per-parameter manufacturing tolerances for simulators (a mixin over :class:`pat_runtime.sims.base.Simulator`).

The base class draws every hidden parameter as ``p_nom * (1 + variation * N(0, 1))``. Real datasheets give
different tolerances to different quantities (a resonance frequency is held to a few percent, an amplifier
gain to ten), so a subclass may list relative scales in ``tolerance``::

    p_unit[name] = p_nom * (1 + variation * tolerance.get(name, 1) * N(0, 1))

drawn from the same per-unit random stream as the base class (so ``(seed, unit)`` still fixes a unit).
"""
from __future__ import annotations

import torch


class ToleranceMixin:
    #: parameter name -> multiplier of ``variation`` (default 1)
    tolerance: dict[str, float] = {}

    def _perturb(self, name: str, v: torch.Tensor) -> torch.Tensor:
        v = torch.as_tensor(v, dtype=torch.float32)
        rel = self.variation * self.tolerance.get(name, 1.0)
        if name in self.fixed_params or rel == 0:
            return v.clone()
        z = torch.as_tensor(self._rng.standard_normal(tuple(v.shape)), dtype=torch.float32)
        return v * (1.0 + rel * z).clamp(min=0.2)
