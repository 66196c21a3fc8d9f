"""Calibrate, verify, then switch: what a node does with a new model for its own unit.

:func:`calibrate_on_unit` is the bounded on-device procedure (no transport; also used by the bench)::

    budget     Budget(calls, seconds, samples): enforced on every device call (BudgetedDevice)
    data       labelled calibration set (x, y), at most budget.samples; split into fit / verify halves
    serving    accuracy of the model serving now, on the verify half            (1 pass)
    candidate  accuracy as shipped                                               (1 pass)
    renorm     label-free re-normalisation of the calibratable stages, then
               accuracy                                                          (1 + layers passes)
    PAT        a few PAT steps on the calibratable parameters only (the twin is the artifact's plan:
               "nominal" = datasheet physics of the device kind, rebuilt here; nothing is fitted); every
               ``check_every`` steps the verify accuracy and cross-entropy are measured and the best state kept
               (early stopping)                                                  (<= the calls left)
    decide     best candidate stage by verify cross-entropy (``select="loss"``; or accuracy), a later stage only
               if strictly better; switch only if its verify accuracy meets the threshold AND is not
               worse than the serving model on the same samples; otherwise keep serving and say why

Without labels (``y=None``) only the re-normalisation runs and nothing can be verified: the candidate is
switched to only when the deployer allows unverified switches (``require_verified=False``).

:class:`Calibrator` is the NodeService plugin on top of :class:`pat_runtime.edge.deployed.Deployment`:

    calibrate_deploy  arrays [artifact uint8[N], x float32[n, F], y int64[n]]; fields threshold, budget
                      {calls, seconds, samples}, verify (fraction), require_verified
                      -> per-unit report (accuracies, calls, seconds, switched, reason)
    calibration       -> the node's calibration/drift status (last report, alert, checks)
    drift_check       run the periodic check now -> its report

The node keeps its calibration set (``calibration/set.npz``) for the drift monitor: every ``interval``
seconds it measures the serving model on the verify half; below the threshold it recalibrates the serving
model (same procedure, same budget, same switch rule) and, if that does not bring it back, raises an alert
that shows in the ``calibration`` status and the node's ``status`` reply (``alert`` field), and is logged.
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pat_runtime.devices.codes import ErrorCode
from pat_runtime.devices.base import Device
from pat_runtime.edge.service import NodeService, RequestError
from pat_runtime.artifact import Artifact, ArtifactError, atomic_write, normalize, pnn_from_artifact, \
    pnn_to_artifact
from pat_runtime.calibration import Budget, BudgetExceeded, BudgetedDevice, CalibrationPlan, accuracy_on, \
    calibrate_pat, calls_per_pass, decide, measure_on, plan_of, renormalize, split_calibration

log = logging.getLogger(__name__)

CALIBRATE_DEPLOY = "calibrate_deploy"
CALIBRATION = "calibration"
DRIFT_CHECK = "drift_check"


@dataclass
class UnitReport:
    """What one node did with one candidate model (sent back to the deployer)."""

    node: str = ""
    artifact_id: str = ""
    serving: float | None = None          # accuracy of the model serving before (verify half)
    shipped: float | None = None          # the candidate as shipped
    renormalized: float | None = None     # after label-free re-normalisation
    calibrated: float | None = None       # after PAT steps on the calibratable parameters
    chosen: float | None = None           # the candidate that was compared
    stage: str = ""                       # shipped | renormalized | calibrated
    switched: bool = False
    reason: str = ""
    calls: int = 0
    seconds: float = 0.0
    pat_steps: int = 0
    best_step: int | None = None          # the PAT step whose state was kept (early stopping on the verify half)
    select: str = "loss"                  # what chose among the candidate states (verify loss or accuracy)
    verify_loss: dict[str, float] = field(default_factory=dict)   # cross-entropy per stage (verify half)
    stopped: str = ""
    budget: dict[str, Any] = field(default_factory=dict)
    fit_samples: int = 0
    verify_samples: int = 0
    installed: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def twin_for(plan: CalibrationPlan, spec) -> Any:
    """The twin named by the plan for PAT's backward pass on this node."""
    from pat_runtime.twins import make_twin

    if plan.twin != "nominal":
        raise ValueError(f"calibration twin {plan.twin!r} is not available at the edge (only 'nominal')")
    twin = make_twin("nominal", spec, sim_options=dict(plan.sim_options))
    twin.requires_grad_(False)
    return twin.eval()


