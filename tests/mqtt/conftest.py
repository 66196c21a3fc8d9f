"""MQTT test fixtures: a real Mosquitto broker per test (free loopback port) and in-process edge nodes.

Tests in this directory are marked ``mqtt`` (``pytest -m mqtt`` / ``-m "not mqtt"``). Without the broker
binary they are skipped, except under CI (``CI=true``) where that is an error.
"""
from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from pat_runtime.edge.service import NodeService
from pat_runtime.testing import sim_device
from pat_runtime.testing.mosquitto import Broker, mosquitto_broker
from pat_runtime.transport.mqtt import MqttCoordinator, MqttEdgeTransport

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.mqtt)


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    async with mosquitto_broker() as b:
        yield b


@dataclass
class Node:
    """An in-process edge node: ``service`` (NodeService), ``transport`` and its serving task."""

    node_id: str
    service: NodeService
    transport: MqttEdgeTransport
    stop: asyncio.Event
    task: asyncio.Task

    @property
    def device(self):
        return self.service.device

    async def shutdown(self, timeout: float = 10.0) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, timeout)


@contextlib.asynccontextmanager
async def _edge_node(url: str, node_id: str = "node-1", heartbeat: float = 0.2, sim: dict[str, Any] | None = None,
                    **transport_kw: Any) -> AsyncIterator[Node]:
    """Serve a circuit sim (noise 0 unless ``sim`` says otherwise) as ``node_id`` through the broker at ``url``."""
    dev = await sim_device("circuit", **{"noise": 0.0, **(sim or {})})
    service = NodeService(dev, node_id)
    transport = MqttEdgeTransport(url, node_id, heartbeat=heartbeat, **transport_kw)
    stop = asyncio.Event()
    task = asyncio.create_task(transport.serve(service, stop), name=f"test-edge {node_id}")
    node = Node(node_id, service, transport, stop, task)
    try:
        yield node
    finally:
        stop.set()
        done, _ = await asyncio.wait({task}, timeout=10)
        if not done:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise AssertionError(f"edge node {node_id} did not stop within 10 s of stop.set()")
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()


@contextlib.asynccontextmanager
async def _coordinator(url: str, **kw: Any) -> AsyncIterator[MqttCoordinator]:
    coord = MqttCoordinator(url, **kw)
    await coord.start()
    try:
        yield coord
    finally:
        await coord.close()


@pytest.fixture
def edge_node():
    """Factory: ``async with edge_node(broker.url, "node-1", heartbeat=0.2, sim={...}) as node:``."""
    return _edge_node


@pytest.fixture
def coordinator():
    """Factory: ``async with coordinator(broker.url, timeout=2) as coord:``."""
    return _coordinator
