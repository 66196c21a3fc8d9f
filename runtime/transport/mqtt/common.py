"""Shared pieces of the MQTT transport: URLs, the topic layout, client construction, errors.

Topic layout under a ``prefix`` (default ``pat``; a node id is one topic level, no ``/ + #``)::

    PREFIX/NODE/req          coordinator -> node   request payloads                       QoS 1
    PREFIX/NODE/rep/CID      node -> coordinator   replies to coordinator CID ("cid" field) QoS 1
    PREFIX/NODE/rep          node -> anyone        error replies to unreadable requests     QoS 1
    PREFIX/NODE/hello        node, retained        hello header with spec, heartbeat, handlers, max_payload
    PREFIX/NODE/status       node, retained        "online SID" / "offline SID" (UTF-8; the Last Will is "offline SID")
    PREFIX/NODE/hb           node -> coordinator   heartbeat header every `heartbeat` s     QoS 0

``SID`` is a random session id per connection: an "offline" for an older session (a late Last Will of a
connection the node already replaced) is ignored. Every payload except ``status`` is one
:func:`pat_runtime.wire.pack` message: ``PAT1 | u32 header_len | msgpack header | arrays (8-byte aligned)``.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from pat_runtime.devices.codes import ErrorCode
from pat_runtime.devices.errors import DeviceConnectionError, DeviceError, TransportError
from pat_runtime.devices.uri import parse_uri
from pat_runtime.redact import redact_uri
from pat_runtime.wire import DEFAULT_LIMITS, MAGIC, Limits, WireError, decode_header

from .credentials import Credentials, resolve_credentials

log = logging.getLogger("pat_runtime.transport.mqtt")

#: MQTT's largest packet is 268,435,455 bytes (remaining length); keep room for topic and packet id
MQTT_MAX_PACKET = 268_435_455
DEFAULT_MAX_PAYLOAD = MQTT_MAX_PACKET - 65_540

_NAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")


def check_name(name: str, what: str = "node id") -> str:
    """A node id / coordinator id must be one MQTT topic level: letters, digits, ``_ . : @ -``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"invalid {what} {name!r}: use 1-128 of A-Z a-z 0-9 _ . : @ - (one MQTT topic level)")
    return name


def check_prefix(prefix: str) -> str:
    if not prefix or any(c in prefix for c in "+#") or prefix.startswith("/") or prefix.endswith("/"):
        raise ValueError(f"invalid topic prefix {prefix!r}: no wildcards, no leading/trailing '/'")
    return prefix


class PayloadTooLargeError(TransportError, DeviceError, ValueError):
    """A payload over ``max_payload`` bytes: refused before anything was published."""

    code = ErrorCode.TOO_LARGE


class MqttAuthError(DeviceConnectionError):
    """The broker refused the connection (bad username/password or not authorised)."""


@dataclass(frozen=True, repr=False)
class MqttUrl:
    """``mqtt[s]://[user[:password]@]host[:port][/NODE][?prefix=..&max_payload=..]`` (user/password URL-quoted)."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    node: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, url: str) -> "MqttUrl":
        u = parse_uri(url, what="MQTT URL")
        if u.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"not an MQTT URL: {u.redacted!r} (expected mqtt://host:port or mqtts://...)")
        tls = u.scheme == "mqtts"
        node = u.path or None
        if node is not None:
            check_name(node)
        return cls(host=u.host or "127.0.0.1", port=u.port or (8883 if tls else 1883), username=u.username,
                   password=u.password, tls=tls, node=node, options=u.query)

    def __repr__(self) -> str:  # never shows the password or secret query values
        query = "&".join(f"{k}={v}" for k, v in self.options)
        return f"MqttUrl({redact_uri(f'{self.where}/{self.node or str()}?{query}')!r}, user={self.username!r})"

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)

    def credentials(self) -> Credentials:
        """Username, password and TLS files (URL, ``?credentials=FILE``, environment; see :mod:`.credentials`)."""
        return resolve_credentials(self.username, self.password, dict(self.options), where=self.where)

    @property
    def where(self) -> str:
        """The broker, for messages (no credentials)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def split_device_url(url: str) -> tuple[str, str]:
    """``mqtt://u:p@h:1883/node-1?prefix=x`` -> (``mqtt://u:p@h:1883?prefix=x``, ``node-1``)."""
    u = parse_uri(url, what="MQTT device URL")
    node = u.path
    if not node:
        raise ValueError(f"MQTT device URL {u.redacted!r} names no node: use mqtt://host:port/NODE")
    check_name(node)
    return u.geturl(path=""), node


class Topics:
    """The topic names of one prefix (see the module docstring)."""

    def __init__(self, prefix: str):
        self.prefix = check_prefix(prefix)
        self._cut = len(prefix) + 1

    def req(self, node: str) -> str:
        return f"{self.prefix}/{node}/req"

    def rep(self, node: str, cid: str | None = None) -> str:
        return f"{self.prefix}/{node}/rep/{cid}" if cid else f"{self.prefix}/{node}/rep"

    def hello(self, node: str) -> str:
        return f"{self.prefix}/{node}/hello"

    def status(self, node: str) -> str:
        return f"{self.prefix}/{node}/status"

    def hb(self, node: str) -> str:
        return f"{self.prefix}/{node}/hb"

    def split(self, topic: str) -> tuple[str, str] | None:
        """``PREFIX/NODE/KIND[/...]`` -> (NODE, KIND), None for foreign topics."""
        if not topic.startswith(self.prefix) or topic[self._cut - 1: self._cut] != "/":
            return None
        parts = topic[self._cut:].split("/", 2)
        return (parts[0], parts[1]) if len(parts) >= 2 else None


