"""Coordinator replicas that share one fleet's replies: MQTT v5 shared subscriptions (``$share/GROUP/...``).

    async def store(node, header, arrays): ...        # any replica may get any reply

    replicas = [await SharedMqttCoordinator(url, group="campaign", on_reply=store).start() for _ in range(3)]
    rid = await replicas[0].submit("node-17", "apply", [x, theta])    # fire and forget

Every replica connects with MQTT 5, follows the fleet like any :class:`MqttCoordinator` (status, hello,
heartbeats: each replica knows every node) and additionally subscribes::

    $share/GROUP/PREFIX/+/rep/GROUP        QoS 1

A request published with :meth:`submit` carries ``cid = GROUP``, so the node answers on
``PREFIX/NODE/rep/GROUP`` and the broker hands each reply to exactly **one** replica of the group
(Mosquitto: round robin; EMQX: ``round_robin``, ``random``, ``hash_clientid``, ``hash_topic``, ...). The
work of decoding and processing replies (``on_reply``) is spread over the replicas, and replicas can join
and leave while the fleet runs: a replica that leaves gets no more replies, the others get them all.
This is the pattern for stateless reply consumers - measurement campaigns, twin data collection, physical
evaluation, telemetry ingest - where any replica may process any reply.

Delivery: a node publishes each reply once (QoS 1); the broker delivers it to one replica; QoS 1 may
deliver a message twice across a reconnect, so each replica drops ids it has already seen (a bounded
window of ``dedupe`` ids). A submitted request is published once (QoS 1, without awaiting the PUBACK); requests that
must be retried and awaited use :meth:`request` (replies to ``PREFIX/NODE/rep/CID``, this replica only,
the ordinary per-coordinator path with timeouts, retries and the idempotency cache at the node).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable, Sequence

import numpy as np

from pat_runtime.devices.errors import DeviceConnectionError, RemoteDeviceError
from pat_runtime import wire
from pat_runtime.wire import EncodeError, WireError
from pat_runtime.transport.tasks import cancel_all

from .common import PayloadTooLargeError, check_name, publish_nowait
from .coordinator import MqttCoordinator

log = logging.getLogger(__name__)

ReplyHandler = Callable[[str, dict[str, Any], list[np.ndarray]], "Awaitable[None] | None"]


class SharedMqttCoordinator(MqttCoordinator):
    """An :class:`MqttCoordinator` that is one replica of ``group`` (see the module docstring).

    ``on_reply(node, header, arrays)`` (sync or async) is called once for every group reply this replica
    receives; error replies (``ok: false``) are passed on too. Counters: ``shared`` (dict).
    """

    def __init__(self, url: str = "mqtt://127.0.0.1:1883", prefix: str | None = None, *, group: str,
                 on_reply: ReplyHandler | None = None, dedupe: int = 65536, **kw: Any):
        super().__init__(url, prefix, **kw)
        self.group = check_name(group, "replica group")
        if self.group == self.cid:
            raise ValueError("the group name must differ from the replica's own client id")
        self.on_reply = on_reply
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._dedupe = int(dedupe)
        self._handlers: set[asyncio.Task] = set()
        self.shared = {"submitted": 0, "received": 0, "duplicates": 0, "handler_errors": 0}

    @property
    def share_topic(self) -> str:
        return f"$share/{self.group}/{self.topics.prefix}/+/rep/{self.group}"

    mqtt_v5 = True   # $share subscriptions are MQTT 5

    def _subscriptions(self) -> list[tuple[str, int]]:
        return [*super()._subscriptions(), (self.share_topic, 1)]

    def _who(self) -> str:
        return f"coordinator replica {self.cid} of {self.group}"

    async def close(self) -> None:
        await super().close()
        await cancel_all(list(self._handlers))

    # ----- submit: fire and forget, the reply goes to one replica of the group ----------------------------
    async def submit(self, node_id: str, type: str, arrays: Sequence[np.ndarray] = (), **fields: Any) -> str:
        """Publish one request to ``node_id`` whose reply goes to the group; returns its request id."""
        if not self.started:
            raise DeviceConnectionError(node_id, "coordinator is not started")
        if self._sessions.get(node_id, "?") is None:
            raise DeviceConnectionError(node_id, f"node is offline (status on {self.topics.status(node_id)})")
        header = wire.make_header(type, id=fields.pop("id", None), node=node_id, cid=self.group, **fields)
        try:
            payload = wire.pack(header, arrays, self.limits)
        except WireError as e:
            raise EncodeError(node_id, e.code, e.message) from None
        if len(payload) > self.max_payload:
            raise PayloadTooLargeError(node_id, f"{type!r} request is {len(payload)} bytes > max_payload "
                                                f"{self.max_payload}; nothing was sent")
        if self._client is None:             # reconnecting: wait for it within the timeout
            try:
                await asyncio.wait_for(self._connected.wait(), self.timeout)
            except asyncio.TimeoutError:
                pass
        client = self._client
        lost = (f"no broker connection to {self.url.where}" if client is None else
                publish_nowait(client, self.topics.req(node_id), payload, qos=1))
        if lost is not None:
            raise DeviceConnectionError(node_id, f"request not published: {lost}")
        self.stats.sent_msgs += 1
        self.stats.bytes_out += len(payload)
        self.shared["submitted"] += 1
        return header["id"]

    # ----- receive side -------------------------------------------------------------------------------------
    def _dispatch(self, topic: str, payload: bytes) -> None:
        if topic.endswith(f"/rep/{self.group}"):
            where = self.topics.split(topic)
            if where is not None:
                self._on_group_reply(where[0], payload)
            return
        super()._dispatch(topic, payload)

    def _on_group_reply(self, node: str, payload: bytes) -> None:
        self.stats.bytes_in += len(payload)
        header, arrays = wire.unpack(payload, self.limits)
        rid = str(header.get("id", ""))
        if rid in self._seen:
            self.shared["duplicates"] += 1
            return
        self._seen[rid] = None
        if len(self._seen) > self._dedupe:
            self._seen.popitem(last=False)
        self.shared["received"] += 1
        info = self.nodes.get(node)
        if info is not None:
            info.last_seen = time.monotonic()
        if self.on_reply is None:
            return
        try:
            res = self.on_reply(node, header, arrays)
        except Exception:
            self.shared["handler_errors"] += 1
            log.exception("replica %s: on_reply failed for %s from %s", self.cid, rid[:8], node)
            return
        if asyncio.iscoroutine(res):
            t = asyncio.get_running_loop().create_task(res)
            self._handlers.add(t)
            t.add_done_callback(self._handler_done)

    def _handler_done(self, t: asyncio.Task) -> None:
        self._handlers.discard(t)
        if not t.cancelled() and t.exception() is not None:
            self.shared["handler_errors"] += 1
            log.error("replica %s: on_reply failed: %r", self.cid, t.exception())
