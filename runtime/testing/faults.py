"""Small fault hooks for tests (:class:`pat_runtime.transport.base.EdgeFaults`), set as an edge's ``faults``.

    edge = ZmqEdgeTransport(url, "n1", faults=DropReplies(1))      # the first apply's reply is lost

The simulated fleets use :class:`pat_runtime.fleet.faults.FaultInjector` (seeded drop/delay/corrupt/crash).
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable, Iterable


class DropReplies:
    """Lose the replies to the first ``n`` requests of ``types`` (the node did the work: a lossy link).

    ``dropped_ids`` records the request ids whose reply was lost; ``crash()`` silences the node.
    """

    def __init__(self, n: int = 1, types: Iterable[str] = ("apply",)):
        self.left = int(n)
        self.types = set(types)
        self.dropped_ids: list[str] = []
        self.crashed = False

    def crash(self) -> None:
        self.crashed = True

    async def serve(self, header: dict[str, Any], arrays: list,
                    handle: Callable[[dict[str, Any], list], Awaitable[Any]]) -> Any:
        if self.crashed:
            return None
        reply = await handle(header, arrays)
        if self.left > 0 and header.get("type") in self.types:
            self.left -= 1
            self.dropped_ids.append(header.get("id"))
            return None
        return reply

    def tamper(self, frames: list[bytes], direction: str) -> list[bytes] | None:
        return frames


__all__ = ["DropReplies"]
