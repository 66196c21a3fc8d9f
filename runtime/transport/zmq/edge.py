"""ZmqEdgeTransport: the node side, a DEALER whose routing id is the node id.

Life cycle of :meth:`ZmqEdgeTransport.serve`::

    connect DEALER -> send hello {spec, heartbeat, handlers}
    every `heartbeat` s: send heartbeat {inflight, served}        (never blocks: dropped when the queue is full;
                                                                   skipped when a reply went out in that period)
    for each request: decode -> NodeService.handle_nowait -> reply   (inline in the reader callback, no task)
                      or, if it must wait: a task for NodeService.handle (at most `max_concurrency` at once)
    coordinator sends hello ("who are you?") -> send hello again     (after a coordinator restart)
    stop set -> finish in-flight requests (at most `drain` s) -> send bye -> close

ZeroMQ reconnects by itself; the hello-on-request rule makes a restarted coordinator learn the node again.
A message that cannot be decoded gets an error reply (``ok: false`` with the wire error code) and the
node keeps serving.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from typing import Any

import msgpack
import zmq
import zmq.asyncio

from pat_runtime import wire
from pat_runtime.devices.codes import ErrorCode
from pat_runtime.transport.base import EdgeFaults, EdgeTransport
from pat_runtime.wire import DEFAULT_LIMITS, Limits, MessageType, WireError

from .driver import SocketDriver
from .identity import check_endpoint
from .options import DEFAULT_HWM, CurveClient, dealer_options

log = logging.getLogger(__name__)

#: most bytes of replies sent in one reply bundle (larger replies go alone, zero-copy)
BUNDLE_BYTES = 256 * 1024


class ZmqEdgeTransport(EdgeTransport):
    """Serve a NodeService to the coordinator at ``connect`` (e.g. ``tcp://127.0.0.1:5555``)."""

    def __init__(self, connect: str, node_id: str, heartbeat: float = 0.5, *, curve: CurveClient | None = None,
                 max_concurrency: int = 8, hwm: int = DEFAULT_HWM, limits: Limits = DEFAULT_LIMITS,
                 drain: float = 2.0, bye_linger: float = 0.5, context: zmq.asyncio.Context | None = None,
                 insecure: bool = False, faults: EdgeFaults | None = None, bundle: bool = True):
        if not node_id:
            raise ValueError("node_id must be a non-empty string")
        check_endpoint(connect, curve, insecure, f"node {node_id}")
        self.connect = connect
        self.node_id = node_id
        self.heartbeat = float(heartbeat)
        self.curve = curve
        self.max_concurrency = int(max_concurrency)
        self.hwm = int(hwm)
        self.limits = limits
        self.drain = float(drain)
        self.bye_linger = float(bye_linger)
        self._ctx = context
        self._driver: SocketDriver | None = None
        self._service: Any = None
        self._handlers: set[asyncio.Task] = set()
        self._stopping = False
        self.counters = {"served": 0, "malformed": 0, "hellos": 0, "heartbeats": 0, "dropped": 0, "inline": 0,
                         "refused": 0, "bundles": 0}
        self.inflight = 0
        self._nowait = None
        self._last_reply = 0.0
        self.faults = faults
        #: accept request bundles (announced as ``bundle: max messages`` in the hello; False = an edge of
        #: an older version: the coordinator then sends every request on its own)
        self.bundle = bool(bundle)
        self._backlog: deque[list] = deque()  # bundle parts waiting for a free handler slot

    # ----- main loop ---------------------------------------------------------------------------------
    async def serve(self, service: Any, stop: asyncio.Event) -> None:
        own_ctx = self._ctx is None
        ctx = zmq.asyncio.Context() if own_ctx else self._ctx
        sock = zmq.Socket(ctx, zmq.DEALER)  # driven by SocketDriver (reader callback), not futures
        dealer_options(sock, self.node_id, self.hwm, self.limits)
        if self.curve is not None:
            self.curve.apply(sock)
        self._service = service
        self._nowait = self.nowait_for(service)
        self._handlers = set()
        self._backlog.clear()
        self._stopping = False
        self.inflight = 0
        hb: asyncio.Task | None = None
        try:
            sock.connect(self.connect)
            self._driver = SocketDriver(sock, self._on_message).start()
            self._send_nowait(self._hello_frames())
            hb = asyncio.create_task(self._heartbeat_loop(), name=f"zmq-edge-heartbeat {self.node_id}")
            await stop.wait()
        finally:
            if hb is not None:
                hb.cancel()
                await asyncio.gather(hb, return_exceptions=True)
            self._stopping = True
            if self._driver is not None:
                self._driver.pause()  # take no new requests
            if self._handlers:  # let in-flight requests finish and reply
                _, left = await asyncio.wait(self._handlers, timeout=self.drain)
                for t in left:
                    t.cancel()
                await asyncio.gather(*left, return_exceptions=True)
            if self._driver is not None:
                self._send_nowait(wire.encode(wire.make_header(MessageType.BYE, node=self.node_id)))
                self._driver.close()
                self._driver = None
            sock.close(linger=int(self.bye_linger * 1000))  # a short window to flush the bye
            if own_ctx:
                ctx.term()

    def _on_message(self, frames: list) -> None:
        """Reader callback: answer inline what needs no waiting, else start a handler task (paused reading
        at ``max_concurrency`` tasks). A bundle is answered with one reply bundle of its inline replies."""
        header = None
        if not self._stopping:
            try:
                header = wire.decode_header(frames[0], self.limits)
            except Exception:  # noqa: BLE001 - the task path makes the error reply
                header = None
            if header is not None and header["type"] == MessageType.BUNDLE and self.bundle:
                self._on_bundle(frames, header)
                return
        self._on_part(frames, header, None)

    def _on_bundle(self, frames: list, header: dict[str, Any]) -> None:
        try:
            parts = wire.split_bundle(frames, self.limits, header)
        except Exception as e:  # noqa: BLE001 - hostile or broken bundle: one error reply, keep serving
            self.counters["malformed"] += 1
            code = e.code if isinstance(e, WireError) else ErrorCode.BAD_REQUEST
            self._reply(wire.error_header(None, code, f"bundle refused: {e}", self.node_id), ())
            return
        self.counters["bundles"] += 1
        replies: list[list] = []
        for part in parts:
            self._on_part(part, None, replies)
        if not replies or (self.faults is not None and self.faults.crashed):
            return
        box, nbytes = [], 0
        for frames in replies:  # reply bundles of at most BUNDLE_BYTES; a larger reply goes on its own
            n = sum(memoryview(f).nbytes for f in frames)
            if n > BUNDLE_BYTES:
                self._send_replies([frames])
                continue
            if nbytes + n > BUNDLE_BYTES:
                self._send_replies(box)
                box, nbytes = [], 0
            box.append(frames)
            nbytes += n
        self._send_replies(box)

    def _send_replies(self, replies: list[list]) -> None:
        if not replies:
            return
        one = len(replies) == 1
        try:
            ok = self._driver is not None and self._driver.send_nowait(
                replies[0] if one else wire.encode_bundle(replies), copy=not one)
        except zmq.ZMQError:
            ok = False
        if not ok:
            self.counters["dropped"] += len(replies)  # the coordinator retries each id (reply cache)

    def _on_part(self, frames: list, header: dict[str, Any] | None, out: list | None) -> None:
        """One message (alone or from a bundle): an inline reply (appended to ``out`` when given, else sent),
        or a task that replies on its own."""
        if self._nowait is not None and not self._stopping:
            try:
                header, arrays = wire.decode(frames, self.limits, header)
            except Exception:  # noqa: BLE001 - the task path makes the error reply
                pass
            else:
                if header["type"] != MessageType.HELLO:
                    if self._refused(header):
                        return
                    fast = self._nowait(header, arrays)
                    if fast is not None:
                        self.counters["served"] += 1
                        self.counters["inline"] += 1
                        self._reply(fast[0], fast[1], arrays, frames, out)
                        return
                    if self._over_capacity(frames):
                        return
                    t = asyncio.get_running_loop().create_task(self._serve(header, arrays, frames))
                    self._track(t)
                    return
        if self._over_capacity(frames):
            return
        t = asyncio.get_running_loop().create_task(self._handle(frames))
        self._track(t)

    def _over_capacity(self, frames: list) -> bool:
        """``max_concurrency`` handlers run already (possible inside a bundle: reading is paused only between
        messages): keep the message in the backlog, started as handlers finish."""
        if self.inflight < self.max_concurrency:
            return False
        self._backlog.append(frames)
        return True

    def _refused(self, header: dict[str, Any]) -> bool:
        """The coordinator's answer to our hello was a refusal of this node id (wrong key / id in use)."""
        if header["type"] != MessageType.REPLY or header.get("re") != MessageType.HELLO:
            return False
        self.counters["refused"] += 1
        err = header.get("error") if isinstance(header.get("error"), dict) else {}
        log.error("node %s: the coordinator refused this node id: %s", self.node_id, err.get("message"))
        return True

    def _track(self, t: asyncio.Task) -> None:
        self._handlers.add(t)
        t.add_done_callback(self._handler_done)
        self.inflight += 1
        if self.inflight >= self.max_concurrency:
            self._driver.pause()  # the rest waits in ZeroMQ's queue (backpressure)

    def _handler_done(self, t: asyncio.Task) -> None:
        self._handlers.discard(t)
        self.inflight -= 1
        while self._backlog and self.inflight < self.max_concurrency and not self._stopping:
            self._on_part(self._backlog.popleft(), None, None)
        if self._driver is not None and self.inflight < self.max_concurrency and not self._stopping:
            self._driver.resume()

    async def _handle(self, frames: list) -> None:
        try:
            try:
                header, arrays = wire.decode(frames, self.limits)
            except Exception as e:  # WireError, or anything a hostile header provokes
                self.counters["malformed"] += 1
                code = e.code if isinstance(e, WireError) else ErrorCode.BAD_REQUEST
                self._reply(wire.error_header(_partial_header(frames, self.limits), code, str(e), self.node_id), ())
                return
            if header["type"] == MessageType.HELLO:  # the coordinator asks us to (re)announce
                self._send_nowait(self._hello_frames())
                return
            if self._refused(header):
                return
            await self._serve(header, arrays, frames)
        except asyncio.CancelledError:
            raise
        except Exception:  # never let one request take the node down
            log.exception("node %s: failed to handle a request", self.node_id)

    async def _serve(self, header: dict[str, Any], arrays: list, frames: list) -> None:
        try:
            res = await self.handle_request(self._service, header, arrays)
            if res is None:   # lost to an injected fault
                return
            self.counters["served"] += 1
            self._reply(res[0], res[1], arrays, frames)
        except asyncio.CancelledError:
            raise
        except Exception:  # never let one request take the node down
            log.exception("node %s: failed to handle a request", self.node_id)

    def _reply(self, header: dict[str, Any], arrays, request_arrays=(), request_frames=(),
               out: list | None = None) -> None:
        """Encode and send a reply (or append its frames to ``out``: the reply bundle being built)."""
        if self.faults is not None and self.faults.crashed:
            return
        try:
            frames = wire.encode(header, arrays, self.limits)
        except WireError as e:  # a handler produced something we cannot send
            frames = wire.encode(wire.error_header(header, e.code, f"reply cannot be sent: {e}", self.node_id))
        else:
            # a reply array that *is* a request array (echo, pass-through) goes back as the received
            # zmq.Frame: zero-copy without registering a new buffer with pyzmq's garbage collector thread
            for i, a in enumerate(arrays):
                for j, r in enumerate(request_arrays):
                    if a is r:
                        frames[i + 1] = request_frames[j + 1]
                        break
        self._last_reply = asyncio.get_running_loop().time()
        if out is not None:
            out.append(frames)
            return
        if self._driver is None or not self._driver.send_nowait(frames):
            # queue full (coordinator gone or slow): the coordinator retries with the same id and gets
            # the cached reply, so dropping here loses nothing
            self.counters["dropped"] += 1

    # ----- announcements -----------------------------------------------------------------------------
    def _hello_frames(self) -> list:
        svc = self._service
        self.counters["hellos"] += 1
        return wire.encode(wire.make_header(
            MessageType.HELLO, node=self.node_id, spec=svc.device.spec.to_dict(), heartbeat=self.heartbeat,
            handlers=sorted(svc.handlers), pid=os.getpid(),
            **({"bundle": self.limits.max_bundle} if self.bundle else {})))

    async def _heartbeat_loop(self) -> None:
        seq = 0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.heartbeat)
            if loop.time() - self._last_reply < self.heartbeat * 0.9:
                continue  # replies went out: the coordinator already knows we are alive
            seq += 1
            self.counters["heartbeats"] += 1
            self._send_nowait(wire.encode(wire.make_header(
                MessageType.HEARTBEAT, node=self.node_id, seq=seq, inflight=self.inflight,
                served=self.counters["served"])))

    def _send_nowait(self, frames: list) -> None:
        """Fire-and-forget control message; dropped (counted) when the send queue is full."""
        if self.faults is not None and self.faults.crashed:
            return
        try:
            ok = self._driver is not None and self._driver.send_nowait(frames)
        except zmq.ZMQError:
            ok = False
        if not ok:
            self.counters["dropped"] += 1

    @property
    def routing_id(self) -> bytes | None:
        """The routing id of this node's DEALER socket (random per connection, unguessable); None while not
        serving."""
        driver = self._driver
        return driver.sock.getsockopt(zmq.IDENTITY) if driver is not None else None


def _partial_header(frames: list, limits: Limits) -> dict[str, Any] | None:
    """What can be read of a rejected message's header, so the error reply carries its id (None if nothing)."""
    try:
        hb = frames[0].bytes if hasattr(frames[0], "bytes") else bytes(frames[0])
        if len(hb) > limits.max_header_bytes:
            return None
        h = msgpack.unpackb(hb, raw=False)
    except Exception:
        return None
    return h if isinstance(h, dict) else None
