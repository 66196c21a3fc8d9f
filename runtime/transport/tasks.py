"""Cancelling background tasks so that they really end (used by every coordinator and edge teardown)."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)


async def cancel_all(tasks: Iterable[asyncio.Task], patience: float = 1.0, rounds: int = 5) -> None:
    """Cancel ``tasks`` and wait until they have ended; their exceptions are retrieved (not raised).

    On Python 3.11 ``asyncio.wait_for`` swallows a cancellation that arrives just as its inner awaitable
    completes (it returns the result instead; fixed in 3.12). A loop around it -- an MQTT heartbeat publishing
    through aiomqtt, which waits with ``wait_for`` -- then simply goes on, and one ``cancel()`` followed by
    ``gather`` waits forever. A task still running after ``patience`` seconds is cancelled again, up to
    ``rounds`` times, then left with a warning.
    """
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    for _ in range(rounds):
        if not pending:
            break
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=patience)
    for t in pending:
        log.warning("task %s did not end after %d cancellations", t.get_name(), rounds)
    for t in tasks:
        if t.done() and not t.cancelled():
            t.exception()   # retrieved: no "exception was never retrieved" at garbage collection


__all__ = ["cancel_all"]
