"""The smart sensor (:class:`pat_runtime.sims.sensor.SmartSensorSim`) as a microcontroller on a serial line.

It speaks a small SCPI dialect over a byte stream (served here on TCP, i.e. pyserial's ``socket://`` URL)::

    *IDN?            PAT-SIM,SMART-SENSOR,unit<u>,1.0
    CONF:SPEC?       the device spec as JSON (dims, ranges, units)
    CONF:OPT?        the sensor's build options as JSON (for grey-box twins)
    MEAS? #<block>   float32 block [B*in_dim + param_dim] (x rows, then theta) -> float32 block [B*out_dim]
    SYST:ERR?        the error queue
"""
from __future__ import annotations

import json

import numpy as np

from pat_runtime.sims.sensor import SmartSensorSim

from .server import ScpiError, ScpiInstrument, ScpiServer


class SensorInstrument(ScpiInstrument):
    def __init__(self, sim: SmartSensorSim):
        super().__init__()
        self.sim = sim
        self.idn = f"PAT-SIM,SMART-SENSOR,unit{sim.unit},1.0"
        spec = sim.spec.to_dict()
        spec.pop("extra", None)
        self.commands.update({
            "CONF:SPEC?": lambda a, b: json.dumps(spec),
            "CONF:OPT?": lambda a, b: json.dumps(sim.options),
            "MEAS?": self._measure,
        })

    def _measure(self, _args: str, data: bytes | None) -> bytes:
        s = self.sim.spec
        if data is None or len(data) % 4:
            raise ScpiError(-109, "Missing parameter; MEAS? #<float32 block>")
        v = np.frombuffer(data, dtype="<f4")
        n_x = v.size - s.param_dim
        if n_x <= 0 or n_x % s.in_dim:
            raise ScpiError(-223, f"Too much data; expected B*{s.in_dim}+{s.param_dim} values")
        x, theta = v[:n_x].reshape(-1, s.in_dim), v[n_x:]
        if (not np.isfinite(v).all() or x.min() < s.x_range[0] or x.max() > s.x_range[1]
                or theta.min() < s.theta_range[0] or theta.max() > s.theta_range[1]):
            raise ScpiError(-222, "Data out of range")
        return np.ascontiguousarray(self.sim.measure(x, theta), dtype="<f4").tobytes()


async def start_sensor(host: str = "127.0.0.1", port: int = 0, **sim_options) -> tuple[SensorInstrument, ScpiServer]:
    inst = SensorInstrument(SmartSensorSim(**sim_options))
    return inst, await ScpiServer(inst, host, port).start()
