"""MQTT with the generated broker config: per-node users + ACL; attackers are logged-in users of the same broker.

The honest node is a ``pat edge`` process with its own credentials file; node-2's credentials and the
read-only observer 'eve' are the attackers. Before this change every attack below succeeded.
"""
from __future__ import annotations

import asyncio
import os

import aiomqtt
import numpy as np
import pytest
from typer.testing import CliRunner

from pat_runtime.transport.remote import RemoteDevice
from pat_runtime import wire
from pat_runtime.cli import app
from pat_runtime.transport.mqtt import MqttAuthError, MqttCoordinator
from pat_runtime.transport.mqtt.credentials import CredentialsError, read_credentials_file
from pat_runtime.sims import make_sim
from pat_runtime.testing import wait_until

from .conftest import secure_broker

HONEST = "sim:circuit?unit=1&noise=0"


class Client:
    """A raw aiomqtt client that records everything it receives."""

    def __init__(self, port: int, user: str, password: str):
        self.c = aiomqtt.Client("127.0.0.1", port, username=user, password=password,
                                identifier=f"{user}-{os.urandom(3).hex()}")
        self.got: list[tuple[str, bytes]] = []
        self.task: asyncio.Task | None = None

    async def __aenter__(self):
        await self.c.__aenter__()
        self.task = asyncio.create_task(self._recv())
        return self

    async def _recv(self):
        async for m in self.c.messages:
            self.got.append((m.topic.value, bytes(m.payload)))

    async def __aexit__(self, *exc):
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.c.__aexit__(None, None, None)

    def topics(self) -> list[str]:
        return [t for t, _ in self.got]


def _ping(node: str, cid: str) -> bytes:
    return wire.pack(wire.make_header("ping", node=node, cid=cid))


