"""Fleets of edge nodes: registry and health, shard scheduling, metrics and data-parallel PAT.

* :mod:`pat_runtime.fleet.manager` — :class:`FleetManager` (join/leave/heartbeat, eviction, metered requests)
* :mod:`pat_runtime.fleet.scheduler` — :class:`ShardScheduler` (in-flight caps, reassignment, exactly-once results)
* :mod:`pat_runtime.fleet.metrics` — latency histograms, utilization, throughput
* :mod:`pat_runtime.fleet.training` — data-parallel and pipelined PAT across a fleet with an exactly-once ledger
* :mod:`pat_runtime.fleet.simfleet` — :class:`SimFleet`: simulated nodes (in-process, ZeroMQ, Ray) with the faults
  of :mod:`pat_runtime.fleet.faults`
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pat_runtime._lazy import lazy_exports

from .manager import FleetManager, FleetNode
from .metrics import FleetMetrics, LatencyHistogram, NodeMetrics
from .scheduler import FleetError, Shard, ShardScheduler

_LAZY = {   # simulated fleets (edge nodes, transports, torch) load on first use
    "SimFleet": ".simfleet", "FaultSpec": ".faults", "FaultPlan": ".faults", "EchoDevice": ".simdevice",
    "node_device": ".simdevice",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
__all__ = ["FleetError", "FleetManager", "FleetMetrics", "FleetNode", "LatencyHistogram", "NodeMetrics",
           "Shard", "ShardScheduler", *sorted(_LAZY)]

if TYPE_CHECKING:
    from .faults import FaultPlan, FaultSpec
    from .simdevice import EchoDevice, node_device
    from .simfleet import SimFleet
