"""One place that removes secrets from URIs before the project records them (implemented beside the one URI
parser, :mod:`pat_runtime.devices.uri`, and re-exported here).

Device URIs and broker URLs end up in run folder names, ``summary.json``, plot titles, ``.pnn`` manifests
(deployed and retained on the broker), logs and error messages. Credentials belong in a file or the
environment (see :mod:`pat_runtime.transport.mqtt.credentials`), but a URL such as ``mqtt://user:pass@host``
still works for compatibility; everything that writes a URI down passes it through :func:`redact_uri`::

    >>> redact_uri("mqtt://coord:hunter2@10.0.0.5:1883/node-1?prefix=lab&token=abc")
    'mqtt://coord:***@10.0.0.5:1883/node-1?prefix=lab&token=***'
    >>> redact_uri("sim:plate?unit=2")
    'sim:plate?unit=2'
"""
from __future__ import annotations

from pat_runtime.devices.uri import MASK, SECRET_PARAMS, has_secret, redact_uri, strip_credentials

__all__ = ["MASK", "SECRET_PARAMS", "has_secret", "redact_uri", "strip_credentials"]
