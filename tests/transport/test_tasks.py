"""cancel_all ends tasks that swallow a cancellation (Python 3.11's wait_for can, see its docstring)."""
from __future__ import annotations

import asyncio

from pat_runtime.transport.tasks import cancel_all


async def test_a_task_that_swallows_one_cancellation_is_cancelled_again():
    seen = []

    async def stubborn():
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                seen.append("cancel")
                if len(seen) == 2:
                    raise          # like a loop around 3.11's wait_for: the first cancellation was lost

    async def failing():
        raise RuntimeError("boom")

    tasks = [asyncio.create_task(stubborn()), asyncio.create_task(failing()), asyncio.create_task(asyncio.sleep(3600))]
    await asyncio.sleep(0)
    await cancel_all(tasks, patience=0.01)
    assert seen == ["cancel", "cancel"]
    assert all(t.done() for t in tasks)
    assert tasks[0].cancelled() and tasks[2].cancelled()
    assert isinstance(tasks[1].exception(), RuntimeError)


async def test_nothing_to_cancel():
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    await cancel_all([done])
    await cancel_all([])
    assert done.done() and not done.cancelled()
