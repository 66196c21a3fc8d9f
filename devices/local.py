"""LocalDevice: a simulator (or any measure function) in this process."""
from __future__ import annotations

import asyncio
import time
from typing import Protocol

import numpy as np

from .base import Device
from .spec import DeviceSpec


class Measurable(Protocol):
    """What a :class:`LocalDevice` runs: a simulator (:class:`~pat_runtime.sims.base.Simulator`) or any
    object with a ``spec``, a ``unit`` number, a ``latency`` (s) and ``measure(x, theta) -> y``."""

    spec: DeviceSpec
    unit: int
    latency: float

    def measure(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray: ...


class LocalDevice(Device):
    """Wraps a :class:`~pat_runtime.sims.base.Simulator`. ``latency`` (s) is simulated with ``asyncio.sleep``.

    Where the measurement runs (``threaded``):

    * ``None`` (default, auto): short calls run inline on the event loop, blocking ones in a worker thread.
      "Short" is declared by the simulator (a ``blocking = True/False`` attribute) or else measured: an
      exponential moving average of the measurement time below ``inline_max`` seconds (default 20 ms: a stall
      that short delays no heartbeat). A thread hop costs ~50-100 us, a loop wake-up and GIL hand-overs, which
      dominate a millisecond simulator call that nothing else is waiting to overlap with.
    * ``True``: always in a worker thread (the loop stays free even for long calls).
    * ``False``: always inline.
    """

    def __init__(self, sim: Measurable, name: str | None = None, threaded: bool | None = None,
                 inline_max: float = 0.02):
        super().__init__(name or f"{sim.spec.kind}#{sim.unit}")
        self.sim = sim
        self.threaded = threaded
        self.inline_max = float(inline_max)
        #: moving average of one measurement's duration (s); the first (warm-up) call is not counted
        self.measure_ewma = 0.0
        self._measured = 0

    async def _connect(self, timeout: float) -> None:
        self._spec = self.sim.spec

    def short(self) -> bool:
        """Does a measurement finish quickly enough to run on the event loop?"""
        if self.threaded is not None:
            return not self.threaded
        declared = getattr(self.sim, "blocking", None)
        if declared is not None:
            return not declared
        return self.measure_ewma < self.inline_max

    def inline_ok(self) -> bool:
        return not self.sim.latency and self.short()

    def _measure(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        y = self.sim.measure(x, theta)
        if self._measured:
            self.measure_ewma += 0.2 * (time.perf_counter() - t0 - self.measure_ewma)
        self._measured += 1
        return y

    def _measure_many(self, xs: np.ndarray, thetas: np.ndarray) -> np.ndarray:
        return np.stack([self._measure(xs[c], thetas[c]) for c in range(xs.shape[0])])

    def _apply_nowait(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        return self._measure(x, theta)

    async def _apply(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        if self.sim.latency:
            await asyncio.sleep(self.sim.latency)
        if self.short():
            return self._measure(x, theta)
        return await asyncio.to_thread(self._measure, x, theta)

    async def _apply_many(self, xs: np.ndarray, thetas: np.ndarray) -> np.ndarray:
        if self.sim.latency:  # one measurement per channel
            await asyncio.sleep(self.sim.latency * xs.shape[0])
        if self.short():
            return self._measure_many(xs, thetas)
        return await asyncio.to_thread(self._measure_many, xs, thetas)  # one hop for all channels
