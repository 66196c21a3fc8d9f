"""A simulated fleet of deployment nodes in this process: each a different unit with Deployment + Calibrator.

``async with calibrating_fleet("sim:plate", units=range(1, 17), directory=tmp) as fleet`` starts one
:class:`pat_runtime.edge.service.NodeService` per unit (``sim:KIND?unit=N``, its own hidden variation) with the
:class:`pat_runtime.edge.deployed.Deployment` and :class:`pat_runtime.edge.calibration.Calibrator` plugins, on the in-process
transport, and an :class:`pat_runtime.transport.inproc.InprocCoordinator` to talk to them. ``pat deploy --to
fleet --sim-fleet ...`` uses it so the calibrate-verify-switch procedure can be tried without hardware.
"""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Iterable

from pat_runtime.sims.uri import parse_sim_uri
from pat_runtime.devices.local import LocalDevice
from pat_runtime.edge.calibration import Calibrator
from pat_runtime.edge.deployed import Deployment
from pat_runtime.edge.service import NodeService
from pat_runtime.transport.inproc import InprocCoordinator, InprocEdgeTransport
from pat_runtime.sims import make_sim


@dataclass
class CalibratingFleet:
    coordinator: InprocCoordinator
    node_ids: list[str]
    deployments: dict[str, Deployment] = field(default_factory=dict)
    calibrators: dict[str, Calibrator] = field(default_factory=dict)
    devices: dict[str, LocalDevice] = field(default_factory=dict)


@asynccontextmanager
async def calibrating_fleet(device: str, units: Iterable[int], directory: str | Path, *, interval: float | None = None,
                            recalibrate: bool = True, heartbeat: float = 0.25,
                            timeout: float = 600.0) -> AsyncIterator[CalibratingFleet]:
    """Nodes ``unit-N`` for every unit N of ``device`` (a ``sim:KIND?..`` URI); closed on exit."""
    kind, opts = parse_sim_uri(device)
    coord = await InprocCoordinator(timeout=timeout, retries=0, liveness=max(10 * heartbeat, 5.0)).start()
    fleet = CalibratingFleet(coord, [])
    stops: list[asyncio.Event] = []
    tasks: list[asyncio.Task] = []
    try:
        for u in units:
            node = f"unit-{int(u)}"
            dev = LocalDevice(make_sim(kind, **{**opts, "unit": int(u)}), name=f"{kind}#{u}", threaded=False)
            await dev.connect()
            service = NodeService(dev, node)
            dep = Deployment(Path(directory) / node)
            await dep(service)
            cal = Calibrator(dep, interval=interval, recalibrate=recalibrate)
            cal(service)
            stop = asyncio.Event()
            tasks.append(asyncio.create_task(InprocEdgeTransport(coord, node, heartbeat=heartbeat).serve(service, stop),
                                             name=f"node-{node}"))
            stops.append(stop)
            fleet.node_ids.append(node)
            fleet.deployments[node], fleet.calibrators[node], fleet.devices[node] = dep, cal, dev
        await asyncio.gather(*(coord.wait_for_node(n, timeout=30.0) for n in fleet.node_ids))
        yield fleet
    finally:
        for s in stops:
            s.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for cal in fleet.calibrators.values():
            await cal.close()
        for dep in fleet.deployments.values():
            await dep.close()
        await coord.close()


def parse_units(text: str) -> list[int]:
    """``"1-16"`` or ``"1,3,5"`` or ``"1-4,9"`` -> unit numbers."""
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            out += list(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    if not out:
        raise ValueError(f"no units in {text!r}")
    return out


__all__ = ["CalibratingFleet", "calibrating_fleet", "parse_units"]
