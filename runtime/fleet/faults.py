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

Used by :class:`pat_runtime.fleet.simfleet.SimFleet` in every mode (in-process, ZeroMQ, Ray).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, fields, replace
from typing import Any, Callable

import numpy as np

from pat_runtime.edge.service import NodeService
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

    def injector(self, index: int, incarnation: int = 0) -> "FaultInjector":
        """The injector for node ``index``; a restarted node (incarnation > 0) does not crash again."""
        return FaultInjector(self.spec, index, incarnation,
                             crash_after=self.crash_after.get(index) if incarnation == 0 else None,
                             slow=index in self.slow)


class FaultInjector:
    """Per-node faults: wraps a service (:meth:`wrap`) and tampers with link frames (:meth:`tamper`)."""

    def __init__(self, spec: FaultSpec, index: int = 0, incarnation: int = 0, *,
                 crash_after: int | None = None, slow: bool = False):
        self.spec, self.index = spec, index
        self.crash_after, self.slow = crash_after, slow
        self.rng = np.random.default_rng([spec.seed, index, incarnation])
        self.counters = {"applies": 0, "dropped": 0, "corrupted": 0, "crashed": 0}

    def wrap(self, service: NodeService, on_crash: Callable[[], None],
             lost_reply: Any = None) -> "FaultyService":
        return FaultyService(service, self, on_crash, lost_reply)

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


class FaultyService:
    """A :class:`NodeService` seen through faults: delays, slowness, dropped replies and a crash.

    ``handle`` returns ``lost_reply`` (default ``None``: the inproc transport then sends nothing) for a
    dropped reply or a request that reaches a crashed node.
    """

    def __init__(self, inner: NodeService, injector: FaultInjector, on_crash: Callable[[], None],
                 lost_reply: Any = None):
        self.inner, self.injector, self.on_crash, self.lost_reply = inner, injector, on_crash, lost_reply
        self.crashed = False
        self.busy = 0.0          # seconds spent handling requests (node-side utilization = busy / wall)

    @property
    def device(self):
        return self.inner.device

    @property
    def node_id(self) -> str:
        return self.inner.node_id

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    async def handle(self, header: dict[str, Any], arrays: list[np.ndarray]):
        inj, spec = self.injector, self.injector.spec
        if self.crashed:
            return self.lost_reply
        if header.get("type") in (MessageType.APPLY, MessageType.APPLY_MANY):  # requests that drive the device
            inj.counters["applies"] += 1
            if inj.crash_after is not None and inj.counters["applies"] > inj.crash_after:
                self.crashed = True
                inj.counters["crashed"] += 1
                self.on_crash()
                return self.lost_reply
        t0 = time.perf_counter()
        try:
            delay = spec.latency + (spec.jitter * inj.rng.random() if spec.jitter else 0.0)
            if delay:
                await asyncio.sleep(delay)
            reply = await self.inner.handle(header, arrays)
            if inj.slow:
                await asyncio.sleep((spec.slow_factor - 1.0) * (time.perf_counter() - t0))
        finally:
            self.busy += time.perf_counter() - t0
        if self.crashed:
            return self.lost_reply
        if spec.drop and inj.rng.random() < spec.drop:
            inj.counters["dropped"] += 1
            return self.lost_reply
        return reply


__all__ = ["FaultInjector", "FaultPlan", "FaultSpec", "FaultyService"]
