"""A minimal asyncio SCPI instrument server (raw TCP socket, the ``TCPIP::HOST::PORT::SOCKET`` resource).

Messages are ``\\n``-terminated lines; a command may carry one IEEE 488.2 definite-length block
(``#<n><len><bytes>``). A query answers one line, or a block for binary data. Errors go to the error queue
(``SYST:ERR?`` -> ``-113,"Undefined header"``; ``0,"No error"`` when empty), as on a real instrument.
"""
from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from typing import Any, Awaitable, Callable

log = logging.getLogger(__name__)

MAX_MESSAGE = 64 * 1024 * 1024

Handler = Callable[[str, bytes | None], Awaitable[Any] | Any]


class ScpiError(Exception):
    """An instrument-side error: ``code`` and message go to the error queue."""

    def __init__(self, code: int, message: str):
        super().__init__(f"{code},{message}")
        self.code, self.message = code, message


def parse_message(buf: bytearray) -> tuple[tuple[str, bytes | None], int] | None:
    """One complete message at the start of ``buf``: ``((header, block), consumed)``, or None if incomplete."""
    nl = buf.find(b"\n")
    hs = buf.find(b"#")
    if hs != -1 and (nl == -1 or hs < nl):
        if len(buf) < hs + 2:
            return None
        n = buf[hs + 1] - 48
        if not 1 <= n <= 9:
            raise ScpiError(-161, "Invalid block data")
        if len(buf) < hs + 2 + n:
            return None
        length = int(bytes(buf[hs + 2:hs + 2 + n]))
        if length > MAX_MESSAGE:
            raise ScpiError(-223, "Too much data")
        end = hs + 2 + n + length
        if len(buf) < end + 1:
            return None
        consumed = end + 1 if buf[end:end + 1] == b"\n" else end
        return (bytes(buf[:hs]).decode("ascii", "replace").strip(), bytes(buf[hs + 2 + n:end])), consumed
    if nl == -1:
        if len(buf) > 4096:
            raise ScpiError(-112, "Program mnemonic too long")
        return None
    return (bytes(buf[:nl]).decode("ascii", "replace").strip(), None), nl + 1


def block(data: bytes) -> bytes:
    """``data`` as an IEEE 488.2 definite-length block."""
    n = str(len(data))
    return b"#" + str(len(n)).encode() + n.encode() + data


class ScpiInstrument:
    """Subclass and fill :attr:`commands` (upper-case header -> handler(args, block)).

    A handler returns ``None`` (a command), a ``str`` (a text reply) or ``bytes`` (a block reply); raising
    :class:`ScpiError` queues an error. Fault injection for tests: :meth:`inject_error`, ``mute``.
    """

    idn = "PAT-SIM,INSTRUMENT,0,1.0"

    def __init__(self) -> None:
        self.errors: deque[tuple[int, str]] = deque(maxlen=32)
        self.commands: dict[str, Handler] = {
            "*IDN?": lambda a, b: self.idn,
            "*RST": lambda a, b: self.reset(),
            "*CLS": lambda a, b: self.errors.clear(),
            "*OPC?": lambda a, b: "1",
            "SYST:ERR?": lambda a, b: self.pop_error(),
            "SYSTEM:ERROR?": lambda a, b: self.pop_error(),
        }
        #: tests: while set, queries get no reply (a hung instrument)
        self.mute = False

    def reset(self) -> None:
        self.errors.clear()

    def pop_error(self) -> str:
        if not self.errors:
            return '0,"No error"'
        code, msg = self.errors.popleft()
        return f'{code},"{msg}"'

    def inject_error(self, code: int, message: str) -> None:
        """Queue an error as if the instrument had detected it (tests)."""
        self.errors.append((code, message))

    async def handle(self, header: str, data: bytes | None) -> Any:
        cmd, _, args = header.partition(" ")
        fn = self.commands.get(cmd.upper())
        if fn is None:
            raise ScpiError(-113, f"Undefined header; {cmd}")
        r = fn(args.strip(), data)
        if asyncio.iscoroutine(r):
            r = await r
        return r


class ScpiServer:
    """Serves one :class:`ScpiInstrument` on ``host:port`` (port 0: a free one; see :attr:`port`)."""

    def __init__(self, instrument: ScpiInstrument, host: str = "127.0.0.1", port: int = 0):
        self.instrument, self.host, self.port = instrument, host, port
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def resource(self) -> str:
        """The VISA resource string of this instrument."""
        return f"TCPIP::{self.host}::{self.port}::SOCKET"

    async def start(self) -> "ScpiServer":
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def disconnect_clients(self) -> None:
        """Drop every open connection (a cable pulled / an instrument power-cycled)."""
        for w in list(self._writers):
            w.close()
        self._writers.clear()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self.disconnect_clients()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        inst = self.instrument
        try:
            while True:
                chunk = await reader.read(1 << 16)
                if not chunk:
                    return
                buf += chunk
                while True:
                    try:
                        msg = parse_message(buf)
                    except ScpiError as e:  # garbage: drop the buffer, queue the error, carry on
                        inst.errors.append((e.code, e.message))
                        buf.clear()
                        break
                    if msg is None:
                        break
                    (header, data), used = msg
                    del buf[:used]
                    if not header:
                        continue
                    try:
                        reply = await inst.handle(header, data)
                    except ScpiError as e:
                        inst.errors.append((e.code, e.message))
                        reply = None
                    except Exception as e:  # an instrument bug must not kill the socket
                        log.exception("instrument %s failed on %r", inst.idn, header)
                        inst.errors.append((-300, f"Device-specific error; {type(e).__name__}"))
                        reply = None
                    if reply is None or inst.mute:
                        continue
                    writer.write(block(reply) + b"\n" if isinstance(reply, bytes) else str(reply).encode() + b"\n")
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