async def calibrate_on_unit(candidate, device: Device, x: np.ndarray, y: np.ndarray | None, plan: CalibrationPlan,
                            budget: Budget, threshold: float, serving=None, verify: float = 0.5,
                            require_verified: bool = True, epochs: int = 50, seed: int = 0,
                            node: str = "", check_every: int = 25, select: str = "loss") -> UnitReport:
    """Calibrate ``candidate`` (a PNN, modified in place) on ``device`` and decide whether to switch.

    ``x`` are model features (already normalised). ``serving``: the PNN serving now (or None). Every device
    call of the procedure, serving-model measurement included, counts against ``budget``.

    ``select``: how the candidate state is chosen among shipped, re-normalised and the PAT checkpoints (early
    stopping): ``"loss"`` (lowest cross-entropy on the verify half; default) or ``"accuracy"`` (highest verify
    accuracy). On a verify half of ~128 samples one sample is 0.8 points of accuracy, so the maximum accuracy
    over ~20 checkpoints mostly picks noise; the cross-entropy uses every sample's margin and is far less noisy.
    The switch rule itself always compares **accuracy** (threshold, serving model).
    """
    if select not in ("loss", "accuracy"):
        raise ValueError(f"select must be 'loss' or 'accuracy', not {select!r}")

    def score(acc: float, loss: float) -> float:      # higher is better
        return -loss if select == "loss" else acc

    if len(x) > budget.samples:
        raise ValueError(f"calibration set of {len(x)} samples exceeds the budget of {budget.samples}")
    rep = UnitReport(node=node, budget=budget.to_dict(), select=select)
    dev = BudgetedDevice(device, budget).start()
    t0 = time.perf_counter()
    xt = torch.from_numpy(np.array(x, np.float32))
    candidate.attach(device=dev, twin=twin_for(plan, device.spec))
    try:
        if y is None:
            await renormalize(candidate, xt, plan)
            rep.stage = "renormalized"
            dec_ok = not require_verified
            rep.switched = dec_ok
            rep.reason = ("unverified (no labels): switched as the deployer allowed" if dec_ok else
                          "no labelled data to verify the candidate; kept the serving model")
            return rep
        yt = torch.from_numpy(np.array(y, np.int64))
        fit, ver = split_calibration(len(x), verify, seed)
        rep.fit_samples, rep.verify_samples = len(fit), len(ver)
        xf, yf, xv, yv = xt[fit], yt[fit], xt[ver], yt[ver]
        verify_calls = calls_per_pass(candidate, len(ver))
        if serving is not None:
            serving.attach(device=dev)
            rep.serving = await accuracy_on(serving, xv, yv)
            serving.attach(device=device)
        acc, loss = await measure_on(candidate, xv, yv)
        best = ("shipped", acc, score(acc, loss), _snapshot(candidate))
        by_acc = ("shipped", acc, best[3])    # the most accurate state on the verify half (fallback, see below)
        rep.shipped, rep.verify_loss["shipped"] = acc, loss
        if await renormalize(candidate, xf, plan):
            acc, loss = await measure_on(candidate, xv, yv)
            rep.renormalized, rep.verify_loss["renormalized"] = acc, loss
            if score(acc, loss) > best[2]:
                best = ("renormalized", acc, score(acc, loss), _snapshot(candidate))
            if acc > by_acc[1]:
                by_acc = ("renormalized", acc, best[3] if best[0] == "renormalized" else _snapshot(candidate))
        cal_best: list[Any] = [None, None, None, None]   # best (score, state, step, accuracy) of the PAT steps
        acc_best: list[Any] = [-1.0, None]                # most accurate (accuracy, state) of the PAT steps

        async def check(step: int) -> None:       # early stopping on the verify half
            acc, loss = await measure_on(candidate, xv, yv)
            if cal_best[0] is None or score(acc, loss) > cal_best[0]:
                cal_best[:] = [score(acc, loss), _snapshot(candidate), step, acc]
                rep.verify_loss["calibrated"] = loss
            if acc > acc_best[0]:
                acc_best[:] = [acc, cal_best[1] if cal_best[2] == step else _snapshot(candidate)]

        fit_rep = await calibrate_pat(candidate, dev, xf, yf, plan, epochs=epochs, reserve_calls=verify_calls,
                                      seed=seed, every=check_every, on_check=check if check_every else None,
                                      check_calls=verify_calls)
        rep.pat_steps, rep.stopped = fit_rep.steps, fit_rep.stopped
        if fit_rep.steps:
            await check(fit_rep.steps)
            rep.calibrated, rep.best_step = cal_best[3], cal_best[2]
            if cal_best[0] > best[2]:         # a later stage only if strictly better
                best = ("calibrated", cal_best[3], cal_best[0], cal_best[1])
            if acc_best[0] > by_acc[1]:
                by_acc = ("calibrated", acc_best[0], acc_best[1])
        d = decide(best[1], threshold, rep.serving)
        if not d.switch and by_acc[1] > best[1] and decide(by_acc[1], threshold, rep.serving).switch:
            # the lowest-loss state does not qualify but a more accurate one does (e.g. a shipped model that is
            # already right on every verify sample, whose margins calibration sharpens at the price of a few
            # samples): never refuse a candidate that meets the switch rule as measured
            best = (by_acc[0], by_acc[1], None, by_acc[2])
            rep.select = f"{select}, fell back to accuracy"
            d = decide(best[1], threshold, rep.serving)
        rep.stage, rep.chosen = best[0], best[1]
        candidate.load_state_dict(best[3])
        rep.switched, rep.reason = d.switch, d.reason
        return rep
    except BudgetExceeded as e:
        rep.switched, rep.reason = False, f"budget exhausted before verification finished ({e.message}); kept serving"
        return rep
    finally:
        candidate.attach(device=device)
        rep.calls, rep.seconds = dev.used, time.perf_counter() - t0


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def derived_artifact(base: Artifact, model, node: str, report: UnitReport) -> Artifact:
    """The calibrated model as an artifact of its own, naming its parent and the calibration that made it."""
    meta = dict(base.metadata)
    meta["calibrated"] = {"parent": base.artifact_id, "node": node, "stage": report.stage,
                          "accuracy_verify": report.chosen, "calls": report.calls}
    return pnn_to_artifact(model, f"{base.model_version}+cal.{node}", normalization=base.normalization,
                           metadata=meta)


