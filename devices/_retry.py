"""Retries with exponential back-off and full jitter: the one retry helper of the project.

Every retry loop (an instrument that is not up yet, a lost broker or coordinator, a stream source, the deploy
channel) waits :meth:`Backoff.next` between attempts: exponential (``initial`` times ``factor`` per attempt,
capped at ``maximum``) and jittered. With the default *full jitter* (``jitter=1``) a delay is uniform in
``(0, base]``, so a fleet that lost its broker at once does not come back at once (AWS architecture blog,
"Exponential backoff and jitter"); ``jitter=j`` draws from ``((1 - j)·base, base]``, ``jitter=0`` is none.

::

    backoff = Backoff(0.2, 5.0)
    while not connected:
        await asyncio.sleep(backoff.next())
    backoff.reset()

    spec = await retry(open_instrument, retry_on=DeviceConnectionError, timeout=10, backoff=Backoff(0.1, 1.0))

Randomness and time are injectable (``rng``, ``clock``, ``sleep``) so tests are exact and never wait.
"""
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def jittered(value: float, jitter: float = 0.5, rng: random.Random | None = None) -> float:
    """``value`` times a uniform factor in ``[1 - jitter, 1 + jitter]`` (spreads a fixed period, e.g. a
    socket's reconnect interval, over processes)."""
    return value * (1.0 + jitter * (2.0 * (rng or random).random() - 1.0))


class Backoff:
    """Exponential back-off with jitter: :meth:`next` returns the next delay (s), :meth:`reset` starts over.

    ``attempts`` counts the delays handed out since the last reset; ``base`` is the (unjittered) upper
    bound of the next delay.
    """

    def __init__(self, initial: float = 0.2, maximum: float = 5.0, factor: float = 2.0, jitter: float = 1.0,
                 rng: random.Random | None = None):
        if initial <= 0 or maximum < initial or factor < 1 or not 0 <= jitter <= 1:
            raise ValueError(f"Backoff(initial={initial}, maximum={maximum}, factor={factor}, jitter={jitter}): "
                             "need 0 < initial <= maximum, factor >= 1 and 0 <= jitter <= 1")
        self.initial, self.maximum, self.factor, self.jitter = float(initial), float(maximum), float(factor), jitter
        self.rng = rng or random.Random()
        self.base = self.initial
        self.attempts = 0

    def next(self) -> float:
        """The next delay: uniform in ``((1 - jitter)·base, base]``; then ``base`` grows by ``factor``."""
        delay = self.base * (1.0 - self.jitter * self.rng.random())
        self.base = min(self.maximum, self.base * self.factor)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.base = self.initial
        self.attempts = 0


async def retry(fn: Callable[[], Awaitable[T]], *, retry_on: type[BaseException] | tuple[type[BaseException], ...],
                timeout: float | None = None, attempts: int | None = None, backoff: Backoff | None = None,
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                on_retry: Callable[[BaseException, float], object] | None = None) -> T:
    """``await fn()`` until it returns; after an error of type ``retry_on`` wait ``backoff.next()`` and try again.

    Gives up (raising the last error) when the next wait would end after ``timeout`` seconds from the first
    attempt, or after ``attempts`` attempts; with neither it retries until cancelled. Other errors propagate
    at once. ``on_retry(error, delay)`` is told about each retry (logging).
    """
    backoff = backoff or Backoff()
    deadline = None if timeout is None else clock() + max(0.0, timeout)
    n = 0
    while True:
        n += 1
        try:
            return await fn()
        except retry_on as e:
            delay = backoff.next()
            if (attempts is not None and n >= attempts) or (deadline is not None and clock() + delay > deadline):
                raise
            if on_retry is not None:
                on_retry(e, delay)
            await sleep(delay)


__all__ = ["Backoff", "jittered", "retry"]
