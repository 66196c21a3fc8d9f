"""Simulated fleets: N edge nodes, each a different unit (own hidden variation), with fault injection.

Faults (drop, latency, jitter, corrupt, crash, restart, slow; all seeded) are described in
:mod:`pat_runtime.fleet.faults`.

``SimFleet`` launches the nodes (in-process virtual nodes on the :mod:`pat_runtime.transport.inproc`
transport, or ZeroMQ nodes in this process) next to a coordinator and a :class:`FleetManager`. Nodes in
other processes or on other machines run as Ray actors: :class:`pat_runtime.fleet.ray_backend.RayFleet`.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from pat_runtime.edge.service import NodeService
from pat_runtime.fleet.manager import FleetManager
from pat_runtime.transport.inproc import InprocCoordinator, InprocEdgeTransport
from pat_runtime.transport.ports import free_port
from pat_runtime.transport.zmq import ZmqCoordinator

from .faults import FaultInjector, FaultPlan, FaultSpec
from .gcpolicy import fleet_gc
from .simdevice import EchoDevice, node_device
from .simfleet_zmq import NodeRunner

log = logging.getLogger(__name__)


@dataclass
class _Node:
    index: int
    node_id: str
    incarnation: int
    injector: FaultInjector       # the node transport's fault hook (``transport.faults``)
    service: NodeService
    transport: Any
    stop: asyncio.Event
    task: asyncio.Task


class SimFleet:
    """``n_nodes`` simulated edge nodes + coordinator + :class:`pat_runtime.fleet.FleetManager`.

    Node ``i`` is called ``{prefix}-{i}`` and runs ``device`` (a ``sim:KIND?..`` URI) as unit ``i``, so
    every node has its own hidden variation; a restarted node is the same unit again. ``timeout`` and
    ``retries`` apply to each request, ``liveness`` is how long a silent node is still considered alive.

    ``transport="inproc"``: virtual nodes on this event loop (:mod:`pat_runtime.transport.inproc`).
    ``transport="zmq"``: a :class:`ZmqCoordinator` on a free loopback port; nodes run in this process
    (see :mod:`pat_runtime.fleet.simfleet_zmq`). Nodes in Ray actors (other processes, other machines):
    :class:`pat_runtime.fleet.ray_backend.RayFleet`, a subclass.

    Use as ``async with SimFleet(16, faults="drop=0.05") as fleet: ...`` (``fleet.manager`` schedules work).

    ``gc_policy`` (default on): while the fleet runs, :func:`pat_runtime.fleet.gcpolicy.fleet_gc` freezes the
    objects alive once the nodes joined and collects garbage in larger, rarer batches (the collector's cost
    otherwise grows with the node count).
    """

    def __init__(self, n_nodes: int, device: str = "sim:circuit", *, faults: FaultSpec | str | None = None,
                 transport: str = "inproc", seed: int = 0,
                 cap: int = 2, timeout: float = 1.0, retries: int = 2, heartbeat: float = 0.25,
                 liveness: float = 1.0, integrity: bool = True, threaded: bool = False, prefix: str = "node",
                 join_timeout: float = 30.0, manager_options: dict[str, Any] | None = None,
                 device_options: dict[str, Any] | None = None, gc_policy: bool = True):
        if n_nodes < 1:
            raise ValueError(f"a fleet needs at least one node, got {n_nodes}")
        if transport not in ("inproc", "zmq"):
            raise ValueError(f"transport must be 'inproc' or 'zmq', got {transport!r}")
        self.n, self.device, self.seed = int(n_nodes), device, int(seed)
        self.faults = faults if isinstance(faults, FaultSpec) else FaultSpec.parse(faults)
        if self.faults.corrupt and transport != "inproc":
            raise ValueError("corrupt= is only injected on the inproc transport (TCP checksums ZeroMQ frames)")
        self.plan = FaultPlan(self.faults, self.n)
        self.transport = transport
        self.cap, self.timeout, self.retries = cap, timeout, retries
        self.heartbeat, self.liveness, self.integrity, self.threaded = heartbeat, liveness, integrity, threaded
        self.join_timeout = join_timeout
        self.manager_options = dict(manager_options or {})
        self.device_options = dict(device_options or {})
        width = len(str(self.n - 1))
        self.node_ids = [f"{prefix}-{i:0{width}d}" for i in range(self.n)]
        self.nodes: dict[str, _Node] = {}
        self.coordinator = None
        self.manager = None
        self.url: str | None = None
        self._runner = None           # zmq, in-process nodes
        self._procs = None            # zmq, nodes elsewhere (RayFleet: a RayNodeGroup)
        self._restarts: set[asyncio.Task] = set()
        self.crashes: list[tuple[float, str]] = []
        self.restarts: list[tuple[float, str]] = []
        self.gc_policy = bool(gc_policy)
        self._gc = contextlib.ExitStack()

    # ----- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> "SimFleet":
        try:
            if self.transport == "inproc":
                self.coordinator = await InprocCoordinator(timeout=self.timeout, retries=self.retries,
                                                           liveness=self.liveness,
                                                           integrity=self.integrity).start()
                for i in range(self.n):
                    await self._launch(i, 0)
            else:
                await self._start_zmq()
            self.manager = FleetManager(self.coordinator, cap=self.cap, **self.manager_options)
            await self.manager.start()
            await self.manager.wait_for_nodes(self.n, timeout=self.join_timeout)
            if self.gc_policy:
                self._gc.enter_context(fleet_gc())
        except BaseException:
            await self.close()
            raise
        return self

    async def _start_zmq(self) -> None:
        self.url = f"tcp://127.0.0.1:{free_port()}"
        self.coordinator = await ZmqCoordinator(self.url, timeout=self.timeout, retries=self.retries,
                                                liveness=self.liveness, max_inflight=max(8, self.cap)).start()
        await self._start_nodes()

    async def _start_nodes(self) -> None:
        """Start the ZeroMQ nodes (here: on this event loop; RayFleet: in Ray actors)."""
        self._runner = NodeRunner(**self._node_config(list(range(self.n))))
        await self._runner.start()

    def _node_config(self, indices: list[int], incarnation: int = 0) -> dict[str, Any]:
        return {"url": self.url, "indices": indices, "node_ids": [self.node_ids[i] for i in indices],
                "device": self.device, "seed": self.seed, "faults": str(self.faults), "n_total": self.n,
                "heartbeat": self.heartbeat, "incarnation": incarnation, "threaded": self.threaded,
                "device_options": self.device_options}

    async def _launch(self, index: int, incarnation: int) -> _Node:
        node_id = self.node_ids[index]
        dev = node_device(self.device, index, self.seed, threaded=self.threaded, **self.device_options)
        await dev.connect()
        injector = self.plan.injector(index, incarnation, on_crash=lambda: self._on_crash(node_id))
        transport = InprocEdgeTransport(self.coordinator, node_id, heartbeat=self.heartbeat, faults=injector)
        service = NodeService(dev, node_id)
        stop = asyncio.Event()
        task = asyncio.create_task(transport.serve(service, stop), name=f"node-{node_id}")
        node = self.nodes[node_id] = _Node(index, node_id, incarnation, injector, service, transport, stop, task)
        return node

    def _on_crash(self, node_id: str) -> None:
        node = self.nodes[node_id]
        node.transport.crash()
        self.crashes.append((time.monotonic(), node_id))
        log.info("fault injection: node %s crashed", node_id)
        if self.faults.restart >= 0:
            t = asyncio.create_task(self._restart_later(node_id, self.faults.restart))
            self._restarts.add(t)
            t.add_done_callback(self._restarts.discard)

    async def _restart_later(self, node_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.restart(node_id)

    async def crash(self, node_id: str) -> None:
        """Kill ``node_id`` now: it stops answering without saying bye (RayFleet: its actor is killed)."""
        if node_id not in self.node_ids:
            raise KeyError(f"no node {node_id!r} in this fleet")
        if self._procs is not None:
            await self._procs.kill_node(node_id)
            return
        if self._runner is not None:
            node = self._runner.nodes[node_id]
            node["injector"].crash()
            await asyncio.gather(node["task"], return_exceptions=True)
            return
        node = self.nodes[node_id]
        node.injector.crash()
        await asyncio.gather(node.task, return_exceptions=True)

    async def restart(self, node_id: str) -> None:
        """Bring ``node_id`` back (same unit, new session); stops the old incarnation first (inproc)."""
        if self.transport != "inproc":
            raise NotImplementedError("on ZeroMQ, restarts follow FaultSpec.restart")
        old = self.nodes[node_id]
        old.stop.set()
        old.transport.crash()
        await asyncio.gather(old.task, return_exceptions=True)
        await self._launch(old.index, old.incarnation + 1)
        self.restarts.append((time.monotonic(), node_id))

    async def close(self) -> None:
        self._gc.close()
        for t in list(self._restarts):
            t.cancel()
        await asyncio.gather(*self._restarts, return_exceptions=True)
        if self.manager is not None:
            await self.manager.close()
        for node in self.nodes.values():
            node.stop.set()
        await asyncio.gather(*(n.task for n in self.nodes.values()), return_exceptions=True)
        if self._runner is not None:
            await self._runner.stop()
        if self._procs is not None:
            await self._procs.close()
        if self.coordinator is not None:
            await self.coordinator.close()

    async def __aenter__(self) -> "SimFleet":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # ----- inspection -----------------------------------------------------------------------------------
    def crashed(self) -> list[str]:
        """Nodes whose current incarnation has crashed."""
        if self._procs is not None:
            return self._procs.crashed()
        if self._runner is not None:
            return [n for n, node in self._runner.nodes.items() if node["injector"].crashed]
        return [n for n, node in self.nodes.items() if node.injector.crashed]

    def fault_counters(self) -> dict[str, int]:
        """Fault counts summed over nodes (RayFleet: over live actors and cleanly stopped ones)."""
        if self._procs is not None:
            total = self._procs.counters()
        elif self._runner is not None:
            total = self._runner.counters()
            total["crashes"], total["restarts"] = len(self._runner.crashes), len(self._runner.restarts)
            return total
        else:
            total = {}
            for node in self.nodes.values():
                for k, v in node.injector.counters.items():
                    total[k] = total.get(k, 0) + v
        total["crashes"] = len(self.crashes)
        total["restarts"] = len(self.restarts)
        return total

    def node_busy(self) -> dict[str, float]:
        """Seconds each node in this process spent handling requests (current incarnation; ``{}`` for
        nodes in other processes)."""
        if self._runner is not None:
            return {n: node["injector"].busy for n, node in self._runner.nodes.items()}
        return {n: node.injector.busy for n, node in self.nodes.items()}


__all__ = ["EchoDevice", "FaultInjector", "FaultPlan", "FaultSpec", "SimFleet", "node_device"]
