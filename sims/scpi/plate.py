"""The oscillating-plate experiment as two simulated SCPI instruments sharing one plate.

Wiring (as in Wright et al. 2022): AWG output -> audio amplifier -> speaker on the plate; microphone ->
digitizer, whose band-spectrum readout reports ``out_dim`` band levels per played segment.

AWG (``PAT-SIM,AWG-PLATE``)::

    SOUR:VOLT:LIM:LOW? / HIGH?    safe drive range (V)
    ARB:SEGM <n> / ARB:SEGM?      samples (drive windows) per segment; must equal the plate's wiring
    DATA:ARB PNN,#<block>         float32 little-endian volts, B segments of n windows
    OUTP ON|OFF / OUTP?           output relay
    *TRG                          play every segment once (the armed digitizer records each)

Digitizer (``PAT-SIM,DIG-PLATE``)::

    SENS:BAND:COUN?               bands per record (out_dim)
    SENS:VOLT:RANG:LOW? / HIGH?   readout range (V)
    INIT                          arm for the next trigger
    FETC?                         float32 block [B * out_dim]; waits for the acquisition (a VISA timeout
                                  if it never comes)

The physics behind both is :class:`pat_runtime.sims.plate.PlateSim` (hidden unit variation, noise, DAC/ADC); the bench
inverts the drive interleaving to hand ``(x, theta)`` to it. Nothing here is visible to the driver.
"""
from __future__ import annotations

import asyncio

import numpy as np

from pat_runtime.sims.plate import PlateSim, interleave_order

from .server import ScpiError, ScpiInstrument, ScpiServer


class PlateBench:
    """The plate, the amplifier and the microphone: what happens between the two instruments."""

    def __init__(self, sim: PlateSim):
        self.sim = sim
        s = sim.spec
        self.in_dim, self.param_dim, self.out_dim = s.in_dim, s.param_dim, s.out_dim
        self.segment = self.in_dim + self.param_dim
        self.inverse = np.argsort(interleave_order(self.in_dim, self.param_dim).numpy())
        #: tests: the trigger line from the AWG to the digitizer (unplugged: acquisitions never come)
        self.trigger_cable = True
        self.awg = AwgPlate(self)
        self.dig = DigitizerPlate(self)

    def play(self, v: np.ndarray) -> None:
        """The AWG played segments ``v[B, segment]``; the digitizer records if armed."""
        cat = v[:, self.inverse]
        x, theta = cat[:, :self.in_dim], cat[:, self.in_dim:]
        th = theta[0] if bool((theta == theta[0]).all()) else theta
        y = self.sim.measure(x, th)
        if self.trigger_cable:
            self.dig.record(y)


