"""Fleet metrics: per-node latency histograms, utilization and throughput.

* **Latency** is recorded per request (coordinator side, send -> reply) in a log-bucketed histogram:
  bucket ``k`` holds latencies in ``[lo * r**k, lo * r**(k+1))`` with ``r = 2**(1/8)`` (about 9 % wide),
  so quantiles are exact to within one bucket (reported at the bucket's geometric middle).
* **Utilization** of a node is ``busy / wall``, where ``busy`` is the total time during which the node had
  at least one request outstanding (the union of its in-flight intervals) and ``wall`` is the time since
  :meth:`FleetMetrics.reset`. A node fed back to back has utilization close to 1.
* **Throughput** is completed samples (and requests) per second of wall time.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np


class LatencyHistogram:
    """Log-bucketed latency histogram (seconds). Mergeable; quantiles within one bucket (~9 %)."""

    def __init__(self, lo: float = 1e-6, hi: float = 100.0, per_octave: int = 8):
        self.lo, self.hi, self.per_octave = float(lo), float(hi), int(per_octave)
        self.n_buckets = int(math.ceil(math.log2(hi / lo) * per_octave)) + 1
        self.counts = np.zeros(self.n_buckets, dtype=np.int64)
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0

    def _bucket(self, seconds: float) -> int:
        if seconds <= self.lo:
            return 0
        return min(self.n_buckets - 1, int(math.log2(seconds / self.lo) * self.per_octave))

    def record(self, seconds: float) -> None:
        seconds = max(0.0, float(seconds))
        self.counts[self._bucket(seconds)] += 1
        self.count += 1
        self.total += seconds
        self.min = min(self.min, seconds)
        self.max = max(self.max, seconds)

    def merge(self, other: "LatencyHistogram") -> "LatencyHistogram":
        if (other.lo, other.hi, other.per_octave) != (self.lo, self.hi, self.per_octave):
            raise ValueError("cannot merge histograms with different bucket layouts")
        self.counts += other.counts
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        return self

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        """Latency below which a fraction ``q`` of the requests fall (bucket midpoint, clamped to min/max)."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        if not self.count:
            return math.nan
        rank = q * (self.count - 1)
        k = int(np.searchsorted(np.cumsum(self.counts), rank, side="right"))
        mid = self.lo * 2.0 ** ((k + 0.5) / self.per_octave)
        return min(max(mid, self.min), self.max)

    def to_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "min": self.min if self.count else math.nan,
                "p50": self.quantile(0.5), "p90": self.quantile(0.9), "p99": self.quantile(0.99),
                "max": self.max if self.count else math.nan}


@dataclass
class NodeMetrics:
    """Counters, latency histogram and busy-time tracking for one node."""

    node_id: str
    requests: int = 0
    ok: int = 0
    errors: int = 0
    timeouts: int = 0
    cancelled: int = 0
    samples: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    inflight: int = 0
    busy: float = 0.0
    _busy_since: float | None = None

    def begin(self, now: float | None = None) -> float:
        now = time.perf_counter() if now is None else now
        if self.inflight == 0:
            self._busy_since = now
        self.inflight += 1
        self.requests += 1
        return now

    def end(self, started: float, outcome: str = "ok", samples: int = 0, now: float | None = None) -> None:
        """Close one request; ``outcome`` is ``ok``, ``timeout``, ``error`` or ``cancelled``."""
        now = time.perf_counter() if now is None else now
        self.inflight -= 1
        if self.inflight == 0 and self._busy_since is not None:
            self.busy += now - self._busy_since
            self._busy_since = None
        if outcome == "ok":
            self.ok += 1
            self.samples += samples
            self.latency.record(now - started)
        elif outcome == "timeout":
            self.timeouts += 1
        elif outcome == "cancelled":
            self.cancelled += 1
        else:
            self.errors += 1

    def busy_time(self, now: float | None = None) -> float:
        """Busy seconds so far, including the current in-flight interval."""
        now = time.perf_counter() if now is None else now
        return self.busy + (now - self._busy_since if self._busy_since is not None else 0.0)

    def reset(self, now: float) -> None:
        self.requests = self.ok = self.errors = self.timeouts = self.cancelled = self.samples = 0
        self.latency = LatencyHistogram()
        self.busy = 0.0
        self._busy_since = now if self.inflight else None


