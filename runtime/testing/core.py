"""Basic helpers: loopback ports, simulated devices, task-leak checks."""
from __future__ import annotations

import asyncio
import socket

from pat_runtime.devices.local import LocalDevice
from pat_runtime.sims import make_sim


def free_port(host: str = "127.0.0.1") -> int:
    """A free TCP port on loopback (bound once and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


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
