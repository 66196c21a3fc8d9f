"""Device errors. Every error names the device that raised it."""
from __future__ import annotations


class DeviceError(RuntimeError):
    """Base class for errors raised by a device; ``device`` names which one."""

    def __init__(self, device: str, message: str):
        self.device = device
        self.message = message
        super().__init__(f"[{device}] {message}")

    def __reduce__(self):  # picklable across processes
        return (self.__class__, (self.device, self.message))


class OutOfRangeError(DeviceError, ValueError):
    """Inputs or parameters outside the device's declared safe range; nothing reached the device."""


class ShapeError(DeviceError, ValueError):
    """Arrays whose shape does not match the device spec."""


class DeviceTimeoutError(DeviceError, TimeoutError):
    """The device (or the node serving it) did not answer in time."""


class DeviceConnectionError(DeviceError, ConnectionError):
    """The device could not be reached or was lost."""


class RemoteDeviceError(DeviceError):
    """An error reported by a remote node; ``code`` is the wire error code."""

    def __init__(self, device: str, message: str, code: str = "remote"):
        self.code = code
        super().__init__(device, f"{code}: {message}")
        self.message = message

    def __reduce__(self):
        return (self.__class__, (self.device, self.message, self.code))
