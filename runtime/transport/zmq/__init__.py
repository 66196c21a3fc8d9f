"""ZeroMQ transport: :class:`ZmqCoordinator` (ROUTER, training side) and :class:`ZmqEdgeTransport` (DEALER, node side).

Messages are ``[header, *array_buffers]`` multipart frames (:mod:`pat_runtime.wire`, after pyzmq's
serialization how-to: a msgpack header frame, then one raw buffer per array, sent with ``copy=False``).
See docs/protocol.md for the full protocol.
"""
from .coordinator import ZmqCoordinator
from .edge import ZmqEdgeTransport
from .options import CurveClient, CurveServer, curve_keypair, load_cert
from .stats import TransportStats

__all__ = ["CurveClient", "CurveServer", "TransportStats", "ZmqCoordinator", "ZmqEdgeTransport", "curve_keypair",
           "load_cert"]
