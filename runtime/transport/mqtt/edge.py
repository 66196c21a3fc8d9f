"""MqttEdgeTransport: the node side of the MQTT transport (topics in :mod:`.common`).

Life cycle of :meth:`MqttEdgeTransport.serve`, per broker connection (session id SID)::

    connect with Last Will  PREFIX/NODE/status = "offline SID" (retained, QoS 1)
    subscribe PREFIX/NODE/req (QoS 1)                      -- before announcing, so no request is missed
    publish   PREFIX/NODE/status = "online SID"  (retained)
    publish   PREFIX/NODE/hello  = {spec, sid, heartbeat, handlers, max_payload}  (retained)
    every `heartbeat` s: PREFIX/NODE/hb = {seq, inflight, served}   (QoS 0; skipped when replies went out)
    each request: unpack -> NodeService.handle_nowait -> pack -> PREFIX/NODE/rep/CID   (inline, no task)
                  or, when it must wait, a task for NodeService.handle (at most `max_concurrency` at once)
    stop set -> finish in-flight requests (at most `drain` s) -> status "offline SID", clear hello -> DISCONNECT

A crash (process killed, socket gone) skips the last step; the broker then publishes the Last Will, so the
coordinator learns at once that the node is offline. A lost connection is re-established after
``reconnect`` s (doubling up to 5 s, fully jittered: :class:`pat_runtime.devices.Backoff`); a refused login (:class:`MqttAuthError`) is raised, not retried.
A payload that cannot be unpacked gets an error reply (``ok: false`` with the wire error code; on
``PREFIX/NODE/rep/CID`` when its header was readable, else on ``PREFIX/NODE/rep``) and the node keeps serving.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import aiomqtt

from pat_runtime.devices.codes import ErrorCode
from pat_runtime.devices.errors import DeviceConnectionError
from pat_runtime import wire
from pat_runtime.devices import Backoff
from pat_runtime.transport.base import EdgeFaults, EdgeTransport
from pat_runtime.transport.tasks import cancel_all
from pat_runtime.wire import DEFAULT_LIMITS, Limits, MessageType, WireError

from .common import (DEFAULT_MAX_PAYLOAD, MqttAuthError, MqttUrl, Topics, check_name, connect, disconnect,
                     make_client, peek_header, publish_nowait)

log = logging.getLogger(__name__)


class MqttEdgeTransport(EdgeTransport):
    """Serve a NodeService through the MQTT broker at ``url`` (``mqtt://[user:pass@]host:port``)."""

    def __init__(self, url: str, node_id: str, heartbeat: float = 0.5, *, prefix: str | None = None,
                 max_concurrency: int = 8, max_payload: int | None = None, keepalive: int = 5,
                 reconnect: float = 0.2, drain: float = 2.0, connect_timeout: float = 10.0,
                 max_queued: int = 1000, limits: Limits = DEFAULT_LIMITS, faults: EdgeFaults | None = None):
        self.url = MqttUrl.parse(url)
        self.faults = faults
        self.node_id = check_name(node_id)
        self.topics = Topics(prefix or self.url.option("prefix", "pat"))
        self.heartbeat = float(heartbeat)
        self.max_concurrency = int(max_concurrency)
        self.max_payload = int(max_payload or self.url.option("max_payload", DEFAULT_MAX_PAYLOAD))
        self.keepalive = int(keepalive)
        self.reconnect = float(reconnect)
        self.drain = float(drain)
        self.connect_timeout = float(connect_timeout)
        self.max_queued = int(max_queued)
        self.limits = limits
        self.counters = {"served": 0, "malformed": 0, "too_large": 0, "heartbeats": 0, "connects": 0,
                         "dropped": 0, "inline": 0}
        self.inflight = 0
        self._last_reply = 0.0
        self.client: aiomqtt.Client | None = None   # the live connection (tests may inspect it)
        self.sid: str | None = None

    # ----- main loop ---------------------------------------------------------------------------------
    async def serve(self, service: Any, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set (reconnecting when the broker connection drops)."""
        backoff = Backoff(self.reconnect, max(self.reconnect, 5.0))
        while not stop.is_set():
            self.sid = wire.new_id()[:12]
            status = self.topics.status(self.node_id)
            will = aiomqtt.Will(status, f"offline {self.sid}".encode(), qos=1, retain=True)
            # an unguessable client id (clean session): another broker user cannot take this session over
            client = make_client(self.url, f"{self.topics.prefix}-node-{self.node_id}-{self.sid}", will=will,
                                 keepalive=self.keepalive, timeout=self.connect_timeout,
                                 max_queued_incoming=self.max_queued)
            try:
                await connect(client, self.url, self.node_id)
            except MqttAuthError:
                raise
            except DeviceConnectionError as e:
                delay = backoff.next()
                log.warning("node %s: %s; retrying in %.1f s", self.node_id, e, delay)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                continue
            backoff.reset()
            self.client = client
            self.counters["connects"] += 1
            try:
                await self._session(client, service, stop)
            except aiomqtt.MqttError as e:
                log.warning("node %s lost the broker %s: %s", self.node_id, self.url.where, e)
            except asyncio.CancelledError:  # cancelled instead of stopped: still tell the coordinator
                await self._say_offline(client)
                raise
            finally:
                self.client = None
                await disconnect(client)

    async def _session(self, client: aiomqtt.Client, service: Any, stop: asyncio.Event) -> None:
        node, topics, sid = self.node_id, self.topics, self.sid
        await client.subscribe(topics.req(node), qos=1)
        await client.publish(topics.status(node), f"online {sid}".encode(), qos=1, retain=True)
        await client.publish(topics.hello(node), self._hello(service), qos=1, retain=True)
        handlers: set[asyncio.Task] = set()
        tasks = [asyncio.create_task(self._recv_loop(client, service, handlers), name=f"mqtt-edge-recv {node}"),
                 asyncio.create_task(self._heartbeat_loop(client), name=f"mqtt-edge-heartbeat {node}"),
                 asyncio.create_task(stop.wait(), name=f"mqtt-edge-stop {node}")]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not tasks[2] and not t.cancelled() and t.exception() is not None:
                    raise t.exception()
        finally:
            await cancel_all(tasks)
            if handlers:  # let in-flight requests finish and reply
                _, left = await asyncio.wait(handlers, timeout=self.drain)
                for t in left:
                    t.cancel()
                await asyncio.gather(*handlers, return_exceptions=True)
        await self._say_offline(client)

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        """Clean exit: status "offline SID" (the Will is discarded on DISCONNECT), retained hello cleared."""
        node = self.node_id
        # both at once, 2 s in all: a slow broker must not hold the node's shutdown for long
        with contextlib.suppress(aiomqtt.MqttError, asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(
                client.publish(self.topics.status(node), f"offline {self.sid}".encode(), qos=1, retain=True),
                client.publish(self.topics.hello(node), b"", qos=1, retain=True)), 2.0)

    def _hello(self, service: Any) -> bytes:
        return wire.pack(wire.make_header(
            MessageType.HELLO, node=self.node_id, sid=self.sid, spec=service.device.spec.to_dict(),
            heartbeat=self.heartbeat, handlers=sorted(service.handlers), max_payload=self.max_payload,
            pid=os.getpid()))

    async def _recv_loop(self, client: aiomqtt.Client, service: Any, handlers: set[asyncio.Task]) -> None:
        sem = asyncio.Semaphore(self.max_concurrency)
        req = self.topics.req(self.node_id)
        nowait = self.nowait_for(service)
        async for msg in client.messages:
            if msg.topic.value != req:
                continue
            if nowait is not None and self._inline(client, nowait, msg.payload):
                continue
            await sem.acquire()
            t = asyncio.create_task(self._handle(client, service, msg.payload, sem))
            handlers.add(t)
            t.add_done_callback(handlers.discard)

    async def _handle(self, client: aiomqtt.Client, service: Any, payload: bytes, sem: asyncio.Semaphore) -> None:
        self.inflight += 1
        header: dict[str, Any] | None = None
        try:
            try:
                if len(payload) > self.max_payload:
                    self.counters["too_large"] += 1
                    raise WireError(ErrorCode.TOO_LARGE,
                                    f"request of {len(payload)} bytes > max_payload {self.max_payload}")
                header, arrays = wire.unpack(payload, self.limits)
            except WireError as e:
                self.counters["malformed"] += 1
                header = peek_header(payload, self.limits)
                reply, out = wire.error_header(header, e.code, str(e), self.node_id), []
            else:
                res = await self.handle_request(service, header, arrays)
                if res is None:   # lost to an injected fault
                    return
                reply, out = res
                self.counters["served"] += 1
            self._last_reply = asyncio.get_running_loop().time()
            why = publish_nowait(client, self._reply_topic(header), self._pack_reply(reply, out), qos=1)
            if why is not None:
                raise aiomqtt.MqttError(why)
        except asyncio.CancelledError:
            raise
        except aiomqtt.MqttError as e:  # connection lost: the coordinator retries with the same id
            self.counters["dropped"] += 1
            log.debug("node %s: reply not sent: %s", self.node_id, e)
        except Exception:  # never let one request take the node down
            log.exception("node %s: failed to handle a request", self.node_id)
        finally:
            self.inflight -= 1
            sem.release()

    def _inline(self, client: aiomqtt.Client, nowait: Any, payload: bytes) -> bool:
        """Answer ``payload`` at once if the service can (no task, no PUBACK wait); False: take the task path."""
        if len(payload) > self.max_payload:
            return False
        try:
            header, arrays = wire.unpack(payload, self.limits)
        except WireError:
            return False
        try:
            fast = nowait(header, arrays)
        except Exception:  # noqa: BLE001 - never let one request take the node down
            log.exception("node %s: failed to handle a request", self.node_id)
            return True
        if fast is None:
            return False
        self.counters["served"] += 1
        self.counters["inline"] += 1
        self._last_reply = asyncio.get_running_loop().time()
        why = publish_nowait(client, self._reply_topic(header), self._pack_reply(*fast), qos=1)
        if why is not None:  # connection lost: the coordinator retries with the same id
            self.counters["dropped"] += 1
            log.debug("node %s: reply not sent: %s", self.node_id, why)
        return True

    def _reply_topic(self, header: dict[str, Any] | None) -> str:
        cid = header.get("cid") if header else None
        if isinstance(cid, str):
            with contextlib.suppress(ValueError):
                return self.topics.rep(self.node_id, check_name(cid, "coordinator id"))
        return self.topics.rep(self.node_id)

    def _pack_reply(self, reply: dict[str, Any], out: list) -> bytes:
        try:
            data = wire.pack(reply, out, self.limits)
        except WireError as e:  # a handler produced something we cannot send
            return wire.pack(wire.error_header(reply, e.code, f"reply cannot be sent: {e}", self.node_id))
        if len(data) > self.max_payload:
            return wire.pack(wire.error_header(reply, ErrorCode.TOO_LARGE, f"reply of {len(data)} bytes > max_payload "
                                                                   f"{self.max_payload}", self.node_id))
        return data

    async def _heartbeat_loop(self, client: aiomqtt.Client) -> None:
        seq = 0
        hb = self.topics.hb(self.node_id)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.heartbeat)
            if loop.time() - self._last_reply < self.heartbeat * 0.9:
                continue  # replies went out: the coordinator already knows we are alive
            if self.silenced:
                continue  # an injected crash: the node went silent
            seq += 1
            self.counters["heartbeats"] += 1
            await client.publish(hb, wire.pack(wire.make_header(
                MessageType.HEARTBEAT, node=self.node_id, sid=self.sid, seq=seq, inflight=self.inflight,
                served=self.counters["served"])), qos=0)
