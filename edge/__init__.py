"""The edge node: a device served to a coordinator (``pat edge``), with optional deployed-model plugins.

* :class:`NodeService` — request handlers (hello, apply, apply_many, ...) with idempotent replies; a handler
  takes a :class:`Request` and returns a :class:`Reply` or raises :class:`RequestError`
* :func:`run_edge` / :class:`EdgeNode` / :func:`make_edge_transport` — serve a device URI on a transport URL
* :class:`Deployment` — signed PNN artifacts: deploy, rollback, infer, predictions outbox
* :class:`Calibrator` — per-unit calibration before a deployed model is switched in
* :class:`EdgeStatus`, :class:`DeadlineClock`, :class:`PredictionBuffer`

Names are imported on first use (PEP 562): ``import pat_runtime.edge`` loads neither torch nor a transport.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pat_runtime._lazy import lazy_exports

_EXPORTS = {
    "NodeService": ".service", "RequestError": ".service", "Request": ".service", "Reply": ".service",
    "EdgeNode": ".agent", "make_edge_transport": ".agent", "run_edge": ".agent",
    "Deployment": ".deployed", "Installed": ".deployed",
    "Calibrator": ".calibration", "calibrate_on_unit": ".calibration",
    "EdgeStatus": ".status", "DeadlineClock": ".deadline", "PredictionBuffer": ".predictions",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .agent import EdgeNode, make_edge_transport, run_edge
    from .calibration import Calibrator, calibrate_on_unit
    from .deadline import DeadlineClock
    from .deployed import Deployment, Installed
    from .predictions import PredictionBuffer
    from .service import NodeService, Reply, Request, RequestError
    from .status import EdgeStatus
