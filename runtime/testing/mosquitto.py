"""A throw-away Mosquitto broker on loopback, for tests and benchmarks.

::

    async with mosquitto_broker() as broker:          # or: with mosquitto_broker_sync() as broker:
        coord = MqttCoordinator(broker.url)           # "mqtt://127.0.0.1:PORT"

    async with mosquitto_broker(users={"alice": "secret"}) as broker:
        broker.url_for("alice", "secret")             # "mqtt://alice:secret@127.0.0.1:PORT"

Generated ``mosquitto.conf`` (Mosquitto 2.x)::

    listener PORT 127.0.0.1
    persistence false
    set_tcp_nodelay true       # no Nagle on the broker's sockets (else 40-90 ms per small round trip)
    max_queued_messages 0      # 0 = NO LIMIT in Mosquitto 2 ("Set to 0 for no maximum"), not "queue none":
                               # QoS 1 messages for a slow subscriber are queued without bound, none dropped
    allow_anonymous true       # or false + password_file when ``users`` are given
    password_file FILE         # made by mosquitto_passwd, else PBKDF2-SHA512 hashes ($7$ format, mqtt.acl)
    max_packet_size N          # optional: the broker disconnects clients that send a larger packet
    message_size_limit N       # optional: larger PUBLISH payloads are acknowledged but not forwarded
    log_dest stderr            # captured into the temporary directory, quoted in errors

``mosquitto_broker(port=P, config=PATH)`` runs a config written by ``pat broker-config`` (per-node users,
ACL, limits, optional TLS listener) instead; the security tests do.

When the ``mosquitto`` binary is missing, :func:`require_mosquitto` fails loudly under CI (``CI=true``)
and otherwise calls ``pytest.skip`` with the reason.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Iterator, Mapping
from urllib.parse import quote

from pat_runtime.transport.mqtt.acl import password_hash, write_password_file  # noqa: F401 (re-exported)

from .core import free_port

HOST = "127.0.0.1"
CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")


class MosquittoError(RuntimeError):
    """The broker could not be started (binary missing, bad config, port taken...)."""


def find_mosquitto() -> str | None:
    """Path of the ``mosquitto`` binary (``$MOSQUITTO``, PATH, then usual sbin dirs) or None."""
    env = os.environ.get("MOSQUITTO")
    if env and os.access(env, os.X_OK):
        return env
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in CANDIDATES if os.access(p, os.X_OK)), None)


def require_mosquitto() -> str:
    """The broker binary; if missing: MosquittoError under CI, ``pytest.skip`` elsewhere."""
    path = find_mosquitto()
    if path:
        return path
    reason = ("mosquitto broker binary not found (looked at $MOSQUITTO, PATH, " + ", ".join(CANDIDATES)
              + "); install it with `apt-get install mosquitto` (tests/run.sh does this)")
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise MosquittoError("CI=true but " + reason)
    try:
        import pytest
    except ImportError:  # pragma: no cover - outside tests
        raise MosquittoError(reason) from None
    pytest.skip(reason)
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass
class Broker:
    """A running broker: ``host``, ``port``, ``url`` (anonymous) and ``url_for(user, password)``."""

    host: str
    port: int
    process: subprocess.Popen
    workdir: Path
    users: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def url_for(self, user: str, password: str) -> str:
        return f"mqtt://{quote(user, safe='')}:{quote(password, safe='')}@{self.host}:{self.port}"

    def log(self) -> str:
        """What the broker wrote to stderr so far."""
        try:
            return (self.workdir / "mosquitto.log").read_text(errors="replace")
        except OSError:
            return ""


def make_config(port: int, workdir: Path, users: Mapping[str, str] | None = None,
                max_packet_size: int | None = None, message_size_limit: int | None = None,
                use_passwd_tool: bool = True, extra: str = "") -> Path:
    lines = [f"listener {port} {HOST}", "persistence false", "max_queued_messages 0", "set_tcp_nodelay true",
             "log_dest stderr",
             "log_type error", "log_type warning", "log_type notice", "log_type information"]
    if os.geteuid() == 0:  # otherwise mosquitto switches to user "mosquitto" and cannot read our files
        lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name}")
    if users:
        pw = workdir / "passwd"
        write_password_file(pw, users, use_tool=use_passwd_tool)
        lines += ["allow_anonymous false", f"password_file {pw}"]
    else:
        lines.append("allow_anonymous true")
    if max_packet_size:
        lines.append(f"max_packet_size {int(max_packet_size)}")
    if message_size_limit:
        lines.append(f"message_size_limit {int(message_size_limit)}")
    if extra:
        lines.append(extra)
    conf = workdir / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def _spawn(binary: str, port: int, workdir: Path, config: Path | None = None, **conf_kw) -> subprocess.Popen:
    if config is not None:  # a generated config (pat broker-config) that already names its listener
        conf = workdir / "mosquitto.conf"
        conf.write_text(Path(config).read_text())
    else:
        conf = make_config(port, workdir, **conf_kw)
    log = open(workdir / "mosquitto.log", "wb")
    try:
        return subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    finally:
        log.close()


def _stop(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def _failed(broker: Broker, why: str) -> MosquittoError:
    return MosquittoError(f"mosquitto on {broker.host}:{broker.port} {why}; log:\n{broker.log()[-2000:]}")


class _Launcher:
    """Shared start/stop logic of the sync and async context managers."""

    def __init__(self, port: int | None, users: Mapping[str, str] | None, max_packet_size: int | None,
                 message_size_limit: int | None, startup_timeout: float, use_passwd_tool: bool, extra: str,
                 config: Path | None = None):
        if config is not None and port is None:
            raise ValueError("a broker config file needs the port its listener uses")
        self.fixed_port = port
        self.users = dict(users or {})
        self.conf_kw = dict(users=self.users or None, max_packet_size=max_packet_size,
                            message_size_limit=message_size_limit, use_passwd_tool=use_passwd_tool, extra=extra)
        if config is not None:
            self.conf_kw = dict(config=Path(config))
        self.startup_timeout = startup_timeout
        self.binary = require_mosquitto()
        self.tmp = tempfile.TemporaryDirectory(prefix="pat-mosquitto-")
        self.broker: Broker | None = None

    def spawn(self) -> Broker:
        port = self.fixed_port or free_port(HOST)
        proc = _spawn(self.binary, port, Path(self.tmp.name), **self.conf_kw)
        self.broker = Broker(HOST, port, proc, Path(self.tmp.name), self.users)
        self.deadline = time.monotonic() + self.startup_timeout
        return self.broker

    def poll(self) -> bool:
        """True when ready; raises when the process died or the deadline passed."""
        b = self.broker
        assert b is not None
        if b.process.poll() is not None:
            raise _failed(b, f"exited with code {b.process.returncode}")
        if " running" in b.log() and _port_open(b.host, b.port):  # "mosquitto version X running"
            return True
        if time.monotonic() > self.deadline:
            _stop(b.process)
            raise _failed(b, f"did not accept connections within {self.startup_timeout} s")
        return False

    def retryable(self, err: MosquittoError) -> bool:
        return self.fixed_port is None and "Address already in use" in str(err)

    def stop(self) -> None:
        if self.broker is not None:
            _stop(self.broker.process)

    def cleanup(self) -> None:
        self.stop()
        self.tmp.cleanup()


@contextlib.asynccontextmanager
async def mosquitto_broker(port: int | None = None, users: Mapping[str, str] | None = None,
                           max_packet_size: int | None = None, message_size_limit: int | None = None,
                           startup_timeout: float = 10.0, use_passwd_tool: bool = True,
                           extra_config: str = "", config: Path | None = None) -> AsyncIterator[Broker]:
    """Run a Mosquitto broker on ``127.0.0.1:port`` (a free port when None) for the ``async with`` body.

    ``config``: run this mosquitto.conf instead (e.g. written by ``pat broker-config``; ``port`` is the port
    its listener uses, waited for before the body runs).
    """
    launcher = _Launcher(port, users, max_packet_size, message_size_limit, startup_timeout, use_passwd_tool,
                         extra_config, config)
    try:
        for attempt in range(3):
            launcher.spawn()
            try:
                while not launcher.poll():
                    await asyncio.sleep(0.01)
                break
            except MosquittoError as e:
                if attempt == 2 or not launcher.retryable(e):
                    raise
        assert launcher.broker is not None
        yield launcher.broker
    finally:
        await asyncio.to_thread(launcher.cleanup)


@contextlib.contextmanager
def mosquitto_broker_sync(port: int | None = None, users: Mapping[str, str] | None = None,
                          max_packet_size: int | None = None, message_size_limit: int | None = None,
                          startup_timeout: float = 10.0, use_passwd_tool: bool = True,
                          extra_config: str = "", config: Path | None = None) -> Iterator[Broker]:
    """Blocking twin of :func:`mosquitto_broker` (for sync fixtures and scripts)."""
    launcher = _Launcher(port, users, max_packet_size, message_size_limit, startup_timeout, use_passwd_tool,
                         extra_config, config)
    try:
        for attempt in range(3):
            launcher.spawn()
            try:
                while not launcher.poll():
                    time.sleep(0.01)
                break
            except MosquittoError as e:
                if attempt == 2 or not launcher.retryable(e):
                    raise
        assert launcher.broker is not None
        yield launcher.broker
    finally:
        launcher.cleanup()
