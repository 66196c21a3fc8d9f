"""Transport-neutral protocols.

Coordinator side (training process)::

    coord = ZmqCoordinator("tcp://127.0.0.1:5555")      # or MqttCoordinator(...), InprocCoordinator()
    await coord.start()
    info = await coord.wait_for_node("node-1", timeout=10)   # NodeInfo with the device spec
    hdr, arrays = await coord.request("node-1", "apply", [x, theta], timeout=5.0)
    await coord.close()

Edge side (beside the device)::

    transport = ZmqEdgeTransport("tcp://127.0.0.1:5555", node_id="node-1")
    await transport.serve(service, stop)      # until ``stop`` (an asyncio.Event) is set

``request`` raises :class:`pat_runtime.devices.errors.DeviceTimeoutError` when no reply arrives in time (after its
retries, which reuse the request id so the node never applies a batch twice) and
:class:`pat_runtime.devices.errors.RemoteDeviceError` when the node answers with an error reply. The request life cycle
(pending table, one deadline sweep, retries, per-node caps, reply mapping) is written once, in
:class:`pat_runtime.transport.engine.RequestEngine`; each transport only encodes and moves frames.

Liveness is one sweep per coordinator whose cost does not grow with the fleet: nodes are kept in order of
their last message (``move_to_end`` on each), so the sweep only looks at the stalest ones.
"""
from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol, Sequence

from pat_runtime.devices.spec import DeviceSpec

from .engine import RequestEngine
from .meta import node_meta
from .tasks import cancel_all

log = logging.getLogger(__name__)


@dataclass
class NodeInfo:
    """What the coordinator knows about one edge node."""

    node_id: str
    spec: DeviceSpec | None = None
    joined_at: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    alive: bool = True
    meta: dict[str, Any] = field(default_factory=dict)
    #: how often this node went from alive to gone (bye, offline/Last Will, missed heartbeats, close)
    departures: int = 0

    def age(self) -> float:
        return time.monotonic() - self.last_seen


