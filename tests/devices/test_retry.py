"""The one retry helper: exponential back-off with full jitter, deterministic with an injected rng and clock."""
from __future__ import annotations

import random

import pytest

from pat_runtime.devices import Backoff, DeviceConnectionError, retry


class FakeTime:
    """A clock that only moves when the code under test sleeps (tests never wait)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


class Rng(random.Random):
    """``random()`` returns the given values in turn."""

    def __init__(self, *values: float):
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def test_full_jitter_draws_below_an_exponential_base():
    b = Backoff(0.1, 0.5, rng=Rng(0.0, 0.5, 0.9, 0.25, 0.0))
    assert [round(b.next(), 6) for _ in range(5)] == [0.1, 0.1, 0.04, 0.375, 0.5]   # base·(1 - u)
    assert b.attempts == 5 and b.base == 0.5
    b.reset()
    assert (b.attempts, b.base) == (0, 0.1)
    assert Backoff(1.0, 1.0, jitter=0.0, rng=Rng(0.7)).next() == 1.0                # no jitter
    assert Backoff(1.0, 1.0, jitter=0.5, rng=Rng(0.999)).next() == pytest.approx(0.5005)
    for bad in ({"initial": 0}, {"maximum": 0.01}, {"factor": 0.5}, {"jitter": 1.5}):
        with pytest.raises(ValueError, match="need 0 < initial"):
            Backoff(**{"initial": 0.1, "maximum": 1.0, **bad})


def test_many_clients_spread_out():
    firsts = [Backoff(1.0, 1.0, rng=random.Random(seed)).next() for seed in range(200)]
    assert min(firsts) < 0.1 and max(firsts) > 0.9          # spread over (0, 1], not in lock-step


async def test_retry_until_success_sleeps_the_backoff_delays():
    t, calls = FakeTime(), []

    async def flaky():
        calls.append(t.now)
        if len(calls) < 4:
            raise DeviceConnectionError("plate", "refused")
        return "spec"

    seen = []
    out = await retry(flaky, retry_on=DeviceConnectionError, timeout=10, backoff=Backoff(0.1, 1.0, jitter=0),
                      clock=t.clock, sleep=t.sleep, on_retry=lambda e, d: seen.append((e.device, d)))
    assert out == "spec" and len(calls) == 4
    assert t.sleeps == pytest.approx([0.1, 0.2, 0.4])
    assert seen == [("plate", pytest.approx(d)) for d in (0.1, 0.2, 0.4)]


async def test_retry_gives_up_at_the_deadline_with_the_last_error():
    t, n = FakeTime(), [0]

    async def refused():
        n[0] += 1
        raise DeviceConnectionError("plate", f"refused #{n[0]}")

    with pytest.raises(DeviceConnectionError, match="refused #4"):
        await retry(refused, retry_on=DeviceConnectionError, timeout=1.0, backoff=Backoff(0.1, 1.0, jitter=0),
                    clock=t.clock, sleep=t.sleep)
    assert t.sleeps == pytest.approx([0.1, 0.2, 0.4])       # 0.7 s waited; the next 0.8 s would pass 1.0 s
    with pytest.raises(DeviceConnectionError, match="refused #6"):
        await retry(refused, retry_on=DeviceConnectionError, attempts=2, backoff=Backoff(jitter=0),
                    clock=t.clock, sleep=t.sleep)


async def test_retry_does_not_retry_other_errors():
    t, calls = FakeTime(), []

    async def broken():
        calls.append(1)
        raise ValueError("bad configuration")

    with pytest.raises(ValueError):
        await retry(broken, retry_on=DeviceConnectionError, timeout=5, clock=t.clock, sleep=t.sleep)
    assert calls == [1] and t.sleeps == []
