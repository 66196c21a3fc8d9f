"""NodeService: the transport-independent request handler that runs beside a device.

Transports (ZeroMQ, MQTT, in-process) hand it decoded ``(header, arrays)`` requests and send back what
:meth:`NodeService.handle` returns. It never raises: unknown types, bad arrays, device errors and handler
bugs all become error replies (``{"ok": False, "error": {"code", "message"}}``), and the node stays up.

Requests are idempotent by id: a retried request id gets the cached reply (the device is not driven twice),
and a duplicate that arrives while the first is still running waits for the same result. The cache keeps
at most ``cache_size`` replies and ``cache_bytes`` of reply arrays (cached replies pin their buffers).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable

import numpy as np

from devices.base import Device
from devices.errors import DeviceError, OutOfRangeError, ShapeError
from runtime.wire import MessageType, WireError, error_header, reply_header

log = logging.getLogger(__name__)

Reply = tuple[dict[str, Any], list[np.ndarray]]
Handler = Callable[[dict[str, Any], list[np.ndarray]], Awaitable[Reply]]


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

    def __init__(self, device: Device, node_id: str, cache_size: int = 1024, cache_bytes: int = 64 * 2**20):
        self.device = device
        self.node_id = node_id
        self.started = time.time()
        self.counters: dict[str, int] = {"requests": 0, "errors": 0, "duplicates": 0, "samples": 0}
        self._cache: OrderedDict[str, Reply] = OrderedDict()
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
        }

    def register(self, type: str, handler: Handler) -> None:
        self.handlers[type] = handler

    async def handle(self, header: dict[str, Any], arrays: list[np.ndarray]) -> Reply:
        self.counters["requests"] += 1
        rid = header.get("id") or ""
        if rid and rid in self._cache:
            self.counters["duplicates"] += 1
            self._cache.move_to_end(rid)
            return self._cache[rid]
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
            self._cache[rid] = reply
            self._cache_nbytes += _nbytes(reply)
            while len(self._cache) > 1 and (len(self._cache) > self._cache_size
                                            or self._cache_nbytes > self._cache_bytes):
                self._cache_nbytes -= _nbytes(self._cache.popitem(last=False)[1])
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
        return {"spec": self.device.spec.to_dict()}, []

    async def _apply(self, header, arrays) -> Reply:
        if len(arrays) != 2:
            raise RequestError("bad_request", f"apply needs 2 arrays [x, theta], got {len(arrays)}")
        x, theta = arrays
        y = await self.device.apply(x, theta)
        self.counters["samples"] += int(x.shape[0])
        return {}, [y]

    async def _ping(self, header, arrays) -> Reply:
        return {"t": time.time()}, list(arrays)

    async def _status(self, header, arrays) -> Reply:
        return {"uptime": time.time() - self.started, "counters": dict(self.counters),
                "handlers": sorted(self.handlers)}, []
