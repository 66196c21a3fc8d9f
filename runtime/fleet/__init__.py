"""Fleets of edge nodes: registry and health, shard scheduling, metrics and data-parallel PAT.

* :mod:`runtime.fleet.manager` — :class:`FleetManager` (join/leave/heartbeat, eviction, metered requests)
* :mod:`runtime.fleet.scheduler` — :class:`ShardScheduler` (in-flight caps, reassignment, exactly-once results)
* :mod:`runtime.fleet.metrics` — latency histograms, utilization, throughput
* :mod:`runtime.fleet.training` — data-parallel and pipelined PAT across a fleet with an exactly-once ledger
"""
from __future__ import annotations

from .manager import FleetManager, FleetNode
from .metrics import FleetMetrics, LatencyHistogram, NodeMetrics
from .scheduler import FleetError, Shard, ShardScheduler

__all__ = ["FleetError", "FleetManager", "FleetMetrics", "FleetNode", "LatencyHistogram", "NodeMetrics",
           "Shard", "ShardScheduler"]
