"""LocalDevice: a simulator (or any measure function) in this process."""
from __future__ import annotations

import asyncio

import numpy as np

from sims.base import Simulator

from .base import Device


class LocalDevice(Device):
    """Wraps a :class:`~sims.base.Simulator`. ``latency`` (s) is simulated with ``asyncio.sleep``.

    With ``threaded=True`` (default) the measurement runs in a worker thread so the event loop stays free.
    """

    def __init__(self, sim: Simulator, name: str | None = None, threaded: bool = True):
        super().__init__(name or f"{sim.spec.kind}#{sim.unit}")
        self.sim = sim
        self.threaded = threaded

    async def _connect(self, timeout: float) -> None:
        self._spec = self.sim.spec

    async def _apply(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        if self.sim.latency:
            await asyncio.sleep(self.sim.latency)
        if self.threaded:
            return await asyncio.to_thread(self.sim.measure, x, theta)
        return self.sim.measure(x, theta)
