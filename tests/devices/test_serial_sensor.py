"""The smart sensor on a serial line: pyserial's socket:// URL against the simulated sensor (sims/scpi/sensor.py)."""
from __future__ import annotations

import numpy as np
import pytest

from pat_runtime.devices.errors import DeviceConnectionError, DeviceTimeoutError
from pat_runtime.devices.factory import make_device
from pat_runtime.devices.visa import InstrumentError
from pat_runtime.sims.scpi.sensor import start_sensor
from pat_runtime.sims.sensor import SmartSensorSim

pytest.importorskip("serial")


@pytest.fixture
async def sensor():
    inst, server = await start_sensor(unit=2, seed=0, noise=0.0)
    yield inst, server
    await server.close()


def _uri(server, timeout=2):
    return f"serial:sensor?port=socket://127.0.0.1:{server.port}&timeout={timeout}"


async def test_measures_exactly_like_the_sensor(sensor):
    _, server = sensor
    dev = make_device(_uri(server))
    await dev.connect()
    try:
        assert dev.spec.kind == "serial:sensor" and dev.spec.extra["physics"] == "sensor"
        rng = np.random.default_rng(0)
        x, th = rng.uniform(-1, 1, (5, 32)).astype(np.float32), rng.uniform(-1, 1, 32).astype(np.float32)
        y = await dev.apply(x, th)
        np.testing.assert_array_equal(y, SmartSensorSim(unit=2, seed=0, noise=0.0).measure(x, th))
        from pat_runtime.twins import make_twin, sim_options_of

        make_twin("greybox", dev.spec, sim_options=sim_options_of(dev))   # grey-box physics found
    finally:
        await dev.close()


async def test_sensor_error_timeout_and_lost_port(sensor):
    inst, server = sensor
    dev = make_device(_uri(server, timeout=0.3))
    await dev.connect()
    x, th = np.zeros((2, 32), np.float32), np.zeros(32, np.float32)
    try:
        inst.mute = True                                    # the firmware hangs
        with pytest.raises(DeviceTimeoutError, match=r"socket://127\.0\.0\.1:\d+: no complete answer to MEAS\?"):
            await dev.apply(x, th)
        inst.mute = False
        assert (await dev.apply(x, th)).shape == (2, 32)   # the port was reopened
        inst.commands["MEAS?"] = lambda a, b: (_ for _ in ()).throw(__import__("pat_runtime.sims.scpi", fromlist=["x"]).ScpiError(
            -240, "Hardware error; ADC overrun"))
        with pytest.raises(InstrumentError, match="error -240: Hardware error; ADC overrun") as ei:
            await dev.apply(x, th)
        assert ei.value.code == -240
        await server.close()
        with pytest.raises(DeviceConnectionError, match="socket://"):
            await dev.apply(x, th)
    finally:
        await dev.close()


def test_bad_serial_uri():
    with pytest.raises(ValueError, match="needs \\?port="):
        make_device("serial:sensor")
    with pytest.raises(ValueError, match="unknown option 'bauds'; valid options: baud, name, port, timeout"):
        make_device("serial:sensor?bauds=9600")
