"""A bounded outbox for prediction messages: nothing is lost silently while the broker stalls or is away.

Every inference on an edge node publishes its prediction on ``PREFIX/NODE/predictions``. The publisher
(:meth:`PredictionBuffer.drain`) sends them in order with QoS 1 (a window of acknowledgements pipelined) and
removes a message only once the broker has acknowledged it, so a message in flight when the connection drops
is sent again after the reconnect (at least once; the ``request`` field identifies duplicates).
While the broker is slow or unreachable messages wait here, up to ``capacity``; beyond that the *oldest*
is dropped and counted. The counts appear in the node's STATUS reply (``counters.predictions_dropped``,
``predictions_queued``, ``predictions_published``) and in the deployment's ``models`` reply, and the
first drop of each burst is logged as a warning.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Awaitable, Callable

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], Awaitable[None]]


class PredictionBuffer:
    """Bounded FIFO of ``(topic, payload)``; full -> the oldest is dropped and ``dropped`` counts it."""

    def __init__(self, capacity: int = 10_000, window: int = 64):
        if capacity < 1:
            raise ValueError(f"prediction buffer capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.window = max(1, int(window))  # messages published concurrently (QoS 1 acks pipelined)
        self._q: deque[tuple[str, bytes]] = deque()
        self._ready = asyncio.Event()
        self.dropped = 0
        self.published = 0
        self.errors = 0
        self.retry_delay = 0.5
        self._counters: dict[str, int] | None = None
        self._warned = False

    def __len__(self) -> int:
        return len(self._q)

    def attach(self, counters: dict[str, int]) -> None:
        """Mirror the counts into ``counters`` (the node's STATUS counters)."""
        self._counters = counters
        self._sync()

    def _sync(self) -> None:
        if self._counters is not None:
            self._counters.update(predictions_dropped=self.dropped, predictions_queued=len(self._q),
                                  predictions_published=self.published)

    def put(self, topic: str, payload: bytes) -> None:
        """Queue a message (never blocks inference)."""
        if len(self._q) >= self.capacity:
            self._q.popleft()
            self.dropped += 1
            if not self._warned:
                log.warning("prediction buffer full (%d messages, broker stalled or away): dropping the oldest; "
                            "see counters.predictions_dropped", self.capacity)
                self._warned = True
        self._q.append((topic, payload))
        self._ready.set()
        self._sync()

    async def drain(self, publish: Publish) -> None:
        """Publish queued messages in order until cancelled; a message leaves the queue once published."""
        while True:
            if not self._q:
                self._ready.clear()
                self._warned = False  # the backlog is gone: warn again at the next burst of drops
                await self._ready.wait()
                continue
            batch = [self._q[i] for i in range(min(self.window, len(self._q)))]
            try:
                await asyncio.gather(*(publish(t, p) for t, p in batch))
            except Exception as e:  # e.g. no PUBACK within the client's timeout while the broker stalls
                self.errors += 1
                log.info("publishing predictions failed (%s); the %d messages stay queued", e, len(batch))
                await asyncio.sleep(self.retry_delay)
                continue
            for _, payload in batch:
                if self._q and self._q[0][1] is payload:  # not dropped meanwhile by a full buffer
                    self._q.popleft()
                self.published += 1
            self._sync()

    def stats(self) -> dict[str, int]:
        return {"capacity": self.capacity, "queued": len(self._q), "dropped": self.dropped,
                "published": self.published, "errors": self.errors}
