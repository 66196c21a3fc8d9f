"""pat-runtime: physics-aware training of physical neural networks.

Synchronous entry points for notebooks and scripts (:mod:`pat_runtime.api`)::

    import pat_runtime
    result = pat_runtime.train(device="sim:plate", task="digits", method="pat", epochs=5)
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

# lazy (PEP 562): `import pat_runtime.wire` must not import torch
__getattr__, __dir__ = lazy_exports(__name__, {
    "train": ".api", "twin": ".api", "run_sync": ".api",
    # the typed protocol and the error tree (docs/architecture.md, "Errors and protocol")
    "ErrorCode": ".devices.codes", "Request": ".protocol", "Reply": ".protocol", "RequestError": ".protocol",
    "PatError": ".devices.errors", "DeviceError": ".devices.errors", "TransportError": ".devices.errors",
    "ProtocolError": ".devices.errors", "ArtifactFailure": ".devices.errors",
})
__all__ = ["ArtifactFailure", "DeviceError", "ErrorCode", "PatError", "ProtocolError", "Reply", "Request",
           "RequestError", "TransportError", "run_sync", "train", "twin"]

if TYPE_CHECKING:
    from .api import run_sync, train, twin
    from .devices.codes import ErrorCode
    from .devices.errors import ArtifactFailure, DeviceError, PatError, ProtocolError, TransportError
    from .protocol import Reply, Request, RequestError
