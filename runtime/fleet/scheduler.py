"""ShardScheduler: run a list of shards across the fleet, each result accepted exactly once.

Protocol (one :meth:`ShardScheduler.run` call, e.g. one training batch or one epoch)::

    pending <- all shards                     free <- one slot per (available node, unused in-flight cap)
    loop until every shard is done:
        while pending and free: start work(node, shard) on a free slot (prefer nodes the shard has not failed on)
        on success: if shard already done -> duplicate, ignored   else done[shard] = result, on_result(...)
                    (other running copies of that shard are cancelled)
        on a node failure (timeout, lost connection, remote error): the shard goes back to the front of pending
        on a membership change (join / rejoin / death / eviction): free slots are rebuilt
        stragglers: with nothing pending and a slot free, a shard running > ``speculate`` x the median
                    shard time (over recent runs) is started a second time on another node; the first
                    result wins
    Free slots are ordered least-used node first (counted over all runs), so work rotates over the fleet.
        if shards are pending, none running and no node available for ``stall_timeout`` s -> FleetError

Several shards per message: with ``group=k`` and a ``work_many(node_id, [shard, ...]) -> [result, ...]``
callable, one slot (one message, e.g. :meth:`FleetManager.apply_many`) carries up to ``k`` pending shards.
Each shard is still accepted once: a failed message puts its unfinished shards back, a message whose
shards all finished elsewhere is cancelled, and straggler copies are started one shard at a time.

Each shard's result is passed to ``on_result`` exactly once, whatever happens to nodes, so callers that
accumulate gradients there (see :mod:`pat_runtime.fleet.training`) apply every sample exactly once.
Bookkeeping is O(1) per event: completions arrive through a queue and free slots live in a deque, so the
same loop drives 1000+ virtual nodes.
"""
from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Hashable, Iterable, Sequence

from pat_runtime.devices.codes import ErrorCode
from pat_runtime.devices.errors import DeviceConnectionError, DeviceTimeoutError, PatError, RemoteDeviceError

from .manager import FleetManager

log = logging.getLogger(__name__)

#: remote error codes that no other node would answer differently (the request itself is wrong)
FATAL_CODES = frozenset({ErrorCode.OUT_OF_RANGE, ErrorCode.BAD_SHAPE, ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_TYPE})


class FleetError(PatError, RuntimeError):
    """The fleet could not finish the work (no nodes left, or a shard failed too often)."""


@dataclass
class Shard:
    """One unit of work: ``id`` must be unique within a run; ``payload`` is whatever ``work`` needs."""

    id: Hashable
    payload: Any = None
    size: int = 1
    attempts: int = 0
    failed_on: set[str] = field(default_factory=set)


@dataclass
class RunStats:
    shards: int = 0
    assignments: int = 0
    failures: int = 0
    reassigned: int = 0
    duplicates: int = 0
    speculative: int = 0
    by_node: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    wall: float = 0.0


def is_retryable(exc: BaseException) -> bool:
    """Failures that another node (or a later attempt) may not repeat."""
    if isinstance(exc, RemoteDeviceError):
        return exc.code not in FATAL_CODES
    return isinstance(exc, (DeviceTimeoutError, DeviceConnectionError))


