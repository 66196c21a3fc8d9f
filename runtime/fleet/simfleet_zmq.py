"""Simulated fleet nodes on ZeroMQ: in this process, or in Ray actors (one or many nodes each).

Each node is a :class:`pat_runtime.edge.service.NodeService` on a :class:`pat_runtime.transport.zmq.ZmqEdgeTransport`
(one DEALER per node, routing id = node id) whose fault hook (``faults``) is the node's
:class:`pat_runtime.fleet.faults.FaultInjector`:

* a dropped reply: the hook returns ``None`` and the edge sends nothing;
* a crash: the node goes silent at once (no replies, no heartbeats, no bye). A node alone in its
  process (``exit_on_crash``) ends the process with ``os._exit(3)`` (a real process death; a Ray actor is
  then restarted by Ray, see :mod:`pat_runtime.fleet.ray_backend`); a node sharing a process is silenced and
  its socket closed. ``restart >= 0`` brings it back (same unit) after that many seconds.
* frame corruption is not injected on ZeroMQ: TCP already checksums every segment (use inproc).

Nodes serve one request at a time (``max_concurrency=1``), like a physical device. All nodes of a runner
share one ZeroMQ context (one I/O thread, not one per node), so thousands of nodes fit in one process.
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import zmq
import zmq.asyncio

from pat_runtime.edge.service import NodeService
from pat_runtime.transport.zmq import ZmqEdgeTransport

from .faults import FaultPlan, FaultSpec
from .simdevice import node_device

log = logging.getLogger(__name__)

class NodeRunner:
    """Runs fleet nodes ``indices`` (ZeroMQ edges to ``url``) on the current event loop."""

    def __init__(self, url: str, indices: list[int], node_ids: list[str], device: str, *, seed: int = 0,
                 faults: FaultSpec | str | None = None, n_total: int | None = None, heartbeat: float = 0.25,
                 incarnation: int = 0, exit_on_crash: bool = False, threaded: bool = False,
                 device_options: dict[str, Any] | None = None):
        self.url, self.indices, self.node_ids, self.device = url, list(indices), list(node_ids), device
        self.seed, self.heartbeat, self.incarnation = seed, heartbeat, incarnation
        self.faults = faults if isinstance(faults, FaultSpec) else FaultSpec.parse(faults)
        if self.faults.corrupt:
            raise ValueError("corrupt= is not injected on ZeroMQ (TCP checksums frames); use the inproc transport")
        self.plan = FaultPlan(self.faults, n_total or (max(indices) + 1))
        self.exit_on_crash, self.threaded = exit_on_crash, threaded
        self.device_options = dict(device_options or {})
        self.nodes: dict[str, dict[str, Any]] = {}
        self.crashes: list[str] = []
        self.restarts: list[str] = []
        self._restart_tasks: set[asyncio.Task] = set()
        self._retired: list[dict[str, int]] = []      # counters of crashed incarnations
        self._ctx: zmq.asyncio.Context | None = None   # shared by this runner's nodes

    async def launch(self, index: int, incarnation: int) -> None:
        node_id = self.node_ids[self.indices.index(index)]
        dev = node_device(self.device, index, self.seed, threaded=self.threaded, **self.device_options)
        await dev.connect()
        injector = self.plan.injector(index, incarnation, on_crash=lambda: self._crashed(node_id))
        edge = ZmqEdgeTransport(self.url, node_id, heartbeat=self.heartbeat, max_concurrency=1, drain=0.2,
                                context=self._ctx, faults=injector)   # a crashed injector silences the edge
        stop = asyncio.Event()
        service = NodeService(dev, node_id)
        task = asyncio.create_task(edge.serve(service, stop), name=f"zmq-node {node_id}")
        self.nodes[node_id] = {"index": index, "incarnation": incarnation, "edge": edge, "stop": stop,
                               "task": task, "injector": injector, "service": service}

    def _crashed(self, node_id: str) -> None:
        node = self.nodes[node_id]
        self.crashes.append(node_id)
        if self.exit_on_crash:
            os._exit(3)                 # the process dies: no bye, sockets gone
        node["stop"].set()              # the edge is silent already (its fault hook has crashed): no bye
        if self.faults.restart >= 0:
            t = asyncio.create_task(self._restart_later(node_id))
            self._restart_tasks.add(t)
            t.add_done_callback(self._restart_tasks.discard)

    async def _restart_later(self, node_id: str) -> None:
        await asyncio.sleep(self.faults.restart)
        old = self.nodes[node_id]
        await asyncio.gather(old["task"], return_exceptions=True)
        self._retired.append(dict(old["injector"].counters))
        await self.launch(old["index"], old["incarnation"] + 1)
        self.restarts.append(node_id)

    async def start(self) -> None:
        self._ctx = zmq.asyncio.Context()
        self._ctx.set(zmq.MAX_SOCKETS, max(1024, 2 * len(self.indices) + 64))
        for i in self.indices:
            await self.launch(i, self.incarnation)

    async def stop(self) -> None:
        for t in list(self._restart_tasks):
            t.cancel()
        await asyncio.gather(*self._restart_tasks, return_exceptions=True)
        for node in self.nodes.values():
            node["stop"].set()
        await asyncio.gather(*(n["task"] for n in self.nodes.values()), return_exceptions=True)
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def counters(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for c in [*self._retired, *(n["injector"].counters for n in self.nodes.values())]:
            for k, v in c.items():
                total[k] = total.get(k, 0) + v
        return total
