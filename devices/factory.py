"""Build a device from a URI.

* ``sim:plate`` / ``sim:circuit?unit=3&seed=1&noise=0.02&latency=0.01`` -> :class:`LocalDevice`
* ``zmq://127.0.0.1:5555/node-id`` -> ZeroMQ remote device (``devices.remote``)
* ``mqtt://user:pass@127.0.0.1:1883/node-id`` -> MQTT remote device (``devices.remote``)
"""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .base import Device


def _coerce(v: str) -> Any:
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


def parse_sim_uri(uri: str) -> tuple[str, dict[str, Any]]:
    """``sim:plate?unit=2&noise=0.02`` -> ``("plate", {"unit": 2, "noise": 0.02})``."""
    body = uri.removeprefix("sim:")
    kind, _, query = body.partition("?")
    return kind, {k: _coerce(v) for k, v in parse_qsl(query, keep_blank_values=False)}


def make_device(uri: str, **kwargs: Any) -> Device:
    if uri.startswith("sim:"):
        from sims import make_sim

        from .local import LocalDevice

        kind, opts = parse_sim_uri(uri)
        opts.update(kwargs)
        name = opts.pop("name", None)
        return LocalDevice(make_sim(kind, **opts), name=name)
    scheme = urlsplit(uri).scheme
    if scheme in ("zmq", "tcp", "ipc", "mqtt", "mqtts"):
        from . import remote

        return remote.connect_uri(uri, **kwargs)
    raise ValueError(f"unknown device URI {uri!r}: expected sim:KIND, zmq://HOST:PORT/NODE or mqtt://HOST:PORT/NODE")
