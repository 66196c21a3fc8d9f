"""The ``sim:`` device scheme: ``sim:KIND?opt=value&...`` -> a simulator unit behind a :class:`LocalDevice`.

``sim:plate`` / ``sim:circuit?unit=3&seed=1&noise=0.02&latency=0.01``: the options are the simulator's and its
spec's keyword arguments (plus ``name``, and each second-order effect's strength); unknown options and bad
values are refused with the valid ones listed.
"""
from __future__ import annotations

import inspect
from typing import Any

from pat_runtime.devices.base import Device
from pat_runtime.devices.local import LocalDevice
from pat_runtime.devices.options import coerce as _coerce
from pat_runtime.devices.options import parse_options
from pat_runtime.devices.uri import parse_query

from . import SIMS, make_sim, sim_class


def parse_sim_uri(uri: str) -> tuple[str, dict[str, Any]]:
    """``sim:plate?unit=2&noise=0.02`` -> ``("plate", {"unit": 2, "noise": 0.02})`` (untyped, unchecked)."""
    body = uri.removeprefix("sim:")
    kind, _, query = body.partition("?")
    return kind, {k: _coerce(v) for k, v in parse_query(query, where=uri)}


def sim_option_defaults(kind: str) -> dict[str, Any]:
    """Every option ``sim:KIND?...`` accepts, with its default (simulator and spec options, plus ``name``)."""
    cls = sim_class(kind)
    out: dict[str, Any] = {}
    for fn in (cls.__init__, cls.make_spec):
        for n, p in inspect.signature(fn).parameters.items():
            if n in ("self", "_", "kwargs") or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            out[n] = p.default
    out["variation"] = 0.0 if out.get("variation") is None else out["variation"]
    out.update({k: float(v) for k, v in cls.effect_defaults.items()})   # each second-order effect's strength
    out["effects"] = "on"    # global switch or scale: on/off/1/0/2 (checked by the simulator)
    out["name"] = ""
    return out


def check_sim_uri(uri: str) -> tuple[str, dict[str, Any]]:
    """Like :func:`parse_sim_uri` but typed and validated: unknown kinds or options and bad values are refused."""
    body = uri.removeprefix("sim:")
    kind, _, query = body.partition("?")
    if kind not in SIMS:
        raise ValueError(f"unknown simulator {kind!r} in {uri!r}; known: {', '.join(sorted(SIMS))}")
    return kind, parse_options(query, sim_option_defaults(kind), where=f"sim:{kind}")


def sim_device(uri: str, **kwargs: Any) -> Device:
    """The ``sim:`` scheme: a simulator in this process (:class:`~pat_runtime.devices.local.LocalDevice`)."""
    kind, opts = check_sim_uri(uri)
    opts.update(kwargs)
    name = opts.pop("name", None) or None
    return LocalDevice(make_sim(kind, **opts), name=name)


__all__ = ["check_sim_uri", "parse_sim_uri", "sim_device", "sim_option_defaults"]
