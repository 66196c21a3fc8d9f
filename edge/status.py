"""What ``pat edge`` prints: what it serves, where, and whether a coordinator is talking to it.

:class:`EdgeStatus` is a NodeService plugin (see :func:`pat_runtime.edge.agent.run_edge`): it prints the device and its
spec once the device is connected, then a line whenever the connection state changes (first request from
the coordinator; silence longer than ``quiet`` s), so an edge pointed at nothing says so instead of
sitting silent forever.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

from pat_runtime.redact import redact_uri


class EdgeStatus:
    def __init__(self, node_id: str, connect: str, echo: Callable[[str], Any] = print, quiet: float = 10.0,
                 poll: float = 0.5, clock: Callable[[], float] = time.monotonic):
        # never print a password given in the URL (pat_runtime.redact)
        self.node_id, self.connect, self.echo, self.quiet = node_id, redact_uri(connect), echo, float(quiet)
        self.poll, self.clock = float(poll), clock
        #: how many times the watcher has looked at the request counter
        self.polls = 0
        self._task: asyncio.Task | None = None

    def __call__(self, service: Any) -> None:
        d, s = service.device, service.device.spec
        self.echo(f"node {self.node_id}: serving {d.name} ({s.kind}: x[{s.in_dim}] in {list(s.x_range)} {s.x_units}, "
                  f"θ[{s.param_dim}] in {list(s.theta_range)} {s.theta_units} -> y[{s.out_dim}] {s.y_units}; "
                  f"requests: {', '.join(sorted(service.handlers))})")
        self.echo(f"node {self.node_id}: connecting to the coordinator at {self.connect} ...")
        self._task = asyncio.get_running_loop().create_task(self._watch(service))

    async def _watch(self, service: Any) -> None:
        served, connected, since = 0, False, self.clock()
        waited = 0
        next_report = since + self.quiet
        while True:
            await asyncio.sleep(self.poll)
            self.polls += 1
            n = int(service.counters.get("requests", 0))
            now = self.clock()
            if n > served:
                if not connected:
                    self.echo(f"node {self.node_id}: coordinator connected (first request after "
                              f"{now - since:.1f} s)")
                served, connected, since, waited = n, True, now, 0
                next_report = now + self.quiet
            elif now >= next_report:
                # a silent edge says so after quiet, 2 quiet, 4 quiet, ... (at most every 64 quiet) seconds
                waited += 1
                next_report = now + self.quiet * 2 ** min(waited, 6)
                state = "no request" if not connected else "no request since the last one"
                self.echo(f"node {self.node_id}: {state} for {now - since:.0f} s; still trying {self.connect} "
                          f"(is the coordinator running, e.g. pat train --device ...{self.node_id}?)")
                connected = False

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