class Coordinator(RequestEngine, abc.ABC):
    """Training-side endpoint that talks to many edge nodes (requests: :class:`RequestEngine`)."""

    #: seconds without a heartbeat after which a node is considered dead
    liveness: float = 3.0
    #: bounded registry: a hello for a new node id beyond ``max_nodes`` known ids is refused, and a node dead
    #: for ``forget_after`` seconds is forgotten (so ids that joined once, or never, do not pile up)
    max_nodes: int = 4096
    forget_after: float = 600.0

    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        self._node_events: dict[str, asyncio.Event] = {}
        self._by_age: OrderedDict[str, NodeInfo] = OrderedDict()   # alive nodes, least recently seen first
        self._engine_init()
        self._joiners: dict[str, int] = {}    # wait_for_node callers per node id
        self._next_prune = 0.0

    @abc.abstractmethod
    async def start(self) -> "Coordinator": ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    # ----- node registry (shared by implementations) -------------------------------------------------
    def _node_seen(self, node_id: str, spec: dict | None = None, **meta: Any) -> NodeInfo:
        info = self.nodes.get(node_id)
        if info is None:
            if len(self.nodes) >= self.max_nodes:
                raise ValueError(f"refused new node {node_id!r}: {len(self.nodes)} nodes known (max_nodes)")
            info = self.nodes[node_id] = NodeInfo(node_id)
        info.last_seen = time.monotonic()
        info.alive = True
        self._by_age[node_id] = info
        self._by_age.move_to_end(node_id)
        if spec is not None:
            info.spec = DeviceSpec.from_dict(spec)
        info.meta.update(meta)
        if info.spec is not None:
            self._node_events.setdefault(node_id, asyncio.Event()).set()
        return info

    def _node_left(self, node_id: str) -> None:
        info = self.nodes.get(node_id)
        if info is not None:
            if info.alive:
                info.departures += 1
            info.alive = False
        self._by_age.pop(node_id, None)
        ev = self._node_events.get(node_id)
        if ev is not None:
            ev.clear()

    def _touch(self, node_id: str) -> None:
        """Cheap "heard from ``node_id``" for replies and heartbeats of a known, alive node."""
        info = self.nodes.get(node_id)
        if info is not None:
            info.last_seen = time.monotonic()
            if info.alive:
                self._by_age.move_to_end(node_id)

    def _meta(self, header: dict[str, Any]) -> dict[str, Any]:
        """The known, typed node fields of a hello/heartbeat header (others dropped and counted)."""
        meta, dropped = node_meta(header)
        self.stats.meta_dropped += dropped
        return meta

    def _forget_node(self, node_id: str) -> None:
        """Drop everything kept about ``node_id`` (implementations extend this for their own maps)."""
        self.nodes.pop(node_id, None)
        self._by_age.pop(node_id, None)
        if not self._joiners.get(node_id):
            self._node_events.pop(node_id, None)

    def _prune(self, now: float) -> None:
        """Forget nodes dead for more than ``forget_after`` s (called by the liveness loop)."""
        for node, info in list(self.nodes.items()):
            if not info.alive and now - info.last_seen > self.forget_after:
                self._forget_node(node)

    # ----- shared shutdown helpers (implementations keep ``_tasks``)
    async def _stop_tasks_and_requests(self) -> None:
        """Cancel the background tasks, then fail and forget every in-flight request."""
        tasks, self._tasks = list(self._tasks), []
        await cancel_all(tasks)
        self._engine_close("coordinator closed")

    async def _liveness_loop(self) -> None:
        """Mark nodes dead once they have been silent for ``liveness`` seconds (runs until cancelled)."""
        period = max(0.02, min(0.25, self.liveness / 4))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            self._liveness_sweep(now)
            if now >= self._next_prune:  # forgetting long-dead ids is rare work: at most once a second
                self._prune(now)
                self._next_prune = now + 1.0

    def _liveness_sweep(self, now: float) -> None:
        """Mark the silent nodes dead: only the stalest are looked at (ordered by last message)."""
        by_age = self._by_age
        while by_age:
            node, info = next(iter(by_age.items()))
            if now - info.last_seen <= self.liveness:
                break
            if info.alive:
                log.info("node %s missed heartbeats for %.1f s: dead", node, now - info.last_seen)
            self._node_left(node)
            by_age.pop(node, None)

    def alive_nodes(self) -> list[str]:
        now = time.monotonic()
        return [n for n, i in self.nodes.items() if i.alive and now - i.last_seen <= self.liveness]

    async def wait_for_node(self, node_id: str, timeout: float = 10.0) -> NodeInfo:
        """Wait until ``node_id`` has joined (sent its hello with a spec)."""
        from pat_runtime.devices.errors import DeviceTimeoutError

        ev = self._node_events.setdefault(node_id, asyncio.Event())
        self._joiners[node_id] = self._joiners.get(node_id, 0) + 1
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except asyncio.TimeoutError:
            raise DeviceTimeoutError(node_id, f"node did not join within {timeout} s") from None
        finally:
            self._joiners[node_id] -= 1
            if not self._joiners[node_id]:
                del self._joiners[node_id]
        return self.nodes[node_id]

    async def wait_for_nodes(self, n: int, timeout: float = 10.0) -> list[str]:
        """Wait until at least ``n`` nodes are alive; return their ids."""
        from pat_runtime.devices.errors import DeviceTimeoutError

        deadline = time.monotonic() + timeout
        while len(self.alive_nodes()) < n:
            if time.monotonic() > deadline:
                raise DeviceTimeoutError("fleet", f"only {len(self.alive_nodes())}/{n} nodes joined within {timeout} s")
            await asyncio.sleep(0.02)
        return self.alive_nodes()

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc):
        await self.close()

    # ----- read-only views and an on-demand sweep (tests, operators) ---------------------------------
    def nodes_by_age(self) -> list[str]:
        """The alive nodes in the order the liveness sweep looks at them: least recently heard from first."""
        return list(self._by_age)

    def sweep_now(self) -> list[str]:
        """Run one liveness sweep now (the background loop runs it every ``liveness / 4`` s, at most 0.25 s);
        return the nodes it marked dead (silent for more than ``liveness`` s), stalest first."""
        before = list(self._by_age)
        self._liveness_sweep(time.monotonic())
        return [n for n in before if n not in self._by_age]

    def registry_sizes(self) -> dict[str, int]:
        """How many entries each per-node table holds (all bounded; monitoring, tests): ``nodes`` (known),
        ``alive`` (in the liveness order), ``events`` (join events kept), ``joiners`` (ids being waited for)."""
        return {"nodes": len(self.nodes), "alive": len(self._by_age), "events": len(self._node_events),
                "joiners": len(self._joiners)}


