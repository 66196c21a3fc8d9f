"""The error tree of pat_runtime (one root, four branches) and the device errors. Every error names the node or
device it is about (``where``; a :class:`DeviceError` also as ``device``).

::

    PatError                          root: ``except PatError`` catches every failure pat_runtime reports
    ├── DeviceError                   the device (instrument, simulator, driver) failed or refused
    │   ├── OutOfRangeError               (also ValueError) outside the safe range; nothing reached the device
    │   ├── ShapeError                    (also ValueError) arrays that do not fit the spec
    │   ├── InstrumentError               devices/visa.py: the instrument's error queue
    │   └── BudgetExceeded                runtime/calibration.py: a calibration past its budget
    ├── TransportError                the link to a node failed (nothing, or nothing usable, came back)
    │   ├── DeviceTimeoutError            (also DeviceError, TimeoutError) no reply in time / expired
    │   ├── DeviceConnectionError         (also DeviceError, ConnectionError) unreachable, lost, not started
    │   │   └── MqttAuthError                 transport/mqtt/common.py: the broker refused the credentials
    │   ├── PayloadTooLargeError          (also DeviceError, ValueError) transport/mqtt/common.py
    │   ├── IdentityError                 (also PermissionError) transport/zmq/identity.py
    │   └── CredentialsError              (also ValueError) transport/mqtt/credentials.py
    ├── ProtocolError                 a message broke the protocol, or the node answered with an error
    │   ├── WireError                     (also ValueError) wire.py: malformed or over-limit message
    │   │   └── EncodeError                   (also DeviceError) a request that could not be encoded here
    │   ├── RemoteDeviceError             (also DeviceError) the node's error reply; ``code`` is an ErrorCode
    │   └── RequestError                  protocol.py (edge.service): raised by a handler -> error reply
    └── ArtifactFailure               a model artifact, its keys or its deployment
        ├── ArtifactError                 (also ValueError) artifact_errors.py: a .pnn that cannot be used
        ├── KeyFileError                  (also ValueError) signing.py: a key file that cannot be used
        └── DeployError                   (also RuntimeError) deployer.py: a node refused a deployment

The "also" bases are kept from before the tree existed, so ``except DeviceError``, ``except TimeoutError``,
``except ValueError`` ... catch what they always caught (a timeout or a remote error is still a
``DeviceError``). Codes come from :class:`~pat_runtime.devices.codes.ErrorCode`.
"""
from __future__ import annotations

from .codes import ErrorCode


class PatError(Exception):
    """Root of every error pat_runtime raises on purpose. ``where`` names the node or device ("" if none)."""

    where: str = ""


class TransportError(PatError):
    """Branch: the link to a node failed (timeout, connection, payload limit, identity, credentials)."""


class ProtocolError(PatError):
    """Branch: a malformed message, or an error reply from a node. ``code`` is an :class:`ErrorCode`."""

    code: ErrorCode = ErrorCode.REMOTE


class ArtifactFailure(PatError):
    """Branch: a model artifact, a signing key or a deployment failed."""


class DeviceError(PatError, RuntimeError):
    """Branch: an error raised by (or about) a device; ``device`` names which one (also ``where``)."""

    def __init__(self, device: str, message: str):
        self.device = self.where = device
        self.message = message
        super().__init__(f"[{device}] {message}")

    def __reduce__(self):  # picklable across processes
        return (self.__class__, (self.device, self.message))


class OutOfRangeError(DeviceError, ValueError):
    """Inputs or parameters outside the device's declared safe range; nothing reached the device."""


class ShapeError(DeviceError, ValueError):
    """Arrays whose shape does not match the device spec."""


class DeviceTimeoutError(TransportError, DeviceError, TimeoutError):
    """The device (or the node serving it) did not answer in time."""


class DeviceConnectionError(TransportError, DeviceError, ConnectionError):
    """The device could not be reached or was lost."""


class RemoteDeviceError(ProtocolError, DeviceError):
    """An error reported by a remote node (its error reply); ``code`` is the node's :class:`ErrorCode`."""

    def __init__(self, device: str, message: str, code: ErrorCode | str = ErrorCode.REMOTE):
        self.code = ErrorCode(code)
        super().__init__(device, f"{self.code}: {message}")
        self.message = message

    def __reduce__(self):
        return (self.__class__, (self.device, self.message, self.code))


__all__ = ["ArtifactFailure", "DeviceConnectionError", "DeviceError", "DeviceTimeoutError", "ErrorCode",
           "OutOfRangeError", "PatError", "ProtocolError", "RemoteDeviceError", "ShapeError", "TransportError"]
