"""NodeService: the transport-independent request handler that runs beside a device.

Transports (ZeroMQ, MQTT, in-process) hand it decoded ``(header, arrays)`` requests and send back what
:meth:`NodeService.handle` returns. It never raises: unknown types, bad arrays, device errors and handler
bugs all become error replies (``{"ok": False, "error": {"code", "message"}}``), and the node stays up.

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
import logging
import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable

import numpy as np

from pat_runtime.devices.base import Device
from pat_runtime.devices.errors import DeviceError, OutOfRangeError, ShapeError
from pat_runtime.wire import MessageType, WireError, error_header, reply_header

from .deadline import DeadlineClock

log = logging.getLogger(__name__)

Reply = tuple[dict[str, Any], list[np.ndarray]]
Handler = Callable[[dict[str, Any], list[np.ndarray]], Awaitable[Reply]]
SyncHandler = Callable[[dict[str, Any], list[np.ndarray]], Reply]
APPLY_MANY = MessageType.APPLY_MANY


class RequestError(Exception):
    """Raise from a handler to send an error reply with ``code``."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


def _nbytes(reply: Reply) -> int:
    return sum(getattr(a, "nbytes", 0) for a in reply[1])


class NodeService:
    """Serves one device. ``handlers`` maps message type -> async handler(header, arrays) -> (fields, arrays).

    Handlers return ``(fields, arrays)``; the service wraps ``fields`` into a reply header.
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
        self._cache: OrderedDict[str, Reply] = OrderedDict()
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

    def register(self, type: str, handler: Handler) -> None:
        self.handlers[type] = handler
        self.sync_handlers.pop(type, None)

    # ----- fast path ---------------------------------------------------------------------------------
    def handle_nowait(self, header: dict[str, Any], arrays: list[np.ndarray]) -> Reply | None:
        """The reply, if it can be made without awaiting anything; ``None``: use :meth:`handle`."""
        return self._fast(header, arrays)[0]

    def _fast(self, header: dict[str, Any], arrays: list[np.ndarray]) -> tuple[Reply | None, float | None]:
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

    def _run_sync(self, fn: SyncHandler | None, header: dict[str, Any], arrays: list[np.ndarray]) -> Reply:
        try:
            if fn is None:
                raise RequestError("unknown_type", f"unknown message type {header.get('type')!r}")
            fields, out = fn(header, arrays)
            return reply_header(header, node=self.node_id, **fields), list(out)
        except Exception as e:  # noqa: BLE001 - mapped like the async path
            return self._error_reply(header, e)

    def _cached(self, rid: str) -> Reply:
        self.counters["duplicates"] += 1
        self._cache.move_to_end(rid)
        return self._cache[rid]

    def _expired(self, header: dict[str, Any], late: float) -> Reply:
        self.counters["expired"] += 1
        return error_header(header, "expired", f"request {header.get('type')!r} arrived {late:.3f} s past its "
                                               f"deadline; not run", node=self.node_id), []

    def _remember(self, rid: str, reply: Reply, left: float | None) -> None:
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
    async def handle(self, header: dict[str, Any], arrays: list[np.ndarray]) -> Reply:
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

    async def _dispatch(self, header: dict[str, Any], arrays: list[np.ndarray]) -> Reply:
        handler = self.handlers.get(header.get("type"))
        try:
            if handler is None:
                raise RequestError("unknown_type", f"unknown message type {header.get('type')!r}")
            fields, out = await handler(header, arrays)
            return reply_header(header, node=self.node_id, **fields), list(out)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001
            return self._error_reply(header, e)

    def _error_reply(self, header: dict[str, Any], exc: Exception) -> Reply:
        try:
            raise exc
        except RequestError as e:
            code, msg = e.code, str(e)
        except WireError as e:
            code, msg = e.code, str(e)
        except OutOfRangeError as e:
            code, msg = "out_of_range", str(e)
        except ShapeError as e:
            code, msg = "bad_shape", str(e)
        except DeviceError as e:
            code, msg = "device_error", str(e)
        except Exception as e:  # a handler bug must not take the node down
            log.exception("handler for %r failed", header.get("type"))
            code, msg = "internal", f"{type(e).__name__}: {e}"
        self.counters["errors"] += 1
        return error_header(header, code, msg, node=self.node_id), []

    # ----- built-in handlers -------------------------------------------------------------------------
    async def _spec(self, header, arrays) -> Reply:
        return self._spec_now(header, arrays)

    def _spec_now(self, header, arrays) -> Reply:
        return {"spec": self.device.spec.to_dict()}, []

    async def _apply(self, header, arrays) -> Reply:
        x, theta = _two(arrays, "apply", "[x, theta]")
        y = await self.device.apply(x, theta)
        self.counters["samples"] += int(x.shape[0])
        return {}, [y]

    def _apply_now(self, header, arrays) -> Reply:
        x, theta = _two(arrays, "apply", "[x, theta]")
        y = self.device.apply_nowait(x, theta)
        self.counters["samples"] += int(x.shape[0])
        return {}, [y]

    async def _apply_many(self, header, arrays) -> Reply:
        xs, thetas = _two(arrays, APPLY_MANY, "[x[C, B, in], theta[C, P]]")
        ys = await self.device.apply_many(xs, thetas)
        self.counters["samples"] += int(xs.shape[0] * xs.shape[1]) if xs.ndim == 3 else 0
        return {}, [ys]

    def _apply_many_now(self, header, arrays) -> Reply:
        xs, thetas = _two(arrays, APPLY_MANY, "[x[C, B, in], theta[C, P]]")
        ys = self.device.apply_many_nowait(xs, thetas)
        self.counters["samples"] += int(xs.shape[0] * xs.shape[1]) if xs.ndim == 3 else 0
        return {}, [ys]

    async def _ping(self, header, arrays) -> Reply:
        return self._ping_now(header, arrays)

    def _ping_now(self, header, arrays) -> Reply:
        return {"t": time.time()}, list(arrays)

    async def _status(self, header, arrays) -> Reply:
        return self._status_now(header, arrays)

    def _status_now(self, header, arrays) -> Reply:
        return {"uptime": time.time() - self.started, "counters": dict(self.counters),
                "handlers": sorted(self.handlers)}, []

    # ----- read-only views of the reply cache (tests, monitoring) ------------------------------------
    def cached_ids(self) -> list[str]:
        """Ids of the requests whose replies are cached, least recently used first (the eviction order)."""
        return list(self._cache)

    @property
    def cache_nbytes(self) -> int:
        """Bytes of reply arrays the cache holds (bounded by ``cache_bytes``)."""
        return self._cache_nbytes

    def cache_expiry(self, rid: str) -> float | None:
        """``time.monotonic()`` at which the cached reply to ``rid`` expires (its retry window closes; it is
        dropped at the next insert after that); None when no reply to ``rid`` is cached."""
        return self._cache_exp.get(rid) if rid in self._cache else None


def _two(arrays: list[np.ndarray], what: str, names: str) -> tuple[np.ndarray, np.ndarray]:
    if len(arrays) != 2:
        raise RequestError("bad_request", f"{what} needs 2 arrays {names}, got {len(arrays)}")
    return arrays[0], arrays[1]