#: what ``NodeService.handle`` returns: the reply header and its arrays
Reply = tuple[dict[str, Any], Sequence[Any]]


class EdgeFaults(Protocol):
    """Fault injection on an edge's link (drop, delay, corrupt, crash), consulted by every edge transport.

    Set it as :attr:`EdgeTransport.faults`; :class:`pat_runtime.fleet.faults.FaultInjector` implements it for
    every fleet mode (in-process, ZeroMQ, Ray), tests use small ones (:mod:`pat_runtime.testing.faults`).
    """

    #: the node has crashed: it sends nothing more (no replies, heartbeats or bye)
    crashed: bool

    async def serve(self, header: dict[str, Any], arrays: list,
                    handle: Callable[[dict[str, Any], list], Awaitable[Reply]]) -> Reply | None:
        """Run ``handle(header, arrays)`` (or not) with the faults applied; ``None``: no reply is sent
        (the request or its reply was lost, or the node crashed)."""

    def tamper(self, frames: list[bytes], direction: str) -> list[bytes] | None:
        """The frames of a ``"request"`` as received or a ``"reply"`` as sent, possibly corrupted; ``None``
        drops them. Only transports whose frames carry no checksum of their own call it (in-process)."""


class EdgeTransport(abc.ABC):
    """Edge-side endpoint: announces the node, heartbeats, serves requests with a NodeService.

    Every request goes through :meth:`handle_request`, where the one fault-injection hook, :attr:`faults`,
    is applied (nothing is injected while it is ``None``, the default).
    """

    #: fault injection for this edge (:class:`EdgeFaults`); ``None``: none
    faults: EdgeFaults | None = None

    @abc.abstractmethod
    async def serve(self, service: Any, stop: asyncio.Event) -> None:
        """Serve ``service`` (an :class:`pat_runtime.edge.service.NodeService`) until ``stop`` is set, then say bye."""

    async def handle_request(self, service: Any, header: dict[str, Any], arrays: list) -> Reply | None:
        """``service.handle(header, arrays)`` through :attr:`faults`; ``None``: send no reply."""
        if self.faults is None:
            return await service.handle(header, arrays)
        return await self.faults.serve(header, arrays, service.handle)

    def nowait_for(self, service: Any) -> Callable[[dict[str, Any], list], Any] | None:
        """The service's inline fast path (:func:`nowait_handler`), or None while faults are injected (every
        request must then pass :meth:`handle_request`)."""
        return nowait_handler(service) if self.faults is None else None

    @property
    def silenced(self) -> bool:
        """Has an injected crash silenced this edge (nothing may be sent any more)?"""
        return self.faults is not None and self.faults.crashed


def nowait_handler(service: Any) -> Callable[[dict[str, Any], list], Any] | None:
    """``service.handle_nowait`` if its class defines one, else None.

    ``handle_nowait(header, arrays)`` returns the reply when it can be made without awaiting, else None (the
    transport then awaits ``handle``). A wrapper that only forwards attributes is not given the fast path:
    its ``handle`` must see every request (nor is any service while an edge injects faults:
    :meth:`EdgeTransport.nowait_for`).
    """
    fn = getattr(type(service), "handle_nowait", None)
    return fn.__get__(service) if fn is not None else None
