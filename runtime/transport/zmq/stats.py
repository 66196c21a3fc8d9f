"""Kept for imports: :class:`TransportStats` lives in :mod:`runtime.transport.stats` (shared by every transport)."""
from runtime.transport.stats import TransportStats

__all__ = ["TransportStats"]
