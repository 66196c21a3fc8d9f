"""SocketDriver: runs a ZeroMQ socket inside the asyncio loop with one reader callback, no per-message futures.

The socket's ``ZMQ_FD`` is registered with ``loop.add_reader`` (the approach of pyzmq's ``ZMQStream``).
That fd is *edge-triggered* and only says "the socket's state may have changed", so the driver

* reads ``ZMQ_EVENTS`` and drains every pending message (``recv_multipart(NOBLOCK, copy=False)``) into
  ``on_message(frames)`` -- at most ``batch`` per loop iteration, then yields to the loop and continues;
* re-checks ``ZMQ_EVENTS`` after a send (a send can swallow the fd's edge for an incoming message) and
  schedules a drain if something is readable -- except for a send made from inside the drain (an inline
  reply: the drain reads ``ZMQ_EVENTS`` before its next message anyway) or while a drain pass is already
  scheduled (one ``ZMQ_EVENTS`` read costs ~5 us in pyzmq);
* sends with ``NOBLOCK``; only when the high-water mark is reached does :meth:`send` wait for ``POLLOUT``.

Compared with ``zmq.asyncio.Socket.recv_multipart()`` in a task this saves a future, a task wake-up and
several enum conversions per message, which matters on the request hot path.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Callable

import zmq

log = logging.getLogger(__name__)

_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)


def recv_frames(sock: zmq.Socket) -> list:
    """``recv_multipart(NOBLOCK, copy=False)`` with plain-int flags (pyzmq's enum arithmetic costs ~10 us)."""
    recv = sock.recv
    f = recv(_NOBLOCK, copy=False)
    frames = [f]
    while f.more:  # the frame's own flag: no getsockopt(RCVMORE) call (and its enum conversion) per frame
        f = recv(_NOBLOCK, copy=False)
        frames.append(f)
    return frames


def send_frames(sock: zmq.Socket, frames: list, copy: bool = False) -> None:
    """``send_multipart(frames, NOBLOCK, copy=False)`` with plain-int flags; raises zmq.Again when full.

    ZeroMQ queues a multipart message atomically once its first frame is accepted, so only the first
    send can hit the high-water mark.
    """
    send = sock.send
    last = len(frames) - 1
    for i, f in enumerate(frames):
        send(f, _NOBLOCK | _SNDMORE if i < last else _NOBLOCK, copy=copy)


class SocketDriver:
    """Deliver incoming multipart messages of ``sock`` to ``on_message``; send without blocking the loop."""

    def __init__(self, sock: zmq.Socket, on_message: Callable[[list], None], batch: int = 64):
        self.sock = sock
        self.on_message = on_message
        self.batch = batch
        self.paused = False
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._fd = sock.getsockopt(zmq.FD)
        self._scheduled = False
        self._draining = False
        self._send_waiters: deque[asyncio.Future] = deque()

    def start(self) -> "SocketDriver":
        self._loop.add_reader(self._fd, self._process)
        self.kick()
        return self

    def close(self) -> None:
        """Stop watching the socket (the caller closes it)."""
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self._fd)
        while self._send_waiters:
            w = self._send_waiters.popleft()
            if not w.done():
                w.cancel()

    def pause(self) -> None:
        """Stop delivering messages (they queue in ZeroMQ up to the high-water mark: backpressure)."""
        self.paused = True

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self.kick()

    def kick(self) -> None:
        """Re-check the socket soon (after a send, a resume, or a capped drain)."""
        if not self._scheduled and not self.closed:
            self._scheduled = True
            self._loop.call_soon(self._process)

    def _process(self) -> None:
        self._scheduled = False
        if self.closed:
            return
        self._draining = True
        try:
            self._drain()
        finally:
            self._draining = False

    def _drain(self) -> None:
        sock = self.sock
        for _ in range(self.batch):
            ev = sock.getsockopt(_EVENTS)
            if ev & _POLLOUT and self._send_waiters:
                while self._send_waiters:
                    w = self._send_waiters.popleft()
                    if not w.done():
                        w.set_result(None)
            if not ev & _POLLIN or self.paused:
                return
            try:
                frames = recv_frames(sock)
            except zmq.Again:
                return
            try:
                self.on_message(frames)
            except Exception:  # the handler must not kill the reader
                log.exception("message handler failed")
            if self.closed:
                return
        self.kick()  # more may be waiting: continue after other callbacks had their turn

    # ----- sending -----------------------------------------------------------------------------------
    def send_nowait(self, frames: list, copy: bool = False) -> bool:
        """Send now; False if the high-water mark is reached. Raises ``zmq.ZMQError`` for other errors.

        ``copy=True`` for frames of a few hundred KiB at most that were just built (bundles): pyzmq's zero-copy
        path hands every buffer over 64 KiB to its garbage-collector thread, and that thread's turn at the GIL
        can stall the loop for milliseconds."""
        try:
            send_frames(self.sock, frames, copy)
            return True
        except zmq.Again:
            return False
        finally:
            # the send may have consumed the fd's edge: if something is readable now, handle it soon --
            # not needed from inside the drain (it reads ZMQ_EVENTS before its next message anyway) or when a
            # drain pass is already scheduled; otherwise checked inline (a callback per send would cost more)
            if self._send_waiters:
                self.kick()
            elif not (self._draining or self._scheduled or self.closed) and self.sock.getsockopt(_EVENTS) & _POLLIN:
                self.kick()

    async def send(self, frames: list) -> None:
        """Send, waiting (without blocking the loop) while the high-water mark is reached."""
        while not self.send_nowait(frames):
            if self.closed:
                raise zmq.ZMQError(zmq.ENOTSOCK, "socket driver closed")
            w = self._loop.create_future()
            self._send_waiters.append(w)
            # ZMQ_FD also signals when the socket becomes writable; poll as a fallback in case we miss it
            handle = self._loop.call_later(0.05, lambda: w.done() or w.set_result(None))
            try:
                await w
            finally:
                handle.cancel()
