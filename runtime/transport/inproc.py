"""In-memory transport: many virtual edge nodes multiplexed on one event loop (Flower-style).

Nothing is shared between the two sides except byte frames: every message is encoded with
:func:`pat_runtime.wire.encode`, copied to ``bytes`` (as a network would), optionally checked by a CRC
trailer, and decoded with :func:`pat_runtime.wire.decode` on the other side. So faults can corrupt real
frames, and a node never sees the coordinator's arrays (or vice versa).

Frames on the "link"::

    [header, array_0, ..., array_k, crc]        crc = u32 little-endian zlib.crc32 over all previous frames

With ``integrity=True`` (default) a frame set whose CRC does not match is dropped (counted in
``counters["corrupt"]``), like a link layer discarding a damaged packet; the sender recovers by its
timeout and retry (same request id, so :class:`pat_runtime.edge.service.NodeService` does not drive the device twice).
With ``integrity=False`` damaged frames go straight to the decoder: malformed ones become error replies.

Usage::

    coord = await InprocCoordinator("inproc://fleet").start()
    edge = InprocEdgeTransport("inproc://fleet", "node-1")          # or pass the coordinator object
    task = asyncio.create_task(edge.serve(NodeService(device, "node-1"), stop))
    await coord.wait_for_node("node-1")
    hdr, (y,) = await coord.request("node-1", "apply", [x, theta], timeout=1.0)

Each node handles its requests one at a time (a physical device is serial; ``concurrency`` raises that).
Faults (drop, delay, corrupt, crash) come from the edge's one fault hook, ``faults``
(:class:`pat_runtime.transport.base.EdgeFaults`): requests pass its ``serve`` and, here, every frame its ``tamper``.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import struct
import time
import uuid
import weakref
import zlib
from typing import Any, Sequence

import numpy as np

from pat_runtime.devices.codes import ErrorCode
from pat_runtime.devices.errors import DeviceConnectionError
from pat_runtime import wire
from pat_runtime.wire import MessageType, WireError

from .base import Coordinator, EdgeFaults, EdgeTransport

log = logging.getLogger(__name__)

Frames = list[bytes]

_HUBS: "weakref.WeakValueDictionary[str, InprocCoordinator]" = weakref.WeakValueDictionary()
_counter = itertools.count(1)


def _crc(frames: Sequence[bytes]) -> bytes:
    c = 0
    for f in frames:
        c = zlib.crc32(f, c)
    return struct.pack("<I", c)


def to_frames(header: dict[str, Any], arrays: Sequence[Any] = (), integrity: bool = True,
              limits: wire.Limits = wire.DEFAULT_LIMITS) -> Frames:
    """Encode with :func:`pat_runtime.wire.encode` and copy to bytes; append a CRC frame if ``integrity``."""
    frames = [bytes(f) for f in wire.encode(header, arrays, limits)]
    if integrity:
        frames.append(_crc(frames))
    return frames


def from_frames(frames: Sequence[bytes], integrity: bool = True,
                limits: wire.Limits = wire.DEFAULT_LIMITS) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Inverse of :func:`to_frames`; raises :class:`WireError` (code ``corrupt``) on a CRC mismatch."""
    if integrity:
        if len(frames) < 2 or len(frames[-1]) != 4 or _crc(frames[:-1]) != bytes(frames[-1]):
            raise WireError(ErrorCode.CORRUPT, "frame checksum mismatch")
        frames = frames[:-1]
    return wire.decode(frames, limits)


