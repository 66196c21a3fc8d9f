"""Child processes of a ZeroMQ :class:`sims.fleet.SimFleet`: start, supervise, kill, restart, stop.

The ``n`` nodes are split into ``processes`` contiguous groups; each group is one child process running
:func:`sims.fleet_zmq.child_main`. A child that hosts a single node *is* that node: a crash fault ends
the process (``os._exit(3)``), :meth:`ProcessGroup.kill_node` SIGKILLs it, and with ``restart >= 0`` the
supervisor starts it again (same unit, next incarnation, so the crash fault does not repeat). Children
are daemonic (they die with the parent) and :meth:`ProcessGroup.close` SIGTERMs, joins, and SIGKILLs
any child still alive after ``grace`` seconds, so no process outlives the fleet.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .fleet_zmq import child_main

log = logging.getLogger(__name__)


@dataclass
class _Child:
    indices: list[int]
    process: Any
    incarnation: int = 0
    killed: bool = False


class ProcessGroup:
    def __init__(self, fleet: Any, node_config: Callable[[list[int], int], dict[str, Any]], grace: float = 5.0):
        self.fleet, self.node_config, self.grace = fleet, node_config, grace
        self.ctx = mp.get_context(fleet.start_method)
        if fleet.start_method == "forkserver":
            self.ctx.set_forkserver_preload(["torch", "sims.fleet_zmq"])
        self.results = self.ctx.Queue()
        self.children: list[_Child] = []
        self._reports: list[dict[str, Any]] = []
        self._supervisor: asyncio.Task | None = None
        self._noticed: set[int] = set()          # ids of dead Process objects already handled
        self._timers: list[asyncio.TimerHandle] = []   # pending restarts (cancelled on close)

    def _spawn(self, indices: list[int], incarnation: int) -> Any:
        cfg = self.node_config(indices, incarnation)
        cfg["exit_on_crash"] = len(indices) == 1
        p = self.ctx.Process(target=child_main, args=(cfg, self.results), daemon=True,
                             name=f"fleet-{self.fleet.node_ids[indices[0]]}")
        p.start()
        return p

    async def start(self) -> None:
        groups = [list(map(int, g)) for g in np.array_split(np.arange(self.fleet.n), self.fleet.processes)]
        for g in groups:
            self.children.append(_Child(g, self._spawn(g, 0)))
        deadline = time.monotonic() + self.fleet.join_timeout
        coord = self.fleet.coordinator
        while len(coord.alive_nodes()) < self.fleet.n:    # fail fast if a child dies while starting
            dead = [c.process for c in self.children if c.process.exitcode is not None]
            if dead:
                raise RuntimeError(f"fleet child {dead[0].name} exited with status {dead[0].exitcode} "
                                   "while starting (see its stderr)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(coord.alive_nodes())}/{self.fleet.n} nodes joined within "
                                   f"{self.fleet.join_timeout} s")
            await asyncio.sleep(0.05)
        self._supervisor = asyncio.create_task(self._supervise(), name="fleet-supervisor")

    def _child_of(self, node_id: str) -> _Child:
        index = self.fleet.node_ids.index(node_id)
        return next(c for c in self.children if index in c.indices)

    async def _supervise(self) -> None:
        """Notice dead children (crash fault or kill); restart one-node children if the faults say so."""
        restart = self.fleet.faults.restart
        while True:
            await asyncio.sleep(0.05)
            for child in self.children:
                p = child.process
                if p.exitcode is None or p.exitcode == 0 or id(p) in self._noticed:
                    continue
                self._noticed.add(id(p))
                now = time.monotonic()
                self.fleet.crashes.extend((now, self.fleet.node_ids[i]) for i in child.indices)
                log.info("fleet child %s died (exit %s)", p.name, p.exitcode)
                p.join(0)
                if restart >= 0 and len(child.indices) == 1:
                    self._timers.append(asyncio.get_running_loop().call_later(restart, self._respawn, child))

    def _respawn(self, child: _Child) -> None:
        child.incarnation += 1
        child.killed = False
        child.process = self._spawn(child.indices, child.incarnation)
        self.fleet.restarts.append((time.monotonic(), self.fleet.node_ids[child.indices[0]]))

    async def kill_node(self, node_id: str) -> None:
        child = self._child_of(node_id)
        if len(child.indices) != 1:
            raise NotImplementedError(f"{node_id} shares its process with {len(child.indices) - 1} other node(s): "
                                      "kill the whole process with kill_process(), or use crash faults")
        await self.kill_process(self.children.index(child))

    async def kill_process(self, k: int) -> None:
        """SIGKILL child ``k`` (all its nodes die at once, without a bye)."""
        child = self.children[k]
        p = child.process
        if p.is_alive():
            child.killed = True
            os.kill(p.pid, signal.SIGKILL)
            await asyncio.to_thread(p.join, self.grace)

    def crashed(self) -> list[str]:
        return [self.fleet.node_ids[i] for c in self.children if c.process.exitcode not in (None, 0)
                for i in c.indices]

    def alive_processes(self) -> int:
        return sum(c.process.is_alive() for c in self.children)

    def counters(self) -> dict[str, int]:
        while True:
            try:
                self._reports.append(self.results.get_nowait())
            except Exception:
                break
        total: dict[str, int] = {}
        for r in self._reports:
            for k, v in r["counters"].items():
                total[k] = total.get(k, 0) + v
        return total

    async def close(self) -> None:
        for h in self._timers:
            h.cancel()
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        for c in self.children:
            if c.process.is_alive():
                c.process.terminate()                           # SIGTERM: nodes say bye
        for c in self.children:
            await asyncio.to_thread(c.process.join, self.grace)
            if c.process.is_alive():
                c.process.kill()
                await asyncio.to_thread(c.process.join, self.grace)
        self.counters()                                         # collect the shutdown reports
        self.results.close()
        self.results.join_thread()
