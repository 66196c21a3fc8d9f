"""Request deadlines at the node: drop what the coordinator has already given up on.

A request header carries ``sent`` and ``deadline`` (Unix seconds on the *coordinator's* clock; see
docs/protocol.md). The node compares them with its own clock through an estimated offset::

    offset  = min over the last 15-30 s of (node_now - sent)      # clock offset + the fastest transit
    late    = node_now - offset - deadline                        # > 0: past the deadline, drop it

So clocks need not agree: a request that waited in a queue during a stall (a blocked event loop, a slow
device ahead of it) arrives with a large ``node_now - sent`` and is recognised as stale, while the offset is
set by the fresh requests around it. The window is a two-bucket sliding minimum, so a clock step is
absorbed within 30 s. Requests without ``deadline`` (older coordinators) are never dropped.
"""
from __future__ import annotations

import math
import time
from typing import Any

_NUM = (int, float)


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, _NUM) and not isinstance(v, bool) and math.isfinite(v) else None


class DeadlineClock:
    """Tracks the coordinator-to-node clock offset; tells how late a request is and how long it may live."""

    def __init__(self, window: float = 15.0):
        self.window = float(window)
        self._cur = math.inf          # minimum of (now - sent) in the current bucket
        self._prev = math.inf         # ... and in the previous one
        self._bucket_end = time.monotonic() + self.window

    def offset(self) -> float:
        off = min(self._cur, self._prev)
        return 0.0 if off == math.inf else off

    def _observe(self, sample: float) -> None:
        mono = time.monotonic()
        if mono >= self._bucket_end:
            self._prev, self._cur = (self._cur if mono < self._bucket_end + self.window else math.inf), math.inf
            self._bucket_end = mono + self.window
        if sample < self._cur:
            self._cur = sample

    def remaining(self, header: dict[str, Any]) -> float | None:
        """Seconds until the request's deadline on this node's clock (negative: late); None without one."""
        deadline = _number(header.get("deadline"))
        if deadline is None:
            return None
        now = time.time()
        sent = _number(header.get("sent"))
        if sent is not None:
            self._observe(now - sent)
        return deadline - (now - self.offset())