class InprocCoordinator(Coordinator):
    """Coordinator whose nodes live in this process (see module docstring).

    ``timeout``/``retries`` are the defaults for :meth:`request`; ``liveness`` is how long a node may stay
    silent (no heartbeat or reply) before :meth:`alive_nodes` drops it.
    """

    def __init__(self, address: str | None = None, *, timeout: float = 5.0, retries: int = 2,
                 liveness: float = 3.0, integrity: bool = True, limits: wire.Limits = wire.DEFAULT_LIMITS,
                 max_inflight: int = 8):
        super().__init__()
        self.address = address or f"inproc://fleet-{next(_counter)}-{uuid.uuid4().hex[:6]}"
        if not self.address.startswith("inproc://"):
            raise ValueError(f"inproc address must start with inproc://, got {self.address!r}")
        self.timeout, self.retries, self.liveness = float(timeout), int(retries), float(liveness)
        self.max_inflight = int(max_inflight)
        self.integrity, self.limits = integrity, limits
        self.counters = {"sent": 0, "received": 0, "replies": 0, "corrupt": 0, "late": 0, "retries": 0}
        self._edges: dict[str, InprocEdgeTransport] = {}
        self._tasks: list[asyncio.Task] = []
        self._open = False
        self.heartbeats = HeartbeatSweep()   # one task beats for every node attached here

    async def start(self) -> "InprocCoordinator":
        other = _HUBS.get(self.address)
        if other is not None and other is not self and other._open:
            raise RuntimeError(f"{self.address} is already served by another coordinator")
        _HUBS[self.address] = self
        self._open = self.started = True
        self._tasks = [asyncio.create_task(self._liveness_loop(), name=f"inproc-liveness {self.address}")]
        return self

    async def close(self) -> None:
        self._open = self.started = False
        self.heartbeats.stop()
        if _HUBS.get(self.address) is self:
            del _HUBS[self.address]
        await self._stop_tasks_and_requests()
        for node in list(self.nodes):
            self._node_left(node)
        self._edges.clear()

    # ----- edge side calls these ---------------------------------------------------------------------
    def _attach(self, node_id: str, edge: "InprocEdgeTransport") -> None:
        self._edges[node_id] = edge

    def _detach(self, node_id: str, edge: "InprocEdgeTransport") -> None:
        if self._edges.get(node_id) is edge:
            del self._edges[node_id]

    def _receive(self, node_id: str, frames: Frames) -> None:
        """A frame set arrived from ``node_id``'s link."""
        if not self._open:
            return
        self.counters["received"] += 1
        try:
            h, arrays = from_frames(frames, self.integrity, self.limits)
        except WireError as e:
            self.counters["corrupt"] += 1
            log.debug("dropping bad frames from %s: %s", node_id, e)
            return
        t = h.get("type")
        if t == MessageType.BYE:
            self._node_left(node_id)
            self._fail_pending(node_id, "node left (bye)")
            return
        if t == MessageType.HELLO:
            try:
                self._node_seen(node_id, spec=h.get("spec"), session=h.get("session"), hello_at=time.monotonic(),
                                handlers=h.get("handlers") if isinstance(h.get("handlers"), list) else [])
            except (TypeError, ValueError) as e:
                log.warning("node %s sent a bad spec: %s", node_id, e)
            return
        info = self.nodes.get(node_id)
        if info is not None:  # heartbeats and replies keep a known node alive
            if info.alive:
                self._touch(node_id)
            else:
                self._node_seen(node_id)
        if t == MessageType.REPLY:
            self.counters["replies"] += 1
            if not self._resolve_reply(node_id, h, arrays):
                self.counters["late"] += 1

    def _receive_beats(self, frames: Frames) -> None:
        """The heartbeat sweep's batched beats: every listed node that is attached here is alive."""
        if not self._open:
            return
        self.counters["received"] += 1
        try:
            h, _ = from_frames(frames, self.integrity, self.limits)
            beats = h.get("beats")
            if h.get("type") != MessageType.HEARTBEAT or not isinstance(beats, list):
                raise WireError(ErrorCode.BAD_HEADER, "not a heartbeat batch")
        except WireError as e:
            self.counters["corrupt"] += 1
            log.debug("dropping bad heartbeat batch: %s", e)
            return
        for item in beats:
            node = item[0] if isinstance(item, list) and item and isinstance(item[0], str) else None
            info = self.nodes.get(node) if node in self._edges else None
            if info is None:
                continue
            if info.alive:
                self._touch(node)
            else:
                self._node_seen(node)

    # ----- requests (the engine calls these) ---------------------------------------------------------
    def _encode(self, node_id: str, header: dict[str, Any], arrays: Sequence[Any]) -> tuple[Frames, int]:
        frames = to_frames(header, arrays, self.integrity, self.limits)
        return frames, sum(len(f) for f in frames)

    def _transmit(self, p) -> str | None:
        edge = self._edges.get(p.node)
        if edge is None:
            raise DeviceConnectionError(p.node, "node is not connected")
        if p.attempt and not p.sent_now:
            self.counters["retries"] += 1
        self.counters["sent"] += 1
        edge._deliver(list(p.msg))
        return None


