"""The async Device protocol shared by local and remote devices."""
from __future__ import annotations

import abc
from typing import Any

import numpy as np

from .errors import DeviceConnectionError, ShapeError
from .spec import DeviceSpec


def as_array(a: Any, device: str, name: str) -> np.ndarray:
    """Coerce torch tensors / lists to a contiguous float32 numpy array."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    try:
        out = np.ascontiguousarray(a, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ShapeError(device, f"{name} is not a numeric array: {e}") from None
    return out


class Device(abc.ABC):
    """A physical (or simulated, or remote) system ``y = f_p(x, theta)``.

    Subclasses implement :meth:`_connect` and :meth:`_apply`; :meth:`apply` validates shapes and the safe
    ranges of :attr:`spec` first, so out-of-range values never reach the hardware.
    """

    name: str = "device"

    def __init__(self, name: str | None = None):
        if name is not None:
            self.name = name
        self._spec: DeviceSpec | None = None
        self.connected = False
        self.calls = 0
        self.samples = 0

    @property
    def spec(self) -> DeviceSpec:
        if self._spec is None:
            raise DeviceConnectionError(self.name, "spec unknown: call `await device.connect()` first")
        return self._spec

    async def connect(self, timeout: float = 10.0) -> "Device":
        await self._connect(timeout)
        self.connected = True
        return self

    async def apply(self, x: Any, theta: Any) -> np.ndarray:
        """Run one batch through the device: ``x[B, in_dim]``, ``theta[param_dim]`` -> ``y[B, out_dim]``."""
        if not self.connected:
            raise DeviceConnectionError(self.name, "not connected: call `await device.connect()` first")
        x = as_array(x, self.name, "x")
        theta = as_array(theta, self.name, "theta")
        self.spec.validate(x, theta, self.name)
        y = await self._apply(x, theta)
        self.calls += 1
        self.samples += x.shape[0]
        return y

    async def close(self) -> None:
        self.connected = False

    async def __aenter__(self) -> "Device":
        if not self.connected:
            await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @abc.abstractmethod
    async def _connect(self, timeout: float) -> None: ...

    @abc.abstractmethod
    async def _apply(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray: ...

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
