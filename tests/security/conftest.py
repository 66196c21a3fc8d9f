"""Hostile-peer tests: real ``pat edge`` processes, a real Mosquitto with the generated ACL, attackers on loopback.

Negative checks ("the attack was not delivered") never sleep: each ends with a *barrier*, a legitimate
message that travels the same path after the attack was acknowledged by the broker / socket, so anything
the attack could have caused has arrived by the time the barrier has.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable

import pytest

from pat_runtime.testing.core import free_port
from pat_runtime.testing.mosquitto import Broker, mosquitto_broker
from pat_runtime.transport.mqtt.acl import AclSpec, write_broker_config

HERE = Path(__file__).parent
NODES = ["node-1", "node-2"]


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).parents and "mqtt" in item.name:
            item.add_marker(pytest.mark.mqtt)


@dataclass
class SecureBroker:
    broker: Broker
    dir: Path
    creds: dict[str, Path]

    @property
    def port(self) -> int:
        return self.broker.port

    def url(self, user: str | None = None, scheme: str = "mqtt") -> str:
        base = f"{scheme}://127.0.0.1:{self.port}"
        return f"{base}?credentials={self.creds[user]}" if user else base

    def password(self, user: str) -> str:
        return tomllib.loads(self.creds[user].read_text())["password"]


@contextlib.asynccontextmanager
async def secure_broker(tmp: Path, nodes=NODES, **kw) -> AsyncIterator[SecureBroker]:
    """Mosquitto running the config ``pat broker-config`` writes (users coordinator, NODES..., observer 'eve')."""
    port = kw.pop("port", None) or free_port()
    spec = AclSpec(list(nodes), observers=["eve"])
    creds = write_broker_config(tmp / "broker", spec, port=None if "tls" in kw else port, **kw)
    async with mosquitto_broker(port=port, config=tmp / "broker" / "mosquitto.conf") as b:
        yield SecureBroker(b, tmp / "broker", creds)


class Edge:
    """``python -m pat_runtime.edge`` (== ``pat edge``) as a child process, its output in a file (no pipe to fill)."""

    def __init__(self, tmp: Path, device: str, connect: str, node_id: str, *extra: str, heartbeat: float = 0.2):
        self.log_path = tmp / f"edge-{node_id}-{os.urandom(3).hex()}.log"
        self.args = [sys.executable, "-m", "pat_runtime.edge", "--device", device, "--connect", connect, "--node-id", node_id,
                     "--heartbeat", str(heartbeat), *extra]
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Edge":
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    async def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return await asyncio.to_thread(self.proc.wait, 5)


@pytest.fixture
async def edges(tmp_path) -> AsyncIterator[Callable[..., Edge]]:
    """Factory for started :class:`Edge` processes; all are stopped at teardown."""
    started: list[Edge] = []

    def make(*args, **kw) -> Edge:
        e = Edge(tmp_path, *args, **kw).start()
        started.append(e)
        return e

    yield make
    for e in started:  # attackers and honest nodes alike: graceful exit is tested elsewhere
        e.kill()
