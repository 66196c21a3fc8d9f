"""Which ZeroMQ connection speaks for which node id, and who may claim an id.

The coordinator's ROUTER socket knows each connection by a *routing id*. Edges pick an unguessable one
(``NODE~RANDOM``, :func:`edge_routing_id`), and ``ROUTER_HANDOVER`` is off, so no second connection can take
over an existing route. A node id is bound to a connection only by a ``hello`` that claims it
(:meth:`NodeIdentities.claim`):

* CURVE with a keys map (public key -> node id, :func:`load_keys`): the claim must match the node id
  registered for the key that authenticated the connection (ZAP ``User-Id``). Anything else is refused
  with :class:`IdentityError`, whatever the order of arrival: an impostor never displaces the honest node.
* otherwise (no CURVE, or CURVE without client keys): first come while alive. A claim for a node id whose
  current connection is alive (heartbeats within ``liveness`` and still connected: the coordinator probes
  it) is refused; once that connection closed, the node said bye or went silent for ``liveness`` s,
  the next hello takes the id (a restarted node recovers by itself: its heartbeats make the coordinator
  ask for its hello again).

Replies, heartbeats and byes count only when they arrive on the connection bound to the node id.
Without CURVE a coordinator binds loopback endpoints only, unless the user opts in (``insecure=True``),
see :func:`check_endpoint`.
"""
from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path
from typing import Callable, Mapping

import zmq.auth

from pat_runtime.devices.codes import ErrorCode
from pat_runtime.devices.errors import TransportError
from pat_runtime.devices.uri import parse_uri

log = logging.getLogger("pat_runtime.transport.zmq")

#: routing ids are ``NODE~HEX``; the suffix makes them unguessable and unique per edge process
SEPARATOR = "~"
#: how many routing ids are remembered (bound connections); beyond it the oldest unbound are dropped
MAX_ROUTES = 4096


class IdentityError(TransportError, PermissionError):
    """A connection claimed a node id it may not use (``code``: ``ErrorCode.WRONG_KEY`` | ``ID_IN_USE``).

    ``where`` is the claimed node id when known (the message names it too)."""

    def __init__(self, code: ErrorCode | str, message: str, node: str = ""):
        self.code = ErrorCode(code)
        self.where = node
        PermissionError.__init__(self, message)

    def __reduce__(self):
        return (self.__class__, (self.code, str(self), self.where))


def edge_routing_id(node_id: str) -> bytes:
    """A fresh, unguessable routing id for an edge DEALER (``node_id~16 hex``; at most 255 bytes)."""
    return f"{node_id[:200]}{SEPARATOR}{os.urandom(8).hex()}".encode()


def load_keys(source: str | Path | Mapping[str, bytes | str]) -> dict[bytes, str]:
    """``public key (Z85 bytes) -> node id`` from a mapping ``{node: key}``, a keys file or a certificate folder.

    * keys file: one ``NODE PUBLIC_KEY`` per line (``#`` comment lines), as written by ``pat curve-keys``;
    * folder: ``zmq.auth`` public certificates ``NODE.key`` (the file stem is the node id).

    A key registered for two node ids, or a malformed key, raises ValueError naming the line.
    """
    out: dict[bytes, str] = {}

    def add(node: str, key: bytes | str, where: str) -> None:
        k = key.encode("ascii") if isinstance(key, str) else bytes(key)
        if len(k) != 40:
            raise ValueError(f"{where}: CURVE public keys are 40-character Z85 strings, got {len(k)} characters")
        if k in out and out[k] != node:
            raise ValueError(f"{where}: key {k[:8].decode()}... is registered for both {out[k]!r} and {node!r}")
        out[k] = node

    if isinstance(source, Mapping):
        for node, key in source.items():
            add(str(node), key, "keys")
        return out
    p = Path(source)
    if p.is_dir():
        for cert in sorted(p.glob("*.key")):
            public, _ = zmq.auth.load_certificate(str(cert))
            add(cert.stem, public, str(cert))
        return out
    for i, line in enumerate(p.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):  # Z85 keys may contain '#': comments are whole lines only
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{p}:{i}: expected 'NODE_ID PUBLIC_KEY', got {line!r}")
        try:
            add(parts[0], parts[1], f"{p}:{i}")
        except ValueError as e:
            raise ValueError(f"{p}:{i}: {e}") from None
    return out


