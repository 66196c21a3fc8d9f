"""pat_runtime.testing.wait_until: wait for a condition (plain or async), report what never happened."""
import asyncio
import threading

import pytest

from pat_runtime.testing import WaitTimeout, wait_until, wait_until_sync


async def test_wait_until_returns_once_the_condition_holds():
    box = []
    asyncio.get_running_loop().call_later(0.05, box.append, 1)
    took = await wait_until(lambda: box, timeout=20)
    assert box == [1] and took >= 0.04

    async def ready():
        return bool(box)

    assert await wait_until(ready) >= 0.0


async def test_wait_until_names_what_never_happened():
    with pytest.raises(WaitTimeout, match="timed out after 0.05 s waiting for the node to join") as e:
        await wait_until(lambda: False, 0.05, "the node to join", every=0.01)
    assert isinstance(e.value, TimeoutError) and isinstance(e.value, AssertionError)
    with pytest.raises(WaitTimeout, match=r"lambda: 1 == 2"):   # default: the condition's source
        await wait_until(lambda: 1 == 2, 0.05)


def test_wait_until_sync_for_threads():
    done = threading.Event()
    threading.Timer(0.05, done.set).start()
    assert wait_until_sync(done.is_set, timeout=20) >= 0.04
    with pytest.raises(WaitTimeout, match="late: now"):
        wait_until_sync(lambda: False, 0.05, lambda: "late: now")
