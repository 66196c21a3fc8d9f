"""Simulated fleets on a Ray cluster: nodes in Ray actors, the data path on the project's ZeroMQ protocol.

    async with RayFleet(64, "echo:?latency=0.01", address="auto", nodes_per_actor=16) as fleet:
        await fleet.manager.apply(fleet.node_ids[0], x, theta)

or ``pat fleet --backend ray [--address HOST:PORT] [--nodes-per-actor K]``.

* The coordinator (a :class:`~pat_runtime.transport.zmq.ZmqCoordinator`), the :class:`FleetManager`, the
  scheduler and the exactly-once ledger run in this process, exactly as for a local fleet.
* Ray places :class:`NodeActor` actors on the cluster with declared resources (``num_cpus`` per actor,
  optional ``memory`` and custom ``resources``; scheduling strategy ``SPREAD`` by default). Each actor
  multiplexes ``nodes_per_actor`` virtual nodes (as Flower multiplexes virtual clients): every virtual
  node is the real edge stack (:class:`pat_runtime.edge.service.NodeService` on a ZeroMQ DEALER whose routing id is
  the node id, see :mod:`pat_runtime.fleet.simfleet_zmq`) on the actor's own event loop, and connects to the coordinator.
* Restarts are Ray's (``max_restarts``): an actor whose process or whole machine dies is started again by
  Ray, on another node when its node is gone. Its nodes come back as the same units (same hidden
  variation), with the next incarnation (a crash fault does not repeat), say hello and rejoin the
  :class:`FleetManager`. Requests that were in flight on the dead actor time out and the scheduler
  reassigns them, so every sample is still applied exactly once.
* Fault injection (:class:`pat_runtime.fleet.simfleet.FaultSpec`) runs inside the actors. A crash fault on a node that is
  alone in its actor with ``restart >= 0`` ends the actor process (``os._exit``) and Ray restarts it (the
  ``restart`` delay is then Ray's restart time); otherwise the node goes silent inside its actor and
  comes back after ``restart`` seconds (``restart < 0``: never).

Ray is an optional extra (``pip install 'pat-runtime[ray]'``); without it this module imports, and
:class:`RayFleet` raises a clear error when started.
"""
from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from pat_runtime.fleet.simfleet import SimFleet
from pat_runtime.fleet.simfleet_zmq import NodeRunner

try:  # optional extra
    import ray
except ImportError:  # pragma: no cover - exercised where Ray is not installed
    ray = None

log = logging.getLogger(__name__)

RAY_MISSING = "the Ray backend needs Ray: pip install 'pat-runtime[ray]' (or pip install 'ray>=2.40')"


def ray_available() -> bool:
    return ray is not None


@dataclass
class RayOptions:
    """Where and how node actors run.

    ``address``: a running cluster (``"auto"``, ``"HOST:PORT"``), or ``None`` to start a private local Ray
    (shut down with the fleet). ``nodes_per_actor``: virtual nodes multiplexed per actor. ``num_cpus``,
    ``memory`` (bytes) and ``resources`` are declared per actor, so Ray packs actors onto nodes that
    have them. ``max_restarts``: how often Ray restarts an actor that died (-1: always).
    ``strategy``: Ray scheduling strategy (``"SPREAD"`` or ``"DEFAULT"``). ``init``: extra ``ray.init``
    keyword arguments (e.g. ``num_cpus``, ``object_store_memory`` for a private local Ray).
    ``watch_interval``: seconds between looks at the actors (restarts, fault counters).
    """

    address: str | None = None
    nodes_per_actor: int = 1
    num_cpus: float = 0.25
    memory: int | None = None
    resources: dict[str, float] = field(default_factory=dict)
    max_restarts: int = -1
    strategy: str = "SPREAD"
    init: dict[str, Any] = field(default_factory=dict)
    watch_interval: float = 0.2      # s between looks at the actors (restarts, fault counters)

    def __post_init__(self):
        if self.nodes_per_actor < 1:
            raise ValueError(f"nodes_per_actor must be >= 1, got {self.nodes_per_actor}")
        if self.num_cpus < 0:
            raise ValueError(f"num_cpus must be >= 0, got {self.num_cpus}")


