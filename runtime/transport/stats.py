"""Transport counters: round trips, bytes, retries, timeouts and round-trip latency."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class TransportStats:
    """Counters kept by a coordinator (or edge) transport. ``latency`` keeps the last ``window`` round trips (s)."""

    requests: int = 0          # request() calls
    round_trips: int = 0       # replies matched to a request
    sent_msgs: int = 0
    recv_msgs: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    retries: int = 0           # re-sends of the same request id
    timeouts: int = 0          # requests that failed with DeviceTimeoutError
    errors: int = 0            # error replies (RemoteDeviceError)
    unreachable: int = 0       # sends refused because the node was not connected (EHOSTUNREACH)
    malformed: int = 0         # frames from a peer that could not be decoded (dropped)
    unmatched: int = 0         # replies for unknown / finished request ids (late duplicates)
    rejected: int = 0          # refused node-id claims and messages from connections bound to no node
    meta_dropped: int = 0      # unknown / invalid hello or heartbeat fields dropped (pat_runtime.transport.meta)
    queued: int = 0            # requests that waited for a free in-flight slot (per-node cap reached)
    bundles: int = 0           # ZeroMQ messages sent as a bundle of several requests (wire.encode_bundle)
    bundled: int = 0           # requests sent inside those bundles
    window: int = 2048
    latency: deque = field(default_factory=deque)

    def __post_init__(self):
        self.latency = deque(maxlen=self.window)

    def percentile(self, q: float) -> float:
        return float(np.percentile(np.fromiter(self.latency, float), q)) if self.latency else float("nan")

    def snapshot(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("requests", "round_trips", "sent_msgs", "recv_msgs", "bytes_out",
                                            "bytes_in", "retries", "timeouts", "errors", "unreachable",
                                            "malformed", "unmatched", "rejected", "meta_dropped", "queued",
                                            "bundles", "bundled")}
        d["latency_p50_ms"] = 1e3 * self.percentile(50)
        d["latency_p95_ms"] = 1e3 * self.percentile(95)
        return d