# ---------------------------------------------------------------------------------------------------
# The node plugin
# ---------------------------------------------------------------------------------------------------
@dataclass
class DriftState:
    checks: int = 0
    last_check: float | None = None
    last_accuracy: float | None = None
    recalibrations: int = 0
    alert: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Calibrator:
    """NodeService plugin: calibrate-verify-switch deployments and the periodic drift check.

    Use together with a :class:`pat_runtime.edge.deployed.Deployment` (which holds the model history)::

        dep = Deployment(dir); cal = Calibrator(dep, interval=600)
        EdgeNode(device, transport, node_id, plugins=[dep, cal])
    """

    def __init__(self, deployment, interval: float | None = None, recalibrate: bool = True,
                 threshold: float = 0.0, budget: Budget | None = None):
        self.dep = deployment
        self.interval = interval
        self.recalibrate = recalibrate
        self.threshold = float(threshold)
        self.budget = budget or Budget()
        self.verify = 0.5
        self.drift = DriftState()
        self.last: UnitReport | None = None
        self.service: NodeService | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._cal: tuple[np.ndarray, np.ndarray] | None = None

    # ----- plugin entry --------------------------------------------------------------------------------
    def __call__(self, service: NodeService) -> None:
        self.service = service
        service.register(CALIBRATE_DEPLOY, self._h_calibrate_deploy)
        service.register(CALIBRATION, self._h_status)
        service.register(DRIFT_CHECK, self._h_drift_check)
        self._wrap_status(service)
        self._load_set()
        if self.interval and self._task is None:
            self._task = asyncio.create_task(self._monitor(), name=f"drift-{service.node_id}")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    @property
    def alert(self) -> str | None:
        return self.drift.alert

    def status(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "budget": self.budget.to_dict(), "interval": self.interval,
                "drift": self.drift.to_dict(), "alert": self.drift.alert,
                "has_calibration_set": self._cal is not None,
                "last": self.last.to_dict() if self.last else None}

    def _wrap_status(self, service: NodeService) -> None:
        """The node's ``status`` reply carries the calibration state (and any alert)."""
        inner = service.handlers.get("status")
        if inner is None:
            return

        async def status(req):
            return (await inner(req)).with_fields(calibration=self.status(), alert=self.drift.alert)

        service.register("status", status)

    # ----- calibration set persistence -----------------------------------------------------------------
    def _set_path(self) -> Path:
        return Path(self.dep.dir) / "calibration" / "set.npz"

    def _save_set(self, x: np.ndarray, y: np.ndarray) -> None:
        buf = io.BytesIO()
        np.savez(buf, x=x, y=y, threshold=np.float64(self.threshold), verify=np.float64(self.verify),
                 budget=np.frombuffer(json.dumps(self.budget.to_dict()).encode(), np.uint8))
        atomic_write(self._set_path(), buf.getvalue())
        self._cal = (x, y)

    def _load_set(self) -> None:
        try:
            with np.load(self._set_path()) as z:
                self._cal = (z["x"], z["y"])
                self.threshold = float(z["threshold"])
                self.verify = float(z["verify"])
                self.budget = Budget.from_dict(json.loads(z["budget"].tobytes().decode()))
        except FileNotFoundError:
            return
        except Exception as e:  # a damaged file: no drift checks until the next calibrated deployment
            log.error("node %s: calibration set unreadable (%s)", self._node(), e)

    def _node(self) -> str:
        return self.service.node_id if self.service else "?"

    # ----- operations ----------------------------------------------------------------------------------
    async def calibrate_deploy(self, data: bytes, x: np.ndarray, y: np.ndarray | None, threshold: float,
                               budget: Budget, verify: float = 0.5, require_verified: bool = True,
                               expect: str | None = None) -> UnitReport:
        """Verify the artifact, calibrate it on this unit, switch only if the rule allows (see module doc)."""
        async with self._lock:
            inst = self.dep._verify(data, expect)          # ArtifactError: refused, nothing changes
            plan = plan_of(inst.artifact.metadata)
            if plan is None:
                raise RequestError(ErrorCode.NOT_CALIBRATABLE, "the artifact carries no calibration plan "
                                                               "(metadata['calibration']); deploy it with plain deploy")
            feats = normalize(np.asarray(x, np.float32), inst.artifact.normalization)
            serving = self.dep.current.model if self.dep.current else None
            rep = await calibrate_on_unit(inst.model, self.dep._device(), feats, y, plan, budget, threshold,
                                          serving=serving, verify=verify, require_verified=require_verified,
                                          node=self._node())
            rep.artifact_id = inst.artifact.artifact_id
            if rep.switched:
                art = derived_artifact(inst.artifact, inst.model, self._node(), rep) \
                    if rep.stage != "shipped" else inst.artifact
                rep.installed = await self.dep.install_derived(art)
            self.threshold, self.budget, self.verify = float(threshold), budget, float(verify)
            if y is not None:
                self._save_set(np.asarray(x, np.float32), np.asarray(y, np.int64))
            self.last = rep
            if rep.switched:
                self.drift.alert = None
            log.info("node %s: calibrated deploy %s: %s", self._node(), "switched" if rep.switched else "kept",
                     rep.reason)
            return rep

    async def check(self) -> dict[str, Any]:
        """The drift check: measure the serving model on the verify half; recalibrate or alert below threshold."""
        async with self._lock:
            self.drift.checks += 1
            self.drift.last_check = time.time()
            if self._cal is None or self.dep.current is None:
                return {"checked": False, "reason": "no calibration set or no model", **self.drift.to_dict()}
            inst = self.dep.current
            x, y = self._cal
            feats = normalize(x, inst.artifact.normalization)
            _, ver = split_calibration(len(x), self.verify)
            dev = BudgetedDevice(self.dep._device(), self.budget).start()
            inst.model.attach(device=dev)
            try:
                acc = await accuracy_on(inst.model, torch.from_numpy(feats[ver]), torch.from_numpy(y[ver]))
            finally:
                inst.model.attach(device=self.dep._device())
            self.drift.last_accuracy = acc
            out: dict[str, Any] = {"checked": True, "accuracy": acc, "threshold": self.threshold}
            if acc >= self.threshold:
                self.drift.alert = None
                return {**out, "action": "none", **self.drift.to_dict()}
            plan = plan_of(inst.artifact.metadata)
            if self.recalibrate and plan is not None:
                cand = pnn_from_artifact(inst.artifact, self.dep._device())
                rep = await calibrate_on_unit(cand, self.dep._device(), feats, y, plan, self.budget,
                                              self.threshold, serving=inst.model, verify=self.verify,
                                              node=self._node())
                self.drift.recalibrations += 1
                self.last = rep
                out["recalibration"] = rep.to_dict()
                if rep.switched:
                    art = derived_artifact(inst.artifact, cand, self._node(), rep)
                    rep.installed = await self.dep.install_derived(art)
                    self.drift.alert = None
                    return {**out, "action": "recalibrated", **self.drift.to_dict()}
            self.drift.alert = (f"accuracy {acc:.1%} below threshold {self.threshold:.1%}"
                                + ("; recalibration did not restore it" if self.recalibrate and plan else
                                   "; not recalibrated"))
            log.warning("node %s: DRIFT ALERT: %s", self._node(), self.drift.alert)
            return {**out, "action": "alert", **self.drift.to_dict()}

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(float(self.interval))
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as e:   # a failing check is itself an alert, never silence
                self.drift.alert = f"drift check failed: {type(e).__name__}: {e}"
                log.exception("node %s: drift check failed", self._node())

    # ----- handlers ------------------------------------------------------------------------------------
    async def _h_calibrate_deploy(self, header, arrays):
        if len(arrays) not in (2, 3) or arrays[0].dtype != np.uint8 or arrays[0].ndim != 1:
            raise RequestError(ErrorCode.BAD_REQUEST, "calibrate_deploy needs [artifact uint8[N], x[n, F], (y int[n])]")
        x = np.asarray(arrays[1], np.float32)
        y = np.asarray(arrays[2], np.int64) if len(arrays) == 3 else None
        if x.ndim != 2 or (y is not None and y.shape != (len(x),)):
            raise RequestError(ErrorCode.BAD_SHAPE, f"calibration x must be [n, F] and y [n]; got {x.shape}, "
                                                    f"{None if y is None else y.shape}")
        try:
            budget = Budget.from_dict(header.get("budget") if isinstance(header.get("budget"), dict) else None)
            threshold = float(header.get("threshold", 0.0))
            verify = float(header.get("verify", 0.5))
        except (TypeError, ValueError) as e:
            raise RequestError(ErrorCode.BAD_REQUEST, f"bad calibration options: {e}") from None
        expect = header.get("sha256")
        try:
            rep = await self.calibrate_deploy(arrays[0].tobytes(), x, y, threshold, budget, verify,
                                              bool(header.get("require_verified", True)),
                                              expect if isinstance(expect, str) else None)
        except ArtifactError as e:
            raise RequestError(e.code, f"artifact refused, still serving {self.dep._current_desc()}: "
                                       f"{e.message}") from None
        except ValueError as e:
            raise RequestError(ErrorCode.BAD_REQUEST, str(e)) from None
        return {"report": rep.to_dict()}, []

    async def _h_status(self, header, arrays):
        return self.status(), []

    async def _h_drift_check(self, header, arrays):
        return {"check": await self.check()}, []


__all__ = ["CALIBRATE_DEPLOY", "CALIBRATION", "Calibrator", "DRIFT_CHECK", "DriftState", "UnitReport",
           "calibrate_on_unit", "derived_artifact", "twin_for"]
