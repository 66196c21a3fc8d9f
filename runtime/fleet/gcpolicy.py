"""Garbage-collector policy for a coordinator process with a large fleet: :func:`fleet_gc`.

Why: CPython's cyclic collector scans every *young* container object (tasks, coroutines, futures, request
records...) each time ~700 more have been allocated than freed, and every object still alive at a collection
is scanned again one generation up and finally in a full collection. With 1000 nodes x 2 requests in
flight the requests live ~1 s (the loop is CPU-bound), so each one is scanned several times and pushes
full collections of the whole heap (the 1000 nodes' services, queues, devices): measured on 2 cores,
collections took 7.3 s of a 12.7 s run at 1000 echo nodes (``bench/fleet.py``; at 64 nodes 0.3 s of 3.6 s)
-- the CPU per request grew with the node count because of the collector, not the runtime's bookkeeping.

:func:`fleet_gc` (a context manager, re-entrant):

* ``gc.freeze()`` once the fleet is up: objects that live as long as the fleet (nodes, connections) are
  moved to the permanent generation and no longer scanned by full collections;
* raises the generation-0 threshold to ``gen0`` (default 50 000 net allocations; CPython's default is 700),
  so a collection happens every few thousand requests instead of every few, and young objects of
  finished requests die by reference counting before any scan.

Both are undone on exit (thresholds restored, ``gc.unfreeze()``), when the last user leaves. Reference cycles
are still collected, just in larger, rarer batches; the memory they can hold meanwhile is bounded by the
threshold. :class:`pat_runtime.fleet.simfleet.SimFleet` applies it while it runs (``gc_policy=False`` opts
out); a coordinator process of real nodes can wrap its work the same way::

    with fleet_gc():
        await scheduler.run(shards, work)
"""
from __future__ import annotations

import contextlib
import gc
from typing import Iterator

#: generation-0 threshold while a fleet runs (CPython default: 700)
GEN0 = 50_000

_depth = 0
_saved: tuple[int, int, int] | None = None


def _enter(gen0: int) -> None:
    global _depth, _saved
    if _depth == 0:
        _saved = gc.get_threshold()
        gc.collect()
        gc.freeze()
        t0, t1, t2 = _saved
        gc.set_threshold(max(t0, int(gen0)), t1, t2)
    _depth += 1


def _exit() -> None:
    global _depth, _saved
    if _depth == 0:
        return
    _depth -= 1
    if _depth == 0 and _saved is not None:
        gc.set_threshold(*_saved)
        _saved = None
        gc.unfreeze()


@contextlib.contextmanager
def fleet_gc(gen0: int = GEN0) -> Iterator[None]:
    """Freeze the objects alive now and collect young objects every ``gen0`` net allocations (see module)."""
    _enter(gen0)
    try:
        yield
    finally:
        _exit()


def active() -> bool:
    """Is the fleet policy in force (some :func:`fleet_gc` user has not left yet)?"""
    return _depth > 0


__all__ = ["GEN0", "active", "fleet_gc"]
