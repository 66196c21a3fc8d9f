"""URI options (``?key=value&...``) checked against what a device accepts.

:func:`parse_options` turns ``"unit=3&noise=0.02"`` into typed values, refusing unknown keys (listing the
valid ones) and values of the wrong type or sign with one-line ``ValueError`` messages.
"""
from __future__ import annotations

from typing import Any

from .uri import parse_query


def coerce(v: str) -> Any:
    """Best-effort typing of an option value without a declared type."""
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    if v.lower() == "none":
        return None
    return v


def _typed(key: str, raw: str, default: Any, where: str) -> Any:
    if raw.lower() == "none" and default is None:
        return None
    if isinstance(default, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{where}: option {key}={raw!r} must be true or false")
    if isinstance(default, int) or (default is None and key.endswith(("_bits", "_dim", "unit"))):
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{where}: option {key}={raw!r} must be an integer") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{where}: option {key}={raw!r} must be a number") from None
    return coerce(raw)


def parse_options(query: str, valid: dict[str, Any], where: str,
                  non_negative: bool = True) -> dict[str, Any]:
    """Typed options from a URI query (:func:`pat_runtime.devices.uri.parse_query`: bounded, no key twice).
    ``valid`` maps each accepted key to its default (which gives its type)."""
    out: dict[str, Any] = {}
    for key, raw in parse_query(query, where=where, keep_blank=True):
        if key not in valid:
            raise ValueError(f"{where}: unknown option {key!r}; valid options: {', '.join(sorted(valid))}")
        if raw == "":
            raise ValueError(f"{where}: option {key!r} has no value")
        val = _typed(key, raw, valid[key], where)
        if non_negative and isinstance(val, (int, float)) and not isinstance(val, bool):
            if val != val or val < 0:  # NaN or negative
                raise ValueError(f"{where}: option {key}={raw} must be >= 0")
        out[key] = val
    return out
