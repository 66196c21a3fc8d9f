"""RemoteDevice: a device served by an edge node, reached through a coordinator.

``apply(x, theta)`` validates shapes and safe ranges locally (:class:`pat_runtime.devices.base.Device`), then sends one
``apply`` request with arrays ``[x, theta]`` and returns the node's ``y``. ``apply_many(xs, thetas)`` (one θ per
channel) is one ``apply_many`` request with ``[x[C, B, in], theta[C, P]]`` when the node announced that handler
in its hello, else ``C`` concurrent ``apply`` requests (older nodes keep working). Timeouts and retries are the
coordinator's (a retry reuses the request id, so the node never applies a batch twice).

URIs (:func:`connect_uri`, used by ``pat_runtime.devices.factory.make_device``)::

    zmq://HOST:PORT/NODE[?timeout=10&retries=2&liveness=3]   binds a ZmqCoordinator on tcp://HOST:PORT
        [&curve_cert=coordinator.key_secret&curve_keys=keys.txt]   CURVE, node ids bound to keys (docs/security.md)
        [&insecure=true]                                      non-loopback HOST without CURVE (warned)
    tcp://HOST:PORT/NODE                                      same
    mqtt://[USER@]HOST:PORT/NODE[?prefix=pat&credentials=FILE]  MqttCoordinator through the broker
    mqtts://HOST:8883/NODE?credentials=FILE                   TLS (CA and client certificate from the file)

A device built from a URI owns its coordinator and closes it on :meth:`close`.
"""
from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from pat_runtime.devices.codes import ErrorCode
from pat_runtime.transport.base import Coordinator
from pat_runtime.wire import MessageType

from pat_runtime.devices.base import Device
from pat_runtime.devices.errors import RemoteDeviceError, ShapeError
from pat_runtime.devices.options import coerce
from pat_runtime.devices.uri import parse_uri


def check_finite(name: str, y: np.ndarray) -> np.ndarray:
    """``y`` if every value is a finite number, else :class:`RemoteDeviceError` (code ``non_finite``)."""
    if y.dtype.kind in "iu" or (y.dtype.kind == "f" and np.isfinite(y).all()):
        return y
    bad = int(np.size(y) - np.isfinite(y).sum()) if y.dtype.kind == "f" else int(np.size(y))
    raise RemoteDeviceError(name, f"node returned {bad} non-finite (NaN/inf) or non-numeric y value(s) "
                                  f"(dtype {y.dtype}); the measurement is refused", code=ErrorCode.NON_FINITE)


class RemoteDevice(Device):
    """The device of edge node ``node_id``. ``own_coordinator``: close the coordinator with the device."""

    def __init__(self, coordinator: Coordinator, node_id: str, timeout: float = 10.0, retries: int = 2,
                 own_coordinator: bool = False, name: str | None = None):
        super().__init__(name or node_id)
        self.coordinator = coordinator
        self.node_id = node_id
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.own_coordinator = own_coordinator

    async def _connect(self, timeout: float) -> None:
        started_here = not getattr(self.coordinator, "started", False)
        if started_here:
            await self.coordinator.start()
        try:
            info = await self.coordinator.wait_for_node(self.node_id, timeout=timeout)
        except BaseException:
            if started_here and self.own_coordinator:
                await self.coordinator.close()
            raise
        self._spec = info.spec

    async def _apply(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        _, out = await self.coordinator.request(self.node_id, MessageType.APPLY, [x, theta],
                                                timeout=self.timeout, retries=self.retries)
        if len(out) != 1:
            raise ShapeError(self.name, f"apply reply has {len(out)} arrays, expected 1")
        y = out[0]
        want = (x.shape[0], self.spec.out_dim)
        if y.shape != want:
            raise ShapeError(self.name, f"node returned y of shape {list(y.shape)}, expected {list(want)}")
        check_finite(self.name, y)
        return np.array(y, dtype=np.float32)  # a writable copy, detached from the transport's buffer

    def supports(self, type: str) -> bool:
        """Did the node announce a handler for ``type`` (hello ``handlers``)?"""
        info = self.coordinator.nodes.get(self.node_id)
        handlers = info.meta.get("handlers") if info is not None else None
        return isinstance(handlers, (list, tuple)) and type in handlers

    async def _apply_many(self, xs: np.ndarray, thetas: np.ndarray) -> np.ndarray:
        if not self.supports(MessageType.APPLY_MANY):
            return np.stack(await asyncio.gather(*(self._apply(xs[c], thetas[c]) for c in range(xs.shape[0]))))
        _, out = await self.coordinator.request(self.node_id, MessageType.APPLY_MANY, [xs, thetas],
                                                timeout=self.timeout, retries=self.retries)
        want = (xs.shape[0], xs.shape[1], self.spec.out_dim)
        if len(out) != 1 or out[0].shape != want:
            raise ShapeError(self.name, f"apply_many reply is {[list(o.shape) for o in out]}, expected [{list(want)}]")
        return np.array(check_finite(self.name, out[0]), dtype=np.float32)

    async def close(self) -> None:
        await super().close()
        if self.own_coordinator:
            await self.coordinator.close()


_DEVICE_OPTIONS = ("timeout", "retries", "name")


def connect_uri(uri: str, **kwargs: Any) -> RemoteDevice:
    """``zmq://HOST:PORT/NODE`` or ``mqtt://[USER:PASS@]HOST:PORT/NODE`` -> an unconnected :class:`RemoteDevice`.

    Query options and ``kwargs``: ``timeout``, ``retries``, ``name`` configure the device; other ``kwargs``
    go to the coordinator (e.g. ``liveness``, ``max_inflight``). Other query options go to the ZeroMQ
    coordinator as keywords, or stay in the MQTT URL (which has its own, e.g. ``prefix``).
    """
    parts = parse_uri(uri, what="device URI")
    scheme = parts.scheme
    node = parts.path
    if not node or "/" in node:
        raise ValueError(f"device URI {parts.redacted!r} must name exactly one node: {scheme}://HOST:PORT/NODE")
    query = parts.query
    dev_kw = {k: coerce(v) for k, v in query if k in _DEVICE_OPTIONS}
    rest = [(k, v) for k, v in query if k not in _DEVICE_OPTIONS]
    dev_kw.update({k: kwargs.pop(k) for k in _DEVICE_OPTIONS if k in kwargs})
    if scheme in ("zmq", "tcp"):
        from pat_runtime.transport.zmq import ZmqCoordinator

        if not parts.host or parts.port is None:
            raise ValueError(f"device URI {parts.redacted!r} needs HOST:PORT")
        opts = {k: coerce(v) for k, v in rest}
        opts.update(kwargs)
        cert, keys = opts.pop("curve_cert", None), opts.pop("curve_keys", None)
        if cert is not None:  # file paths, not secrets: the URI may be recorded
            from pat_runtime.transport.zmq import CurveServer

            opts["curve"] = CurveServer.from_files(str(cert), str(keys) if keys is not None else None)
        elif keys is not None:
            raise ValueError(f"{parts.redacted!r}: curve_keys needs curve_cert (the coordinator's secret certificate)")
        coord: Coordinator = ZmqCoordinator(f"tcp://{parts.hostport}", **opts)
    elif scheme in ("mqtt", "mqtts"):
        from pat_runtime.transport.mqtt import MqttCoordinator

        coord = MqttCoordinator(parts.geturl(path="", query=rest), **kwargs)
    else:
        raise ValueError(f"unsupported remote device scheme {scheme!r} in {parts.redacted!r}")
    return RemoteDevice(coord, node, own_coordinator=True, **dev_kw)