def is_loopback_endpoint(endpoint: str) -> bool:
    """``tcp://127.0.0.1:5555``, ``tcp://[::1]:1``, ``tcp://localhost:1``, ``ipc://``, ``inproc://`` -> True."""
    try:
        u = parse_uri(endpoint, what="endpoint")
    except ValueError:               # e.g. tcp://*:5555 (no numeric port): not known to be loopback
        return False
    if u.scheme in ("ipc", "inproc"):
        return True
    host = (u.host or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # '*', an interface name or a DNS name: not known to be loopback
        return False


def check_endpoint(endpoint: str, curve: object, insecure: bool, who: str) -> None:
    """Refuse a non-loopback endpoint without CURVE unless ``insecure`` (then warn)."""
    if curve is not None or is_loopback_endpoint(endpoint):
        return
    if not insecure:
        raise ValueError(f"{who}: {endpoint} is not a loopback address and CURVE is off: anyone who can reach "
                         f"it could drive the device. Configure CURVE (see docs/security.md) or opt in "
                         f"explicitly with insecure=True / --insecure")
    log.warning("%s: %s without CURVE (insecure opt-in): anyone who can reach it can claim node ids and "
                "drive devices", who, endpoint)


class NodeIdentities:
    """The coordinator's map between routing ids and node ids (see the module docstring)."""

    def __init__(self, keys: Mapping[bytes, str] | None = None, max_routes: int = MAX_ROUTES):
        self.keys = dict(keys or {})
        self.max_routes = int(max_routes)
        self._node_of: dict[bytes, str] = {}
        self._route_of: dict[str, bytes] = {}
        self.refused = 0

    def __len__(self) -> int:
        return len(self._node_of)

    def route(self, node: str) -> bytes:
        """The routing id of the connection bound to ``node`` (``node`` itself when none: unreachable)."""
        return self._route_of.get(node) or node.encode()

    def node_of(self, routing_id: bytes) -> str | None:
        return self._node_of.get(routing_id)

    def claim(self, routing_id: bytes, node: str, user_id: str | None, alive: Callable[[str], bool]) -> None:
        """Bind ``node`` to ``routing_id`` or raise :class:`IdentityError` (the current binding stays)."""
        if self._node_of.get(routing_id) == node:
            return
        if self.keys:
            owner = self.keys.get(user_id.encode()) if user_id else None
            if owner != node:
                self.refused += 1
                raise IdentityError(ErrorCode.WRONG_KEY, f"a connection claimed node id {node!r} but its CURVE key "
                                                         f"{(user_id or '?')[:8]}... is registered for "
                                                         f"{owner!r}: refused", node)
        else:
            current = self._route_of.get(node)
            if current is not None and current != routing_id and alive(node):
                self.refused += 1
                raise IdentityError(ErrorCode.ID_IN_USE, f"node id {node!r} is in use by a live connection; a "
                                                         f"second claim is refused until that node leaves or goes "
                                                         f"silent", node)
        old_node = self._node_of.pop(routing_id, None)  # a connection re-announcing under another id
        if old_node is not None and self._route_of.get(old_node) == routing_id:
            del self._route_of[old_node]
        old_route = self._route_of.get(node)
        if old_route is not None:
            self._node_of.pop(old_route, None)
        self._route_of[node] = routing_id
        self._node_of[routing_id] = node
        while len(self._node_of) > self.max_routes:  # bounded: forget the oldest binding
            rid = next(iter(self._node_of))
            self.forget(self._node_of[rid])

    def forget(self, node: str) -> None:
        rid = self._route_of.pop(node, None)
        if rid is not None:
            self._node_of.pop(rid, None)
