"""Wait for a condition instead of sleeping a fixed time: a bound on the wait, never on speed."""
from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


class WaitTimeout(AssertionError, TimeoutError):
    """The condition did not become true in time: a failed test assertion, and a ``TimeoutError``."""


def _what(what: str | Callable[[], str] | None, cond: Callable[[], Any]) -> str:
    if callable(what):
        what = what()
    if what:
        return what
    try:
        return inspect.getsource(cond).strip()
    except (OSError, TypeError):
        return getattr(cond, "__qualname__", repr(cond))


async def wait_until(cond: Callable[[], Any | Awaitable[Any]], timeout: float = 20.0,
                     what: str | Callable[[], str] | None = None, *, step: float | None = None,
                     every: float | None = None) -> float:
    """Poll ``cond()`` (a plain or an async callable) every ``step`` s (default 0.02; ``every`` is the same)
    until it is true; return the seconds that took. After ``timeout`` s, :class:`WaitTimeout` naming ``what``
    (a string, or a callable giving one at that moment, e.g. a process's output; default: the condition's
    source). ``timeout`` only bounds a wait for something that should happen: a loaded machine is slower,
    so make it generous; assert speed in bench/, not here."""
    step = step if step is not None else every if every is not None else 0.02
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while True:
        ok = cond()
        if inspect.isawaitable(ok):
            ok = await ok
        if ok:
            return loop.time() - t0
        if loop.time() - t0 > timeout:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {_what(what, cond)}")
        await asyncio.sleep(step)


def wait_until_sync(cond: Callable[[], Any], timeout: float = 20.0, what: str | Callable[[], str] | None = None,
                    *, step: float = 0.02) -> float:
    """:func:`wait_until` for code without an event loop (threads, subprocesses)."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {_what(what, cond)}")
        time.sleep(step)
    return time.monotonic() - t0


__all__ = ["WaitTimeout", "wait_until", "wait_until_sync"]