class AwgPlate(ScpiInstrument):
    def __init__(self, bench: PlateBench):
        super().__init__()
        self.bench = bench
        self.idn = f"PAT-SIM,AWG-PLATE,unit{bench.sim.unit},1.0"
        lo, hi = bench.sim.spec.x_range
        self.lim = (lo, hi)
        self.reset()
        self.commands.update({
            "SOUR:VOLT:LIM:LOW?": lambda a, b: repr(self.lim[0]),
            "SOUR:VOLT:LIM:HIGH?": lambda a, b: repr(self.lim[1]),
            "ARB:SEGM": self._segm,
            "ARB:SEGM?": lambda a, b: str(self.segm),
            "DATA:ARB": self._data,
            "OUTP": self._outp,
            "OUTP?": lambda a, b: "1" if self.output else "0",
            "*TRG": self._trigger,
        })

    def reset(self) -> None:
        super().reset()
        self.segm, self.wave, self.output = 0, None, False

    def _segm(self, args: str, _b) -> None:
        try:
            n = int(args)
        except ValueError:
            raise ScpiError(-104, "Data type error") from None
        if n != self.bench.segment:
            raise ScpiError(-221, f"Settings conflict; the plate is wired for {self.bench.segment} windows "
                                  f"per segment, not {n}")
        self.segm = n

    def _data(self, args: str, data: bytes | None) -> None:
        if data is None or not args.upper().startswith("PNN"):
            raise ScpiError(-109, "Missing parameter; DATA:ARB PNN,#<block>")
        if not self.segm:
            raise ScpiError(-221, "Settings conflict; set ARB:SEGM first")
        if len(data) % (4 * self.segm):
            raise ScpiError(-223, "Too much data; block is not a whole number of segments")
        v = np.frombuffer(data, dtype="<f4").reshape(-1, self.segm)
        if not np.isfinite(v).all() or v.min() < self.lim[0] or v.max() > self.lim[1]:
            raise ScpiError(-222, f"Data out of range; drive limited to [{self.lim[0]}, {self.lim[1]}] V")
        self.wave = v.copy()

    def _outp(self, args: str, _b) -> None:
        if args.upper() not in ("ON", "OFF", "1", "0"):
            raise ScpiError(-224, "Illegal parameter value")
        self.output = args.upper() in ("ON", "1")

    def _trigger(self, _a, _b) -> None:
        if not self.output:
            raise ScpiError(-221, "Settings conflict; output is off")
        if self.wave is None:
            raise ScpiError(-221, "Settings conflict; no waveform loaded")
        self.bench.play(self.wave)


class DigitizerPlate(ScpiInstrument):
    def __init__(self, bench: PlateBench):
        super().__init__()
        self.bench = bench
        self.idn = f"PAT-SIM,DIG-PLATE,unit{bench.sim.unit},1.0"
        self.reset()
        yr = bench.sim.spec.y_range or (0.0, 1.0)
        self.commands.update({
            "SENS:BAND:COUN?": lambda a, b: str(bench.out_dim),
            "SENS:VOLT:RANG:LOW?": lambda a, b: repr(float(yr[0])),
            "SENS:VOLT:RANG:HIGH?": lambda a, b: repr(float(yr[1])),
            "INIT": self._init,
            "FETC?": self._fetch,
        })

    def reset(self) -> None:
        super().reset()
        self.armed = False
        self.data: np.ndarray | None = None
        self._ready = asyncio.Event()

    def _init(self, _a, _b) -> None:
        old, self._ready = self._ready, asyncio.Event()
        self.armed, self.data = True, None
        old.set()  # a FETC? still waiting on an abandoned acquisition gives up

    def record(self, y: np.ndarray) -> None:
        if self.armed:
            self.armed, self.data = False, np.ascontiguousarray(y, dtype="<f4")
            self._ready.set()

    async def _fetch(self, _a, _b) -> bytes:
        if self.data is None and not self.armed:
            raise ScpiError(-230, "Data corrupt or stale; INIT first")
        ready = self._ready
        await ready.wait()
        if ready is not self._ready or self.data is None:
            raise ScpiError(-230, "Data corrupt or stale; acquisition aborted")
        data, self.data = self.data, None
        return data.tobytes()


async def start_plate_bench(host: str = "127.0.0.1", awg_port: int = 0, dig_port: int = 0,
                            **sim_options) -> tuple[PlateBench, ScpiServer, ScpiServer]:
    """Start both instruments (``sim_options`` go to :class:`PlateSim`: unit, seed, noise, ...)."""
    bench = PlateBench(PlateSim(**sim_options))
    awg = await ScpiServer(bench.awg, host, awg_port).start()
    dig = await ScpiServer(bench.dig, host, dig_port).start()
    return bench, awg, dig


def visa_uri(awg: ScpiServer, dig: ScpiServer, **opts) -> str:
    """The ``visa:plate?...`` device URI for a running bench."""
    extra = "".join(f"&{k}={v}" for k, v in opts.items())
    return f"visa:plate?awg={awg.resource}&dig={dig.resource}{extra}"
