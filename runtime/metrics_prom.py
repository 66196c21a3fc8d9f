"""Prometheus metrics for the coordinator (training) side and the edge side (``prometheus_client``).

Metrics (each process gets its own registry; ``--metrics-port N`` serves it on ``http://127.0.0.1:N/metrics``)::

    pat_nodes                     coordinator: edge nodes alive; edge: 1 while serving
    pat_inflight_requests         device requests being served right now
    pat_request_seconds           histogram of request latency (s)
    pat_errors_total{code}        failed requests by error code (wire codes: out_of_range, timeout, ...)
    pat_requests_total{type}      requests by message type (edge) or ``apply`` (coordinator)

The coordinator side instruments a :class:`~pat_runtime.devices.base.Device` (a remote device's requests, or a local
one's calls); the edge side instruments its :class:`~pat_runtime.edge.service.NodeService` (every request type).
"""
from __future__ import annotations

import functools
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def error_code(e: BaseException) -> str:
    """A short code for an exception: the wire code of a remote error, else a name for the error class."""
    code = getattr(e, "code", None)
    if isinstance(code, str) and code:
        return code
    from pat_runtime.devices.errors import DeviceConnectionError, DeviceTimeoutError, OutOfRangeError, ShapeError

    for cls, name in ((DeviceTimeoutError, "timeout"), (DeviceConnectionError, "connection"),
                      (OutOfRangeError, "out_of_range"), (ShapeError, "bad_shape")):
        if isinstance(e, cls):
            return name
    return type(e).__name__


class PromMetrics:
    """One registry with the pat metrics; :meth:`serve` exposes it over HTTP."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.nodes = Gauge("pat_nodes", "edge nodes alive (coordinator) / 1 while serving (edge)", registry=r)
        self.inflight = Gauge("pat_inflight_requests", "requests in flight", registry=r)
        self.latency = Histogram("pat_request_seconds", "request latency in seconds", buckets=BUCKETS, registry=r)
        self.errors = Counter("pat_errors", "failed requests by error code", ["code"], registry=r)
        self.requests = Counter("pat_requests", "requests by message type", ["type"], registry=r)
        self._server: Any = None

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``addr:port`` (port 0: a free one); returns the port."""
        started = start_http_server(port, addr=addr, registry=self.registry)
        self._server = started[0] if isinstance(started, tuple) else None
        return self._server.server_port if self._server is not None else port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- coordinator side ----------------------------------------------------------------------------------
    def _observe(self, kind: str, t0: float, error: BaseException | None = None) -> None:
        self.requests.labels(kind).inc()
        self.latency.observe(time.perf_counter() - t0)
        if error is not None:
            self.errors.labels(error_code(error)).inc()

    def instrument_device(self, device: Any) -> Any:
        """Time every call of ``device`` (``apply``, ``apply_many``, inline calls) and count failures by code;
        track its coordinator's nodes."""
        for attr, kind in (("_apply", "apply"), ("_apply_many", "apply_many")):
            inner = getattr(device, attr, None)
            if inner is None:
                continue

            def make(inner=inner, kind=kind):
                @functools.wraps(inner)
                async def timed(*args):
                    self.inflight.inc()
                    t0, err = time.perf_counter(), None
                    try:
                        return await inner(*args)
                    except Exception as e:
                        err = e
                        raise
                    finally:
                        self.inflight.dec()
                        self._observe(kind, t0, err)
                return timed

            setattr(device, attr, make())
        inner_now = getattr(device, "_apply_nowait", None)
        if inner_now is not None:
            @functools.wraps(inner_now)
            def timed_now(*args):
                t0, err = time.perf_counter(), None
                try:
                    return inner_now(*args)
                except NotImplementedError:
                    raise
                except Exception as e:
                    err = e
                    raise
                finally:
                    self._observe("apply", t0, err)

            device._apply_nowait = timed_now
        coord = getattr(device, "coordinator", None)
        if coord is not None and hasattr(coord, "alive_nodes"):
            self.nodes.set_function(lambda: len(coord.alive_nodes()))
        else:
            self.nodes.set_function(lambda: 1 if getattr(device, "connected", False) else 0)
        return device

    # -- edge side ---------------------------------------------------------------------------------------------
    def _edge_reply(self, header: dict, reply: Any, t0: float) -> None:
        self.requests.labels(str(header.get("type"))).inc()
        self.latency.observe(time.perf_counter() - t0)
        err = reply[0].get("error") if isinstance(reply, tuple) and isinstance(reply[0], dict) else None
        if isinstance(err, dict):
            self.errors.labels(str(err.get("code", "error"))).inc()

    def edge_plugin(self, service: Any) -> None:
        """A :func:`pat_runtime.edge.agent.run_edge` plugin: time every request the node serves (the awaited path and the
        transports' inline ``handle_nowait`` fast path), errors by wire code. The service's class is swapped
        for a subclass, because transports look the fast path up on the class."""
        m = self
        base = type(service)

        class Instrumented(base):  # type: ignore[misc, valid-type]
            async def handle(self_, header, arrays):
                m.inflight.inc()
                t0 = time.perf_counter()
                try:
                    reply = await base.handle(self_, header, arrays)
                except Exception as e:
                    m.requests.labels(str(header.get("type"))).inc()
                    m.errors.labels(error_code(e)).inc()
                    raise
                finally:
                    m.inflight.dec()
                m._edge_reply(header, reply, t0)
                return reply

        if hasattr(base, "handle_nowait"):
            def handle_nowait(self_, header, arrays):
                t0 = time.perf_counter()
                reply = base.handle_nowait(self_, header, arrays)
                if reply is not None:      # None: the transport awaits handle(), which counts it
                    m._edge_reply(header, reply, t0)
                return reply

            Instrumented.handle_nowait = handle_nowait
        Instrumented.__name__ = Instrumented.__qualname__ = f"Instrumented{base.__name__}"
        service.__class__ = Instrumented
        self.nodes.set(1)
