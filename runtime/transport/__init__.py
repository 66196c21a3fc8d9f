"""Transports between the coordinator (training side) and edge nodes (device side).

* :mod:`pat_runtime.transport.base` — the :class:`Coordinator` and :class:`EdgeTransport` protocols
* :mod:`pat_runtime.transport.zmq` — ZeroMQ ROUTER/DEALER (default, brokerless)
* :mod:`pat_runtime.transport.mqtt` — MQTT via aiomqtt through a broker (Mosquitto)
* :mod:`pat_runtime.transport.inproc` — in-memory, for virtual fleets and tests
"""
