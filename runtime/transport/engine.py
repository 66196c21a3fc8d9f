"""The request engine shared by every coordinator (ZeroMQ, MQTT, in-process): transports only move frames.

One request, from :meth:`RequestEngine.request` to its reply::

    encode (transport)  ->  pending table [id]  ->  per-node in-flight slot (or the node's FIFO queue)
    ->  transmit (transport, synchronous: never waits)  ->  await ONE future
    reply frames (transport)  ->  _resolve_reply: match id + node  ->  future.set_result  ->  slot freed

* **Deadlines**: one timer per coordinator (not one per request): attempt deadlines sit in a heap and a
  single sweep, armed for the earliest one (coalesced to ``sweep_tick``), times out, re-sends or fails them.
* **Retries** re-send the *same* frames (same request id): the node's reply cache answers a duplicate
  without driving the device twice, and a late reply to an earlier attempt completes the request.
* **Unreachable** nodes (transport says "not sent now": ZeroMQ EHOSTUNREACH, no broker connection, send
  queue full) are re-tried with a growing back-off (10 ms -> 200 ms) inside the attempt; if the last attempt
  never got out the request fails with :class:`DeviceConnectionError`, otherwise :class:`DeviceTimeoutError`.
* **Caps**: at most ``max_inflight`` requests per node are on the wire; later ones wait in a per-node FIFO
  (a counter and a deque, no semaphore) and are (re-)encoded when they get a slot.
* **Deadline header**: each request carries ``sent`` and ``deadline`` (Unix seconds, coordinator clock;
  ``deadline = sent + timeout * (retries + 1)``, when the coordinator gives up). Nodes drop requests past
  their deadline instead of driving the device (see :mod:`pat_runtime.edge.deadline`).
* **Reply mapping** (one place, :meth:`pat_runtime.protocol.Reply.exception`): ``ok: true`` -> ``(header,
  arrays)``; ``ok: false`` -> :class:`RemoteDeviceError` with the node's :class:`ErrorCode`, except code
  ``expired`` -> :class:`DeviceTimeoutError`. A request that cannot be encoded here raises
  :class:`~pat_runtime.wire.EncodeError` (a local protocol error naming the node; nothing was sent).

A transport implements ``_encode(node, header, arrays) -> (msg, nbytes)`` (may raise :class:`WireError`),
``_transmit(pending) -> None | reason`` (``None`` = sent; may raise :class:`DeviceConnectionError` for a
permanent failure) and calls :meth:`RequestEngine._resolve_reply` for every reply it receives.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import os
import time
from collections import deque
from typing import Any, Sequence

import numpy as np

from pat_runtime.devices.errors import DeviceConnectionError, DeviceTimeoutError
from pat_runtime import wire
from pat_runtime.protocol import Reply
from pat_runtime.wire import EncodeError, WireError

from .stats import TransportStats

_BACKOFF0, _BACKOFF_MAX = 0.01, 0.2


class Pending:
    """One request in the pending table."""

    __slots__ = ("id", "node", "type", "msg", "nbytes", "future", "timeout", "attempts_left", "attempt",
                 "attempt_end", "sent_now", "backoff", "why", "t0", "gen", "finished", "queued", "remake")

    def __init__(self, rid: str, node: str, type: str, timeout: float, retries: int):
        self.id, self.node, self.type = rid, node, type
        self.timeout, self.attempts_left = timeout, retries
        self.msg: Any = None
        self.nbytes = 0
        self.future: asyncio.Future | None = None
        self.attempt = 0
        self.attempt_end = 0.0
        self.sent_now = False            # got out at least once in the current attempt
        self.backoff = _BACKOFF0
        self.why = ""
        self.t0 = 0.0
        self.gen = 0                     # invalidates older heap entries of this request
        self.finished = False
        self.queued = False
        self.remake: Any = None          # (arrays, fields) kept while queued, to re-encode with a fresh deadline


class RequestEngine:
    """Mixin of :class:`pat_runtime.transport.base.Coordinator`: the pending table, deadlines, retries, caps."""

    timeout: float = 10.0
    retries: int = 2
    max_inflight: int = 8
    #: granularity of the deadline sweep (s): deadlines fire at most this late, the timer at most 1/tick per s
    sweep_tick: float = 0.005
    started: bool = False

    def _engine_init(self) -> None:
        self.stats = TransportStats()
        self._pending: dict[str, Pending] = {}
        self._inflight: dict[str, int] = {}
        self._waiting: dict[str, deque[Pending]] = {}
        self._heap: list[tuple[float, int, Pending, int]] = []
        self._heap_seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        # request ids: a random per-instance prefix + a counter (unique across coordinator restarts, so a
        # node's reply cache never answers a new request with an old reply)
        self._id_prefix = os.urandom(8).hex()
        self._seq = itertools.count(1)

    # ----- transport hooks ---------------------------------------------------------------------------
    def _precheck(self, node_id: str) -> None:
        """Raise before anything is encoded if ``node_id`` cannot be asked now (e.g. known offline)."""

    def _encode(self, node_id: str, header: dict[str, Any], arrays: Sequence[Any]) -> tuple[Any, int]:
        raise NotImplementedError

    def _transmit(self, p: Pending) -> str | None:
        raise NotImplementedError

    def pending_ids(self) -> list[str]:
        """Ids of the requests still waiting for their reply (monitoring and tests)."""
        return list(self._pending)

    # ----- the request path --------------------------------------------------------------------------
    async def request(self, node_id: str, type: str, arrays: Sequence[np.ndarray] = (), *,
                      timeout: float | None = None, retries: int | None = None,
                      **fields: Any) -> tuple[dict[str, Any], list[np.ndarray]]:
        """Send one request to ``node_id``; return the (ok) reply header and arrays.

        ``timeout`` (s) is per attempt, ``retries`` the extra attempts (same id); ``fields`` go into the
        header (``id=`` reuses a request id).
        """
        if not self.started:
            raise DeviceConnectionError(node_id, "coordinator is not started")
        timeout = self.timeout if timeout is None else float(timeout)
        retries = self.retries if retries is None else int(retries)
        self._precheck(node_id)
        rid = fields.pop("id", None) or f"{self._id_prefix}{next(self._seq):x}"
        p = Pending(rid, node_id, type, timeout, retries)
        p.msg, p.nbytes = self._encode_request(p, arrays, fields)
        loop = asyncio.get_running_loop()
        p.future = fut = loop.create_future()
        self.stats.requests += 1
        self._pending[rid] = p
        n = self._inflight.get(node_id, 0)
        if n < self.max_inflight:
            self._inflight[node_id] = n + 1
            self._start(p, loop.time())
        else:  # cap reached: wait in this node's FIFO, re-encoded (fresh deadline) when a slot frees
            self.stats.queued += 1
            p.queued, p.remake = True, (arrays, fields)
            self._waiting.setdefault(node_id, deque()).append(p)
        try:
            reply, out = await fut
        finally:
            if not p.finished:  # cancelled by the caller
                if not fut.done():
                    fut.cancel()
                self._finish(p)
        self.stats.latency.append(time.perf_counter() - p.t0)
        return self._map_reply(node_id, reply, out)

    def _encode_request(self, p: Pending, arrays: Sequence[Any], fields: dict[str, Any]) -> tuple[Any, int]:
        now = time.time()
        header = wire.make_header(p.type, id=p.id, node=p.node, sent=now,
                                  deadline=now + p.timeout * (p.attempts_left + 1))
        header.update(fields)
        try:
            return self._encode(p.node, header, arrays)
        except WireError as e:
            raise EncodeError(p.node, e.code, e.message) from None

    def _map_reply(self, node_id: str, reply: dict[str, Any], out: list) -> tuple[dict[str, Any], list]:
        if reply.get("ok", False):
            return reply, out
        self.stats.errors += 1
        raise Reply.from_wire(reply, out).exception(node_id)

    def _start(self, p: Pending, now: float) -> None:
        p.t0 = time.perf_counter()
        p.attempt_end = now + p.timeout
        self._send(p, now)

    def _send(self, p: Pending, now: float) -> None:
        try:
            why = self._transmit(p)
        except DeviceConnectionError as e:
            self._fail(p, e)
            return
        if why is None:
            p.sent_now = True
            self.stats.sent_msgs += 1
            self.stats.bytes_out += p.nbytes
            self._arm(p, p.attempt_end)
        else:
            self._retry_soon(p, why, now)

    def _retry_soon(self, p: Pending, why: str, now: float) -> None:
        """Not out now (``why``): try again after the backoff, within this attempt."""
        p.why = why
        self._arm(p, min(now + p.backoff, p.attempt_end))
        p.backoff = min(2 * p.backoff, _BACKOFF_MAX)

    def _not_sent(self, p: Pending, why: str) -> None:
        """A send the transport deferred (e.g. a ZeroMQ bundle flushed at the end of the loop iteration) did
        not get out after all: treat it like a ``_transmit`` that returned ``why``."""
        if p.finished:
            return
        self.stats.sent_msgs -= 1
        self.stats.bytes_out -= p.nbytes
        p.sent_now = False
        self._retry_soon(p, why, asyncio.get_running_loop().time())

    # ----- the one deadline sweep --------------------------------------------------------------------
    def _arm(self, p: Pending, when: float) -> None:
        p.gen += 1
        heapq.heappush(self._heap, (when, next(self._heap_seq), p, p.gen))
        if when < self._timer_at - self.sweep_tick:
            if self._timer is not None:
                self._timer.cancel()
            loop = asyncio.get_running_loop()
            self._timer_at = max(when, loop.time() + self.sweep_tick / 5)
            self._timer = loop.call_at(self._timer_at, self._sweep)

    def _sweep(self) -> None:
        self._timer, self._timer_at = None, math.inf
        loop = asyncio.get_running_loop()
        now = loop.time()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, p, gen = heapq.heappop(heap)
            if gen != p.gen or p.finished:
                continue
            if not p.sent_now and now < p.attempt_end:
                self._send(p, now)                          # unreachable: back-off re-send
            elif p.attempts_left > 0:                       # attempt over: retry, same id and frames
                p.attempts_left -= 1
                p.attempt += 1
                p.sent_now, p.backoff = False, _BACKOFF0
                self.stats.retries += 1
                p.attempt_end = now + p.timeout
                self._send(p, now)
            elif not p.sent_now:
                self._fail(p, DeviceConnectionError(p.node, f"{p.why} ({p.attempt + 1} attempt(s) of "
                                                            f"{p.timeout:g} s)"))
            else:
                self.stats.timeouts += 1
                self._fail(p, DeviceTimeoutError(p.node, f"no reply to {p.type!r} (id {p.id}) within "
                                                         f"{p.timeout:g} s after {p.attempt + 1} attempt(s)"
                                                         f"{self._where()}"))
        if len(heap) > 1024 and len(heap) > 4 * len(self._pending):  # drop entries of finished requests
            self._heap = heap = [e for e in heap if e[3] == e[2].gen and not e[2].finished]
            heapq.heapify(heap)
        if heap:
            self._timer_at = max(heap[0][0], now + self.sweep_tick)
            self._timer = loop.call_at(self._timer_at, self._sweep)

    def _where(self) -> str:
        return ""

    # ----- completion --------------------------------------------------------------------------------
    def _resolve_reply(self, node: str, header: dict[str, Any], arrays: list) -> bool:
        """A reply arrived from ``node``: complete its request (False: unknown id / other node / done)."""
        p = self._pending.get(header.get("id", ""))
        if p is None or p.node != node or p.finished or p.queued:
            self.stats.unmatched += 1
            return False
        self.stats.round_trips += 1
        p.future.set_result((header, arrays))
        self._finish(p)
        return True

    def _fail(self, p: Pending, exc: BaseException) -> None:
        if p.finished:
            return
        if not p.future.done():
            p.future.set_exception(exc)
        self._finish(p)

    def _finish(self, p: Pending) -> None:
        """Forget ``p`` (once): free its node's slot and start the next queued request of that node."""
        if p.finished:
            return
        p.finished = True
        # the heap keeps ``p`` until its deadline: drop what pins buffers (the frames, the reply arrays)
        p.msg = p.remake = p.future = None
        self._pending.pop(p.id, None)
        node = p.node
        if p.queued:
            return  # never had a slot; the FIFO skips it
        left = self._inflight.get(node, 1) - 1
        q = self._waiting.get(node)
        while q:
            nxt = q.popleft()
            if nxt.finished:
                continue
            nxt.queued = False
            arrays, fields = nxt.remake
            nxt.remake = None
            try:
                nxt.msg, nxt.nbytes = self._encode_request(nxt, arrays, fields)
            except Exception as e:  # noqa: BLE001 - encoded fine before; hand any error to its caller
                self._fail_unslotted(nxt, e)
                continue
            self._start(nxt, asyncio.get_running_loop().time())
            return  # the slot passes to ``nxt``
        if q is not None and not q:
            del self._waiting[node]
        if left > 0:
            self._inflight[node] = left
        else:
            self._inflight.pop(node, None)

    def _fail_unslotted(self, p: Pending, exc: BaseException) -> None:
        p.queued = True  # so that _finish does not free a slot it does not hold
        self._fail(p, exc)

    def _fail_pending(self, node: str | None, why: str) -> None:
        """Fail the in-flight and queued requests to ``node`` (all nodes when None) with DeviceConnectionError."""
        for p in list(self._pending.values()):
            if node is None or p.node == node:
                self._fail(p, DeviceConnectionError(p.node, why))

    def _engine_close(self, why: str = "coordinator closed") -> None:
        self._fail_pending(None, why)
        self._pending.clear()
        self._inflight.clear()
        self._waiting.clear()
        self._heap.clear()
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, math.inf
