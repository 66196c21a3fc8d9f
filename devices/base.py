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
        x, theta = self._checked(x, theta)
        y = await self._apply(x, theta)
        self.calls += 1
        self.samples += x.shape[0]
        return y

    def _checked(self, x: Any, theta: Any) -> tuple[np.ndarray, np.ndarray]:
        if not self.connected:
            raise DeviceConnectionError(self.name, "not connected: call `await device.connect()` first")
        x = as_array(x, self.name, "x")
        theta = as_array(theta, self.name, "theta")
        self.spec.validate(x, theta, self.name)
        return x, theta

    # ----- fast path: calls that finish at once ------------------------------------------------------
    def inline_ok(self) -> bool:
        """True when :meth:`apply_nowait` may be used: the call finishes at once (no I/O, no long compute)."""
        return False

    def apply_nowait(self, x: Any, theta: Any) -> np.ndarray:
        """:meth:`apply` without awaiting (only when :meth:`inline_ok`); same checks and counters."""
        x, theta = self._checked(x, theta)
        y = self._apply_nowait(x, theta)
        self.calls += 1
        self.samples += x.shape[0]
        return y

    def _apply_nowait(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{self.name} has no synchronous apply")

    # ----- batched channels: one call, one θ per channel ---------------------------------------------
    async def apply_many(self, xs: Any, thetas: Any) -> np.ndarray:
        """``C`` channels in one call: ``xs[C, B, in_dim]``, ``thetas[C, param_dim]`` -> ``ys[C, B, out_dim]``.

        Channel ``c`` is ``apply(xs[c], thetas[c])``, validated the same way. The default runs them one after
        another through :meth:`_apply` (devices that take one θ at a time keep working); a remote device
        sends them as one request, a device that can set several θ at once overrides :meth:`_apply_many`.
        """
        xs, thetas = self._checked_many(xs, thetas)
        ys = await self._apply_many(xs, thetas)
        self.calls += xs.shape[0]
        self.samples += xs.shape[0] * xs.shape[1]
        return ys

    def apply_many_nowait(self, xs: Any, thetas: Any) -> np.ndarray:
        """:meth:`apply_many` without awaiting (only when :meth:`inline_ok`)."""
        xs, thetas = self._checked_many(xs, thetas)
        ys = np.stack([self._apply_nowait(xs[c], thetas[c]) for c in range(xs.shape[0])])
        self.calls += xs.shape[0]
        self.samples += xs.shape[0] * xs.shape[1]
        return ys

    async def _apply_many(self, xs: np.ndarray, thetas: np.ndarray) -> np.ndarray:
        return np.stack([await self._apply(xs[c], thetas[c]) for c in range(xs.shape[0])])

    def _checked_many(self, xs: Any, thetas: Any) -> tuple[np.ndarray, np.ndarray]:
        if not self.connected:
            raise DeviceConnectionError(self.name, "not connected: call `await device.connect()` first")
        xs = as_array(xs, self.name, "x")
        thetas = as_array(thetas, self.name, "theta")
        if xs.ndim != 3 or thetas.ndim != 2 or xs.shape[0] != thetas.shape[0] or xs.shape[0] == 0:
            raise ShapeError(self.name, f"apply_many needs x[C, B, {self.spec.in_dim}] and theta[C, "
                                        f"{self.spec.param_dim}] with the same C >= 1, got {list(xs.shape)} and "
                                        f"{list(thetas.shape)}")
        self.spec.validate_many(xs, thetas, self.name)
        return xs, thetas

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
