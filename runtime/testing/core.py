"""Basic helpers: loopback ports, simulated devices, task-leak checks."""
from __future__ import annotations

import asyncio

from pat_runtime.devices.local import LocalDevice
from pat_runtime.sims import make_sim
from pat_runtime.transport.ports import free_port

__all__ = ["assert_no_leaked_tasks", "free_port", "sim_device"]


async def sim_device(kind: str = "circuit", connect: bool = True, **kwargs) -> LocalDevice:
    """A connected :class:`LocalDevice` around ``make_sim(kind, **kwargs)`` (threaded=False for tests)."""
    dev = LocalDevice(make_sim(kind, **kwargs), threaded=False)
    if connect:
        await dev.connect()
    return dev


async def assert_no_leaked_tasks(grace: float = 0.5) -> None:
    """Fail if tasks other than the caller are still pending after ``grace`` seconds."""
    me = asyncio.current_task()
    deadline = asyncio.get_running_loop().time() + grace
    while True:
        left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        if not left or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.01)
    if left:
        for t in left:
            t.cancel()
        raise AssertionError(f"{len(left)} leaked task(s): " + ", ".join(repr(t.get_coro()) for t in left[:5]))
