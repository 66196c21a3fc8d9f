"""FleetManager: node registry, health and metered requests on top of any :class:`Coordinator`.

The coordinator (inproc, ZeroMQ, MQTT) tracks joins (hello), heartbeats and leaves (bye); the manager
turns that into a per-node state machine used by the scheduler::

    joined --(heartbeats stop for coordinator.liveness s, or bye)--> dead --(hello / heartbeat)--> alive
    alive  --(max_failures consecutive timeouts / connection errors)--> evicted
    evicted --(after a back-off, a ping probe succeeds)--> alive      (back-off doubles on each eviction)

A node that restarts (a new ``session`` in its hello, or else a new ``pid``) is treated as a fresh join:
failures are forgotten.
Every request made through :meth:`FleetManager.call` is metered (latency histogram, busy time, counters;
see :mod:`pat_runtime.fleet.metrics`). Listeners registered with :meth:`subscribe` are called on every
membership change (join, leave, eviction, re-admission) so schedulers can react at once.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from pat_runtime.devices.base import Device
from pat_runtime.devices.codes import ErrorCode
from pat_runtime.devices.errors import DeviceConnectionError, DeviceTimeoutError, RemoteDeviceError
from pat_runtime.transport.remote import check_finite
from pat_runtime.devices.spec import DeviceSpec
from pat_runtime.transport.base import Coordinator
from pat_runtime.wire import MessageType

from .metrics import FleetMetrics

log = logging.getLogger(__name__)

ALIVE, EVICTED, DEAD = "alive", "evicted", "dead"


@dataclass
class FleetNode:
    """The manager's view of one node."""

    node_id: str
    spec: DeviceSpec | None = None
    state: str = ALIVE
    session: Any = None
    cap: int = 2
    failures: int = 0          # consecutive failed requests
    evictions: int = 0
    evicted_until: float = 0.0
    joins: int = 1
    probing: bool = False
    events: list[tuple[float, str]] = field(default_factory=list)

    @property
    def available(self) -> bool:
        return self.state == ALIVE


