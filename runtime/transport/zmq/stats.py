"""Kept for imports: :class:`TransportStats` lives in :mod:`pat_runtime.transport.stats` (shared by every transport)."""
from pat_runtime.transport.stats import TransportStats

__all__ = ["TransportStats"]
