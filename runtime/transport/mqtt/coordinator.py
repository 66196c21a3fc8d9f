"""MqttCoordinator: the training side of the MQTT transport (topics in :mod:`.common`).

One aiomqtt client subscribes to ``PREFIX/+/status``, ``PREFIX/+/hello``, ``PREFIX/+/hb``,
``PREFIX/+/rep/CID`` and ``PREFIX/+/rep``; one receive task dispatches what arrives:

* ``status`` "online SID"  -> the node's session; with its hello it joins the registry (``_node_seen``)
* ``status`` "offline SID" -> (clean exit or the broker's Last Will after a crash) the node is dead and its
                              in-flight requests fail at once with DeviceConnectionError (stale SIDs ignored)
* ``hello``                -> spec, heartbeat interval, handlers, max_payload of the node
* ``hb``                   -> refreshes ``last_seen``; a liveness task marks nodes dead after ``liveness`` s
* ``rep``                  -> resolves the pending request with the same ``id``

``request`` is the shared engine's (:mod:`pat_runtime.transport.engine`: pending table, one deadline sweep, retries
with the same id, per-node cap ``max_inflight``); this class packs ``header + arrays`` into one payload and hands
it to paho without waiting for the PUBACK (QoS 1, ``cid`` = this coordinator's id; the node answers on
``PREFIX/NODE/rep/CID``). Payloads over ``max_payload`` bytes (or the node's announced limit) raise
:class:`PayloadTooLargeError` and nothing is published. If the broker connection drops, a background task
reconnects (backoff up to 2 s); requests are re-sent within their timeouts once it is back. The socket to the
broker has TCP_NODELAY set (no Nagle/delayed-ACK stalls).
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, Sequence

import aiomqtt

from pat_runtime.devices.codes import ErrorCode
from pat_runtime.devices.errors import DeviceConnectionError
from pat_runtime import wire
from pat_runtime.devices import Backoff
from pat_runtime.transport.base import Coordinator
from pat_runtime.wire import DEFAULT_LIMITS, Limits, WireError

from .common import (DEFAULT_MAX_PAYLOAD, MqttUrl, PayloadTooLargeError, Topics, check_name, connect, disconnect,
                     make_client, publish_nowait)

log = logging.getLogger(__name__)


class MqttCoordinator(Coordinator):
    """Coordinator that reaches edge nodes through an MQTT broker at ``url`` (``mqtt://[user:pass@]host:port``)."""

    def __init__(self, url: str = "mqtt://127.0.0.1:1883", prefix: str | None = None, *, timeout: float = 10.0,
                 retries: int = 2, max_inflight: int = 8, liveness: float = 3.0,
                 max_payload: int | None = None, keepalive: int = 10, connect_timeout: float = 10.0,
                 limits: Limits = DEFAULT_LIMITS, client_id: str | None = None):
        super().__init__()
        self.url = MqttUrl.parse(url)
        if self.url.node:
            raise ValueError(f"coordinator URL {self.url.where}/{self.url.node} names a node; "
                             "pass the broker URL and the node id to request()")
        self.topics = Topics(prefix or self.url.option("prefix", "pat"))
        self.cid = check_name(client_id or uuid.uuid4().hex[:12], "coordinator id")
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.max_inflight = int(max_inflight)
        self.liveness = float(liveness)
        self.max_payload = int(max_payload or self.url.option("max_payload", DEFAULT_MAX_PAYLOAD))
        self.keepalive = int(keepalive)
        self.connect_timeout = float(connect_timeout)
        self.limits = limits
        self.started = False
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._sessions: dict[str, str | None] = {}      # node -> SID of its live session, None when offline
        self._hellos: dict[str, dict[str, Any]] = {}    # node -> last hello header
        self._unjoined: dict[str, float] = {}           # node -> first sight, for ids with a status/hello only

    # ----- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> "MqttCoordinator":
        """Connect and subscribe; raises DeviceConnectionError / MqttAuthError if the broker refuses."""
        if self.started:
            return self
        client = await self._connect()
        self.started = True
        self._tasks = [asyncio.create_task(self._run(client), name=f"mqtt-coordinator {self.cid}"),
                       asyncio.create_task(self._liveness_loop(), name=f"mqtt-coordinator-liveness {self.cid}")]
        return self

    async def close(self) -> None:
        if not self.started:
            return
        self.started = False
        await self._stop_tasks_and_requests()
        client, self._client = self._client, None
        self._connected.clear()
        await disconnect(client)
        for n in list(self.nodes):
            self._node_left(n)

    #: MQTT 5 client (subclasses that need v5 features, e.g. shared subscriptions, set it)
    mqtt_v5 = False

    def _subscriptions(self) -> list[tuple[str, int]]:
        """(topic filter, QoS) the coordinator subscribes to after each connect."""
        t = self.topics.prefix
        return [(f"{t}/+/status", 1), (f"{t}/+/hello", 1), (f"{t}/+/hb", 0), (f"{t}/+/rep/{self.cid}", 1),
                (f"{t}/+/rep", 1)]

    def _who(self) -> str:
        return "coordinator"

    async def _connect(self) -> aiomqtt.Client:
        client = make_client(self.url, f"{self.topics.prefix}-coord-{self.cid}", keepalive=self.keepalive,
                             timeout=self.connect_timeout, v5=self.mqtt_v5)
        await connect(client, self.url, self._who())
        try:
            await client.subscribe(self._subscriptions())
        except aiomqtt.MqttError as e:
            await disconnect(client)
            raise DeviceConnectionError("coordinator", f"subscribe on {self.url.where} failed: {e}") from None
        except asyncio.CancelledError:
            await disconnect(client)
            raise
        self._client = client
        self._connected.set()
        return client

    async def _run(self, client: aiomqtt.Client) -> None:
        """Receive until the connection drops, then reconnect (forever, until close)."""
        while True:
            try:
                async for msg in client.messages:
                    self.stats.recv_msgs += 1
                    try:
                        self._dispatch(msg.topic.value, msg.payload)
                    except Exception as e:  # a peer must never take the loop down
                        self.stats.malformed += 1
                        log.debug("dropped a malformed message on %s: %s", msg.topic.value, e)
            except aiomqtt.MqttError as e:
                log.warning("coordinator %s lost the broker %s: %s; reconnecting", self.cid, self.url.where, e)
            self._connected.clear()
            self._client = None
            await disconnect(client)
            backoff = Backoff(0.05, 2.0)
            while True:
                await asyncio.sleep(backoff.next())
                try:
                    client = await self._connect()
                    break
                except DeviceConnectionError as e:
                    log.debug("reconnect failed: %s", e)

    def tracked(self) -> dict[str, int]:
        """How many node ids each per-node table holds (bounded by ``max_nodes``; tests, monitoring):
        ``sessions`` (status seen), ``hellos`` (hello kept), ``unjoined`` (status/hello, never joined)."""
        return {"sessions": len(self._sessions), "hellos": len(self._hellos), "unjoined": len(self._unjoined)}

    def session(self, node_id: str) -> str | None:
        """The session id (SID) of ``node_id``'s live connection; None when the node said it went offline
        (its status "offline SID" or Last Will) or was never seen."""
        return self._sessions.get(node_id)

    # ----- requests (the engine calls these) ---------------------------------------------------------
    def _precheck(self, node_id: str) -> None:
        if self._sessions.get(node_id, "?") is None:
            raise DeviceConnectionError(node_id, f"node is offline (status on {self.topics.status(node_id)})")

    def _encode(self, node_id: str, header: dict[str, Any], arrays: Sequence[Any]) -> tuple[Any, int]:
        header["cid"] = self.cid
        payload = wire.pack(header, arrays, self.limits)
        limit = min(self.max_payload, int(self._hellos.get(node_id, {}).get("max_payload") or self.max_payload))
        if len(payload) > limit:
            raise PayloadTooLargeError(node_id, f"{header['type']!r} request is {len(payload)} bytes > max_payload "
                                                f"{limit} (broker/node limit); nothing was sent - send smaller batches")
        return (self.topics.req(node_id), payload), len(payload)

    def _transmit(self, p) -> str | None:
        client = self._client
        if client is None:
            return f"no broker connection to {self.url.where}"
        topic, payload = p.msg
        info = publish_nowait(client, topic, payload, qos=1)
        return None if info is None else f"publish to {self.url.where} failed: {info}"

    def _where(self) -> str:
        return f" via {self.url.where}"

    # ----- receive side ------------------------------------------------------------------------------
    def _dispatch(self, topic: str, payload: bytes) -> None:
        where = self.topics.split(topic)
        if where is None:
            return
        node, kind = where
        if kind in ("status", "hello") and node not in self.nodes and node not in self._unjoined:
            if len(self._unjoined) >= self.max_nodes:  # a flood of ids that never join: bounded
                self.stats.rejected += 1
                return
            self._unjoined[node] = time.monotonic()
        if kind == "rep":
            self._on_reply(node, payload)
        elif kind == "hb":
            if self._sessions.get(node) and node in self._hellos:
                header = wire.unpack(payload, self.limits)[0]
                self._node_seen(node, **self._meta(header))
        elif kind == "status":
            self._on_status(node, bytes(payload).decode("utf-8", "replace").split())
        elif kind == "hello":
            self._on_hello(node, payload)

    def _on_reply(self, node: str, payload: bytes) -> None:
        stats = self.stats
        stats.bytes_in += len(payload)
        header, arrays = wire.unpack(payload, self.limits)
        if self._resolve_reply(node, header, arrays):
            self._touch(node)
        elif not header.get("ok", True):
            log.warning("node %s: error reply to an unknown request: %s", node, header.get("error"))

    def _on_status(self, node: str, words: list[str]) -> None:
        state, sid = (words + ["", ""])[:2]
        if state == "online":
            self._sessions[node] = sid
            hello = self._hellos.get(node)
            if hello is not None and hello.get("sid") == sid:
                self._join(node, hello)
        elif state == "offline":
            current = self._sessions.get(node)
            if current is not None and sid and current != sid:
                log.debug("node %s: ignoring offline of old session %s (live: %s)", node, sid, current)
                return
            self._sessions[node] = None
            self._node_left(node)
            self._fail_pending(node, "node went offline (clean exit, or its broker connection died: Last Will)")

    def _on_hello(self, node: str, payload: bytes) -> None:
        if not payload:  # retained hello cleared by a clean exit
            self._hellos.pop(node, None)
            return
        header = wire.unpack(payload, self.limits)[0]
        if not isinstance(header.get("spec"), dict):
            raise WireError(ErrorCode.BAD_HELLO, "hello without a spec")
        self._hellos[node] = header
        if self._sessions.get(node) and self._sessions[node] == header.get("sid"):
            self._join(node, header)

    def _join(self, node: str, hello: dict[str, Any]) -> None:
        self._node_seen(node, spec=hello["spec"], **self._meta(hello))
        self._unjoined.pop(node, None)

    def _forget_node(self, node_id: str) -> None:
        super()._forget_node(node_id)
        for d in (self._sessions, self._hellos, self._unjoined):
            d.pop(node_id, None)

    def _prune(self, now: float) -> None:
        """Also expire status/hello state of ids that never joined (``forget_after`` s after first sight)."""
        super()._prune(now)
        for node, since in list(self._unjoined.items()):
            if now - since > self.forget_after and node not in self.nodes:
                self._forget_node(node)