class FleetManager:
    """Registry + health + metered requests for the nodes of one coordinator.

    ``cap`` is the default per-node in-flight cap (used by the scheduler), ``timeout``/``retries`` are passed
    to every request, ``max_failures`` consecutive failures evict a node for ``eviction`` s (doubling).
    """

    def __init__(self, coordinator: Coordinator, *, cap: int = 2, timeout: float | None = None,
                 retries: int | None = None, max_failures: int = 2, eviction: float = 0.5,
                 probe_timeout: float = 0.5, health_interval: float = 0.05):
        if cap < 1:
            raise ValueError(f"cap must be >= 1, got {cap}")
        self.coordinator = coordinator
        self.cap, self.timeout, self.retries = int(cap), timeout, retries
        self.max_failures, self.eviction = int(max_failures), float(eviction)
        self.probe_timeout, self.health_interval = float(probe_timeout), float(health_interval)
        self.nodes: dict[str, FleetNode] = {}
        self.metrics = FleetMetrics()
        self.version = 0
        self._listeners: list[Callable[[str, str], None]] = []
        self._task: asyncio.Task | None = None
        self._probes: set[asyncio.Task] = set()

    # ----- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> "FleetManager":
        self.refresh()
        if self._task is None:
            self._task = asyncio.create_task(self._health_loop(), name="fleet-health")
        return self

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._probes) if t is not None]
        self._task = None
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._probes.clear()

    async def __aenter__(self) -> "FleetManager":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # ----- membership -----------------------------------------------------------------------------------
    def subscribe(self, listener: Callable[[str, str], None]) -> Callable[[], None]:
        """Call ``listener(node_id, event)`` on each membership change; returns an unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _event(self, node: FleetNode, event: str) -> None:
        node.events.append((time.monotonic(), event))
        del node.events[:-32]
        self.version += 1
        log.info("node %s: %s", node.node_id, event)
        for fn in list(self._listeners):
            fn(node.node_id, event)

    def refresh(self) -> None:
        """Synchronise with the coordinator's registry (joins, restarts, leaves, liveness)."""
        alive = set(self.coordinator.alive_nodes())
        for nid, info in list(self.coordinator.nodes.items()):
            node = self.nodes.get(nid)
            if node is None:
                if nid not in alive or info.spec is None:
                    continue
                node = self.nodes[nid] = FleetNode(nid, spec=info.spec, session=_session(info.meta), cap=self.cap)
                self._event(node, "join")
                continue
            session = _session(info.meta)
            if nid in alive and session is not None and session != node.session:
                node.session, node.spec = session, info.spec or node.spec
                node.failures, node.evicted_until, node.state = 0, 0.0, ALIVE
                node.joins += 1
                self._event(node, "rejoin")
            elif nid not in alive and node.state != DEAD:
                node.state = DEAD
                self._event(node, "dead")
            elif nid in alive and node.state == DEAD:
                node.state, node.failures = ALIVE, 0
                self._event(node, "alive")

    async def _health_loop(self) -> None:
        while True:
            self.refresh()
            now = time.monotonic()
            for node in self.nodes.values():
                if node.state == EVICTED and now >= node.evicted_until and not node.probing:
                    node.probing = True
                    t = asyncio.create_task(self._probe(node))
                    self._probes.add(t)
                    t.add_done_callback(self._probes.discard)
            await asyncio.sleep(self.health_interval)

    async def _probe(self, node: FleetNode) -> None:
        try:
            await self.coordinator.request(node.node_id, MessageType.PING, timeout=self.probe_timeout, retries=0)
        except (DeviceTimeoutError, DeviceConnectionError, RemoteDeviceError):
            if node.state == EVICTED:
                node.evictions += 1
                node.evicted_until = time.monotonic() + self.eviction * 2 ** min(node.evictions - 1, 6)
                node.events.append((time.monotonic(), "probe failed"))
            return
        finally:
            node.probing = False
        if node.state == EVICTED:
            node.state, node.failures = ALIVE, 0
            self._event(node, "readmitted")

    def evict(self, node_id: str, reason: str = "evicted") -> None:
        node = self.nodes[node_id]
        if node.state != ALIVE:
            return
        node.state = EVICTED
        node.evictions += 1
        node.evicted_until = time.monotonic() + self.eviction * 2 ** min(node.evictions - 1, 6)
        self._event(node, reason)

    def available(self) -> list[str]:
        """Ids of nodes that may be given work now."""
        return [n for n, node in self.nodes.items() if node.state == ALIVE]

    def is_available(self, node_id: str) -> bool:
        node = self.nodes.get(node_id)
        return node is not None and node.state == ALIVE

    def set_cap(self, node_id: str, cap: int) -> None:
        if cap < 1:
            raise ValueError(f"cap must be >= 1, got {cap}")
        self.nodes[node_id].cap = int(cap)
        self.version += 1

    async def wait_for_nodes(self, n: int, timeout: float = 10.0) -> list[str]:
        """Wait until at least ``n`` nodes are available; return their ids."""
        deadline = time.monotonic() + timeout
        while True:
            self.refresh()
            ids = self.available()
            if len(ids) >= n:
                return ids
            if time.monotonic() > deadline:
                raise DeviceTimeoutError("fleet", f"only {len(ids)}/{n} nodes available within {timeout} s")
            await asyncio.sleep(0.02)

    # ----- requests -------------------------------------------------------------------------------------
    async def call(self, node_id: str, type: str, arrays: Sequence[np.ndarray] = (), *,
                   timeout: float | None = None, retries: int | None = None, samples: int = 0,
                   **fields: Any) -> tuple[dict[str, Any], list[np.ndarray]]:
        """``coordinator.request`` with metering and failure accounting (evicts after repeated failures)."""
        m = self.metrics.node(node_id)
        t0 = m.begin()
        try:
            out = await self.coordinator.request(
                node_id, type, arrays, timeout=self.timeout if timeout is None else timeout,
                retries=self.retries if retries is None else retries, **fields)
        except (DeviceTimeoutError, DeviceConnectionError) as e:
            m.end(t0, "timeout" if isinstance(e, DeviceTimeoutError) else "error")
            self._failed(node_id)
            raise
        except asyncio.CancelledError:
            m.end(t0, "cancelled")
            raise
        except BaseException:
            m.end(t0, "error")
            raise
        m.end(t0, "ok", samples=samples)
        node = self.nodes.get(node_id)
        if node is not None:
            node.failures = 0
        return out

    def _failed(self, node_id: str) -> None:
        node = self.nodes.get(node_id)
        if node is None:
            return
        node.failures += 1
        if node.failures >= self.max_failures:
            self.evict(node_id, f"evicted after {node.failures} failures")

    async def apply(self, node_id: str, x: np.ndarray, theta: np.ndarray, *,
                    timeout: float | None = None) -> np.ndarray:
        """One physical measurement on ``node_id``: ``x[B, in]``, ``theta[P]`` -> ``y[B, out]``."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        _, out = await self.call(node_id, MessageType.APPLY, [x, np.ascontiguousarray(theta, np.float32)],
                                 timeout=timeout, samples=int(x.shape[0]))
        if len(out) != 1:
            raise RemoteDeviceError(node_id, f"apply reply has {len(out)} arrays, expected 1", ErrorCode.BAD_REPLY)
        return check_finite(node_id, out[0])

    async def apply_many(self, node_id: str, xs: np.ndarray, thetas: np.ndarray, *,
                         timeout: float | None = None) -> np.ndarray:
        """Several shards in ONE message: ``xs[S, B, in]``, ``thetas[S, P]`` -> ``ys[S, B, out]``.

        Shard ``s`` is ``apply(xs[s], thetas[s])`` (e.g. the channels of a PNN layer, or several data shards
        with the same θ). The node must announce the ``apply_many`` handler (every NodeService does).
        """
        xs = np.ascontiguousarray(xs, dtype=np.float32)
        _, out = await self.call(node_id, MessageType.APPLY_MANY, [xs, np.ascontiguousarray(thetas, np.float32)],
                                 timeout=timeout, samples=int(xs.shape[0] * xs.shape[1]))
        if len(out) != 1 or out[0].shape[:2] != xs.shape[:2]:
            raise RemoteDeviceError(node_id, f"apply_many reply is {[list(o.shape) for o in out]}, expected "
                                             f"[{xs.shape[0]}, {xs.shape[1]}, out]", ErrorCode.BAD_REPLY)
        return check_finite(node_id, out[0])

    def status(self) -> dict[str, dict[str, Any]]:
        return {n: {"state": v.state, "joins": v.joins, "evictions": v.evictions, "failures": v.failures,
                    "cap": v.cap} for n, v in self.nodes.items()}


class FleetDevice(Device):
    """Node ``node_id`` of a fleet as a :class:`pat_runtime.devices.base.Device` (requests metered by the manager).

    Validation of shapes and safe ranges happens here, before anything is sent.
    """

    def __init__(self, manager: FleetManager, node_id: str, timeout: float | None = None):
        super().__init__(node_id)
        self.manager, self.node_id, self.timeout = manager, node_id, timeout

    async def _connect(self, timeout: float) -> None:
        node = self.manager.nodes.get(self.node_id)
        if node is None or node.spec is None:
            await self.manager.coordinator.wait_for_node(self.node_id, timeout=timeout)
            self.manager.refresh()
            node = self.manager.nodes[self.node_id]
        self._spec = node.spec

    async def _apply(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        return await self.manager.apply(self.node_id, x, theta, timeout=self.timeout)


def _session(meta: dict[str, Any]) -> Any:
    """What identifies one run of a node: its hello's ``session`` (inproc) or process id (ZeroMQ)."""
    return meta.get("session", meta.get("pid"))
