"""Reconnect back-off with jitter, for the transports: :class:`pat_runtime.devices.Backoff` (re-exported).

The one retry helper lives in the device core (:mod:`pat_runtime.devices._retry`: :class:`Backoff` with full
jitter, :func:`retry`), below every layer that retries; this module keeps the name transports import.
"""
from __future__ import annotations

from pat_runtime.devices._retry import Backoff, jittered, retry

__all__ = ["Backoff", "jittered", "retry"]
