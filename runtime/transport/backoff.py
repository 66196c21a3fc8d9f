"""Reconnect back-off with jitter, shared by the ZeroMQ and MQTT transports.

A fleet that loses its broker or coordinator at once must not come back at once: every reconnect delay
is exponential (``initial`` doubling up to ``maximum``) and jittered (a uniform factor in
``[1 - jitter, 1 + jitter]``), so reconnect attempts of many nodes spread out instead of arriving together.

::

    backoff = Backoff(0.2, 5.0)
    while not connected:
        await asyncio.sleep(backoff.next())
    backoff.reset()
"""
from __future__ import annotations

import random


def jittered(value: float, jitter: float = 0.5, rng: random.Random | None = None) -> float:
    """``value`` times a uniform factor in ``[1 - jitter, 1 + jitter]``."""
    return value * (1.0 + jitter * (2.0 * (rng or random).random() - 1.0))


class Backoff:
    """Exponential back-off with jitter: :meth:`next` returns the next delay (s), :meth:`reset` starts over."""

    def __init__(self, initial: float = 0.2, maximum: float = 5.0, factor: float = 2.0, jitter: float = 0.5,
                 rng: random.Random | None = None):
        if initial <= 0 or maximum < initial or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("need 0 < initial <= maximum, factor >= 1 and 0 <= jitter < 1")
        self.initial, self.maximum, self.factor, self.jitter = float(initial), float(maximum), float(factor), jitter
        self._rng = rng or random.Random()
        self._base = self.initial
        self.attempts = 0

    def next(self) -> float:
        delay = jittered(self._base, self.jitter, self._rng)
        self._base = min(self.maximum, self._base * self.factor)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self._base = self.initial
        self.attempts = 0
