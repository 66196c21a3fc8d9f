"""ZeroMQ socket options and CURVE configuration shared by the coordinator and the edge transport.

Socket options (see docs/protocol.md, "ZeroMQ", and docs/security.md):

* coordinator ROUTER: ``ROUTER_MANDATORY=1`` (sending to an unknown / disconnected node raises
  ``EHOSTUNREACH`` instead of silently dropping), ``ROUTER_HANDOVER=0`` (no connection can take over another
  one's route; node ids are bound to connections by :mod:`.identity`), ``SNDHWM/RCVHWM`` (bounded queues:
  backpressure), ``MAXMSGSIZE`` (a peer sending a larger frame is disconnected before it is buffered),
  ZMTP heartbeats (half-open connections are closed), ``LINGER=0``.
* edge DEALER: ``IDENTITY=NODE~RANDOM`` (:func:`.identity.edge_routing_id`), ``SNDHWM/RCVHWM``,
  ``MAXMSGSIZE``, reconnect interval ~100 ms (jittered per process) growing to 1 s, ``LINGER`` 0 except a
  short flush window for the final BYE.

CURVE (optional): the coordinator is a CURVE server (``CurveServer``); nodes are CURVE clients
(``CurveClient``) that know the server's public key. A ZAP authenticator on the coordinator's context
admits only the listed client public keys (or any key when ``allowed`` is None: encryption without
client authentication). When ``allowed`` maps node ids to keys (or :meth:`CurveServer.from_files` reads a
keys file), a node id can only be claimed by the connection authenticated with its key (:mod:`.identity`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import zmq

from pat_runtime.transport.backoff import jittered
from pat_runtime.wire import DEFAULT_LIMITS, Limits

from .identity import edge_routing_id, load_keys

#: default high-water marks (messages) for both ends
DEFAULT_HWM = 1000


def _key(k: bytes | str) -> bytes:
    """A Z85 CURVE key (40 chars) as bytes."""
    kb = k.encode("ascii") if isinstance(k, str) else bytes(k)
    if len(kb) != 40:
        raise ValueError(f"CURVE keys are 40-character Z85 strings, got {len(kb)} characters")
    return kb


def curve_keypair() -> tuple[bytes, bytes]:
    """A new ``(public, secret)`` Z85 key pair (``zmq.curve_keypair``)."""
    return zmq.curve_keypair()


def load_cert(path: str | Path) -> tuple[bytes, bytes | None]:
    """``(public, secret)`` from a ``zmq.auth`` certificate file (secret is None for a public cert)."""
    import zmq.auth

    return zmq.auth.load_certificate(str(path))


@dataclass(frozen=True)
class CurveServer:
    """Coordinator-side CURVE settings.

    ``allowed``: None (any client key; encryption only), an iterable of client public keys, or a mapping
    ``node_id -> public key`` (the key also pins which node id the client may use).
    """

    public_key: bytes
    secret_key: bytes
    allowed: frozenset[bytes] | None = None
    pinned: Mapping[str, bytes] = field(default_factory=dict)

    @classmethod
    def create(cls, public_key: bytes | str, secret_key: bytes | str,
               allowed: Iterable[bytes | str] | Mapping[str, bytes | str] | None = None) -> "CurveServer":
        pinned: dict[str, bytes] = {}
        keys: frozenset[bytes] | None = None
        if isinstance(allowed, Mapping):
            pinned = {str(n): _key(k) for n, k in allowed.items()}
            keys = frozenset(pinned.values())
        elif allowed is not None:
            keys = frozenset(_key(k) for k in allowed)
        return cls(_key(public_key), _key(secret_key), keys, pinned)

    @classmethod
    def from_files(cls, server_cert: str | Path, keys: str | Path | None = None) -> "CurveServer":
        """The coordinator's secret certificate (``zmq.auth`` format) and a keys file / folder (node -> key)."""
        public, secret = load_cert(server_cert)
        if secret is None:
            raise ValueError(f"{server_cert} holds no secret key (use the coordinator's .key_secret file)")
        if keys is None:
            return cls.create(public, secret)
        return cls.create(public, secret, {node: key for key, node in load_keys(keys).items()})

    def key_map(self) -> dict[bytes, str]:
        """``public key -> node id`` of the pinned keys (empty: any admitted key may claim any free id)."""
        return {k: n for n, k in self.pinned.items()}

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP credentials provider hook (pyzmq ``configure_curve_callback``)."""
        return self.allowed is None or bytes(key) in self.allowed

    def apply(self, sock: zmq.Socket) -> None:
        sock.curve_server = True
        sock.curve_publickey = self.public_key
        sock.curve_secretkey = self.secret_key


@dataclass(frozen=True)
class CurveClient:
    """Edge-side CURVE settings: the coordinator's public key and this node's key pair."""

    server_key: bytes
    public_key: bytes
    secret_key: bytes

    @classmethod
    def create(cls, server_key: bytes | str, public_key: bytes | str | None = None,
               secret_key: bytes | str | None = None) -> "CurveClient":
        if public_key is None or secret_key is None:
            public_key, secret_key = curve_keypair()
        return cls(_key(server_key), _key(public_key), _key(secret_key))

    def apply(self, sock: zmq.Socket) -> None:
        sock.curve_serverkey = self.server_key
        sock.curve_publickey = self.public_key
        sock.curve_secretkey = self.secret_key


#: ZMTP heartbeat interval / timeout (ms): a connection silent for the timeout is closed by libzmq
HEARTBEAT_IVL_MS, HEARTBEAT_TIMEOUT_MS = 1000, 5000


def max_frame_bytes(limits: Limits = DEFAULT_LIMITS) -> int:
    """``MAXMSGSIZE`` for ``limits``: the largest legitimate frame (an array, or the header)."""
    return max(int(limits.max_array_bytes), int(limits.max_header_bytes))


def _common(sock: zmq.Socket, hwm: int, limits: Limits) -> None:
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes(limits))
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)


def router_options(sock: zmq.Socket, hwm: int = DEFAULT_HWM, limits: Limits = DEFAULT_LIMITS) -> None:
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.ROUTER_HANDOVER, 0)
    _common(sock, hwm, limits)


def dealer_options(sock: zmq.Socket, node_id: str, hwm: int = DEFAULT_HWM, limits: Limits = DEFAULT_LIMITS) -> None:
    sock.setsockopt(zmq.IDENTITY, edge_routing_id(node_id))
    _common(sock, hwm, limits)
    sock.setsockopt(zmq.RECONNECT_IVL, int(jittered(100)))
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
