"""Fleets of edge nodes: registry and health, shard scheduling, metrics and data-parallel PAT.

* :mod:`pat_runtime.fleet.manager` — :class:`FleetManager` (join/leave/heartbeat, eviction, metered requests)
* :mod:`pat_runtime.fleet.scheduler` — :class:`ShardScheduler` (in-flight caps, reassignment, exactly-once results)
* :mod:`pat_runtime.fleet.metrics` — latency histograms, utilization, throughput
* :mod:`pat_runtime.fleet.training` — data-parallel and pipelined PAT across a fleet with an exactly-once ledger
"""
from __future__ import annotations

from .manager import FleetManager, FleetNode
from .metrics import FleetMetrics, LatencyHistogram, NodeMetrics
from .scheduler import FleetError, Shard, ShardScheduler

__all__ = ["FleetError", "FleetManager", "FleetMetrics", "FleetNode", "LatencyHistogram", "NodeMetrics",
           "Shard", "ShardScheduler"]
