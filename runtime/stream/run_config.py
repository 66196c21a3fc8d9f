"""What a ``pat stream --dir`` was started with (``DIR/stream.toml``), so a resume can be checked.

Running the same command again resumes from the newest checkpoint in ``--dir``. Resuming with another
device, source or task would continue from the old offset and silently skip every new sample whose
sequence number is below it, so :func:`check_resume` refuses that with the reason.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pat_runtime.config import ConfigError, read_toml, write_toml

FILENAME = "stream.toml"
MUST_MATCH = ("device", "source", "task", "layers", "twin")


def check_resume(directory: str | Path, run: dict[str, Any], record: dict[str, Any] | None = None) -> None:
    """Record ``run`` (plus the resolved options in ``record``) in a fresh ``directory``, or refuse to resume
    one that was started differently."""
    from pat_runtime.stream.checkpoint import CheckpointManager

    d = Path(directory)
    saved = d / FILENAME
    has_ckpt = bool(CheckpointManager(d).paths())
    if has_ckpt and saved.is_file():
        old = read_toml(saved)
        for key in MUST_MATCH:
            if key in old and old[key] != run.get(key):
                raise ConfigError(f"{d} holds a stream checkpoint made with {key}={old[key]!r}, but this run has "
                                  f"{key}={run.get(key)!r}; resuming would skip every sample numbered below its "
                                  f"offset. Use another --dir for a new stream, or the original --{key}")
        return
    if has_ckpt:
        raise ConfigError(f"{d} holds stream checkpoints but no {FILENAME} saying what they were made with; "
                          f"use another --dir (or delete {d} to start over)")
    write_toml(saved, {**(record or {}), **{k: v for k, v in run.items() if v is not None}})
