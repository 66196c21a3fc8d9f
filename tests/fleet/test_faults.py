"""Fault specs, plans and injectors: parsing, seeded reproducibility, what each fault does."""
import time

import numpy as np
import pytest

from pat_runtime.edge.service import NodeService
from pat_runtime import wire
from pat_runtime.fleet.simfleet import FaultInjector, FaultPlan, FaultSpec, node_device


def test_parse_and_str_roundtrip():
    spec = FaultSpec.parse("drop=0.05, latency=0.01,jitter=0.005,crash=2,corrupt=0.01,slow=1,seed=3")
    assert (spec.drop, spec.latency, spec.crash, spec.slow, spec.seed) == (0.05, 0.01, 2, 1, 3)
    assert FaultSpec.parse(str(spec)) == spec
    assert FaultSpec.parse("none") == FaultSpec() and str(FaultSpec()) == "none" and not FaultSpec().any
    assert spec.any


@pytest.mark.parametrize("text, msg", [("drop=1.5", "probability"), ("crash=-1", ">= 0"), ("wat=1", "bad fault"),
                                       ("drop", "bad fault"), ("crash=x", "valid int"),
                                       ("crash_min=5,crash_max=2", "crash_max")])
def test_parse_errors(text, msg):
    with pytest.raises(ValueError, match=msg):
        FaultSpec.parse(text)


def test_plan_is_seeded():
    a, b = FaultPlan(FaultSpec(crash=3, slow=2, seed=7), 10), FaultPlan(FaultSpec(crash=3, slow=2, seed=7), 10)
    c = FaultPlan(FaultSpec(crash=3, slow=2, seed=8), 10)
    assert a.crash_after == b.crash_after and a.slow == b.slow
    assert (a.crash_after, a.slow) != (c.crash_after, c.slow)
    assert len(a.crash_after) == 3 and all(2 <= v <= 20 for v in a.crash_after.values())
    crasher = next(iter(a.crash_after))
    assert a.injector(crasher).crash_after is not None and a.injector(crasher, incarnation=1).crash_after is None
    with pytest.raises(ValueError, match="exceed"):
        FaultPlan(FaultSpec(crash=3), 2)


def test_tamper_flips_bytes_reproducibly():
    frames = [bytes(f) for f in wire.encode(wire.make_header("apply"), [np.zeros((4, 4), np.float32)])]
    outs = [FaultInjector(FaultSpec(corrupt=1.0, seed=1)).tamper(frames, "reply") for _ in range(2)]
    assert outs[0] == outs[1] != frames
    assert sum(x != y for f, g in zip(frames, outs[0]) for x, y in zip(f, g)) in (1, 2, 3)
    assert FaultInjector(FaultSpec(corrupt=0.0)).tamper(frames, "reply") is frames


async def test_injector_latency_slow_drop_and_crash():
    """The edge fault hook (what every edge transport consults per request): delay, slowness, drop, crash."""
    dev = node_device("echo:?latency=0.01", 0)
    await dev.connect()
    x, th = np.zeros((2, 4), np.float32), np.zeros(4, np.float32)

    async def timed(inj, node="a"):
        t = time.perf_counter()
        r = await inj.serve(wire.make_header("apply"), [x, th], NodeService(dev, node).handle)
        return r, time.perf_counter() - t

    fast = FaultInjector(FaultSpec(latency=0.02))
    (h, (y,)), dt = await timed(fast)
    assert h["ok"] and dt >= 0.03 and fast.busy >= 0.03
    slow = FaultInjector(FaultSpec(slow_factor=5), slow=True)
    _, dt_slow = await timed(slow, "b")
    assert dt_slow >= 0.05
    dropper = FaultInjector(FaultSpec(drop=1.0))
    assert (await timed(dropper, "c"))[0] is None and dropper.counters["dropped"] == 1
    crashes = []
    crasher = FaultInjector(FaultSpec(), crash_after=1, on_crash=lambda: crashes.append(1))
    assert (await timed(crasher, "d"))[0][0]["ok"]
    assert (await timed(crasher, "d"))[0] is None and crasher.crashed and crashes == [1]
    assert (await timed(crasher, "d"))[0] is None and crashes == [1]          # stays down, crashes once
    assert crasher.counters["crashed"] == 1
    asked = FaultInjector(FaultSpec(), on_crash=lambda: crashes.append(2))
    asked.crash()
    asked.crash()
    assert asked.crashed and crashes == [1, 2] and asked.counters["crashed"] == 0   # asked for, not injected


def test_node_device_units_differ():
    a, b = node_device("sim:plate", 0), node_device("sim:plate", 1)
    assert a.sim.unit == 0 and b.sim.unit == 1
    assert any(not np.allclose(a.sim.p_unit[k], b.sim.p_unit[k]) for k in a.sim.p_unit)
    assert node_device("sim:plate?unit=10", 2).sim.unit == 12
    with pytest.raises(ValueError, match="sim:KIND or echo"):
        node_device("zmq://127.0.0.1:1/x", 0)
