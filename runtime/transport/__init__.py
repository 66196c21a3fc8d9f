"""Transports between the coordinator (training side) and edge nodes (device side).

* :mod:`runtime.transport.base` — the :class:`Coordinator` and :class:`EdgeTransport` protocols
* :mod:`runtime.transport.zmq` — ZeroMQ ROUTER/DEALER (default, brokerless)
* :mod:`runtime.transport.mqtt` — MQTT via aiomqtt through a broker (Mosquitto)
* :mod:`runtime.transport.inproc` — in-memory, for virtual fleets and tests
"""
