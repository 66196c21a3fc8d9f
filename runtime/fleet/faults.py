"""Fault injection for simulated fleets: what goes wrong on a node and on its link.

Faults (all seeded; ``FaultSpec.parse("drop=0.05,latency=0.01,jitter=0.005,crash=2,corrupt=0.01,slow=1")``):

==============  ==========================================================================================
``latency``     extra seconds before each request is handled (on top of the device's own latency)
``jitter``      plus a uniform random ``[0, jitter)`` s per request
``drop``        probability that a reply is lost (the node did the work; the coordinator times out and
                retries with the same request id, which the node answers from its idempotency cache)
``corrupt``     probability that a request's or a reply's frames get 1-3 bytes flipped on the link
``crash``       number of nodes that crash; each stops answering (no bye) after a random number of apply
                requests drawn from ``[crash_min, crash_max]``
``restart``     seconds after a crash when the node comes back (same unit, same hidden variation, new
                session); negative: crashed nodes stay down
``slow``        number of slow nodes; a slow node takes ``slow_factor`` x as long for every request
``seed``        seed of every random choice above (which nodes crash / are slow, when, which bytes)
==============  ==========================================================================================

Used by :class:`pat_runtime.fleet.simfleet.SimFleet` in every mode (in-process, ZeroMQ, Ray) through the one
fault hook of the edge transports: a node's :class:`FaultInjector` is its transport's ``faults``
(:class:`pat_runtime.transport.base.EdgeFaults`), consulted for every request it receives; a lost reply is
``None`` everywhere.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, fields, replace
from typing import Any, Awaitable, Callable

import numpy as np

from pat_runtime.wire import MessageType

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaultSpec:
    """What goes wrong in a simulated fleet (see module docstring)."""

    latency: float = 0.0
    jitter: float = 0.0
    drop: float = 0.0
    corrupt: float = 0.0
    crash: int = 0
    crash_min: int = 2
    crash_max: int = 20
    restart: float = -1.0
    slow: int = 0
    slow_factor: float = 4.0
    seed: int = 0

    def __post_init__(self):
        for name in ("drop", "corrupt"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"fault {name}={getattr(self, name)} must be a probability in [0, 1]")
        for name in ("latency", "jitter", "crash", "slow", "crash_min"):
            if getattr(self, name) < 0:
                raise ValueError(f"fault {name}={getattr(self, name)} must be >= 0")
        if self.crash_max < self.crash_min:
            raise ValueError(f"crash_max={self.crash_max} < crash_min={self.crash_min}")
        if self.slow_factor < 1:
            raise ValueError(f"slow_factor={self.slow_factor} must be >= 1")

    @classmethod
    def parse(cls, text: str | None) -> "FaultSpec":
        """``"drop=0.05,latency=0.01,crash=2"`` -> FaultSpec. Empty / ``none`` -> no faults."""
        if text is None or text.strip().lower() in ("", "none"):
            return cls()
        types = {f.name: f.type for f in fields(cls)}
        kw: dict[str, Any] = {}
        for part in text.split(","):
            key, sep, val = part.strip().partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in types:
                raise ValueError(f"bad fault {part.strip()!r}; expected KEY=VALUE with KEY in {', '.join(types)}")
            conv = int if types[key] in ("int", int) else float
            try:
                kw[key] = conv(val)
            except ValueError:
                raise ValueError(f"fault {key}={val!r} is not a valid {conv.__name__}") from None
        return cls(**kw)

    def __str__(self) -> str:
        default = FaultSpec()
        parts = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                 if getattr(self, f.name) != getattr(default, f.name)]
        return ",".join(parts) or "none"

    @property
    def any(self) -> bool:
        return self != replace(FaultSpec(), seed=self.seed)


class FaultPlan:
    """Decides, from the spec's seed, which nodes crash (after how many applies) and which are slow."""

    def __init__(self, spec: FaultSpec, n_nodes: int):
        if spec.crash > n_nodes or spec.slow > n_nodes:
            raise ValueError(f"faults crash={spec.crash}, slow={spec.slow} exceed the {n_nodes} nodes")
        self.spec, self.n = spec, n_nodes
        rng = np.random.default_rng([spec.seed, 7919])
        crashers = rng.choice(n_nodes, size=spec.crash, replace=False)
        self.crash_after = {int(i): int(rng.integers(spec.crash_min, spec.crash_max + 1)) for i in crashers}
        self.slow = {int(i) for i in rng.choice(n_nodes, size=spec.slow, replace=False)}

    def injector(self, index: int, incarnation: int = 0,
                 on_crash: Callable[[], None] | None = None) -> "FaultInjector":
        """The injector for node ``index``; a restarted node (incarnation > 0) does not crash again."""
        return FaultInjector(self.spec, index, incarnation,
                             crash_after=self.crash_after.get(index) if incarnation == 0 else None,
                             slow=index in self.slow, on_crash=on_crash)


