"""Simulated SCPI instruments over TCP (what a lab's PyVISA driver talks to), backed by the simulators.

* :mod:`pat_runtime.sims.scpi.server` -- a small asyncio SCPI socket server: line commands, IEEE 488.2 definite-length
  binary blocks, an error queue (``SYST:ERR?``), ``*IDN?``/``*RST``/``*CLS``/``*OPC?``.
* :mod:`pat_runtime.sims.scpi.plate` -- the paper's plate bench as two instruments: an arbitrary waveform generator
  (drives the speaker) and a digitizer with a band-spectrum readout (listens to the microphone).

``python -m pat_runtime.sims.scpi`` (or ``pat instruments``) starts a bench on loopback and prints its ``visa:`` URI.
"""
from .plate import PlateBench, start_plate_bench
from .server import ScpiError, ScpiInstrument, ScpiServer

__all__ = ["PlateBench", "ScpiError", "ScpiInstrument", "ScpiServer", "start_plate_bench"]
