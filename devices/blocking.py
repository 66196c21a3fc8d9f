"""A device driven through a blocking I/O library (PyVISA, pyserial, a vendor SDK).

Subclasses implement four blocking methods; this class runs them in a worker thread, one transaction at a
time (``self._lock``), so the event loop keeps serving heartbeats while an instrument answers::

    class MyInstrument(BlockingDevice):
        def _open(self): ...                     # open the session(s)
        def _setup(self) -> DeviceSpec: ...      # identify, configure, return the spec
        def _measure(self, x, theta): ...        # one batch: write, trigger, read back
        def _shutdown(self): ...                 # outputs off, close the session(s)

``_open``, ``_setup`` and ``_shutdown`` are called with ``self._lock`` held; ``_measure`` takes it itself
(it may call helpers that do).
"""
from __future__ import annotations

import abc
import asyncio
import threading
import time

import numpy as np

from .base import Device
from .errors import DeviceConnectionError
from .spec import DeviceSpec


class BlockingDevice(Device, abc.ABC):
    """:class:`Device` over a blocking driver: connect, measure and close run off the event loop."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._lock = threading.Lock()   # one transaction at a time on the instrument(s)
        #: how many times :meth:`connect` has tried to open the instrument(s) (retries included)
        self.connect_attempts = 0

    @abc.abstractmethod
    def _open(self) -> None: ...

    @abc.abstractmethod
    def _setup(self) -> DeviceSpec: ...

    @abc.abstractmethod
    def _measure(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray: ...

    @abc.abstractmethod
    def _shutdown(self) -> None: ...

    async def _connect(self, timeout: float) -> None:
        """Open and set up; an instrument that refuses the connection (not up yet, rebooting) is retried
        with jittered back-off until ``timeout`` seconds have passed, then its last error is raised."""
        def go() -> DeviceSpec:
            with self._lock:
                self._open()
                return self._setup()

        deadline = time.monotonic() + max(0.0, timeout)
        delay = 0.1   # doubling up to 1 s: one instrument, no herd to spread out (no jitter needed)
        while True:
            self.connect_attempts += 1
            try:
                self._spec = await asyncio.to_thread(go)
                return
            except DeviceConnectionError:
                if time.monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(1.0, 2 * delay)

    async def _apply(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        return await asyncio.to_thread(self._measure, x, theta)

    async def close(self) -> None:
        def go() -> None:
            with self._lock:
                self._shutdown()

        await asyncio.to_thread(go)
        await super().close()
