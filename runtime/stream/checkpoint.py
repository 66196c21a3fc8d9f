"""Atomic checkpoints for the stream trainer, and RNG capture/restore.

A checkpoint is one ``torch.save`` file ``ckpt-<step>.pt`` holding a nested dict of tensors, numpy arrays
(stored as tensors), numbers, strings, lists and dicts -- loadable with ``torch.load(weights_only=True)``,
so a checkpoint can never execute code. Typical content (see :mod:`pat_runtime.stream.trainer`)::

    step, offset            training steps done; source offset = next sequence number to process
    model, optimizer        state dicts
    twins, replay           per-physical-layer twin state dicts and replay buffers
    refresh                 twin-refresh / drift-detector state
    rng                     python, numpy and torch generator states
    history                 bounded list of recent metrics

Writes are atomic: temp file, ``fsync``, ``os.replace``, directory ``fsync``. A crash mid-write leaves the
previous checkpoint intact. :meth:`CheckpointManager.latest` skips unreadable files (falls back to older
ones) and the newest ``keep`` checkpoints are kept.
"""
from __future__ import annotations

import io
import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pat_runtime.artifact import atomic_write
from pat_runtime.trainers.checkpoint import to_tensors

log = logging.getLogger(__name__)
_NAME = re.compile(r"^ckpt-(\d{10})\.pt$")


class CheckpointManager:
    """Saves and finds checkpoints in ``directory`` (created on demand)."""

    def __init__(self, directory: str | Path, keep: int = 2):
        self.dir = Path(directory)
        self.keep = max(1, int(keep))

    def paths(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        if not self.dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.dir.iterdir() if (m := _NAME.match(p.name))]
        return [p for _, p in sorted(found)]

    def save(self, state: dict[str, Any], step: int) -> Path:
        buf = io.BytesIO()
        torch.save(to_tensors(state), buf)
        path = self.dir / f"ckpt-{int(step):010d}.pt"
        atomic_write(path, buf.getvalue())
        for old in self.paths()[:-self.keep]:
            old.unlink(missing_ok=True)
        return path

    def load(self, path: str | Path) -> dict[str, Any]:
        return torch.load(path, map_location="cpu", weights_only=True)

    def latest(self) -> dict[str, Any] | None:
        """The newest readable checkpoint (None when there is none)."""
        for p in reversed(self.paths()):
            try:
                return self.load(p)
            except Exception as e:  # a damaged file: fall back to the previous one
                log.warning("checkpoint %s is unreadable (%s); trying an older one", p, e)
        return None


def rng_state(np_rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Capture python, torch and (optionally) one numpy Generator's state."""
    st = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if np_rng is not None:
        st["numpy"] = np_rng.bit_generator.state
    return st


def set_rng_state(state: dict[str, Any], np_rng: np.random.Generator | None = None) -> None:
    random.setstate(_tuplify(state["python"]))
    torch.set_rng_state(state["torch"])
    if np_rng is not None and "numpy" in state:
        np_rng.bit_generator.state = state["numpy"]


def _tuplify(obj: Any) -> Any:
    if isinstance(obj, (list, tuple)):
        return tuple(_tuplify(v) for v in obj)
    return obj