async def test_mqtt_logged_in_attackers_cannot_read_command_forge_or_deploy(tmp_path, edges):
    async with secure_broker(tmp_path) as sb:
        honest = edges(HONEST, sb.url(), "node-1", "--credentials", str(sb.creds["node-1"]))
        wrong = tmp_path / "wrong.toml"
        wrong.write_text('username = "node-2"\npassword = "not-the-password"\n')
        wrong.chmod(0o600)
        # `pat edge` with wrong credentials (the CLI in a thread: the honest node is the real process here)
        bad_login = asyncio.create_task(asyncio.to_thread(CliRunner().invoke, app, [
            "edge", "--device", HONEST, "--connect", sb.url(), "--node-id", "node-2", "--credentials", str(wrong)]))
        coord = await MqttCoordinator(sb.url("coordinator"), timeout=10).start()
        try:
            await coord.wait_for_node("node-1", timeout=60)
            sid = coord.nodes["node-1"].meta["sid"]
            async with Client(sb.port, "node-2", sb.password("node-2")) as mallory, \
                    Client(sb.port, "eve", sb.password("eve")) as eve, \
                    Client(sb.port, "coordinator", sb.password("coordinator")) as spy:
                await spy.c.subscribe("pat/node-1/rep/+", qos=1)
                # reading other nodes' x / theta / y
                for c in (mallory, eve):
                    await c.c.subscribe([("pat/+/req", 1), ("pat/+/rep/#", 1), ("pat/node-1/#", 1)])
                await mallory.c.subscribe("pat/node-2/req", qos=1)  # its own: the barrier below
                # commanding node-1, deploying to it, forging its replies, marking it offline
                for c in (mallory, eve):
                    await c.c.publish("pat/node-1/req", _ping("node-1", "evil"), qos=1)
                    await c.c.publish("pat/node-1/deploy", wire.pack(wire.make_header("deploy", node="node-1")),
                                      qos=1, retain=True)
                    await c.c.publish(f"pat/node-1/rep/{coord.cid}", wire.pack(wire.make_header(
                        "reply", id="forged", node="node-1", ok=True)), qos=1)
                    await c.c.publish("pat/node-1/status", f"offline {sid}".encode(), qos=1, retain=True)
                    await c.c.publish("pat/node-1/hello", b"", qos=1, retain=True)
                    await c.c.publish("pat/node-2/req", _ping("node-2", "evil"), qos=1)  # a node sending requests
                # barrier 1: real measurements through the broker, from the honest unit
                dev = RemoteDevice(coord, "node-1", timeout=10, retries=1)
                await dev.connect(timeout=10)
                x = np.full((2, dev.spec.in_dim), 0.25, np.float32)
                theta = np.zeros(dev.spec.param_dim, np.float32)
                for _ in range(2):
                    np.testing.assert_allclose(await dev.apply(x, theta),
                                               make_sim("circuit", unit=1, noise=0).measure(x, theta), rtol=1e-5)
                await wait_until(lambda: sum(t == f"pat/node-1/rep/{coord.cid}" for t in spy.topics()) >= 2)
                # barrier 2: a message mallory may read arrives after anything the broker sent her before
                await coord.client.publish("pat/node-2/req", b"marker", qos=1)
                await wait_until(lambda: ("pat/node-2/req", b"marker") in mallory.got)
                # nothing the attackers sent was delivered, nothing they subscribed to leaked
                assert "pat/node-1/rep/evil" not in spy.topics()          # node-1 never saw their request
                assert coord.stats.unmatched == 0                         # the forged reply never arrived
                assert [t for t, _ in mallory.got] == ["pat/node-2/req"]
                # the observer reads status only (hello / status / hb), never x, theta or y
                assert eve.got and {t.split("/")[-1] for t in eve.topics()} <= {"hello", "status", "hb"}
                assert coord.nodes["node-1"].alive and coord.nodes["node-1"].meta["sid"] == sid
            # the retained state of node-1 is intact: its hello and "online" status, and no deploy
            async with Client(sb.port, "coordinator", sb.password("coordinator")) as check, \
                    Client(sb.port, "node-1", sb.password("node-1")) as as_node:
                await check.c.subscribe([("pat/node-1/hello", 1), ("pat/node-1/status", 1)])
                await wait_until(lambda: len(check.got) == 2)
                got = dict(check.got)
                assert got["pat/node-1/status"] == f"online {sid}".encode() and got["pat/node-1/hello"] != b""
                await as_node.c.subscribe([("pat/node-1/deploy", 1), ("pat/node-1/infer", 1)])
                await coord.client.publish("pat/node-1/infer", b"", qos=1)  # barrier (an empty, ignored message)
                await wait_until(lambda: as_node.got)
                assert as_node.topics() == ["pat/node-1/infer"]               # no retained deploy
            # wrong credentials: `pat edge` exits with a clear error (no traceback), the honest node is untouched
            r = await asyncio.wait_for(bad_login, 60)
            assert r.exit_code == 2 and "refused the connection" in r.output and "Traceback" not in r.output
            assert "not-the-password" not in r.output
            assert honest.proc.poll() is None and coord.alive_nodes() == ["node-1"]
        finally:
            await coord.close()


async def test_mqtt_wrong_or_missing_credentials_are_refused(tmp_path, monkeypatch):
    async with secure_broker(tmp_path) as sb:
        with pytest.raises(MqttAuthError):
            await MqttCoordinator(sb.url()).start()  # anonymous
        monkeypatch.setenv("PAT_MQTT_USERNAME", "coordinator")
        monkeypatch.setenv("PAT_MQTT_PASSWORD", "guess")
        with pytest.raises(MqttAuthError):
            await MqttCoordinator(sb.url()).start()
        monkeypatch.setenv("PAT_MQTT_PASSWORD", sb.password("coordinator"))  # from the environment: accepted
        coord = await MqttCoordinator(sb.url()).start()
        await coord.close()
    loose = tmp_path / "loose.toml"
    loose.write_text('username = "a"\npassword = "b"\n')
    loose.chmod(0o644)
    with pytest.raises(CredentialsError, match="chmod 600"):
        read_credentials_file(loose)