class FaultInjector:
    """Per-node faults, the :class:`pat_runtime.transport.base.EdgeFaults` hook of a node's edge transport.

    Set as ``transport.faults``: every request the edge receives goes through :meth:`serve` (delay, slowness,
    crash, dropped reply) and, on the in-process link, every frame through :meth:`tamper` (corruption).
    ``on_crash`` is called once when the node crashes (the fleet then silences or restarts it); ``busy`` is
    the seconds spent handling requests (node-side utilization = busy / wall); ``counters`` count applies
    and the faults injected.
    """

    def __init__(self, spec: FaultSpec, index: int = 0, incarnation: int = 0, *,
                 crash_after: int | None = None, slow: bool = False,
                 on_crash: Callable[[], None] | None = None):
        self.spec, self.index = spec, index
        self.crash_after, self.slow = crash_after, slow
        self.on_crash = on_crash
        self.rng = np.random.default_rng([spec.seed, index, incarnation])
        self.counters = {"applies": 0, "dropped": 0, "corrupted": 0, "crashed": 0}
        self.crashed = False
        self.busy = 0.0

    def crash(self) -> None:
        """Crash the node now: no more replies, heartbeats or bye (``on_crash`` is told once). Counted in
        ``counters["crashed"]`` only when the plan's ``crash_after`` fires (not for a crash asked for)."""
        if self.crashed:
            return
        self.crashed = True
        if self.on_crash is not None:
            self.on_crash()

    async def serve(self, header: dict[str, Any], arrays: list,
                    handle: Callable[[dict[str, Any], list], Awaitable[Any]]) -> Any:
        """``handle(header, arrays)`` seen through the faults; ``None`` for a dropped reply or a request that
        reaches a crashed node (the transport then sends nothing)."""
        spec = self.spec
        if self.crashed:
            return None
        if header.get("type") in (MessageType.APPLY, MessageType.APPLY_MANY):  # requests that drive the device
            self.counters["applies"] += 1
            if self.crash_after is not None and self.counters["applies"] > self.crash_after:
                self.counters["crashed"] += 1
                self.crash()
                return None
        t0 = time.perf_counter()
        try:
            delay = spec.latency + (spec.jitter * self.rng.random() if spec.jitter else 0.0)
            if delay:
                await asyncio.sleep(delay)
            reply = await handle(header, arrays)
            if self.slow:
                await asyncio.sleep((spec.slow_factor - 1.0) * (time.perf_counter() - t0))
        finally:
            self.busy += time.perf_counter() - t0
        if self.crashed:
            return None
        if spec.drop and self.rng.random() < spec.drop:
            self.counters["dropped"] += 1
            return None
        return reply

    def tamper(self, frames: list[bytes], direction: str) -> list[bytes] | None:
        """With probability ``corrupt``, flip 1-3 random bytes in one random frame."""
        if not self.spec.corrupt or self.rng.random() >= self.spec.corrupt:
            return frames
        frames = list(frames)
        sizes = [len(f) for f in frames]
        k = int(self.rng.choice(len(frames), p=np.asarray(sizes) / sum(sizes))) if sum(sizes) else 0
        buf = bytearray(frames[k])
        for pos in self.rng.integers(0, max(len(buf), 1), size=int(self.rng.integers(1, 4))):
            if buf:
                buf[pos] ^= int(self.rng.integers(1, 256))
        frames[k] = bytes(buf)
        self.counters["corrupted"] += 1
        return frames


__all__ = ["FaultInjector", "FaultPlan", "FaultSpec"]
