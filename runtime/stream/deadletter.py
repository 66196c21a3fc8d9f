"""Dead-letter file for stream samples that cannot be trained on (poison samples).

A sample with the wrong feature count, NaN/inf inputs, labels outside the task's classes, or a payload that
does not decode is *not* fatal: it is written to ``dead_letter.jsonl`` (one JSON object per line) with the
reason, counted, and skipped. Its sequence number still counts as processed, so the stream's offset moves
past it and a restart never replays it into a crash (a poison sample replayed from the spool before the
next checkpoint is dead-lettered again: same seq, same reason).

Record: ``{"t": unix time, "seq": int | null, "reason": str, "source": str, "x_shape": [...],
"y_shape": [...], "payload_bytes": int, "payload_b64": first 1 KiB}``. The file is bounded (``max_bytes``):
past it, records are only counted (``dropped``).
"""
from __future__ import annotations

import base64
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILENAME = "dead_letter.jsonl"


class DeadLetter:
    """Append-only JSONL of refused samples (``path=None``: count only)."""

    def __init__(self, path: str | os.PathLike | None, max_bytes: int = 64 * 2**20, preview: int = 1024):
        self.path = Path(path) if path is not None else None
        self.max_bytes = int(max_bytes)
        self.preview = int(preview)
        self.count = 0
        self.dropped = 0

    def add(self, seq: int | None, reason: str, x: Any = None, y: Any = None, payload: bytes | None = None,
            source: str = "") -> None:
        self.count += 1
        log.warning("dead-lettered sample %s: %s", seq, reason)
        if self.path is None:
            return
        rec: dict[str, Any] = {"t": round(time.time(), 3), "seq": seq, "reason": str(reason)[:2000],
                               "source": source}
        if x is not None:
            rec["x_shape"] = list(getattr(x, "shape", ()))
        if y is not None:
            rec["y_shape"] = list(getattr(y, "shape", ()))
        if payload is not None:
            rec["payload_bytes"] = len(payload)
            rec["payload_b64"] = base64.b64encode(payload[: self.preview]).decode("ascii")
        line = (json.dumps(rec) + "\n").encode()
        try:
            size = self.path.stat().st_size if self.path.exists() else 0
            if size + len(line) > self.max_bytes:
                self.dropped += 1
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as f:
                f.write(line)
        except OSError as e:  # a full disk must not stop training either
            self.dropped += 1
            log.error("cannot write dead letter %s: %s", self.path, e)

    def records(self) -> list[dict[str, Any]]:
        if self.path is None or not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
