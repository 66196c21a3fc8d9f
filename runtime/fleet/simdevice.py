"""The device of one simulated fleet node: a simulator unit of its own, or a latency-only echo device."""
from __future__ import annotations

import asyncio

import numpy as np

from pat_runtime.devices.base import Device
from pat_runtime.devices.local import LocalDevice
from pat_runtime.devices.spec import DeviceSpec
from pat_runtime.sims import make_sim
from pat_runtime.sims.uri import check_sim_uri, parse_sim_uri


class EchoDevice(Device):
    """A device that is only latency: ``y = tanh(x + θ)`` after ``latency`` s (``echo:?latency=0.01&dim=4``).

    Its compute is a few microseconds, so fleets of it measure the runtime's own overhead (scheduling,
    transport, metering) without the simulated physics competing for the same CPU.
    """

    def __init__(self, latency: float = 0.01, dim: int = 4, name: str = "echo"):
        super().__init__(name)
        self.latency, self.dim = float(latency), int(dim)

    async def _connect(self, timeout: float) -> None:
        self._spec = DeviceSpec("echo", self.dim, self.dim, self.dim, y_range=(-1.0, 1.0),
                                description="latency-only test device: y = tanh(x + theta)")

    async def _apply(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        if self.latency:
            await asyncio.sleep(self.latency)
        return np.tanh(x + theta).astype(np.float32)

    def inline_ok(self) -> bool:
        return not self.latency

    def _apply_nowait(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        return np.tanh(x + theta).astype(np.float32)


def node_device(device: str, index: int, seed: int = 0, threaded: bool = False, **overrides) -> Device:
    """The device of node ``index``: ``sim:KIND?opt=..`` as unit ``index`` (its own hidden variation), or
    ``echo:?latency=S&dim=D`` (:class:`EchoDevice`)."""
    if device.startswith("echo:"):
        _, opts = parse_sim_uri(device.replace("echo:", "sim:", 1))
        opts.update(overrides)
        return EchoDevice(float(opts.get("latency", 0.01)), int(opts.get("dim", 4)), name=f"echo#{index}")
    if not device.startswith("sim:"):
        raise ValueError(f"simulated fleets need a sim:KIND or echo: device, got {device!r}")
    kind, opts = check_sim_uri(device)   # unknown options / bad values refused with the valid ones listed
    opts.update(overrides)
    opts["unit"] = int(opts.get("unit", 0)) + index
    opts.setdefault("seed", seed)
    return LocalDevice(make_sim(kind, **opts), name=f"{kind}#{opts['unit']}", threaded=threaded)


__all__ = ["EchoDevice", "node_device"]
