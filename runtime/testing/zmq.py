"""Test helpers for the ZeroMQ transport: a coordinator plus in-process edge nodes on free loopback ports.

    async with zmq_fleet(2) as fleet:                 # ZmqCoordinator + 2 EdgeNodes serving sim:circuit units
        dev = fleet.remote("node0")                   # a connected RemoteDevice
        y = await dev.apply(x, theta)

:class:`EdgeProcess` starts ``pat edge`` in a separate process (``python -m pat_runtime.edge``).
:class:`RawCoordinator` is a bare ROUTER an edge connects to, for sending it arbitrary (hostile) frames.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterable

import zmq
import zmq.asyncio

from pat_runtime import wire
from pat_runtime.devices.base import Device
from pat_runtime.transport.remote import RemoteDevice
from pat_runtime.edge.agent import EdgeNode
from pat_runtime.transport.zmq import ZmqCoordinator, ZmqEdgeTransport

from .core import free_port, sim_device
from .faults import DropReplies


class RawCoordinator:
    """A bare ROUTER that an edge node connects to (``raw.url``), for sending it arbitrary frames."""

    def __init__(self) -> None:
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.url = f"tcp://127.0.0.1:{free_port()}"
        self.sock.bind(self.url)

    async def recv(self, timeout: float = 5.0) -> tuple[bytes, dict[str, Any], list]:
        """Next ``(identity, header, arrays)`` that is not a heartbeat."""
        while True:
            frames = await asyncio.wait_for(self.sock.recv_multipart(), timeout)
            h, arrays = wire.decode(frames[1:])
            if h["type"] != "heartbeat":
                return frames[0], h, arrays

    async def send(self, ident: bytes, *frames: Any) -> None:
        await self.sock.send_multipart([ident, *frames])

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


class LossyEdgeTransport(ZmqEdgeTransport):
    """A ZmqEdgeTransport that loses its first ``drop_replies`` replies to ``types`` (a lossy link), through
    the edge's fault hook (:class:`pat_runtime.testing.faults.DropReplies`).

    ``dropped_ids`` records the request ids whose reply was dropped.
    """

    def __init__(self, *args: Any, drop_replies: int = 1, types: Iterable[str] = ("apply",), **kw: Any):
        self.drops = DropReplies(drop_replies, types)
        super().__init__(*args, faults=self.drops, **kw)

    @property
    def dropped_ids(self) -> list[str]:
        return self.drops.dropped_ids


@dataclass
class RunningNode:
    """An in-process edge node running as a task; :meth:`stop` says bye and waits for it."""

    node: EdgeNode
    task: asyncio.Task
    stop_event: asyncio.Event

    @property
    def device(self) -> Device:
        return self.node.device

    @property
    def service(self):
        return self.node.service

    async def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        await asyncio.wait_for(asyncio.shield(self.task), timeout)


async def start_node(device: Device, url: str, node_id: str, heartbeat: float = 0.1,
                     plugins: Iterable[Callable] = (), transport: ZmqEdgeTransport | None = None,
                     **transport_kw: Any) -> RunningNode:
    """Run an :class:`EdgeNode` for ``device`` in this loop (no signal handlers); returns once it serves."""
    transport = transport or ZmqEdgeTransport(url, node_id, heartbeat=heartbeat, **transport_kw)
    node = EdgeNode(device, transport, node_id, plugins)
    stop = asyncio.Event()
    task = asyncio.create_task(node.run(stop, handle_signals=False), name=f"edge-node {node_id}")
    ready = asyncio.create_task(node.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    await asyncio.gather(ready, return_exceptions=True)
    if task.done():
        task.result()  # raises what went wrong
    return RunningNode(node, task, stop)


@dataclass
class ZmqFleet:
    coordinator: ZmqCoordinator
    url: str
    nodes: dict[str, RunningNode] = field(default_factory=dict)

    def remote(self, node_id: str, **kw: Any) -> RemoteDevice:
        """A :class:`RemoteDevice` for ``node_id`` on the fleet's coordinator (call ``await dev.connect()``)."""
        return RemoteDevice(self.coordinator, node_id, **kw)


@contextlib.asynccontextmanager
async def zmq_fleet(n: int = 1, kind: str = "circuit", *, heartbeat: float = 0.1,
                    devices: Iterable[Device] | None = None, coordinator_kw: dict | None = None,
                    edge_kw: dict | None = None, join_timeout: float = 10.0,
                    **sim_kw: Any) -> AsyncIterator[ZmqFleet]:
    """A started :class:`ZmqCoordinator` on a free port plus ``n`` joined in-process nodes ``node0..``.

    Nodes serve ``devices`` if given, else ``sim_device(kind, unit=i, **sim_kw)``.
    """
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    coord = ZmqCoordinator(url, **(coordinator_kw or {}))
    await coord.start()
    fleet = ZmqFleet(coord, url)
    try:
        devs = list(devices) if devices is not None else [await sim_device(kind, unit=i, **sim_kw) for i in range(n)]
        for i, dev in enumerate(devs):
            nid = f"node{i}"
            fleet.nodes[nid] = await start_node(dev, url, nid, heartbeat=heartbeat, **(edge_kw or {}))
        for nid in fleet.nodes:
            await coord.wait_for_node(nid, timeout=join_timeout)
        yield fleet
    finally:
        for rn in fleet.nodes.values():
            with contextlib.suppress(Exception):
                await rn.stop()
        await coord.close()


class EdgeProcess:
    """``python -m pat_runtime.edge ...`` (the ``pat edge`` command) as a child process; :meth:`terminate` sends SIGTERM."""

    def __init__(self, device: str, connect: str, node_id: str, heartbeat: float = 0.2, *extra: str):
        self.args = [sys.executable, "-m", "pat_runtime.edge", "--device", device, "--connect", connect,
                     "--node-id", node_id, "--heartbeat", str(heartbeat), *extra]
        self.proc: subprocess.Popen | None = None

    def start(self) -> "EdgeProcess":
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        return self

    async def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait (without blocking the loop) for the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, timeout)

    def output(self) -> str:
        if self.proc is None or self.proc.stdout is None:
            return ""
        return self.proc.stdout.read().decode(errors="replace")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
