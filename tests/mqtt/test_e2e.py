"""End to end through the public entry points: ``make_device("mqtt://...")`` + ``pat_runtime.edge.agent.run_edge``."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from pat_runtime.devices.errors import OutOfRangeError
from pat_runtime.devices.factory import make_device
from pat_runtime.edge.agent import run_edge
from pat_runtime.sims import make_sim


async def test_remote_device_over_mqtt_matches_the_local_simulator(broker):
    stop = asyncio.Event()
    edge = asyncio.create_task(run_edge("sim:circuit?noise=0&unit=3", broker.url, "bench-3", heartbeat=0.2,
                                        stop=stop, handle_signals=False))
    dev = make_device(f"mqtt://{broker.host}:{broker.port}/bench-3?timeout=5&max_inflight=4")
    try:
        await dev.connect(timeout=30)
        assert dev.spec == make_sim("circuit", unit=3).spec
        rng = np.random.default_rng(1)
        x = rng.uniform(-1, 1, (64, 16)).astype(np.float32)
        theta = rng.uniform(-1, 1, 16).astype(np.float32)
        y = await dev.apply(x, theta)
        np.testing.assert_array_equal(y, make_sim("circuit", unit=3, noise=0.0).measure(x, theta))
        ys = await asyncio.gather(*(dev.apply(x[i::4], theta) for i in range(4)))  # concurrent batches
        for i, yi in enumerate(ys):
            np.testing.assert_array_equal(yi, y[i::4])
        with pytest.raises(OutOfRangeError):  # checked locally, nothing sent
            await dev.apply(x * 3, theta)
        assert dev.coordinator.stats.round_trips == 5
    finally:
        await dev.close()
        stop.set()
        await asyncio.wait_for(edge, 10)


async def test_remote_device_with_credentials_in_the_url():
    from pat_runtime.testing.mosquitto import mosquitto_broker

    async with mosquitto_broker(users={"u": "p@ss"}) as b:
        stop = asyncio.Event()
        edge = asyncio.create_task(run_edge("sim:circuit?noise=0", b.url_for("u", "p@ss"), "auth-node",
                                            stop=stop, handle_signals=False))
        dev = make_device(f"mqtt://u:p%40ss@{b.host}:{b.port}/auth-node")
        try:
            await dev.connect(timeout=30)
            y = await dev.apply(np.zeros((2, 16), np.float32), np.zeros(16, np.float32))
            assert y.shape == (2, 16)
        finally:
            await dev.close()
            stop.set()
            await asyncio.wait_for(edge, 10)
