"""A synchronous facade over the async API, for notebooks and scripts.

    import pat_runtime
    result = pat_runtime.train(device="sim:plate", task="digits", method="pat", epochs=5)
    print(result.summary["test_acc"])

Every function runs the async implementation to completion in an event loop of its own. Inside Jupyter,
where a loop is already running, that happens on a worker thread, so no ``await`` and no
``nest_asyncio`` are needed. The defaults are those of the CLI (:mod:`pat_runtime.defaults`). The async API
(:func:`pat_runtime.trainers.run.run_experiment`, :func:`pat_runtime.twins.build_twin`) is unchanged beside it.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from pat_runtime.devices.base import Device

from . import defaults as D

T = TypeVar("T")


def run_sync(coro: Awaitable[T]) -> T:
    """Run ``coro`` to completion, whether or not an event loop is already running in this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def worker() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=worker, name="pat-runtime-sync", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def train(device: str | Device = "sim:plate", task: str = "digits", method: str = "pat", *,
          epochs: int = D.EPOCHS, batch: int = D.BATCH, lr: float | None = None, twin: str = D.TWIN,
          layers: int = D.LAYERS, out: str | Path | None = None, resume: str | Path | None = None,
          tensorboard: bool = True, progress: bool = True, **config: Any):
    """Train a PNN (what ``pat train`` does) and return the :class:`~pat_runtime.trainers.run.RunResult`.

    ``device`` is a URI or an (unconnected or connected) :class:`~pat_runtime.devices.base.Device`; the remaining
    ``config`` keywords are :class:`~pat_runtime.trainers.run.ExperimentConfig` fields (``seed``, ``hybrid``,
    ``twin_samples``, ``channels``, ``patience``, ``join_timeout``, ...). With ``out`` a run folder is
    written (metrics.jsonl, tb/, checkpoint.pt, model.pnn ...); ``resume=out`` continues it.
    """
    from .loggers import make_loggers
    from .trainers.run import ExperimentConfig, run_experiment

    dev = device if isinstance(device, Device) else None
    uri = device if isinstance(device, str) else getattr(device, "name", "device")
    cfg = ExperimentConfig(device=uri, task=task, method=method, epochs=epochs, batch=batch, lr=lr, twin=twin,
                           layers=layers, **config)
    if resume is not None:
        out = resume
    loggers = make_loggers(out, tensorboard) if out is not None else []

    return run_sync(run_experiment(cfg, device=dev, out=out, progress=progress, resume=resume, loggers=loggers))


def twin(device: str | Device = "sim:plate", kind: str = D.TWIN, *, samples: int | None = None,
         epochs: int | None = None, seed: int = 0, repeats: int = 2):
    """Fit a ``kind`` twin of ``device``: returns ``(twin, report)`` (what ``pat twin`` does)."""
    from pat_runtime.devices.factory import make_device

    from .twins import build_twin

    async def go():
        dev = make_device(device) if isinstance(device, str) else device
        opened = not dev.connected
        if opened:
            await dev.connect()
        try:
            tw, report, _ = await build_twin(dev, kind, n_samples=samples, epochs=epochs, seed=seed, repeats=repeats)
            return tw, report
        finally:
            if opened and isinstance(device, str):
                await dev.close()

    return run_sync(go())


def device(uri: str) -> Device:
    """A connected device for ``uri`` (close it with ``pat_runtime.api.run_sync(dev.close())``)."""
    from pat_runtime.devices.factory import make_device

    dev = make_device(uri)
    run_sync(dev.connect())
    return dev


__all__ = ["device", "run_sync", "train", "twin"]
