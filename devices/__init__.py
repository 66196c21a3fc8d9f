"""Device core: the :class:`Device` protocol, its :class:`DeviceSpec`, the errors that name a device, and
building a device from a URI (:func:`make_device`; schemes from the ``pat_runtime.devices`` entry points).

Device kinds that need more than numpy live in the layer that provides it: simulators behind ``sim:``
(:mod:`pat_runtime.sims.uri`), remote nodes behind ``zmq://`` / ``mqtt://`` (:mod:`pat_runtime.transport.remote`),
SCPI instruments (:mod:`.visa`) and a serial sensor (:mod:`.serial_sensor`).
"""
from __future__ import annotations

from ._retry import Backoff, retry
from .base import Device, as_array
from .blocking import BlockingDevice
from .codes import ErrorCode
from .errors import (ArtifactFailure, DeviceConnectionError, DeviceError, DeviceTimeoutError, OutOfRangeError,
                     PatError, ProtocolError, RemoteDeviceError, ShapeError, TransportError)
from .factory import make_device
from .local import LocalDevice, Measurable
from .options import parse_options
from .registry import register_scheme, schemes, unregister_scheme
from .spec import DeviceSpec
from .uri import Uri, parse_query, parse_uri, redact_uri

__all__ = ["ArtifactFailure", "Backoff", "BlockingDevice", "Device", "DeviceConnectionError", "DeviceError",
           "DeviceSpec", "DeviceTimeoutError", "ErrorCode", "LocalDevice", "Measurable", "OutOfRangeError",
           "PatError", "ProtocolError", "RemoteDeviceError", "ShapeError", "TransportError", "Uri", "as_array",
           "make_device", "parse_options", "parse_query", "parse_uri", "redact_uri", "register_scheme", "retry",
           "schemes", "unregister_scheme"]
