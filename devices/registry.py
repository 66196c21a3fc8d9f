"""Device URI schemes as an entry-point group: an installed package adds ``mydev:`` to every command.

A scheme maps to a *factory* ``factory(uri: str, **kwargs) -> Device`` (an unconnected device). Built-in
schemes (``sim``, ``zmq``/``tcp``/``ipc``, ``mqtt``/``mqtts``, ``visa``, ``serial``) are declared in this
project's ``pyproject.toml`` under ``[project.entry-points."pat_runtime.devices"]``; a lab package declares
its own the same way::

    [project.entry-points."pat_runtime.devices"]
    mydev = "mylab.devices:make_mydev"

after which ``pat train --device mydev:bench1?gain=2``, ``pat twin`` and ``pat edge`` all build it through
:func:`pat_runtime.devices.factory.make_device`. :func:`register_scheme` does the same at run time (tests, notebooks).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from .base import Device

GROUP = "pat_runtime.devices"

DeviceFactory = Callable[..., Device]

#: fallbacks for a source checkout that was never pip-installed (the entry points win when present)
BUILTIN: dict[str, str] = {
    "sim": "pat_runtime.sims.uri:sim_device",
    "zmq": "pat_runtime.transport.remote:connect_uri",
    "tcp": "pat_runtime.transport.remote:connect_uri",
    "ipc": "pat_runtime.transport.remote:connect_uri",
    "mqtt": "pat_runtime.transport.remote:connect_uri",
    "mqtts": "pat_runtime.transport.remote:connect_uri",
    "visa": "pat_runtime.devices.visa:visa_device",
    "serial": "pat_runtime.devices.serial_sensor:serial_device",
}

_runtime: dict[str, DeviceFactory] = {}


def register_scheme(scheme: str, factory: DeviceFactory) -> None:
    """Add (or replace) a scheme for this process, e.g. in a notebook or a test."""
    _runtime[scheme.lower()] = factory


def unregister_scheme(scheme: str) -> None:
    _runtime.pop(scheme.lower(), None)


def _entry_points() -> dict[str, Any]:
    return {ep.name.lower(): ep for ep in entry_points(group=GROUP)}


def schemes() -> list[str]:
    """Every scheme a device URI may start with."""
    return sorted(set(BUILTIN) | set(_entry_points()) | set(_runtime))


def scheme_of(uri: str) -> str:
    head, sep, _ = uri.partition(":")
    if not sep or not head or not all(c.isalnum() or c in "+-." for c in head):
        return ""
    return head.lower()


def factory_for(uri: str) -> DeviceFactory:
    """The factory that builds ``uri``'s scheme; ``ValueError`` listing the known schemes otherwise."""
    scheme = scheme_of(uri)
    if scheme in _runtime:
        return _runtime[scheme]
    eps = _entry_points()
    if scheme in eps:
        try:
            return eps[scheme].load()
        except Exception as e:  # a broken plugin must not take the whole CLI down
            if scheme in BUILTIN:   # e.g. stale metadata of an older install naming a module that moved
                return _builtin(scheme)
            raise ValueError(f"device scheme {scheme!r} ({eps[scheme].value}) failed to load: "
                             f"{type(e).__name__}: {e}") from None
    if scheme in BUILTIN:
        return _builtin(scheme)
    raise ValueError(f"unknown device URI {uri!r}: the scheme must be one of {', '.join(schemes())} "
                     f"(e.g. sim:plate, zmq://HOST:PORT/NODE, visa:plate?awg=...&dig=...); "
                     f"packages add schemes through the {GROUP!r} entry-point group (docs/devices.md)")


def _builtin(scheme: str) -> DeviceFactory:
    mod, _, attr = BUILTIN[scheme].partition(":")
    return getattr(importlib.import_module(mod), attr)
