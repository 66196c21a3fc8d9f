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

import numpy as np

from .base import Device
from ._retry import Backoff, retry
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
        with jittered back-off (:func:`pat_runtime.devices.retry`) until ``timeout`` seconds have passed,
        then its last error is raised."""
        def go() -> DeviceSpec:
            with self._lock:
                self._open()
                return self._setup()

        async def attempt() -> DeviceSpec:
            self.connect_attempts += 1
            return await asyncio.to_thread(go)

        # doubling up to 1 s, fully jittered (devices on one host rebooting together do not retry in step)
        self._spec = await retry(attempt, retry_on=DeviceConnectionError, timeout=timeout,
                                 backoff=Backoff(0.1, 1.0))

    async def _apply(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        return await asyncio.to_thread(self._measure, x, theta)

    async def close(self) -> None:
        def go() -> None:
            with self._lock:
                self._shutdown()

        await asyncio.to_thread(go)
        await super().close()
