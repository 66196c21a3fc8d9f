"""Public test helpers: free ports, simulated devices, leak checks, waiting for a condition, brokers and fleets.

Import from here in tests and downstream projects, e.g. ``from pat_runtime.testing import free_port``.
"""
from __future__ import annotations

from .core import assert_no_leaked_tasks, free_port, sim_device
from .faults import DropReplies
from .fleet import FAST_DEVICE, fleet_factory, fleet_options, sim_fleet
from .mosquitto import Broker, mosquitto_broker, mosquitto_broker_sync, require_mosquitto
from .wait import WaitTimeout, wait_until, wait_until_sync
from .zmq import EdgeProcess, LossyEdgeTransport, RunningNode, ZmqFleet, start_node, zmq_fleet

__all__ = ["DropReplies", "FAST_DEVICE", "fleet_factory", "fleet_options", "sim_fleet",
           "Broker", "EdgeProcess", "LossyEdgeTransport", "RunningNode", "ZmqFleet", "start_node", "zmq_fleet",
           "assert_no_leaked_tasks", "free_port", "mosquitto_broker", "mosquitto_broker_sync",
           "require_mosquitto", "sim_device", "WaitTimeout", "wait_until", "wait_until_sync"]
