"""The plate over the real PyVISA stack (pyvisa + pyvisa-py, TCP sockets) against the simulated SCPI bench."""
from __future__ import annotations

import numpy as np
import pytest

from pat_runtime.devices.errors import DeviceConnectionError, DeviceTimeoutError
from pat_runtime.devices.factory import make_device
from pat_runtime.devices.visa import InstrumentError, interleave_order
from pat_runtime.sims.plate import PlateSim
from pat_runtime.sims.plate import interleave_order as sim_order
from pat_runtime.sims.scpi.plate import start_plate_bench, visa_uri

pytest.importorskip("pyvisa_py")


@pytest.fixture
async def bench():
    b, awg, dig = await start_plate_bench(unit=1, seed=0, noise=0.0)
    yield b, awg, dig
    await awg.close()
    await dig.close()


def _batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n, 32)).astype(np.float32), rng.uniform(-1, 1, 32).astype(np.float32)


def test_driver_encoding_matches_the_plate_wiring():
    for nx, nt in ((32, 32), (16, 32), (5, 3)):
        assert np.array_equal(interleave_order(nx, nt), sim_order(nx, nt).numpy())


async def test_measures_the_plate_through_pyvisa(bench):
    b, awg, dig = bench
    dev = make_device(visa_uri(awg, dig, timeout=5))
    await dev.connect()
    try:
        assert dev.spec.kind == "visa:plate" and dev.spec.extra["physics"] == "plate"
        assert dev.spec.extra["idn"]["awg"].startswith("PAT-SIM,AWG-PLATE")
        x, th = _batch()
        y = await dev.apply(x, th)
        ref = PlateSim(unit=1, seed=0, noise=0.0).measure(x, th)
        np.testing.assert_array_equal(y, ref)
        assert b.awg.output  # the driver switched the output on
    finally:
        await dev.close()
    assert not b.awg.output  # and off again at close


async def test_instrument_error_at_connect_names_the_instrument(bench):
    _, awg, dig = bench
    dev = make_device(visa_uri(awg, dig, in_dim=16, timeout=5))
    with pytest.raises(InstrumentError, match=r"awg .*error -221: Settings conflict; the plate is wired for 64"):
        await dev.connect()
    await dev.close()


async def test_instrument_error_during_a_measurement_then_recovery(bench):
    b, awg, dig = bench
    dev = make_device(visa_uri(awg, dig, timeout=5))
    await dev.connect()
    try:
        b.awg.inject_error(-313, "Calibration memory lost")
        with pytest.raises(InstrumentError, match="-313: Calibration memory lost") as ei:
            await dev.apply(*_batch())
        assert ei.value.code == -313
        assert (await dev.apply(*_batch())).shape == (8, 32)   # the queue was drained: next call is fine
    finally:
        await dev.close()


async def test_timeout_when_the_digitizer_never_triggers_then_recovery(bench):
    b, awg, dig = bench
    dev = make_device(visa_uri(awg, dig, timeout=1.5))  # long enough for a loaded machine
    await dev.connect()
    try:
        b.trigger_cable = False
        with pytest.raises(DeviceTimeoutError, match=r"dig \(TCPIP::127\.0\.0\.1::\d+::SOCKET\) did not answer FETC\?"):
            await dev.apply(*_batch())
        b.trigger_cable = True
        assert (await dev.apply(*_batch())).shape == (8, 32)   # a fresh session, no stale reply read
    finally:
        await dev.close()


async def test_disconnected_instrument(bench):
    b, awg, dig = bench
    dev = make_device(visa_uri(awg, dig, timeout=1))
    await dev.connect()
    try:
        await dig.close()   # the digitizer goes away (unplugged / powered off)
        with pytest.raises((DeviceConnectionError, DeviceTimeoutError), match=r"\[visa-plate.*dig \("):
            await dev.apply(*_batch())
        with pytest.raises(DeviceConnectionError, match=r"dig \(TCPIP::.*::SOCKET\): .*Connection ?[Rr]efused"):
            await dev.apply(*_batch())   # reconnecting fails with a clear reason, no traceback soup
    finally:
        await dev.close()


async def test_nothing_listening_is_a_connection_error():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    res = f"TCPIP::127.0.0.1::{port}::SOCKET"
    dev = make_device(f"visa:plate?awg={res}&dig={res}&timeout=1")
    with pytest.raises(DeviceConnectionError, match=r"awg \(TCPIP::.*\): .*Connection ?[Rr]efused"):
        await dev.connect(timeout=0.5)
    assert dev.connect_attempts >= 2  # refused connections are retried until the timeout


async def test_connect_waits_for_instruments_that_come_up_later():
    """`pat instruments ... &` then `pat train --device visa:...` at once: connect retries until they listen."""
    import asyncio
    import socket

    from pat_runtime.testing import wait_until

    ports = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        ports.append(s.getsockname()[1])
        s.close()
    res = [f"TCPIP::127.0.0.1::{p}::SOCKET" for p in ports]
    dev = make_device(f"visa:plate?awg={res[0]}&dig={res[1]}&timeout=5")
    task = asyncio.create_task(dev.connect(timeout=60))
    await wait_until(lambda: dev.connect_attempts >= 2)      # refused at least once: nothing listens yet
    _, awg, dig = await start_plate_bench(awg_port=ports[0], dig_port=ports[1], unit=1, seed=0, noise=0.0)
    try:
        await task
        assert dev.spec.in_dim == 32
    finally:
        await dev.close()
        await awg.close()
        await dig.close()


def test_bad_visa_options_are_refused():
    with pytest.raises(ValueError, match="unknown option 'nosuch'; valid options: awg, backend, dig"):
        make_device("visa:plate?nosuch=1")
    with pytest.raises(ValueError, match="needs both instruments"):
        make_device("visa:plate")
    with pytest.raises(ValueError, match="option timeout='abc' must be a number"):
        make_device("visa:plate?awg=a&dig=b&timeout=abc")


async def test_pat_training_on_the_visa_plate(bench, tmp_path):
    """A short PAT run end to end: grey-box twin from the plate physics, forward passes through PyVISA."""
    from pat_runtime.datasets import load_task
    from pat_runtime.trainers.run import ExperimentConfig, run_experiment

    _, awg, dig = bench
    cfg = ExperimentConfig(device=visa_uri(awg, dig), task="digits", method="pat", twin="greybox",
                           twin_samples=128, twin_epochs=2, epochs=1, max_steps=3, layers=1, batch=16)
    task = load_task("digits", seed=0, n_train=64, n_test=32)
    res = await run_experiment(cfg, task=task, out=tmp_path)
    assert res.summary["device"]["spec"]["kind"] == "visa:plate"
    assert res.summary["twin"]["nmse_val"] < 1.0
    assert res.summary["device_calls"] > 3
    assert (tmp_path / "model.pnn").exists()
