"""The plate experiment driven through PyVISA: an arbitrary waveform generator and a digitizer (SCPI).

``visa:plate?awg=TCPIP::HOST::PORT::SOCKET&dig=TCPIP::HOST::PORT::SOCKET[&timeout=5&in_dim=32&param_dim=32]``

What the driver does per ``apply(x[B, in_dim], theta[param_dim])``:

1. *Encoding (software)*: each sample becomes one AWG segment of ``in_dim + param_dim`` drive windows,
   ``x`` and ``theta`` interleaved in time (:func:`interleave_order`), in volts.
2. ``INIT`` arms the digitizer; ``DATA:ARB PNN,<block>`` loads the segments; ``*TRG`` plays them.
3. ``FETC?`` returns ``B * out_dim`` band levels (float32 block); ``SYST:ERR?`` on both instruments turns
   any queued instrument error into :class:`InstrumentError`.

The PNN's own encoding and readout (input scaling, output bins) stay in software (:mod:`pat_runtime.pat`).
Failures name the instrument: a VISA timeout -> :class:`~pat_runtime.devices.errors.DeviceTimeoutError` (the session
is reopened on the next call), a lost or refused connection -> :class:`~pat_runtime.devices.errors.DeviceConnectionError`,
an instrument error -> :class:`InstrumentError`. The spec (``kind="visa:plate"``) says
``extra["physics"] = "plate"`` so grey-box twins use the plate physics. ``backend`` defaults to ``@py``
(pyvisa-py, pure Python); a lab with NI-VISA installed may pass ``backend=`` (empty: the system library).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .blocking import BlockingDevice
from .errors import DeviceConnectionError, DeviceError, DeviceTimeoutError
from .options import parse_options
from .spec import DeviceSpec

OPTIONS: dict[str, Any] = {"awg": "", "dig": "", "timeout": 5.0, "in_dim": 32, "param_dim": 32,
                           "backend": "@py", "name": ""}


class InstrumentError(DeviceError):
    """An instrument reported an error (its SCPI error queue); ``code`` is the SCPI error number."""

    def __init__(self, device: str, message: str, code: int = 0):
        self.code = code
        super().__init__(device, message)

    def __reduce__(self):
        return (self.__class__, (self.device, self.message, self.code))


def interleave_order(n_x: int, n_t: int) -> np.ndarray:
    """Time order of the drive windows: index into ``concat([x, theta])`` (x and theta spread evenly)."""
    pos = sorted([((i + 0.5) / n_x, 0, i) for i in range(n_x)] + [((j + 0.5) / n_t, 1, n_x + j) for j in range(n_t)])
    return np.array([p[2] for p in pos], dtype=np.int64)


def _nodelay(inst: Any) -> None:
    """TCP_NODELAY on a raw-socket session: a command followed by a query otherwise waits ~40 ms (Nagle and
    delayed ACK). ``VI_ATTR_TCPIP_NODELAY`` is the VISA way, but pyvisa-py 0.8.1 wires its setter to the
    generic ``_set_attribute`` (UnknownAttribute), so the socket of a pyvisa-py session is set directly."""
    import socket

    import pyvisa

    try:
        inst.set_visa_attribute(pyvisa.constants.VI_ATTR_TCPIP_NODELAY, True)
        return
    except Exception:
        pass
    sess = getattr(inst.visalib, "sessions", {}).get(inst.session)
    sock = getattr(sess, "interface", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class VisaPlate(BlockingDevice):
    """Two VISA instruments (``awg``, ``dig`` resource strings) that together measure the plate."""

    def __init__(self, awg: str, dig: str, in_dim: int = 32, param_dim: int = 32, timeout: float = 5.0,
                 backend: str = "@py", name: str | None = None):
        if not awg or not dig:
            raise ValueError("visa:plate needs both instruments: ?awg=TCPIP::HOST::PORT::SOCKET&dig=TCPIP::...")
        if timeout <= 0:
            raise ValueError(f"visa:plate: timeout must be > 0 s, got {timeout}")
        super().__init__(name or f"visa-plate[{awg}]")
        self.resources = {"awg": awg, "dig": dig}
        self.in_dim, self.param_dim = int(in_dim), int(param_dim)
        self.timeout = float(timeout)
        self.backend = backend
        self.order = interleave_order(self.in_dim, self.param_dim)
        self._rm = None
        self._inst: dict[str, Any] = {}
        self._stale = False

    # -- VISA plumbing (runs in a worker thread) -----------------------------------------------------------
    def _err(self, which: str, e: Exception, what: str) -> DeviceError:
        import pyvisa

        where = f"{which} ({self.resources[which]})"
        if isinstance(e, pyvisa.errors.VisaIOError) and e.error_code == pyvisa.constants.StatusCode.error_timeout:
            return DeviceTimeoutError(self.name, f"{where} did not answer {what} within {self.timeout:g} s")
        return DeviceConnectionError(self.name, f"{where}: {what} failed: {type(e).__name__}: {e}")

    def _open(self) -> None:
        import pyvisa

        self._close_sessions()
        try:
            self._rm = pyvisa.ResourceManager(self.backend) if self.backend else pyvisa.ResourceManager()
        except Exception as e:
            raise DeviceConnectionError(self.name, f"VISA backend {self.backend!r} unavailable: {e}") from None
        for which, res in self.resources.items():
            try:
                inst = self._rm.open_resource(res, open_timeout=int(self.timeout * 1000))
                inst.timeout = int(self.timeout * 1000)
                inst.read_termination = inst.write_termination = "\n"
                if res.upper().endswith("::SOCKET"):
                    _nodelay(inst)
            except Exception as e:
                self._close_sessions()
                raise self._err(which, e, "open") from None
            self._inst[which] = inst
        self._stale = False

    def _close_sessions(self) -> None:
        for inst in self._inst.values():
            try:
                inst.close()
            except Exception:
                pass
        self._inst.clear()
        if self._rm is not None:
            try:
                self._rm.close()
            except Exception:
                pass
            self._rm = None

    def _call(self, which: str, what: str, fn, *args, **kw):
        import pyvisa

        try:
            return fn(*args, **kw)
        except (pyvisa.errors.VisaIOError, OSError, ConnectionError, ValueError) as e:
            self._stale = True   # a reply may still be in flight: start a fresh session next time
            raise self._err(which, e, what) from None

    def query(self, which: str, cmd: str) -> str:
        inst = self._inst[which]
        return self._call(which, cmd, inst.query, cmd).strip()

    def write(self, which: str, cmd: str) -> None:
        inst = self._inst[which]
        self._call(which, cmd, inst.write, cmd)

    def check_errors(self, which: str) -> None:
        """Raise :class:`InstrumentError` for the first queued instrument error (the queue is drained)."""
        first = None
        for _ in range(32):
            code_s, _, msg = self.query(which, "SYST:ERR?").partition(",")
            try:
                code = int(code_s)
            except ValueError:
                raise InstrumentError(self.name, f"{which}: unreadable SYST:ERR? reply {code_s!r}") from None
            if code == 0:
                break
            first = first or (code, msg.strip().strip('"'))
        if first:
            raise InstrumentError(self.name, f"{which} ({self.resources[which]}) error {first[0]}: {first[1]}",
                                  code=first[0])

    def _setup(self) -> DeviceSpec:
        idn = {w: self.query(w, "*IDN?") for w in self.resources}
        for w in self.resources:
            self.write(w, "*CLS")
        lo, hi = float(self.query("awg", "SOUR:VOLT:LIM:LOW?")), float(self.query("awg", "SOUR:VOLT:LIM:HIGH?"))
        self.write("awg", f"ARB:SEGM {self.in_dim + self.param_dim}")
        self.write("awg", "OUTP ON")
        self.check_errors("awg")
        out_dim = int(self.query("dig", "SENS:BAND:COUN?"))
        ylo, yhi = float(self.query("dig", "SENS:VOLT:RANG:LOW?")), float(self.query("dig", "SENS:VOLT:RANG:HIGH?"))
        self.check_errors("dig")
        return DeviceSpec(
            kind="visa:plate", in_dim=self.in_dim, param_dim=self.param_dim, out_dim=out_dim,
            x_range=(lo, hi), theta_range=(lo, hi), y_range=(ylo, yhi), x_units="V", theta_units="V", y_units="V",
            description="plate driven by an AWG (speaker) and read by a digitizer (microphone band levels), via VISA",
            extra={"physics": "plate", "idn": idn, "resources": dict(self.resources),
                   "sim_options": {"in_dim": self.in_dim, "param_dim": self.param_dim, "out_dim": out_dim}},
        )

    def _measure(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        with self._lock:
            if self._stale or not self._inst:
                self._open()
            B = x.shape[0]
            seg = np.concatenate([x, np.broadcast_to(theta, (B, theta.shape[0]))], 1)[:, self.order]
            self.write("dig", "INIT")
            self.query("dig", "*OPC?")   # armed before the AWG plays (the two sockets are not ordered)
            awg = self._inst["awg"]
            self._call("awg", "DATA:ARB", awg.write_binary_values, "DATA:ARB PNN,",
                       np.ascontiguousarray(seg, dtype="<f4").ravel(), datatype="f", is_big_endian=False)
            self.write("awg", "*TRG")
            self.check_errors("awg")
            dig = self._inst["dig"]
            y = self._call("dig", "FETC?", dig.query_binary_values, "FETC?", datatype="f", is_big_endian=False,
                           container=np.array)
            if y.size != B * self.spec.out_dim:
                self.check_errors("dig")
                raise InstrumentError(self.name, f"dig ({self.resources['dig']}) returned {y.size} values, "
                                                 f"expected {B}x{self.spec.out_dim}")
            return y.astype(np.float32).reshape(B, self.spec.out_dim)

    def _shutdown(self) -> None:
        if self._inst and not self._stale:
            try:
                self._inst["awg"].write("OUTP OFF")
                self._inst["awg"].query("*OPC?")   # processed before the session closes
            except Exception:
                pass
        self._close_sessions()


def visa_device(uri: str, **kwargs: Any) -> VisaPlate:
    """The ``visa:`` scheme. Only the plate bench is built in (``visa:plate?...``)."""
    body = uri.split(":", 1)[1]
    kind, _, query = body.partition("?")
    if kind != "plate":
        raise ValueError(f"unknown VISA setup {kind!r} in {uri!r}; built in: visa:plate?awg=...&dig=...")
    opts = parse_options(query, OPTIONS, where="visa:plate")
    opts.update(kwargs)
    opts["name"] = opts.get("name") or None
    opts.setdefault("awg", "")
    opts.setdefault("dig", "")
    return VisaPlate(**opts)
