"""NodeService: the transport-independent request handler that runs beside a device.

Transports (ZeroMQ, MQTT, in-process) hand it decoded ``(header, arrays)`` requests and send back what
:meth:`NodeService.handle` returns (a ``(header, arrays)`` pair). Handlers are typed: each receives a
:class:`~pat_runtime.protocol.Request` and returns a :class:`~pat_runtime.protocol.Reply` (``req.reply(arrays,
**fields)`` / ``req.error_reply(code, message)``) or raises. The service never raises: unknown types, bad arrays,
device errors and handler bugs all become error replies (``{"ok": False, "error": {"code", "message"}}``, the
code an :class:`~pat_runtime.devices.codes.ErrorCode`, see :func:`~pat_runtime.protocol.reply_code`), and the
node stays up.

Requests are idempotent by id: a retried request id gets the cached reply (the device is not driven twice),
and a duplicate that arrives while the first is still running waits for the same result. A cached reply
lives only as long as its request's retry window (its ``deadline``; ``cache_ttl`` s for requests without
one), and the cache keeps at most ``cache_size`` replies and ``cache_bytes`` of reply arrays (cached replies
pin their buffers).

Requests past their ``deadline`` (:mod:`pat_runtime.edge.deadline`) are not run: they get an ``expired`` error reply
(counted in ``counters["expired"]``), so a backlog built up during a stall never reaches the device.

Fast path: :meth:`NodeService.handle_nowait` answers without awaiting whatever needs no waiting (a cached
reply, an expired request, spec/ping/status, an unknown type, and ``apply``/``apply_many`` on a device whose
:meth:`~pat_runtime.devices.base.Device.inline_ok` says it finishes at once); transports call it inline from their reader
and create a task only when it returns ``None``.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable

import numpy as np

from pat_runtime.devices.base import Device
from pat_runtime.devices.codes import ErrorCode
from pat_runtime.protocol import Reply, Request, RequestError, reply_code
from pat_runtime.wire import MessageType, error_header

from .deadline import DeadlineClock

log = logging.getLogger(__name__)

#: what transports send back: the reply header and its arrays
WireReply = tuple[dict[str, Any], list[np.ndarray]]
#: a handler: ``async (Request) -> Reply`` (or raise)
Handler = Callable[[Request], Awaitable[Reply]]
#: a handler that never waits, run inline by :meth:`NodeService.handle_nowait`
SyncHandler = Callable[[Request], Reply]
#: the older handler form ``async (header, arrays) -> (fields, arrays)``, still accepted by ``register``
LegacyHandler = Callable[[dict[str, Any], list[np.ndarray]], Awaitable[tuple[dict[str, Any], list[np.ndarray]]]]
APPLY_MANY = MessageType.APPLY_MANY


def _nbytes(reply: WireReply) -> int:
    return sum(getattr(a, "nbytes", 0) for a in reply[1])


def _takes_request(handler: Callable) -> bool:
    """True for ``(req)`` handlers, False for the older ``(header, arrays)`` form."""
    try:
        params = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                  and p.default is p.empty]
    return len(positional) < 2 and not any(p.kind is p.VAR_POSITIONAL for p in params)


def _legacy(handler: LegacyHandler) -> Handler:
    async def typed(req: Request) -> Reply:
        fields, out = await handler(req.header, req.arrays)
        return req.reply(out, **fields)

    return typed


class NodeService:
    """Serves one device. ``handlers`` maps message type -> ``async handler(req: Request) -> Reply``.

    Extra capabilities (deployment, inference) are added with :meth:`register`.
    """

    def __init__(self, device: Device, node_id: str, cache_size: int = 1024, cache_bytes: int = 64 * 2**20,
                 cache_ttl: float = 60.0):
        self.device = device
        self.node_id = node_id
        self.started = time.time()
        self.counters: dict[str, int] = {"requests": 0, "errors": 0, "duplicates": 0, "samples": 0, "expired": 0,
                                         "inline": 0}
        self.clock = DeadlineClock()
        self.cache_ttl = float(cache_ttl)
        self._cache: OrderedDict[str, WireReply] = OrderedDict()
        self._cache_exp: dict[str, float] = {}
        self._inflight: dict[str, asyncio.Future] = {}
        self._cache_size = cache_size
        # the cache is also bounded in array bytes: cached replies pin their buffers (e.g. received frames)
        self._cache_bytes = cache_bytes
        self._cache_nbytes = 0
        self.handlers: dict[str, Handler] = {
            MessageType.SPEC: self._spec,
            MessageType.APPLY: self._apply,
            MessageType.PING: self._ping,
            MessageType.STATUS: self._status,
            APPLY_MANY: self._apply_many,
        }
        #: handlers that never wait (run inline by :meth:`handle_nowait`)
        self.sync_handlers: dict[str, SyncHandler] = {
            MessageType.SPEC: self._spec_now, MessageType.PING: self._ping_now, MessageType.STATUS: self._status_now,
        }

    def register(self, type: str, handler: Handler | LegacyHandler) -> None:
        """Serve ``type`` with ``handler``: ``async (req: Request) -> Reply`` (the older ``async (header, arrays)
        -> (fields, arrays)`` form is adapted)."""
        self.handlers[type] = handler if _takes_request(handler) else _legacy(handler)
        self.sync_handlers.pop(type, None)

    # ----- fast path ---------------------------------------------------------------------------------
    def handle_nowait(self, header: dict[str, Any], arrays: list[np.ndarray]) -> WireReply | None:
        """The reply, if it can be made without awaiting anything; ``None``: use :meth:`handle`."""
        return self._fast(header, arrays)[0]

    def _fast(self, header: dict[str, Any], arrays: list[np.ndarray]) -> tuple[WireReply | None, float | None]:
        rid = header.get("id") or ""
        if rid and rid in self._cache:
            self.counters["requests"] += 1
            return self._cached(rid), None
        left = self.clock.remaining(header)
        if left is not None and left < 0:
            self.counters["requests"] += 1
            return self._expired(header, -left), left
        if rid and rid in self._inflight:
            return None, left
        t = header.get("type")
        fn = self.sync_handlers.get(t)
        if fn is None:
            if t in (MessageType.APPLY, APPLY_MANY) and self.handlers.get(t) in (self._apply, self._apply_many) \
                    and self.device.inline_ok():
                fn = self._apply_now if t == MessageType.APPLY else self._apply_many_now
            elif t in self.handlers:
                return None, left
        self.counters["requests"] += 1
        self.counters["inline"] += 1
        reply = self._run_sync(fn, header, arrays)
        if rid:
            self._remember(rid, reply, left)
        return reply, left

    def _run_sync(self, fn: SyncHandler | None, header: dict[str, Any], arrays: list[np.ndarray]) -> WireReply:
        try:
            if fn is None:
                raise RequestError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {header.get('type')!r}")
            return self._wire(fn(Request.from_wire(header, arrays)))
        except Exception as e:  # noqa: BLE001 - mapped like the async path
            return self._error_reply(header, e)

    def _wire(self, reply: Reply) -> WireReply:
        if not reply.ok:
            self.counters["errors"] += 1
        return reply.to_wire(self.node_id)

    def _cached(self, rid: str) -> WireReply:
        self.counters["duplicates"] += 1
        self._cache.move_to_end(rid)
        return self._cache[rid]

    def _expired(self, header: dict[str, Any], late: float) -> WireReply:
        self.counters["expired"] += 1
        return error_header(header, ErrorCode.EXPIRED, f"request {header.get('type')!r} arrived {late:.3f} s past its "
                                               f"deadline; not run", node=self.node_id), []

    def _remember(self, rid: str, reply: WireReply, left: float | None) -> None:
        """Cache ``reply`` until the request's retry window closes (its deadline), bounded in count and bytes."""
        now = time.monotonic()
        self._cache[rid] = reply
        self._cache_exp[rid] = now + (self.cache_ttl if left is None else max(0.0, left) + 0.5)
        self._cache_nbytes += _nbytes(reply)
        cache, exp = self._cache, self._cache_exp
        while len(cache) > 1:
            old = next(iter(cache))
            if not (exp[old] < now or len(cache) > self._cache_size or self._cache_nbytes > self._cache_bytes):
                break
            self._cache_nbytes -= _nbytes(cache.pop(old))
            del exp[old]

    # ----- general path ------------------------------------------------------------------------------
    async def handle(self, header: dict[str, Any], arrays: list[np.ndarray]) -> WireReply:
        fast, left = self._fast(header, arrays)
        if fast is not None:
            return fast
        self.counters["requests"] += 1
        rid = header.get("id") or ""
        if rid and rid in self._inflight:
            self.counters["duplicates"] += 1
            return await asyncio.shield(self._inflight[rid])
        fut: asyncio.Future | None = None
        if rid:
            fut = asyncio.get_running_loop().create_future()
            self._inflight[rid] = fut
        try:
            reply = await self._dispatch(header, arrays)
        finally:
            if rid:
                self._inflight.pop(rid, None)
        if rid:
            self._remember(rid, reply, left)
            if fut is not None and not fut.done():
                fut.set_result(reply)
        return reply

    async def _dispatch(self, header: dict[str, Any], arrays: list[np.ndarray]) -> WireReply:
        handler = self.handlers.get(header.get("type"))
        try:
            if handler is None:
                raise RequestError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {header.get('type')!r}")
            return self._wire(await handler(Request.from_wire(header, arrays)))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001
            return self._error_reply(header, e)

    def _error_reply(self, header: dict[str, Any], exc: Exception) -> WireReply:
        """The error reply for a handler that raised ``exc`` (code: :func:`~pat_runtime.protocol.reply_code`)."""
        code = reply_code(exc)
        if code is ErrorCode.INTERNAL:  # a handler bug must not take the node down
            log.error("handler for %r failed", header.get("type"), exc_info=exc)
            msg = f"{type(exc).__name__}: {exc}"
        else:
            msg = str(exc)
        self.counters["errors"] += 1
        return error_header(header, code, msg, node=self.node_id), []

    # ----- built-in handlers -------------------------------------------------------------------------
    async def _spec(self, req: Request) -> Reply:
        return self._spec_now(req)

    def _spec_now(self, req: Request) -> Reply:
        return req.reply(spec=self.device.spec.to_dict())

    async def _apply(self, req: Request) -> Reply:
        x, theta = _two(req.arrays, "apply", "[x, theta]")
        y = await self.device.apply(x, theta)
        self.counters["samples"] += int(x.shape[0])
        return req.reply([y])

    def _apply_now(self, req: Request) -> Reply:
        x, theta = _two(req.arrays, "apply", "[x, theta]")
        y = self.device.apply_nowait(x, theta)
        self.counters["samples"] += int(x.shape[0])
        return req.reply([y])

    async def _apply_many(self, req: Request) -> Reply:
        xs, thetas = _two(req.arrays, APPLY_MANY, "[x[C, B, in], theta[C, P]]")
        ys = await self.device.apply_many(xs, thetas)
        self.counters["samples"] += int(xs.shape[0] * xs.shape[1]) if xs.ndim == 3 else 0
        return req.reply([ys])

    def _apply_many_now(self, req: Request) -> Reply:
        xs, thetas = _two(req.arrays, APPLY_MANY, "[x[C, B, in], theta[C, P]]")
        ys = self.device.apply_many_nowait(xs, thetas)
        self.counters["samples"] += int(xs.shape[0] * xs.shape[1]) if xs.ndim == 3 else 0
        return req.reply([ys])

    async def _ping(self, req: Request) -> Reply:
        return self._ping_now(req)

    def _ping_now(self, req: Request) -> Reply:
        return req.reply(req.arrays, t=time.time())

    async def _status(self, req: Request) -> Reply:
        return self._status_now(req)

    def _status_now(self, req: Request) -> Reply:
        return req.reply(uptime=time.time() - self.started, counters=dict(self.counters),
                         handlers=sorted(self.handlers))


def _two(arrays: list[np.ndarray], what: str, names: str) -> tuple[np.ndarray, np.ndarray]:
    if len(arrays) != 2:
        raise RequestError(ErrorCode.BAD_REQUEST, f"{what} needs 2 arrays {names}, got {len(arrays)}")
    return arrays[0], arrays[1]


__all__ = ["Handler", "NodeService", "Reply", "Request", "RequestError", "SyncHandler", "WireReply"]
