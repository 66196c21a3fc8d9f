"""Readable fleet summaries: what failed in an epoch, and the injected faults in words."""
from __future__ import annotations

from typing import Any

#: fault counter -> how to say it
FAULT_WORDS = {"crashes": "node crashes", "restarts": "restarts", "dropped": "replies dropped",
               "corrupted": "frame sets corrupted", "slowed": "slowed replies", "crashed": "requests lost to crashes",
               "applies": "device calls"}


def failure_counts(metrics_before: dict[str, Any], metrics_after: dict[str, Any], faults_before: dict[str, int],
                   faults_after: dict[str, int], shard_failures: int) -> dict[str, int]:
    """Everything that went wrong between two snapshots (request timeouts and errors, crashes, shards)."""
    d = lambda a, b, k: int(b.get(k, 0)) - int(a.get(k, 0))   # noqa: E731
    return {"shards_failed": int(shard_failures),
            "request_timeouts": d(metrics_before, metrics_after, "timeouts"),
            "request_errors": d(metrics_before, metrics_after, "errors"),
            "node_crashes": d(faults_before, faults_after, "crashes")}


def format_failures(c: dict[str, int]) -> str:
    total = sum(c.values())
    if not total:
        return "failures none"
    parts = [f"{v} {k.replace('_', ' ')}" for k, v in c.items() if v]
    return "failures: " + ", ".join(parts)


def format_faults(faults: dict[str, int]) -> str:
    """``{'dropped': 145, 'crashes': 2, ...}`` -> ``faults injected: 2 node crashes, 145 replies dropped``."""
    items = [(k, v) for k, v in faults.items() if v and k != "applies"]
    if not items:
        return "faults injected: none"
    return "faults injected: " + ", ".join(f"{v} {FAULT_WORDS.get(k, k.replace('_', ' '))}" for k, v in items)
