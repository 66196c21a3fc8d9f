"""Canary rollout of a calibratable model over a fleet: calibrate and verify on every unit, switch per unit.

:func:`calibrated_rollout` sends ``calibrate_deploy`` (see :mod:`pat_runtime.edge.calibration`) to a few **canary** nodes
first; every node calibrates the candidate on its own unit within the budget, verifies it on held-out
calibration data and switches only if it meets the threshold and is not worse than the model it serves.
If any canary fails (refuses, errors, or keeps its old model), the rollout **stops**: the other nodes are not
touched. Otherwise the rest follow (concurrently, ``wave`` nodes at a time). Every node's report (accuracy
before and after calibration, device calls, seconds, switched or kept and why) comes back to the deployer.

:func:`fleet_calibration_status` asks every node for its calibration / drift state (alerts included).
"""
from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from pat_runtime.devices.errors import DeviceError, RemoteDeviceError
from pat_runtime.artifact import loads
from pat_runtime.calibration import Budget

CALIBRATE_DEPLOY = "calibrate_deploy"
CALIBRATION = "calibration"


@dataclass
class RolloutConfig:
    threshold: float = 0.0
    budget: Budget = field(default_factory=Budget)
    canaries: int = 2
    wave: int = 0                      # nodes at once after the canaries (0: all)
    verify: float = 0.5
    require_verified: bool = True
    #: a canary that keeps its old model (candidate not good enough there) stops the rollout too
    stop_on_kept: bool = True
    timeout: float = 600.0


@dataclass
class NodeOutcome:
    node: str
    phase: str                          # canary | rollout | skipped
    report: dict[str, Any] | None = None
    error: str | None = None

    @property
    def switched(self) -> bool:
        return bool(self.report and self.report.get("switched"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RolloutResult:
    outcomes: list[NodeOutcome]
    stopped: bool = False
    reason: str = ""

    @property
    def ok(self) -> bool:
        return not self.stopped and all(o.error is None for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        return {"stopped": self.stopped, "reason": self.reason, "outcomes": [o.to_dict() for o in self.outcomes]}


async def calibrate_deploy_node(coord: Any, node: str, data: bytes, x: np.ndarray, y: np.ndarray | None,
                                cfg: RolloutConfig, phase: str, sha: str | None = None) -> NodeOutcome:
    arrays = [np.frombuffer(bytes(data), np.uint8), np.asarray(x, np.float32)]
    if y is not None:
        arrays.append(np.asarray(y, np.int64))
    fields = {"threshold": float(cfg.threshold), "budget": cfg.budget.to_dict(), "verify": float(cfg.verify),
              "require_verified": bool(cfg.require_verified)}
    if sha:
        fields["sha256"] = sha
    try:
        h, _ = await coord.request(node, CALIBRATE_DEPLOY, arrays, timeout=cfg.timeout, retries=0, **fields)
        return NodeOutcome(node, phase, report=h.get("report"))
    except RemoteDeviceError as e:
        return NodeOutcome(node, phase, error=f"{e.code}: {e.message}")
    except DeviceError as e:
        return NodeOutcome(node, phase, error=f"{type(e).__name__}: {e.message}")


def _failed(o: NodeOutcome, cfg: RolloutConfig) -> str | None:
    if o.error:
        return f"{o.node}: {o.error}"
    if cfg.stop_on_kept and not o.switched:
        return f"{o.node} kept its model: {(o.report or {}).get('reason', '?')}"
    return None


async def calibrated_rollout(coord: Any, nodes: Sequence[str], data: bytes, x: np.ndarray, y: np.ndarray | None,
                             cfg: RolloutConfig, verify_artifact: bool = True) -> RolloutResult:
    """Canaries first, then the rest; stop (leaving the rest untouched) if a canary fails."""
    nodes = list(nodes)
    if not nodes:
        raise ValueError("no nodes to roll out to")
    if y is not None and len(x) != len(y):
        raise ValueError(f"calibration x and y lengths differ: {len(x)} vs {len(y)}")
    if len(x) > cfg.budget.samples:
        raise ValueError(f"calibration set of {len(x)} samples exceeds the budget of {cfg.budget.samples}")
    sha = loads(data).artifact_id if verify_artifact else None
    k = max(1, min(int(cfg.canaries), len(nodes))) if cfg.canaries else 0
    canaries, rest = nodes[:k], nodes[k:]
    outcomes = list(await asyncio.gather(*(calibrate_deploy_node(coord, n, data, x, y, cfg, "canary", sha)
                                           for n in canaries)))
    bad = [r for r in (_failed(o, cfg) for o in outcomes) if r]
    if bad:
        outcomes += [NodeOutcome(n, "skipped", error="not attempted: canary failed") for n in rest]
        return RolloutResult(outcomes, stopped=True, reason="canary failed: " + "; ".join(bad))
    wave = int(cfg.wave) or max(len(rest), 1)
    for i in range(0, len(rest), wave):
        outcomes += await asyncio.gather(*(calibrate_deploy_node(coord, n, data, x, y, cfg, "rollout", sha)
                                           for n in rest[i:i + wave]))
    return RolloutResult(outcomes)


async def fleet_calibration_status(coord: Any, nodes: Sequence[str], timeout: float = 10.0) -> dict[str, Any]:
    """Each node's calibration / drift status (or the error that came back)."""

    async def one(n):
        try:
            h, _ = await coord.request(n, CALIBRATION, [], timeout=timeout)
            return {k: h.get(k) for k in ("threshold", "drift", "alert", "last", "interval", "budget")}
        except DeviceError as e:
            return {"error": str(e)}

    res = await asyncio.gather(*(one(n) for n in nodes))
    return dict(zip(nodes, res))


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * float(v):.1f}%"


def format_table(result: RolloutResult) -> str:
    """The per-unit table ``pat deploy --to fleet --calibrate`` prints."""
    head = ("node", "phase", "serving", "shipped", "renorm", "calibrated", "calls", "seconds", "result")
    rows = [head]
    for o in result.outcomes:
        r = o.report or {}
        if o.error:
            res = f"ERROR {o.error}" if o.phase != "skipped" else "skipped (canary failed)"
        else:
            res = ("switched (" + str(r.get("stage")) + ")") if r.get("switched") else f"kept: {r.get('reason')}"
        rows.append((o.node, o.phase, _pct(r.get("serving")), _pct(r.get("shipped")), _pct(r.get("renormalized")),
                     _pct(r.get("calibrated")), str(r.get("calls", "-")),
                     "-" if r.get("seconds") is None else f"{float(r['seconds']):.1f}", res))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head) - 1)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row[:-1], widths)) + "  " + str(row[-1]) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 6)
    if result.stopped:
        lines.append(f"ROLLOUT STOPPED: {result.reason}")
    return "\n".join(lines)


__all__ = ["NodeOutcome", "RolloutConfig", "RolloutResult", "calibrate_deploy_node", "calibrated_rollout",
           "fleet_calibration_status", "format_table"]