class FleetMetrics:
    """Per-node :class:`NodeMetrics` plus fleet-wide utilization and throughput."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeMetrics] = {}
        self.started = time.perf_counter()

    def node(self, node_id: str) -> NodeMetrics:
        m = self.nodes.get(node_id)
        if m is None:
            m = self.nodes[node_id] = NodeMetrics(node_id)
        return m

    def reset(self) -> None:
        """Start a new measurement window (counters and busy time restart from zero)."""
        now = time.perf_counter()
        self.started = now
        for m in self.nodes.values():
            m.reset(now)

    def wall(self, now: float | None = None) -> float:
        return (time.perf_counter() if now is None else now) - self.started

    def utilization(self, node_id: str | None = None) -> float:
        """``busy / wall`` for one node, or the mean over nodes that served requests in this window."""
        now = time.perf_counter()
        wall = max(self.wall(now), 1e-12)
        if node_id is not None:
            return self.node(node_id).busy_time(now) / wall
        used = [m for m in self.nodes.values() if m.requests]
        if not used:
            return 0.0
        return sum(m.busy_time(now) for m in used) / (wall * len(used))

    def latency(self) -> LatencyHistogram:
        """All nodes' latencies merged."""
        h = LatencyHistogram()
        for m in self.nodes.values():
            h.merge(m.latency)
        return h

    def summary(self) -> dict:
        wall = max(self.wall(), 1e-12)
        ok = sum(m.ok for m in self.nodes.values())
        return {
            "wall_s": wall,
            "nodes": sum(1 for m in self.nodes.values() if m.requests),
            "requests": sum(m.requests for m in self.nodes.values()),
            "ok": ok,
            "errors": sum(m.errors for m in self.nodes.values()),
            "timeouts": sum(m.timeouts for m in self.nodes.values()),
            "samples": sum(m.samples for m in self.nodes.values()),
            "requests_per_s": ok / wall,
            "samples_per_s": sum(m.samples for m in self.nodes.values()) / wall,
            "utilization": self.utilization(),
            "latency": self.latency().to_dict(),
        }

    def table(self, max_rows: int = 20) -> str:
        """A plain-text per-node table (latency in ms) followed by the fleet totals."""
        now = time.perf_counter()
        wall = max(self.wall(now), 1e-12)
        rows = [f"{'node':<14}{'reqs':>7}{'ok':>7}{'err':>5}{'t/o':>5}{'p50 ms':>9}{'p99 ms':>9}{'util':>7}"]
        used = sorted((m for m in self.nodes.values() if m.requests), key=lambda m: m.node_id)
        for m in used[:max_rows]:
            rows.append(f"{m.node_id:<14}{m.requests:>7}{m.ok:>7}{m.errors:>5}{m.timeouts:>5}"
                        f"{m.latency.quantile(0.5) * 1e3:>9.2f}{m.latency.quantile(0.99) * 1e3:>9.2f}"
                        f"{m.busy_time(now) / wall:>7.2f}")
        if len(used) > max_rows:
            rows.append(f"... {len(used) - max_rows} more nodes")
        s = self.summary()
        lat = s["latency"]
        rows.append(f"fleet: {s['nodes']} nodes, {s['ok']}/{s['requests']} ok, {s['timeouts']} timeouts, "
                    f"{s['errors']} errors, {s['requests_per_s']:.1f} req/s, {s['samples_per_s']:.1f} samples/s, "
                    f"utilization {s['utilization']:.3f}, latency p50 {lat['p50'] * 1e3:.2f} ms "
                    f"p99 {lat['p99'] * 1e3:.2f} ms")
        return "\n".join(rows)
