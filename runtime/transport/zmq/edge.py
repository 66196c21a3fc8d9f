"""ZmqEdgeTransport: the node side, a DEALER whose routing id is the node id.

Life cycle of :meth:`ZmqEdgeTransport.serve`::

    connect DEALER -> send hello {spec, heartbeat, handlers}
    every `heartbeat` s: send heartbeat {inflight, served}        (never blocks: dropped when the queue is full)
    for each request: decode -> NodeService.handle -> reply          (at most `max_concurrency` at once)
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
from typing import Any

import zmq
import zmq.asyncio

from runtime import wire
from runtime.transport.base import EdgeTransport
from runtime.wire import DEFAULT_LIMITS, Limits, MessageType, WireError

from .options import DEFAULT_HWM, CurveClient, dealer_options

log = logging.getLogger(__name__)


class ZmqEdgeTransport(EdgeTransport):
    """Serve a NodeService to the coordinator at ``connect`` (e.g. ``tcp://127.0.0.1:5555``)."""

    def __init__(self, connect: str, node_id: str, heartbeat: float = 0.5, *, curve: CurveClient | None = None,
                 max_concurrency: int = 8, hwm: int = DEFAULT_HWM, limits: Limits = DEFAULT_LIMITS,
                 drain: float = 2.0, bye_linger: float = 0.5, context: zmq.asyncio.Context | None = None):
        if not node_id:
            raise ValueError("node_id must be a non-empty string")
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
        self._sock: zmq.asyncio.Socket | None = None
        self._service: Any = None
        self.counters = {"served": 0, "malformed": 0, "hellos": 0, "heartbeats": 0, "dropped": 0}
        self.inflight = 0

    # ----- main loop ---------------------------------------------------------------------------------
    async def serve(self, service: Any, stop: asyncio.Event) -> None:
        own_ctx = self._ctx is None
        ctx = zmq.asyncio.Context() if own_ctx else self._ctx
        sock = ctx.socket(zmq.DEALER)
        dealer_options(sock, self.node_id, self.hwm)
        if self.curve is not None:
            self.curve.apply(sock)
        self._sock, self._service = sock, service
        handlers: set[asyncio.Task] = set()
        tasks: list[asyncio.Task] = []
        try:
            sock.connect(self.connect)
            self._send_nowait(self._hello_frames())
            tasks = [asyncio.create_task(self._recv_loop(handlers), name=f"zmq-edge-recv {self.node_id}"),
                     asyncio.create_task(self._heartbeat_loop(), name=f"zmq-edge-heartbeat {self.node_id}"),
                     asyncio.create_task(stop.wait(), name=f"zmq-edge-stop {self.node_id}")]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not tasks[2] and not t.cancelled() and t.exception() is not None:
                    raise t.exception()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if handlers:  # let in-flight requests finish and reply
                _, left = await asyncio.wait(handlers, timeout=self.drain)
                for t in left:
                    t.cancel()
                await asyncio.gather(*handlers, return_exceptions=True)
            self._send_nowait(wire.encode(wire.make_header(MessageType.BYE, node=self.node_id)))
            sock.close(linger=int(self.bye_linger * 1000))  # a short window to flush the bye
            self._sock = None
            if own_ctx:
                ctx.term()

    async def _recv_loop(self, handlers: set[asyncio.Task]) -> None:
        sem = asyncio.Semaphore(self.max_concurrency)
        sock = self._sock
        while True:
            frames = await sock.recv_multipart(copy=False)
            await sem.acquire()
            t = asyncio.create_task(self._handle(frames, sem))
            handlers.add(t)
            t.add_done_callback(handlers.discard)

    async def _handle(self, frames: list, sem: asyncio.Semaphore) -> None:
        self.inflight += 1
        try:
            try:
                header, arrays = wire.decode(frames, self.limits)
            except WireError as e:
                self.counters["malformed"] += 1
                self._reply(wire.error_header(_partial_header(frames, self.limits), e.code, str(e), self.node_id), ())
                return
            if header["type"] == MessageType.HELLO:  # the coordinator asks us to (re)announce
                self._send_nowait(self._hello_frames())
                return
            reply, out = await self._service.handle(header, arrays)
            self.counters["served"] += 1
            self._reply(reply, out)
        except asyncio.CancelledError:
            raise
        except Exception:  # never let one request take the node down
            log.exception("node %s: failed to handle a request", self.node_id)
        finally:
            self.inflight -= 1
            sem.release()

    def _reply(self, header: dict[str, Any], arrays) -> None:
        try:
            frames = wire.encode(header, arrays, self.limits)
        except WireError as e:  # a handler produced something we cannot send
            frames = wire.encode(wire.error_header(header, e.code, f"reply cannot be sent: {e}", self.node_id))
        f = self._sock.send_multipart(frames, copy=False)
        if not f.done():
            f.add_done_callback(_consume)
        elif f.exception() is not None:
            self.counters["dropped"] += 1

    # ----- announcements -----------------------------------------------------------------------------
    def _hello_frames(self) -> list:
        svc = self._service
        self.counters["hellos"] += 1
        return wire.encode(wire.make_header(
            MessageType.HELLO, node=self.node_id, spec=svc.device.spec.to_dict(), heartbeat=self.heartbeat,
            handlers=sorted(svc.handlers), pid=os.getpid()))

    async def _heartbeat_loop(self) -> None:
        seq = 0
        while True:
            await asyncio.sleep(self.heartbeat)
            seq += 1
            self.counters["heartbeats"] += 1
            self._send_nowait(wire.encode(wire.make_header(
                MessageType.HEARTBEAT, node=self.node_id, seq=seq, inflight=self.inflight,
                served=self.counters["served"])))

    def _send_nowait(self, frames: list) -> None:
        """Fire-and-forget control message; dropped (counted) when the send queue is full."""
        f = self._sock.send_multipart(frames, flags=zmq.DONTWAIT)
        if not f.done():  # queued behind other sends
            f.add_done_callback(_consume)
        elif f.exception() is not None:
            self.counters["dropped"] += 1


def _partial_header(frames: list, limits: Limits) -> dict[str, Any] | None:
    """The header of a message whose arrays were bad, so the error reply carries its id (None if unreadable)."""
    try:
        return wire.decode_header(frames[0], limits) if frames else None
    except WireError:
        return None


def _consume(f: asyncio.Future) -> None:
    if not f.cancelled():
        f.exception()