class InprocEdgeTransport(EdgeTransport):
    """The node end of an in-memory link to an :class:`InprocCoordinator` (given or by address).

    ``heartbeat`` is the period of heartbeats (s); ``faults`` is the fault hook (:attr:`EdgeTransport.faults`;
    its ``tamper`` sees incoming requests and outgoing replies); ``concurrency`` is how many requests are
    handled at once.
    """

    def __init__(self, coordinator: "InprocCoordinator | str", node_id: str, *, heartbeat: float = 1.0,
                 faults: EdgeFaults | None = None, concurrency: int = 1, connect_timeout: float = 10.0):
        self._coord_ref = coordinator
        self.node_id = node_id
        self.heartbeat = float(heartbeat)
        self.faults = faults
        self.concurrency = int(concurrency)
        self.connect_timeout = float(connect_timeout)
        self.session = uuid.uuid4().hex
        self.counters = {"requests": 0, "replies": 0, "bad": 0, "corrupt": 0, "dropped": 0}
        self.crashed = False
        self._crash_event = asyncio.Event()
        self._inbox: asyncio.Queue[Frames] = asyncio.Queue()
        self._coord: InprocCoordinator | None = None
        self.integrity = True
        self.limits = wire.DEFAULT_LIMITS
        self.last_sent = 0.0   # monotonic time of the last frame to the coordinator (any traffic = alive)
        #: looking up its coordinator by address (serving, the coordinator not open yet)
        self.waiting_for_coordinator = False

    # coordinator -> node
    def _deliver(self, frames: Frames) -> None:
        if not self.crashed:
            self._inbox.put_nowait(frames)

    def deliver(self, frames: Frames) -> None:
        """Hand ``frames`` to this edge as if the coordinator had sent them (tests: raw, malformed input)."""
        self._deliver(frames)

    def crash(self) -> None:
        """Stop answering at once, without a bye (the coordinator keeps a dead link until a restart)."""
        self.crashed = True
        self._crash_event.set()

    async def _resolve(self, stop: asyncio.Event) -> InprocCoordinator | None:
        if isinstance(self._coord_ref, InprocCoordinator):
            return self._coord_ref
        deadline = time.monotonic() + self.connect_timeout
        self.waiting_for_coordinator = True
        try:
            while not stop.is_set():
                c = _HUBS.get(self._coord_ref)
                if c is not None and c._open:
                    return c
                if time.monotonic() > deadline:
                    raise DeviceConnectionError(self.node_id, f"no coordinator at {self._coord_ref}")
                await asyncio.sleep(0.05)
            return None
        finally:
            self.waiting_for_coordinator = False

    def _send(self, header: dict[str, Any], arrays: Sequence[Any] = (), tamper: bool = False) -> None:
        c = self._coord
        if c is None or self.crashed:
            return
        frames = to_frames(header, arrays, self.integrity, self.limits)
        if tamper and self.faults is not None:
            frames = self.faults.tamper(frames, "reply")
            if frames is None:
                self.counters["dropped"] += 1
                return
        self.last_sent = time.monotonic()
        c._receive(self.node_id, frames)

    def beat_due(self, now: float) -> bool:
        """Is a heartbeat due? Not when a reply went out within the last period (traffic shows we live)."""
        return self._coord is not None and not self.crashed and now - self.last_sent >= self.heartbeat * 0.9

    async def serve(self, service: Any, stop: asyncio.Event) -> None:
        coord = await self._resolve(stop)
        if coord is None:
            return
        self._coord = coord
        self.integrity, self.limits = coord.integrity, coord.limits
        coord._attach(self.node_id, self)
        spec = service.device.spec.to_dict()
        handlers = sorted(getattr(service, "handlers", ()))
        self._send(wire.make_header(MessageType.HELLO, node=self.node_id, spec=spec, session=self.session,
                                    handlers=handlers))
        coord.heartbeats.add(self)
        tasks = [asyncio.create_task(self._worker(service), name=f"inproc-worker-{self.node_id}")
                 for _ in range(self.concurrency)]
        stopper = asyncio.create_task(_first(stop.wait(), self._crash_event.wait()))
        try:
            await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                if t.done() and not t.cancelled() and t.exception() is not None:
                    raise t.exception()
        finally:
            coord.heartbeats.discard(self)
            stopper.cancel()
            for t in tasks:
                t.cancel()
            await asyncio.gather(stopper, *tasks, return_exceptions=True)
            if not self.crashed:
                self._send(wire.make_header(MessageType.BYE, node=self.node_id, session=self.session))
                coord._detach(self.node_id, self)
            self._coord = None

    async def _worker(self, service: Any) -> None:
        nowait = self.nowait_for(service)
        while True:
            frames = await self._inbox.get()
            self.counters["requests"] += 1
            if self.faults is not None:
                frames = self.faults.tamper(frames, "request")
                if frames is None:
                    self.counters["dropped"] += 1
                    continue
            try:
                h, arrays = from_frames(frames, self.integrity, self.limits)
            except WireError as e:
                if e.code == ErrorCode.CORRUPT:       # link-layer discard: the sender will retry
                    self.counters["corrupt"] += 1
                else:                         # malformed but intact: tell the sender
                    self.counters["bad"] += 1
                    self._send(wire.error_header(None, e.code, str(e), node=self.node_id))
                continue
            reply = nowait(h, arrays) if nowait is not None else None
            if reply is None:
                reply = await self.handle_request(service, h, arrays)
            if reply is None or self.crashed:
                self.counters["dropped"] += reply is None
                continue
            rh, out = reply
            try:
                self._send(rh, out, tamper=True)
            except WireError as e:  # the service produced something unsendable: say so
                self._send(wire.error_header(h, ErrorCode.INTERNAL, f"reply not encodable: {e}", node=self.node_id))
            self.counters["replies"] += 1