#: CONNACK codes for refused credentials: 3.1.1 (4 bad user/password, 5 not authorised) and MQTT 5 (134, 135)
_AUTH_CODES = frozenset({4, 5, 134, 135})


def make_client(url: MqttUrl, identifier: str, *, will: aiomqtt.Will | None = None, keepalive: int = 10,
                timeout: float = 10.0, max_queued_incoming: int = 0, max_inflight: int = 1000,
                v5: bool = False) -> aiomqtt.Client:
    """An (unconnected) ``aiomqtt.Client`` for ``url``; MQTT 3.1.1, clean session (``v5``: MQTT 5, clean start).

    ``max_inflight``: QoS 1 publishes awaiting their PUBACK before paho holds further ones back (paho's
    default of 20 would throttle a pipelining coordinator). Credentials and TLS files come from
    :meth:`MqttUrl.credentials` (file / environment); ``mqtts://`` verifies the broker against the given CA
    (system CAs when none) and presents a client certificate if given.
    """
    creds = url.credentials()
    session = ({"protocol": aiomqtt.ProtocolVersion.V5, "clean_start": True} if v5 else {"clean_session": True})
    return aiomqtt.Client(
        url.host, url.port, identifier=identifier, username=creds.username, password=creds.password, will=will,
        keepalive=keepalive, timeout=timeout, max_queued_incoming_messages=max_queued_incoming,
        max_inflight_messages=max_inflight,
        tls_context=creds.ssl_context() if url.tls else None, **session)


def set_nodelay(client: aiomqtt.Client) -> bool:
    """Set TCP_NODELAY on the connected client's socket (paho's public ``Client.socket()``); True if set.

    Without it a small PUBLISH waits for the ACK of the previous segment (Nagle) while the peer delays that
    ACK (delayed ACK): 40-90 ms per round trip on Linux. The broker side needs ``set_tcp_nodelay true``.
    """
    paho = getattr(client, "_client", None)  # aiomqtt keeps the paho client here (no public accessor)
    sock = paho.socket() if paho is not None else None
    if sock is None or not hasattr(sock, "setsockopt"):
        return False
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return True
    except OSError as e:
        log.debug("TCP_NODELAY not set: %s", e)
    return False


def publish_nowait(client: aiomqtt.Client, topic: str, payload: bytes, qos: int = 1) -> str | None:
    """Queue a PUBLISH with paho without awaiting its PUBACK (the loop writes it); None, or why it failed.

    Requests and replies need no PUBACK wait: the request engine retries by id, so this saves a broker
    round trip per message.
    """
    try:
        info = client._client.publish(topic, payload, qos)
    except (ValueError, RuntimeError, OSError) as e:
        return str(e)
    return None if info.rc == 0 else f"paho error code {info.rc}"


async def connect(client: aiomqtt.Client, url: MqttUrl, who: str) -> aiomqtt.Client:
    """Connect ``client``; failures become :class:`DeviceConnectionError` / :class:`MqttAuthError` naming ``who``."""
    try:
        await client.__aenter__()
        set_nodelay(client)
    except aiomqtt.MqttCodeError as e:  # a CONNACK refusal (aiomqtt's MqttConnectError) carries the code
        rc = getattr(e.rc, "value", e.rc)
        if rc in _AUTH_CODES:
            raise MqttAuthError(who, f"broker {url.where} refused the connection: {e} "
                                     f"(check the username/password: credentials file or $PAT_MQTT_PASSWORD; "
                                     f"user={url.credentials().username!r})") from None
        raise DeviceConnectionError(who, f"broker {url.where} refused the connection: {e}") from None
    except aiomqtt.MqttError as e:
        raise DeviceConnectionError(who, f"cannot connect to MQTT broker {url.where}: {e}") from None
    except asyncio.CancelledError:  # do not leave a half-open connection (and its aiomqtt task) behind
        with contextlib.suppress(Exception):
            await asyncio.wait_for(disconnect(client), 1.0)
        raise
    return client


async def disconnect(client: aiomqtt.Client | None, timeout: float = 2.0) -> None:
    """Graceful DISCONNECT (no Last Will); quiet if the connection is already gone.

    aiomqtt waits for the connection to close for the client's whole ``timeout`` (10 s by default); over
    TLS that close is occasionally not seen, which stalled an edge's shutdown past its caller's wait. The
    wait is bounded here (the client is dropped afterwards either way).
    """
    if client is None:
        return
    client.timeout = min(client.timeout, timeout)
    with contextlib.suppress(aiomqtt.MqttError, OSError, RuntimeError):
        await client.__aexit__(None, None, None)


def peek_header(payload: Any, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any] | None:
    """The header of a payload whose arrays are bad (so an error reply can carry its id), else None."""
    try:
        mv = memoryview(payload).cast("B")
        if bytes(mv[: len(MAGIC)]) != MAGIC:
            return None
        (hlen,) = struct.unpack_from("<I", mv, len(MAGIC))
        start = len(MAGIC) + 4
        if start + hlen > mv.nbytes:
            return None
        return decode_header(mv[start: start + hlen], limits)
    except (WireError, ValueError, TypeError, struct.error):
        return None
