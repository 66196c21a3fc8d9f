"""Node metadata a coordinator keeps from hellos and heartbeats: known fields only, typed and bounded.

A peer controls every field of its hello / heartbeat header; merging them blindly into ``NodeInfo.meta``
lets one node grow the coordinator's memory without bound (3,000 keys per heartbeat). :func:`node_meta`
keeps the fields below, each checked for type and size, and drops everything else (counted by the caller).

==============  ======================  =========================================
field           type                    bound
==============  ======================  =========================================
heartbeat       float (s)               0 < x <= 3600
handlers        list of str             <= 64 names of <= 64 characters
max_payload     int (bytes)             0 <= x <= 2**40
pid             int                     0 <= x < 2**32
sid, session    str                     <= 64 characters
seq, served     int                     0 <= x < 2**63
inflight        int                     0 <= x < 2**31
bundle          int (messages)          0 <= x < 2**16 (ZeroMQ: the node takes request bundles)
==============  ======================  =========================================
"""
from __future__ import annotations

import math
from typing import Any, Callable

MAX_NAME = 64
MAX_HANDLERS = 64


def _int(lo: int, hi: int) -> Callable[[Any], int | None]:
    def check(v: Any) -> int | None:
        return int(v) if isinstance(v, int) and not isinstance(v, bool) and lo <= v < hi else None
    return check


def _float(v: Any) -> float | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 < v <= 3600:
        return float(v)
    return None


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and len(v) <= MAX_NAME else None


def _handlers(v: Any) -> list[str] | None:
    if isinstance(v, (list, tuple)) and len(v) <= MAX_HANDLERS and all(
            isinstance(h, str) and len(h) <= MAX_NAME for h in v):
        return list(v)
    return None


FIELDS: dict[str, Callable[[Any], Any]] = {
    "heartbeat": _float, "handlers": _handlers, "max_payload": _int(0, 2 ** 40 + 1), "pid": _int(0, 2 ** 32),
    "sid": _str, "session": _str, "seq": _int(0, 2 ** 63), "served": _int(0, 2 ** 63),
    "inflight": _int(0, 2 ** 31), "bundle": _int(0, 2 ** 16),
}

#: envelope fields every message carries (not metadata, never counted as dropped)
ENVELOPE = frozenset({"v", "type", "id", "node", "node_id", "arrays", "spec", "ts", "cid"})


def node_meta(header: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """``(known, valid fields of header, number of other / invalid fields dropped)``."""
    out: dict[str, Any] = {}
    dropped = 0
    for k, v in header.items():
        check = FIELDS.get(k)
        if check is None:
            dropped += k not in ENVELOPE
            continue
        value = check(v)
        if value is None:
            dropped += 1
        else:
            out[k] = value
    return out, dropped
