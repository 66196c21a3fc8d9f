"""Fleet helpers for tests: ``async with sim_fleet(4, faults="drop=0.1") as fleet`` and a pytest fixture.

Defaults favour fast tests: a small circuit (4 inputs, 1 integration sub-step, about 0.5 ms per call),
short request timeouts, 50 ms heartbeats and 0.5 s liveness so a crashed node is noticed quickly.
``fleet_factory`` (a fixture; import it into a ``conftest.py``) builds fleets and closes them after the test.
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest

from pat_runtime.fleet.simfleet import SimFleet

#: a cheap device for fleet tests (unit-to-unit variation as usual)
FAST_DEVICE = "sim:circuit?in_dim=4&param_dim=4&substeps=1"

TEST_DEFAULTS: dict[str, Any] = {"timeout": 0.25, "retries": 2, "heartbeat": 0.05, "liveness": 0.5}


def fleet_options(**overrides: Any) -> dict[str, Any]:
    """:data:`TEST_DEFAULTS` updated with ``overrides``."""
    return {**TEST_DEFAULTS, **overrides}


@asynccontextmanager
async def sim_fleet(n: int = 4, device: str = FAST_DEVICE, **options: Any) -> AsyncIterator[SimFleet]:
    """A started :class:`SimFleet` with test-friendly defaults; always closed (nodes stopped) on exit."""
    fleet = SimFleet(n, device, **fleet_options(**options))
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.close()


@pytest.fixture
async def fleet_factory():
    """``make = fleet_factory; fleet = await make(8, faults="crash=2")`` — closed at teardown."""
    fleets: list[SimFleet] = []

    async def make(n: int = 4, device: str = FAST_DEVICE, **options: Any) -> SimFleet:
        fleet = SimFleet(n, device, **fleet_options(**options))
        fleets.append(fleet)
        return await fleet.start()

    try:
        yield make
    finally:
        for f in reversed(fleets):
            await f.close()
