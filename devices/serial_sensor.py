"""A smart sensor on a serial line (pyserial), speaking a small SCPI dialect.

``serial:sensor?port=/dev/ttyUSB0&baud=115200&timeout=2`` (any pyserial URL works as ``port``, e.g.
``socket://127.0.0.1:7000`` for the simulated sensor of :mod:`pat_runtime.sims.scpi.sensor`, or ``rfc2217://``).

At connect: ``*IDN?``, ``CONF:SPEC?`` (JSON spec) and ``CONF:OPT?`` (build options, for grey-box twins).
Per ``apply``: one ``MEAS? #<float32 block>`` carrying the x rows then θ, answered by a float32 block of
``B * out_dim`` values; an empty answer means the sensor queued an error, read with ``SYST:ERR?``.
Timeouts -> :class:`~pat_runtime.devices.errors.DeviceTimeoutError` (the port is reopened on the next call), a lost
port -> :class:`~pat_runtime.devices.errors.DeviceConnectionError`, a sensor error -> :class:`pat_runtime.devices.visa.InstrumentError`.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from .blocking import BlockingDevice
from .errors import DeviceConnectionError, DeviceTimeoutError
from .options import parse_options
from .spec import DeviceSpec
from .visa import InstrumentError

OPTIONS: dict[str, Any] = {"port": "", "baud": 115200, "timeout": 2.0, "name": ""}


class SerialSensor(BlockingDevice):
    def __init__(self, port: str, baud: int = 115200, timeout: float = 2.0, name: str | None = None):
        if not port:
            raise ValueError("serial:sensor needs ?port=/dev/ttyUSB0 (or a pyserial URL such as socket://HOST:PORT)")
        if timeout <= 0:
            raise ValueError(f"serial:sensor: timeout must be > 0 s, got {timeout}")
        super().__init__(name or f"serial-sensor[{port}]")
        self.port, self.baud, self.timeout = port, int(baud), float(timeout)
        self._ser = None
        self._stale = False

    # -- the line (worker thread) ---------------------------------------------------------------------------
    def _open(self) -> None:
        import serial

        self._close_port()
        try:
            self._ser = serial.serial_for_url(self.port, baudrate=self.baud, timeout=self.timeout,
                                              write_timeout=self.timeout)
        except (serial.SerialException, OSError, ValueError) as e:
            raise DeviceConnectionError(self.name, f"cannot open {self.port}: {e}") from None
        self._stale = False

    def _close_port(self) -> None:
        if self._ser is not None:
            try:
                self._ser.close()
            except Exception:
                pass
            self._ser = None

    def _read_exact(self, n: int, what: str) -> bytes:
        data = self._ser.read(n)
        if len(data) < n:
            self._stale = True
            raise DeviceTimeoutError(self.name, f"{self.port}: no complete answer to {what} within {self.timeout:g} s")
        return data

    def _io(self, what: str, fn, *args):
        import serial

        try:
            return fn(*args)
        except (DeviceTimeoutError, InstrumentError):
            raise
        except (serial.SerialException, OSError) as e:
            self._stale = True
            raise DeviceConnectionError(self.name, f"{self.port}: {what} failed: {e}") from None

    def _query_line(self, cmd: str) -> str:
        def go():
            self._ser.write(cmd.encode() + b"\n")
            line = self._ser.readline()
            if not line.endswith(b"\n"):
                self._stale = True
                raise DeviceTimeoutError(self.name, f"{self.port}: no answer to {cmd} within {self.timeout:g} s")
            return line.decode(errors="replace").strip()

        return self._io(cmd, go)

    def _query_block(self, cmd: str, payload: bytes) -> bytes:
        def go():
            n = str(len(payload))
            self._ser.write(cmd.encode() + b" #" + str(len(n)).encode() + n.encode() + payload + b"\n")
            head = self._read_exact(2, cmd)
            if head[:1] != b"#" or not head[1:2].isdigit():
                self._stale = True
                raise InstrumentError(self.name, f"{self.port}: malformed answer to {cmd}: {head!r}")
            length = int(self._read_exact(int(head[1:2]), cmd))
            body = self._read_exact(length + 1, cmd)
            return body[:length]

        return self._io(cmd, go)

    def _check_errors(self) -> None:
        code_s, _, msg = self._query_line("SYST:ERR?").partition(",")
        if code_s.strip() not in ("0", "+0"):
            raise InstrumentError(self.name, f"{self.port} error {code_s}: {msg.strip().strip(chr(34))}",
                                  code=int(code_s) if code_s.lstrip("+-").isdigit() else 0)

    def _setup(self) -> DeviceSpec:
        idn = self._query_line("*IDN?")
        d = json.loads(self._query_line("CONF:SPEC?"))
        opts = json.loads(self._query_line("CONF:OPT?"))
        physics = d.get("kind", "").removeprefix("sim:")
        d.update(kind="serial:sensor", extra={"physics": physics, "sim_options": opts, "idn": idn, "port": self.port})
        return DeviceSpec.from_dict(d)

    def _measure(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        with self._lock:
            if self._stale or self._ser is None:
                self._open()
            payload = np.concatenate([x.ravel(), theta]).astype("<f4").tobytes()
            try:
                y = np.frombuffer(self._query_block("MEAS?", payload), dtype="<f4")
            except DeviceTimeoutError:
                # a SCPI device answers nothing to a query it refused: ask why before calling it a timeout
                try:
                    self._check_errors()
                except DeviceTimeoutError:
                    pass
                raise
            if y.size != x.shape[0] * self.spec.out_dim:
                self._check_errors()
                raise InstrumentError(self.name, f"{self.port}: {y.size} values, expected "
                                                 f"{x.shape[0]}x{self.spec.out_dim}")
            return y.astype(np.float32).reshape(x.shape[0], self.spec.out_dim)

    def _shutdown(self) -> None:
        self._close_port()


def serial_device(uri: str, **kwargs: Any) -> SerialSensor:
    """The ``serial:`` scheme (``serial:sensor?port=...``)."""
    kind, _, query = uri.split(":", 1)[1].partition("?")
    if kind != "sensor":
        raise ValueError(f"unknown serial device {kind!r} in {uri!r}; built in: serial:sensor?port=...")
    opts = parse_options(query, OPTIONS, where="serial:sensor")
    opts.update(kwargs)
    opts["name"] = opts.get("name") or None
    opts.setdefault("port", "")
    return SerialSensor(**opts)
