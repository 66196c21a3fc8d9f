"""The edge node agent: one device, one NodeService, one transport.

``EdgeNode.run()``::

    await device.connect()
    service = NodeService(device, node_id)
    for plugin in plugins: plugin(service)          # e.g. deployment / inference handlers (may be async)
    await transport.serve(service, stop)            # hello, heartbeats, requests ... until stop
    await device.close()

SIGTERM / SIGINT set ``stop`` (when run in the main thread), so the node says bye and exits cleanly.
:func:`run_edge` picks the transport from the coordinator URL: ``tcp://`` / ``ipc://`` -> ZeroMQ,
``mqtt://`` -> MQTT.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import threading
from typing import Any, Callable, Iterable

from pat_runtime.devices.base import Device
from pat_runtime.edge.service import NodeService
from pat_runtime.transport.base import EdgeTransport

log = logging.getLogger(__name__)

Plugin = Callable[[NodeService], Any]


class EdgeNode:
    """Serve ``device`` as ``node_id`` over ``transport`` until :meth:`stop` (or SIGTERM / SIGINT)."""

    def __init__(self, device: Device, transport: EdgeTransport, node_id: str, plugins: Iterable[Plugin] = ()):
        self.device = device
        self.transport = transport
        self.node_id = node_id
        self.plugins = list(plugins)
        self.service: NodeService | None = None
        self._stop: asyncio.Event | None = None
        self.ready = asyncio.Event()

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def run(self, stop: asyncio.Event | None = None, handle_signals: bool = True,
                  connect_timeout: float = 30.0) -> None:
        self._stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        installed: list[int] = []
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, self._stop.set)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError):  # not supported on this platform / loop
                    pass
        try:
            if not self.device.connected:
                await self.device.connect(timeout=connect_timeout)
            self.service = NodeService(self.device, self.node_id)
            for plugin in self.plugins:
                r = plugin(self.service)
                if inspect.isawaitable(r):
                    await r
            self.ready.set()
            log.info("node %s serving %s", self.node_id, self.device)
            await self.transport.serve(self.service, self._stop)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self.device.close()
            log.info("node %s stopped", self.node_id)


def make_edge_transport(connect_url: str, node_id: str, heartbeat: float = 0.5, **kwargs: Any) -> EdgeTransport:
    """``tcp://`` / ``ipc://`` -> :class:`ZmqEdgeTransport`; ``mqtt://`` -> ``MqttEdgeTransport``."""
    scheme = connect_url.split("://", 1)[0].lower() if "://" in connect_url else ""
    if scheme in ("tcp", "ipc", "inproc"):
        from pat_runtime.transport.zmq import ZmqEdgeTransport

        return ZmqEdgeTransport(connect_url, node_id, heartbeat=heartbeat, **kwargs)
    if scheme in ("mqtt", "mqtts"):
        from pat_runtime.transport.mqtt import MqttEdgeTransport

        return MqttEdgeTransport(connect_url, node_id, heartbeat=heartbeat, **kwargs)
    raise ValueError(f"unknown coordinator URL {connect_url!r}: expected tcp://HOST:PORT or mqtt://HOST:PORT")


async def run_edge(device_uri: str, connect_url: str, node_id: str, heartbeat: float = 0.5,
                   plugins: Iterable[Plugin] = (), stop: asyncio.Event | None = None,
                   handle_signals: bool = True, **transport_kw: Any) -> None:
    """Build the device from ``device_uri`` (``pat_runtime.devices.factory.make_device``) and serve it until stopped."""
    from pat_runtime.devices.factory import make_device

    transport = make_edge_transport(connect_url, node_id, heartbeat=heartbeat, **transport_kw)
    device = make_device(device_uri)
    await EdgeNode(device, transport, node_id, plugins).run(stop, handle_signals=handle_signals)
