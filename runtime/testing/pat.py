"""Helpers for testing PAT code: a deterministic device defined by a torch function, and a toy twin.

``FunctionDevice(spec, f)`` measures ``y = f(x, θ)`` exactly (no noise) and records every ``(x, θ)``
it received, so tests can check what reached the "hardware" (ranges, batch sizes, call counts).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from pat_runtime.devices.base import Device
from pat_runtime.devices.spec import DeviceSpec


def toy_spec(in_dim: int = 4, param_dim: int = 4, max_batch: int = 4096) -> DeviceSpec:
    """A small device spec: x in [-1, 1], θ in [-0.5, 0.5], ``out_dim == in_dim``."""
    return DeviceSpec(kind="toy", in_dim=in_dim, param_dim=param_dim, out_dim=in_dim, x_range=(-1.0, 1.0),
                      theta_range=(-0.5, 0.5), max_batch=max_batch)


def toy_twin(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``f_m(x, θ) = tanh(2 x ⊙ θ̃ + x)`` with θ cycled over the inputs (θ ``[P]`` or ``[B, P]``)."""
    th = theta if theta.dim() == 2 else theta.unsqueeze(0).expand(x.shape[0], -1)
    idx = torch.arange(x.shape[1]) % th.shape[1]
    return torch.tanh(2 * x * th[:, idx] + x)


def toy_physics(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """The "real" toy device: the twin plus an offset and an extra term the twin does not know."""
    return toy_twin(x, theta) + 0.1 + 0.3 * x ** 2


class FunctionDevice(Device):
    """A local device computing ``f(x, θ)`` in torch (float32), recording all inputs it received."""

    def __init__(self, spec: DeviceSpec, f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = toy_physics,
                 name: str = "fn"):
        super().__init__(name)
        self._spec_value = spec
        self.f = f
        self.received: list[tuple[np.ndarray, np.ndarray]] = []

    async def _connect(self, timeout: float) -> None:
        self._spec = self._spec_value

    async def _apply(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        self.received.append((x.copy(), theta.copy()))
        with torch.no_grad():
            return self.f(torch.from_numpy(x), torch.from_numpy(theta)).numpy().astype(np.float32)


__all__ = ["FunctionDevice", "toy_physics", "toy_spec", "toy_twin"]