class HeartbeatSweep:
    """Heartbeats of every in-process node attached to one coordinator, from ONE task (not a timer per node).

    Nodes are kept in a heap by their next beat (random phase); the task wakes at most every ``tick`` (50 ms)
    and sends ONE heartbeat message listing every node that is due (``beats: [[node, session], ...]``), so
    the per-node cost is a list entry and a dict update, not an encoded message. A node that replied within
    its last period is left out (any traffic shows it is alive), so a busy fleet sends almost none.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, InprocEdgeTransport]] = []
        self._members: set[int] = set()
        self._seq = itertools.count()
        self._task: asyncio.Task | None = None
        self.tick = 0.05

    def add(self, edge: "InprocEdgeTransport") -> None:
        self._members.add(id(edge))
        heapq.heappush(self._heap, (time.monotonic() + random.random() * edge.heartbeat, next(self._seq), edge))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="inproc-heartbeats")

    def discard(self, edge: "InprocEdgeTransport") -> None:
        self._members.discard(id(edge))   # its heap entry is dropped when it comes due

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._heap.clear()
        self._members.clear()

    async def _run(self) -> None:
        heap = self._heap
        while heap:
            now = time.monotonic()
            due: list[InprocEdgeTransport] = []
            while heap and heap[0][0] <= now:
                _, _, edge = heapq.heappop(heap)
                if id(edge) not in self._members or edge.crashed:
                    continue
                if edge.beat_due(now):
                    due.append(edge)
                heapq.heappush(heap, (now + edge.heartbeat, next(self._seq), edge))
            if due:
                self._send(due)
            if heap:   # coalesced: at most one wake-up (and one message) per `tick`
                await asyncio.sleep(max(self.tick, heap[0][0] - time.monotonic()))
        self._task = None

    def _send(self, due: list["InprocEdgeTransport"]) -> None:
        """ONE heartbeat frame set for all ``due`` nodes (``beats: [[node, session], ...]``) on the hub link."""
        coord = due[0]._coord
        if coord is None:
            return
        beats = [[e.node_id, e.session] for e in due if e._coord is coord]
        frames = to_frames(wire.make_header(MessageType.HEARTBEAT, id="", beats=beats), (), coord.integrity,
                           coord.limits)
        now = time.monotonic()
        for e in due:
            e.last_sent = now
        coord._receive_beats(frames)


async def _first(*aws) -> None:
    """Return when the first of ``aws`` finishes; cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
