"""ZmqCoordinator: the training-side ROUTER that talks to many edge nodes (DEALERs).

Frames on the ROUTER are ``[routing_id, header, *array_buffers]`` (routing id == node id, see
:mod:`runtime.wire`). A reader callback (:class:`~.driver.SocketDriver`) dispatches everything the nodes send:

* ``reply``     -> resolves the future of the pending request with the same ``id`` (and the same node)
* ``hello``     -> registers the node with its ``spec``
* ``heartbeat`` -> refreshes ``last_seen``; from an unknown node it is answered with ``hello``
                   ("say hello"), so nodes re-announce themselves after a coordinator restart
* ``bye``       -> marks the node dead and fails its in-flight requests at once

Malformed messages are counted in ``stats.malformed`` and dropped. A liveness task marks nodes dead after
``liveness`` seconds without traffic.

``request`` pipelines: up to ``max_inflight`` requests per node are outstanding at once (an
``asyncio.Semaphore`` per node: callers beyond that wait, which is the backpressure). Each attempt waits
``timeout`` seconds; a retry re-sends the *same* request id, so the node's reply cache answers it without
driving the device again, and a late reply to an earlier attempt still completes the request.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from typing import Any, Sequence

import numpy as np
import zmq
import zmq.asyncio

from devices.errors import DeviceConnectionError, DeviceTimeoutError, RemoteDeviceError
from devices.spec import DeviceSpec
from runtime import wire
from runtime.transport.base import Coordinator
from runtime.wire import DEFAULT_LIMITS, Limits, MessageType, WireError

from .driver import SocketDriver
from .options import DEFAULT_HWM, CurveServer, router_options
from .stats import TransportStats

log = logging.getLogger(__name__)

_TIMEOUT = object()      # an attempt's timer fired
_UNREACHABLE = object()  # the node was not connected for the whole attempt


class _Pending:
    __slots__ = ("node", "future", "t0", "nbytes")

    def __init__(self, node: str, nbytes: int):
        self.node, self.nbytes = node, nbytes
        self.future: asyncio.Future | None = None
        self.t0 = time.perf_counter()


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(_TIMEOUT)


class ZmqCoordinator(Coordinator):
    """ROUTER-socket coordinator. ``bind`` is a ZeroMQ endpoint, e.g. ``tcp://127.0.0.1:5555``.

    ``timeout`` (s) is per attempt, ``retries`` the extra attempts (same request id), ``max_inflight`` the
    per-node pipelining cap, ``liveness`` the seconds without a heartbeat after which a node is dead.
    """

    def __init__(self, bind: str = "tcp://127.0.0.1:5555", *, curve: CurveServer | None = None,
                 liveness: float = 3.0, timeout: float = 10.0, retries: int = 2, max_inflight: int = 8,
                 hwm: int = DEFAULT_HWM, limits: Limits = DEFAULT_LIMITS,
                 context: zmq.asyncio.Context | None = None):
        super().__init__()
        self.bind = bind
        self.curve = curve
        self.liveness = float(liveness)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.max_inflight = int(max_inflight)
        self.hwm = int(hwm)
        self.limits = limits
        self.stats = TransportStats()
        self.started = False
        self._own_ctx = context is None
        self._ctx = context
        self._sock: zmq.Socket | None = None
        self._driver: SocketDriver | None = None
        self._auth = None
        self._tasks: list[asyncio.Task] = []
        self._pending: dict[str, _Pending] = {}
        self._sems: dict[str, asyncio.Semaphore] = {}
        # request ids: a random per-instance prefix + a counter (unique across coordinator restarts, so a
        # node's reply cache never answers a new request with an old reply)
        self._id_prefix = os.urandom(8).hex()
        self._seq = itertools.count(1)

    # ----- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> "ZmqCoordinator":
        if self.started:
            return self
        if self._ctx is None:
            self._ctx = zmq.asyncio.Context()
        if self.curve is not None:
            from zmq.auth.asyncio import AsyncioAuthenticator

            self._auth = AsyncioAuthenticator(self._ctx)
            self._auth.start()
            self._auth.configure_curve_callback("*", credentials_provider=self.curve)
        sock = zmq.Socket(self._ctx, zmq.ROUTER)  # driven by SocketDriver (reader callback), not futures
        router_options(sock, self.hwm)
        if self.curve is not None:
            self.curve.apply(sock)
        try:
            sock.bind(self.bind)
        except zmq.ZMQError as e:
            sock.close(0)
            await self._teardown()
            raise DeviceConnectionError("coordinator", f"cannot bind {self.bind}: {e}") from None
        self._sock = sock
        self._driver = SocketDriver(sock, self._on_message).start()
        self.started = True
        self._tasks = [asyncio.create_task(self._liveness_loop(), name=f"zmq-coordinator-liveness {self.bind}")]
        return self

    async def close(self) -> None:
        if not self.started:
            return
        self.started = False
        await self._stop_tasks_and_requests()
        if self._driver is not None:
            self._driver.close()
            self._driver = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        await self._teardown()
        for n in list(self.nodes):
            self._node_left(n)

    async def _teardown(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
            await asyncio.sleep(0)  # let the cancelled ZAP task finish
        if self._own_ctx and self._ctx is not None:
            self._ctx.destroy(linger=0)
            self._ctx = None

    # ----- requests ----------------------------------------------------------------------------------
    async def request(self, node_id: str, type: str, arrays: Sequence[np.ndarray] = (), *,
                      timeout: float | None = None, retries: int | None = None,
                      **fields: Any) -> tuple[dict[str, Any], list[np.ndarray]]:
        if not self.started:
            raise DeviceConnectionError(node_id, "coordinator is not started")
        timeout = self.timeout if timeout is None else float(timeout)
        retries = self.retries if retries is None else int(retries)
        rid = f"{self._id_prefix}{next(self._seq):x}"
        try:
            frames = wire.encode(wire.make_header(type, id=rid, node=node_id, **fields), arrays, self.limits)
        except WireError as e:
            raise RemoteDeviceError(node_id, str(e), code=e.code) from None
        msg = [node_id.encode(), *frames]
        sem = self._sems.get(node_id)
        if sem is None:
            sem = self._sems[node_id] = asyncio.Semaphore(self.max_inflight)
        stats = self.stats
        stats.requests += 1
        async with sem:
            pend = self._pending[rid] = _Pending(node_id, sum(len(f) for f in frames))
            try:
                for attempt in range(retries + 1):
                    if attempt:
                        stats.retries += 1
                    result = await self._attempt(pend, msg, timeout)
                    if result is not _TIMEOUT and result is not _UNREACHABLE:
                        break
                else:
                    if result is _UNREACHABLE:
                        raise DeviceConnectionError(node_id, f"node is not connected to {self.bind} "
                                                             f"({retries + 1} attempt(s) of {timeout:g} s)")
                    stats.timeouts += 1
                    raise DeviceTimeoutError(node_id, f"no reply to {type!r} (id {rid}) within {timeout:g} s "
                                                      f"after {retries + 1} attempt(s)")
            finally:
                self._pending.pop(rid, None)
            stats.latency.append(time.perf_counter() - pend.t0)
        reply, out = result
        if not reply.get("ok", False):
            stats.errors += 1
            err = reply.get("error") if isinstance(reply.get("error"), dict) else {}
            raise RemoteDeviceError(node_id, str(err.get("message", "error reply")),
                                    code=str(err.get("code", "remote")))
        return reply, out

    async def _attempt(self, pend: _Pending, msg: list, timeout: float) -> Any:
        """Send ``msg`` once and wait up to ``timeout`` for the reply (to this or an earlier attempt).

        A node that is not connected (EHOSTUNREACH) is re-tried with a growing back-off within the same
        attempt, so a node that is (re)connecting gets the whole ``timeout`` to come back.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        backoff = 0.01
        while True:
            fut = pend.future = loop.create_future()
            try:
                if not self._driver.send_nowait(msg):  # high-water mark: wait for room
                    try:
                        await asyncio.wait_for(self._driver.send(msg), max(0.0, deadline - loop.time()))
                    except asyncio.TimeoutError:
                        return _TIMEOUT
                break
            except zmq.ZMQError as e:
                if e.errno != zmq.EHOSTUNREACH:
                    raise DeviceConnectionError(pend.node, f"send failed: {e}") from None
                self.stats.unreachable += 1
                left = deadline - loop.time()
                if left <= 0:
                    return _UNREACHABLE
                result = await _wait(fut, min(backoff, left))
                if result is not _TIMEOUT:  # a late reply to an earlier attempt
                    return result
                backoff = min(2 * backoff, 0.2)
        self.stats.sent_msgs += 1
        self.stats.bytes_out += pend.nbytes
        return await _wait(fut, max(0.0, deadline - loop.time()))

    # ----- receive side ------------------------------------------------------------------------------
    def _on_message(self, frames: list) -> None:
        stats = self.stats
        stats.recv_msgs += 1
        try:
            self._dispatch(frames)
        except Exception as e:  # a peer must never take the coordinator down
            stats.malformed += 1
            log.debug("dropped a malformed message: %s", e)

    def _dispatch(self, frames: list) -> None:
        stats = self.stats
        ident = frames[0].bytes
        node = ident.decode("utf-8")  # raises on garbage ids: counted as malformed
        if len(frames) < 2:
            raise WireError("empty", "no header frame")
        stats.bytes_in += sum(len(f) for f in frames[1:])
        if self.curve is not None and self.curve.pinned:
            key = self.curve.pinned.get(node)
            user = frames[1].get("User-Id")
            if key is None or user != key.decode():
                stats.rejected += 1
                return
        header, arrays = wire.decode(frames[1:], self.limits)
        t = header["type"]
        if t == MessageType.REPLY:
            p = self._pending.get(header.get("id", ""))
            if p is None or p.node != node or p.future.done():
                stats.unmatched += 1
                return
            stats.round_trips += 1
            p.future.set_result((header, arrays))
            info = self.nodes.get(node)
            if info is not None:
                info.last_seen = time.monotonic()
        elif t == MessageType.HEARTBEAT:
            info = self.nodes.get(node)
            if info is None or info.spec is None:
                self._ask_hello(ident, node)
            else:
                self._node_seen(node, **_meta(header))
        elif t == MessageType.HELLO:
            spec = header.get("spec")
            if not isinstance(spec, dict):
                raise WireError("bad_hello", "hello without a spec")
            DeviceSpec.from_dict(spec)  # validate before registering anything
            self._node_seen(node, spec=spec, **_meta(header))
        elif t == MessageType.BYE:
            self._node_left(node)
            self._fail_pending(node, "node left (bye)")
        else:
            log.debug("ignoring %r from %s", t, node)

    def _ask_hello(self, ident: bytes, node: str) -> None:
        """Answer a heartbeat from a node we do not know with ``hello``: the node re-sends its hello."""
        try:
            self._driver.send_nowait([ident, *wire.encode(wire.make_header(MessageType.HELLO, node=node))])
        except zmq.ZMQError:  # gone again: it will heartbeat again
            pass


_ENVELOPE = frozenset({"v", "type", "id", "node", "node_id", "arrays", "spec"})


def _meta(header: dict[str, Any]) -> dict[str, Any]:
    """Node metadata carried by hello / heartbeat (everything but the envelope fields)."""
    return {k: v for k, v in header.items() if k not in _ENVELOPE}


async def _wait(fut: asyncio.Future, timeout: float) -> Any:
    """``await fut`` for at most ``timeout`` s (then ``_TIMEOUT``) without wrapping it in a task."""
    handle = asyncio.get_running_loop().call_later(timeout, _expire, fut)
    try:
        return await fut
    finally:
        handle.cancel()
