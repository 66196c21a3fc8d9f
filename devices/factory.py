"""Build a device from a URI (the scheme picks a factory from :mod:`pat_runtime.devices.registry`).

* ``sim:plate`` / ``sim:circuit?unit=3&seed=1&noise=0.02&latency=0.01`` -> :class:`LocalDevice`
* ``zmq://127.0.0.1:5555/node-id`` -> ZeroMQ remote device (``pat_runtime.devices.remote``)
* ``mqtt://user:pass@127.0.0.1:1883/node-id`` -> MQTT remote device (``pat_runtime.devices.remote``)
* ``visa:plate?awg=TCPIP::HOST::PORT::SOCKET&dig=...`` -> the plate driven by SCPI instruments (``pat_runtime.devices.visa``)
* any scheme an installed package registers in the ``pat_runtime.devices`` entry-point group
"""
from __future__ import annotations

import inspect
from typing import Any
from urllib.parse import parse_qsl

from .base import Device
from .options import coerce as _coerce
from .options import parse_options
from .registry import factory_for


def parse_sim_uri(uri: str) -> tuple[str, dict[str, Any]]:
    """``sim:plate?unit=2&noise=0.02`` -> ``("plate", {"unit": 2, "noise": 0.02})`` (untyped, unchecked)."""
    body = uri.removeprefix("sim:")
    kind, _, query = body.partition("?")
    return kind, {k: _coerce(v) for k, v in parse_qsl(query, keep_blank_values=False)}


def sim_option_defaults(kind: str) -> dict[str, Any]:
    """Every option ``sim:KIND?...`` accepts, with its default (simulator and spec options, plus ``name``)."""
    from pat_runtime.sims import sim_class

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
    from pat_runtime.sims import SIMS

    body = uri.removeprefix("sim:")
    kind, _, query = body.partition("?")
    if kind not in SIMS:
        raise ValueError(f"unknown simulator {kind!r} in {uri!r}; known: {', '.join(sorted(SIMS))}")
    return kind, parse_options(query, sim_option_defaults(kind), where=f"sim:{kind}")


def sim_device(uri: str, **kwargs: Any) -> Device:
    """The ``sim:`` scheme: a simulator in this process (:class:`pat_runtime.devices.local.LocalDevice`)."""
    from pat_runtime.sims import make_sim

    from .local import LocalDevice

    kind, opts = check_sim_uri(uri)
    opts.update(kwargs)
    name = opts.pop("name", None) or None
    return LocalDevice(make_sim(kind, **opts), name=name)


def make_device(uri: str, **kwargs: Any) -> Device:
    """An unconnected device for ``uri`` (``await device.connect()`` next); ``ValueError`` for a bad URI."""
    return factory_for(uri)(uri, **kwargs)
