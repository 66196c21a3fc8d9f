"""Build a device from a URI (the scheme picks a factory from :mod:`pat_runtime.devices.registry`).

* ``sim:plate`` / ``sim:circuit?unit=3&seed=1&noise=0.02&latency=0.01`` -> :class:`LocalDevice`
  (``pat_runtime.sims.uri``)
* ``zmq://127.0.0.1:5555/node-id`` -> ZeroMQ remote device (``pat_runtime.transport.remote``)
* ``mqtt://user:pass@127.0.0.1:1883/node-id`` -> MQTT remote device (``pat_runtime.transport.remote``)
* ``visa:plate?awg=TCPIP::HOST::PORT::SOCKET&dig=...`` -> the plate driven by SCPI instruments (``pat_runtime.devices.visa``)
* any scheme an installed package registers in the ``pat_runtime.devices`` entry-point group
"""
from __future__ import annotations

from typing import Any

from .base import Device
from .registry import factory_for


def make_device(uri: str, **kwargs: Any) -> Device:
    """An unconnected device for ``uri`` (``await device.connect()`` next); ``ValueError`` for a bad URI."""
    return factory_for(uri)(uri, **kwargs)
