"""Loopback ports for nodes, coordinators and brokers started on this machine (tests, simulated fleets)."""
from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A free TCP port on loopback (bound once and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


__all__ = ["free_port"]
