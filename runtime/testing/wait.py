"""Wait for a condition instead of sleeping a fixed time (tests and examples)."""
from __future__ import annotations

import asyncio
import inspect
import time
from typing import Awaitable, Callable


async def wait_until(cond: Callable[[], bool | Awaitable[bool]], timeout: float = 30.0, every: float = 0.01,
                     what: str | None = None) -> None:
    """Poll ``cond`` (sync or async) every ``every`` seconds until it is true; ``TimeoutError`` naming ``what``
    (or the condition's source) after ``timeout`` seconds. The timeout is a hang guard, not a speed assertion."""
    deadline = time.monotonic() + timeout
    while True:
        ok = cond()
        if inspect.isawaitable(ok):
            ok = await ok
        if ok:
            return
        if time.monotonic() > deadline:
            try:
                src = what or inspect.getsource(cond).strip()
            except (OSError, TypeError):
                src = what or repr(cond)
            raise TimeoutError(f"condition not met within {timeout:g} s: {src}")
        await asyncio.sleep(every)
