"""The Mosquitto launcher (pat_runtime.testing.mosquitto): start/stop, auth files, limits, missing binary."""
from __future__ import annotations

import asyncio
import socket

import aiomqtt
import pytest

from pat_runtime.testing import mosquitto as mq
from pat_runtime.testing.mosquitto import mosquitto_broker, mosquitto_broker_sync


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_broker_starts_on_loopback_and_stops_cleanly():
    async with mosquitto_broker() as b:
        assert b.host == "127.0.0.1" and b.url == f"mqtt://127.0.0.1:{b.port}"
        assert _port_open(b.port)
        conf = (b.workdir / "mosquitto.conf").read_text()
        assert f"listener {b.port} 127.0.0.1" in conf
        assert "max_queued_messages 0" in conf and "persistence false" in conf and "allow_anonymous true" in conf
        async with aiomqtt.Client(b.host, b.port) as c:  # a retained round trip through the broker
            await c.subscribe("t/x", qos=1)
            await c.publish("t/x", b"hello", qos=1)
            msg = await asyncio.wait_for(c.messages.__anext__(), 5)
            assert msg.payload == b"hello"
        proc, workdir = b.process, b.workdir
    assert proc.returncode is not None  # waited on: no zombie
    assert not workdir.exists()
    assert not _port_open(b.port)


def test_sync_variant():
    with mosquitto_broker_sync() as b:
        assert _port_open(b.port)
    assert b.process.returncode is not None and not _port_open(b.port)


@pytest.mark.parametrize("use_tool", [True, False], ids=["mosquitto_passwd", "python-pbkdf2"])
async def test_password_file_accepts_right_and_rejects_wrong_credentials(use_tool):
    async with mosquitto_broker(users={"alice": "s3cr3t:/@"}, use_passwd_tool=use_tool) as b:
        assert "allow_anonymous false" in (b.workdir / "mosquitto.conf").read_text()
        line = (b.workdir / "passwd").read_text().strip()
        assert line.startswith("alice:$7$101$") and "s3cr3t" not in line
        async with aiomqtt.Client(b.host, b.port, username="alice", password="s3cr3t:/@"):
            pass
        for user, pw in (("alice", "wrong"), ("mallory", "s3cr3t:/@"), (None, None)):
            with pytest.raises(aiomqtt.MqttCodeError, match="[Nn]ot authori"):
                async with aiomqtt.Client(b.host, b.port, username=user, password=pw):
                    pass
        assert b.url_for("alice", "s3cr3t:/@") == f"mqtt://alice:s3cr3t%3A%2F%40@127.0.0.1:{b.port}"


def test_password_hash_format_is_mosquitto_pbkdf2():
    h = mq.password_hash("pw", salt=b"0123456789ab", iterations=101)
    kind, it, salt, digest = h.split("$")[1:]
    assert (kind, it, salt) == ("7", "101", "MDEyMzQ1Njc4OWFi")
    assert len(digest) == 88  # base64 of 64 bytes


async def test_max_packet_size_disconnects_clients_sending_bigger_packets():
    async with mosquitto_broker(max_packet_size=10_000) as b:
        async with aiomqtt.Client(b.host, b.port) as c:
            await c.publish("t/small", b"x" * 1000, qos=1)
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client(b.host, b.port) as c:
                await c.publish("t/big", b"x" * 20_000, qos=0)
                await asyncio.wait_for(c.messages.__anext__(), 3)  # the broker drops the connection


async def test_fixed_port_and_restart_on_same_port():
    async with mosquitto_broker() as b1:
        port = b1.port
    async with mosquitto_broker(port=port) as b2:
        assert b2.port == port and _port_open(port)


async def test_broker_that_cannot_start_reports_its_log():
    async with mosquitto_broker() as b:
        with pytest.raises(mq.MosquittoError, match="exited"):
            async with mosquitto_broker(port=b.port):  # port taken, fixed: no retry
                pass


def test_missing_binary_skips_locally_and_fails_under_ci(monkeypatch):
    monkeypatch.setattr(mq, "find_mosquitto", lambda: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(mq.MosquittoError, match="CI=true.*not found"):
        mq.require_mosquitto()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="mosquitto broker binary not found"):
        mq.require_mosquitto()
