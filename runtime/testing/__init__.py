"""Public test helpers: free ports, simulated devices, leak checks, brokers and fleets for tests.

Import from here in tests and downstream projects, e.g. ``from runtime.testing import free_port``.
"""
from __future__ import annotations

from .core import assert_no_leaked_tasks, free_port, sim_device

__all__ = ["assert_no_leaked_tasks", "free_port", "sim_device"]