class NodeActor:
    """A Ray actor hosting fleet nodes ``cfg["indices"]`` (a :class:`NodeRunner` on its own loop thread).

    The nodes start in ``__init__``, so an actor that Ray restarts serves again without being asked; it
    then runs the next incarnation (``was_current_actor_reconstructed``), so a crash fault does not repeat.
    """

    def __init__(self, cfg: dict[str, Any]):
        import torch

        torch.set_num_threads(1)
        ctx = ray.get_runtime_context()
        with warnings.catch_warnings():     # Ray 2.x: a deprecation warning from inside this property
            warnings.simplefilter("ignore", DeprecationWarning)
            self.reconstructed = bool(ctx.was_current_actor_reconstructed)
        self.ray_node = ctx.get_node_id()
        cfg = dict(cfg)
        if self.reconstructed:
            cfg["incarnation"] = int(cfg.get("incarnation", 0)) + 1
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fleet-nodes", daemon=True)
        self.thread.start()
        self.runner = NodeRunner(**cfg)
        self._call(self.runner.start())

    def _call(self, coro, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _snapshot(self) -> dict[str, Any]:
        r = self.runner
        return {"pid": os.getpid(), "ray_node": self.ray_node, "reconstructed": self.reconstructed,
                "node_ids": list(r.node_ids), "counters": r.counters(),
                "crashed": [n for n, node in r.nodes.items() if node["injector"].crashed],
                "crashes": list(r.crashes), "restarts": list(r.restarts)}

    def info(self) -> dict[str, Any]:
        """Where this actor runs and what its nodes did (pid, Ray node id, fault counters, crashes)."""
        return self._call(self._snapshot())

    def stop(self) -> dict[str, Any]:
        """Stop every node cleanly (each says bye) and return the final :meth:`info`."""
        self._call(self.runner.stop())
        out = self._call(self._snapshot())
        self.loop.call_soon_threadsafe(self.loop.stop)
        return out


@dataclass
class _Actor:
    indices: list[int]
    node_ids: list[str]
    handle: Any
    pid: int | None = None
    ray_node: str | None = None
    incarnations: int = 1
    dead_since: float | None = None        # killed (or found dead) and not seen again yet
    killed_pid: int | None = None          # a late answer from this pid is from the incarnation we killed
    info: dict[str, Any] = field(default_factory=dict)


class RayNodeGroup:
    """The node actors of one :class:`RayFleet`: start, watch (restarts), kill, stop."""

    def __init__(self, fleet: SimFleet, node_config: Callable[[list[int], int], dict[str, Any]],
                 options: RayOptions, grace: float = 10.0):
        if ray is None:
            raise RuntimeError(RAY_MISSING)
        self.fleet, self.node_config, self.opt = fleet, node_config, options
        self.poll, self.grace = options.watch_interval, grace
        self.actors: list[_Actor] = []
        self._owns_ray = False
        self._watcher: asyncio.Task | None = None
        self._final: list[dict[str, Any]] = []       # reports of cleanly stopped actors
        self._lost: list[dict[str, int]] = []        # last known counters of actor incarnations that died

    # ----- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        if not ray.is_initialized():
            init = {"include_dashboard": False, "logging_level": logging.WARNING, **self.opt.init}
            if self.opt.address is None:
                init.setdefault("object_store_memory", 100 * 1024 ** 2)
            await asyncio.to_thread(ray.init, address=self.opt.address, **init)
            self._owns_ray = True
        fleet, opt = self.fleet, self.opt
        n_actors = math.ceil(fleet.n / opt.nodes_per_actor)
        groups = [list(map(int, g)) for g in np.array_split(np.arange(fleet.n), n_actors)]
        remote = ray.remote(NodeActor)
        kw: dict[str, Any] = {"num_cpus": opt.num_cpus, "max_restarts": opt.max_restarts,
                              "scheduling_strategy": opt.strategy}
        if opt.memory:
            kw["memory"] = int(opt.memory)
        if opt.resources:
            kw["resources"] = dict(opt.resources)
        for g in groups:
            cfg = self.node_config(g, 0)
            cfg["exit_on_crash"] = len(g) == 1 and fleet.faults.restart >= 0
            handle = remote.options(name=None, **kw).remote(cfg)
            self.actors.append(_Actor(g, [fleet.node_ids[i] for i in g], handle))
        # the actors' __init__ started their nodes: wait for every actor (fails fast if one cannot start)
        infos = await asyncio.wait_for(asyncio.gather(*(a.handle.info.remote() for a in self.actors)),
                                       fleet.join_timeout)
        for a, info in zip(self.actors, infos):
            a.pid, a.ray_node, a.info = info["pid"], info["ray_node"], info
        self._watcher = asyncio.create_task(self._watch(), name="ray-fleet-watcher")

    async def _watch(self) -> None:
        """Notice restarted actors (new pid): their nodes crashed and came back."""
        while True:
            await asyncio.sleep(self.poll)
            await asyncio.gather(*(self._look(a) for a in self.actors))

    async def _look(self, a: _Actor) -> None:
        try:
            info = await asyncio.wait_for(a.handle.info.remote(), max(self.poll * 5, 1.0))
        except (asyncio.TimeoutError, Exception) as e:  # dead, restarting, or the cluster lost its node
            if a.dead_since is None and not isinstance(e, asyncio.TimeoutError):
                self._died(a, f"{type(e).__name__}")
            return
        if info["pid"] == a.killed_pid:         # the killed incarnation answered just before it died
            return
        if info["pid"] != a.pid:                # Ray restarted it (perhaps on another node)
            if a.dead_since is None:
                self._died(a, "restarted")
            a.incarnations += 1
            a.pid, a.ray_node = info["pid"], info["ray_node"]
            now = time.monotonic()
            self.fleet.restarts.extend((now, n) for n in a.node_ids)
            log.info("ray fleet: actor of %s..%s is back (pid %s, node %s)", a.node_ids[0], a.node_ids[-1],
                     a.pid, a.ray_node)
        a.dead_since = None
        a.info = info

    def _died(self, a: _Actor, why: str) -> None:
        now = time.monotonic()
        a.dead_since = now
        self._lost.append(dict(a.info.get("counters", {})))
        a.info = {}
        self.fleet.crashes.extend((now, n) for n in a.node_ids)
        log.info("ray fleet: actor of %s..%s died (%s)", a.node_ids[0], a.node_ids[-1], why)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        if ray is None or not ray.is_initialized():
            return
        finals = await asyncio.gather(*(asyncio.wait_for(a.handle.stop.remote(), self.grace)
                                        for a in self.actors), return_exceptions=True)
        self._final = [f for f in finals if isinstance(f, dict)]
        for a in self.actors:
            try:
                ray.kill(a.handle, no_restart=True)
            except Exception:  # already gone
                pass
        if self._owns_ray:
            await asyncio.to_thread(ray.shutdown)
            self._owns_ray = False

    # ----- faults -----------------------------------------------------------------------------------------
    def actor_of(self, node_id: str) -> _Actor:
        return next(a for a in self.actors if node_id in a.node_ids)

    async def kill_node(self, node_id: str) -> None:
        """Kill the actor hosting ``node_id`` (and every node it hosts); Ray restarts it (max_restarts)."""
        await self.kill_actor(self.actors.index(self.actor_of(node_id)))

    async def kill_actor(self, k: int) -> None:
        a = self.actors[k]
        if a.dead_since is None:
            self._died(a, "killed")
        a.killed_pid = a.pid
        ray.kill(a.handle, no_restart=False)

    # ----- inspection -------------------------------------------------------------------------------------
    def placement(self) -> dict[str, str]:
        """node id -> Ray node id of its actor (as last seen)."""
        return {n: a.ray_node for a in self.actors for n in a.node_ids}

    def crashed(self) -> list[str]:
        out = [n for a in self.actors if a.dead_since is not None for n in a.node_ids]
        out += [n for a in self.actors if a.dead_since is None for n in a.info.get("crashed", [])]
        return out

    def counters(self) -> dict[str, int]:
        reports = [r["counters"] for r in self._final] if self._final else \
            [a.info.get("counters", {}) for a in self.actors]
        total: dict[str, int] = {}
        for c in [*self._lost, *reports]:
            for k, v in c.items():
                total[k] = total.get(k, 0) + v
        return total


class RayFleet(SimFleet):
    """A :class:`SimFleet` whose nodes run in Ray actors (ZeroMQ data path; see the module docstring).

    ``host``: the address the coordinator binds and the actors connect to (loopback by default; on a real
    multi-machine cluster an address the other machines reach, with CURVE on an untrusted network).
    Other keyword arguments: :class:`SimFleet` (``transport`` is always ``"zmq"``) and
    :class:`RayOptions` (``address``, ``nodes_per_actor``, ``num_cpus``, ``memory``, ``resources``,
    ``max_restarts``, ``strategy``, ``init``, ``watch_interval``).
    """

    def __init__(self, n_nodes: int, device: str = "sim:circuit", *, host: str = "127.0.0.1",
                 ray_options: RayOptions | None = None, **kw: Any):
        opt_fields = set(RayOptions.__dataclass_fields__)
        ray_kw = {k: kw.pop(k) for k in list(kw) if k in opt_fields}
        if kw.pop("transport", "zmq") != "zmq":
            raise ValueError("Ray fleets use the ZeroMQ transport")
        super().__init__(n_nodes, device, transport="zmq", **kw)
        self.ray_options = ray_options or RayOptions(**ray_kw)
        self.host = host

    async def _start_zmq(self) -> None:
        from pat_runtime.transport.ports import free_port
        from pat_runtime.transport.zmq import ZmqCoordinator

        if ray is None:
            raise RuntimeError(RAY_MISSING)
        self.url = f"tcp://{self.host}:{free_port()}"
        self.coordinator = await ZmqCoordinator(self.url, timeout=self.timeout, retries=self.retries,
                                                liveness=self.liveness, max_inflight=max(8, self.cap)).start()
        self._procs = RayNodeGroup(self, self._node_config, self.ray_options)
        await self._procs.start()

    async def restart(self, node_id: str) -> None:
        """Kill ``node_id``'s actor; Ray starts it again (same units, next incarnation)."""
        await self._procs.kill_node(node_id)

    def actor_of(self, node_id: str) -> "_Actor":
        """The actor that runs ``node_id`` (its ``pid`` changes when Ray restarts it)."""
        if self._procs is None:
            raise RuntimeError("the fleet is not started")
        return self._procs.actor_of(node_id)

    def placement(self) -> dict[str, str]:
        """node id -> Ray node id where its actor runs (as last seen)."""
        return self._procs.placement() if self._procs is not None else {}