class ShardScheduler:
    """Assign shards to the manager's available nodes under per-node in-flight caps (see module docstring)."""

    def __init__(self, manager: FleetManager, *, max_attempts: int = 8, speculate: float | None = 4.0,
                 stall_timeout: float = 10.0, tick: float = 0.05, group: int = 1):
        if group < 1:
            raise ValueError(f"group must be >= 1 shards per message, got {group}")
        self.manager = manager
        self.group = int(group)
        self.max_attempts = int(max_attempts)
        self.speculate = speculate
        self.stall_timeout = float(stall_timeout)
        self.tick = float(tick)
        self.inflight: dict[str, int] = defaultdict(int)
        self.assigned: dict[str, int] = defaultdict(int)     # shards started per node, over all runs
        self.durations: deque[float] = deque(maxlen=256)      # recent shard times, over all runs
        self.stats = RunStats()
        self._running = False

    async def run(self, shards: Iterable[Shard], work: Callable[[str, Shard], Awaitable[Any]] | None = None,
                  on_result: Callable[[Shard, str, Any], None] | None = None, *,
                  work_many: Callable[[str, list[Shard]], Awaitable[Sequence[Any]]] | None = None,
                  ) -> dict[Hashable, Any]:
        """Run every shard once; return ``{shard.id: result}``. ``work(node_id, shard)`` does one shard;
        ``work_many(node_id, shards)`` does several in one message (up to ``group``; results in order).

        One run at a time per scheduler (in-flight counts are shared between runs); use two schedulers
        for concurrent runs on the same fleet.
        """
        if self._running:
            raise RuntimeError("this ShardScheduler is already running; use another one for concurrent runs")
        self._running = True
        try:
            if work is None and work_many is None:
                raise TypeError("run() needs work or work_many")
            return await self._run(list(shards), work, on_result, work_many)
        finally:
            self._running = False

    async def _run(self, shards: list[Shard], work: Callable[[str, Shard], Awaitable[Any]] | None,
                   on_result: Callable[[Shard, str, Any], None] | None,
                   work_many: Callable[[str, list[Shard]], Awaitable[Sequence[Any]]] | None) -> dict[Hashable, Any]:
        ids = [s.id for s in shards]
        if len(set(ids)) != len(ids):
            raise ValueError("shard ids must be unique within a run")
        stats = self.stats = RunStats(shards=len(shards))
        t_start = time.perf_counter()
        pending: deque[Shard] = deque(shards)
        done: dict[Hashable, Any] = {}
        running: dict[asyncio.Task, tuple[list[Shard], str, float]] = {}
        group = self.group if work_many is not None else 1
        copies: dict[Hashable, set[asyncio.Task]] = defaultdict(set)
        durations = self.durations
        events: asyncio.Queue = asyncio.Queue()
        free: deque[str] = deque()
        seen_version = -1
        stalled_since: float | None = None

        def rebuild_free() -> None:
            nonlocal seen_version
            seen_version = self.manager.version
            free.clear()
            # least-used nodes first, so short runs (one batch) still rotate over the whole fleet
            avail = sorted(self.manager.available(), key=lambda n: self.assigned[n])
            spare = {n: self.manager.nodes[n].cap - self.inflight[n] for n in avail}
            for k in range(max(spare.values(), default=0)):   # round robin: spread work over nodes
                free.extend(n for n in avail if spare[n] > k)

        async def many(node: str, batch: list[Shard]) -> list[Any]:
            if work_many is None:
                return [await work(node, batch[0])]
            out = list(await work_many(node, batch))
            if len(out) != len(batch):
                raise ValueError(f"work_many returned {len(out)} results for {len(batch)} shards")
            return out

        def start(batch: list[Shard], node: str, speculative: bool = False) -> None:
            self.inflight[node] += 1
            self.assigned[node] += len(batch)
            stats.assignments += len(batch)
            stats.speculative += speculative
            task = asyncio.create_task(many(node, batch))
            running[task] = (batch, node, time.perf_counter())
            for shard in batch:
                copies[shard.id].add(task)
            task.add_done_callback(events.put_nowait)

        def take_slot() -> str | None:
            while free:
                n = free.popleft()
                if self.manager.is_available(n) and self.inflight[n] < self.manager.nodes[n].cap:
                    return n
            return None

        def pick_shard(node: str) -> Shard:
            for i, s in enumerate(pending):   # prefer a shard that has not failed on this node
                if node not in s.failed_on or i >= 8:
                    del pending[i]
                    return s
            return pending.popleft()

        def assign() -> None:
            while pending:
                node = take_slot()
                if node is None:
                    return
                batch = [pick_shard(node)]
                while pending and len(batch) < group:
                    batch.append(pick_shard(node))
                start(batch, node)

        def maybe_speculate() -> None:
            if not self.speculate or pending or not running or len(durations) < 4:
                return
            limit = self.speculate * statistics.median(durations)
            now = time.perf_counter()
            for task, (batch, node, t0) in list(running.items()):
                if now - t0 <= limit:
                    continue
                for shard in batch:
                    if shard.id in done or len(copies[shard.id]) != 1:
                        continue
                    other = take_slot()
                    if other is None:
                        return
                    if other == node:
                        free.append(other)
                        break
                    start([shard], other, speculative=True)

        ticker = asyncio.create_task(_ticker(events, self.tick))
        unsubscribe = self.manager.subscribe(lambda node, event: events.put_nowait(None))
        try:
            while len(done) < len(shards):
                if self.manager.version != seen_version:
                    rebuild_free()
                assign()
                if pending and not running:
                    now = time.perf_counter()
                    stalled_since = stalled_since or now
                    if now - stalled_since > self.stall_timeout:
                        raise FleetError(f"{len(pending)} shard(s) pending and no node available for "
                                         f"{self.stall_timeout} s")
                else:
                    stalled_since = None
                item = await events.get()
                if item is None:           # tick or membership change
                    maybe_speculate()
                    continue
                task: asyncio.Task = item
                batch, node, t0 = running.pop(task)
                for shard in batch:
                    copies[shard.id].discard(task)
                self.inflight[node] -= 1
                if self.manager.is_available(node) and self.manager.version == seen_version:
                    free.append(node)
                if task.cancelled():
                    continue
                exc = task.exception()
                if exc is None:
                    durations.append(time.perf_counter() - t0)
                    for shard, result in zip(batch, task.result()):
                        if shard.id in done:
                            stats.duplicates += 1
                            continue
                        done[shard.id] = result
                        stats.by_node[node] += 1
                        for other in copies.pop(shard.id, ()):   # other copies: cancel once all their shards are done
                            if all(s.id in done for s in running[other][0]):
                                other.cancel()
                        if on_result is not None:
                            on_result(shard, node, result)
                    continue
                if not is_retryable(exc):
                    raise exc
                stats.failures += 1
                for shard in reversed(batch):
                    shard.failed_on.add(node)
                    log.debug("shard %s failed on %s: %s", shard.id, node, exc)
                    if shard.id in done or copies[shard.id]:
                        continue                  # another copy finished or is still running
                    shard.attempts += 1
                    if shard.attempts >= self.max_attempts:
                        raise FleetError(f"shard {shard.id!r} failed {shard.attempts} times; last: {exc}") from exc
                    stats.reassigned += 1
                    pending.appendleft(shard)
        finally:
            unsubscribe()
            ticker.cancel()
            for t in running:
                t.cancel()
            await asyncio.gather(ticker, *running, return_exceptions=True)
            for t, (_, node, _) in running.items():
                self.inflight[node] -= 1
            stats.wall = time.perf_counter() - t_start
        return done


async def _ticker(events: asyncio.Queue, period: float) -> None:
    while True:
        await asyncio.sleep(period)
        events.put_nowait(None)
