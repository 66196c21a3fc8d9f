"""Transports between the coordinator (training side) and edge nodes (device side).

* :mod:`pat_runtime.transport.base` — the :class:`Coordinator` and :class:`EdgeTransport` protocols
* :mod:`pat_runtime.transport.zmq` — ZeroMQ ROUTER/DEALER (default, brokerless)
* :mod:`pat_runtime.transport.mqtt` — MQTT via aiomqtt through a broker (Mosquitto)
* :mod:`pat_runtime.transport.inproc` — in-memory, for virtual fleets and tests
* :mod:`pat_runtime.transport.remote` — :class:`RemoteDevice`: the device of a node, reached through a coordinator
  (the ``zmq://``, ``tcp://``, ``mqtt://`` and ``mqtts://`` device schemes)

Names are imported on first use (PEP 562): ``import pat_runtime.transport`` loads neither pyzmq nor aiomqtt.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pat_runtime._lazy import lazy_exports

_EXPORTS = {
    "Coordinator": ".base", "EdgeTransport": ".base", "NodeInfo": ".base",
    "Backoff": ".backoff", "free_port": ".ports", "TransportStats": ".stats",
    "RemoteDevice": ".remote", "connect_uri": ".remote",
    "InprocCoordinator": ".inproc", "InprocEdgeTransport": ".inproc",
    "ZmqCoordinator": ".zmq", "ZmqEdgeTransport": ".zmq",
    "MqttCoordinator": ".mqtt", "MqttEdgeTransport": ".mqtt",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .backoff import Backoff
    from .base import Coordinator, EdgeTransport, NodeInfo
    from .inproc import InprocCoordinator, InprocEdgeTransport
    from .mqtt import MqttCoordinator, MqttEdgeTransport
    from .ports import free_port
    from .remote import RemoteDevice, connect_uri
    from .stats import TransportStats
    from .zmq import ZmqCoordinator, ZmqEdgeTransport
