"""Per-unit calibration of a deployed PNN: which parameters a node may change, under what budget, and how.

Physical units of one kind differ (hidden per-unit variation), so a PNN trained on some units loses accuracy
on another. The deployer names, per deployment, the parameters that stay **shared** (the physical θ, most of
the model) and the parameters a node may **calibrate** on its own unit, by group:

=============  ================================================================================================
``input``      the first :class:`~pat_runtime.pat.RangeMap` (``a``, ``b``): how raw features map into the drive range
``ranges``     every RangeMap (input and between physical layers)
``readout``    the :class:`~pat_runtime.pat.BinReadout` scale and offset (or the final ``nn.Linear`` of a hybrid)
``theta``      the physical parameters θ of every physical layer (not shared any more: use with care)
``theta_affine`` a per-channel gain and offset of every physical layer's θ (``θ_c ← g_c·θ_c + o_c``, clamped to
               the θ range; identity at the start): two numbers per channel that absorb a unit's own scale and
               offset of how θ acts (e.g. an SLM's phase calibration) while the shape of θ stays shared
=============  ================================================================================================

``theta_affine`` is a re-parametrisation used only while calibrating (or while training per-unit copies, see
:class:`pat_runtime.fleet.robust.MultiUnitTrainer`): its names (``stages.i.theta_gain``, ``stages.i.theta_offset``)
are not model parameters; :class:`ThetaAffine` holds them and writes ``g ⊙ θ₀ + o`` into the layer's θ, so a
calibrated model (and its artifact) is an ordinary PNN whose θ already carries the unit's gain and offset.

The choice travels inside the artifact (``metadata["calibration"]``, see :class:`CalibrationPlan`) with the
parameter names, the twin the node uses for PAT's backward pass and the *reference statistics* of every
rescaling stage's input measured on the training units.

Two procedures, both measured on the node's own device and bounded by a :class:`Budget` (device calls,
seconds, labelled samples) that a :class:`BudgetedDevice` enforces on every call:

* :func:`renormalize` (label-free): physical forward passes of unlabelled inputs; each calibratable RangeMap
  after a physical layer and the readout get a per-feature gain and offset such that their affine output on
  this unit has the mean and std it had on the training units (``a' = ±s_ref/s_unit``,
  ``b' = m_ref - a'·m_unit``). Cost: ``layers x channels`` device calls per stage.
* :func:`calibrate_pat` (labelled): a few PAT steps (device forward, twin backward) on the calibratable
  parameters only, everything else frozen, stopped before the budget would be exceeded.

:func:`decide` is the verify-before-switch rule: a candidate replaces the serving model only if its accuracy
on the node's held-out calibration data meets the threshold **and** is not below the serving model's
accuracy on the same samples.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Awaitable, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pat_runtime import defaults as D
from pat_runtime.devices.base import Device
from pat_runtime.devices.errors import DeviceError
from pat_runtime.pat import PNN, BinReadout, PATStep, PhysicalLayer, RangeMap

GROUPS = ("input", "ranges", "readout", "theta", "theta_affine")
#: suffixes of the θ gain/offset names (``stages.i.theta_gain``): see :class:`ThetaAffine`
THETA_AFFINE = ("theta_gain", "theta_offset")
#: what a deployment calibrates unless told otherwise
DEFAULT_GROUPS = ("ranges", "readout")


# ---------------------------------------------------------------------------------------------------
# Which parameters
# ---------------------------------------------------------------------------------------------------
def parse_groups(groups: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"ranges,readout"`` or a sequence -> validated group names (``None``/``""``: the default)."""
    if groups is None or groups == "":
        return DEFAULT_GROUPS
    items = [g.strip() for g in (groups.split(",") if isinstance(groups, str) else groups) if g.strip()]
    bad = [g for g in items if g not in GROUPS]
    if bad:
        raise ValueError(f"unknown calibration group(s) {bad}; choose from {', '.join(GROUPS)}")
    if "theta" in items and "theta_affine" in items:
        raise ValueError("calibration groups 'theta' and 'theta_affine' exclude each other (θ itself is free already)")
    return tuple(dict.fromkeys(items))


def calibration_param_names(model: PNN, groups: str | Sequence[str] | None = None) -> list[str]:
    """Names (as in ``model.named_parameters()``) of the parameters the ``groups`` make per-unit."""
    groups = parse_groups(groups)
    names: list[str] = []
    ranges = [i for i, s in enumerate(model.stages) if isinstance(s, RangeMap)]
    linears = [i for i, s in enumerate(model.stages) if isinstance(s, nn.Linear)]
    for i, s in enumerate(model.stages):
        p = f"stages.{i}."
        if isinstance(s, RangeMap) and ("ranges" in groups or ("input" in groups and ranges and i == ranges[0])):
            names += [p + "a", p + "b"]
        elif isinstance(s, BinReadout) and "readout" in groups:
            names += [p + "scale", p + "offset"]
        elif isinstance(s, nn.Linear) and "readout" in groups and linears and i == linears[-1] \
                and i == len(model.stages) - 1:
            names += [p + "weight", p + "bias"]
        elif isinstance(s, PhysicalLayer) and "theta" in groups:
            names.append(p + "theta")
        elif isinstance(s, PhysicalLayer) and "theta_affine" in groups:
            names += [p + n for n in THETA_AFFINE]
    if not names:
        raise ValueError(f"calibration groups {list(groups)} select no parameter of this model")
    return names


def is_theta_affine(name: str) -> bool:
    """Is ``name`` (``stages.i.theta_gain`` / ``stages.i.theta_offset``) one of the θ gain/offset names?"""
    return name.rsplit(".", 1)[-1] in THETA_AFFINE


def theta_affine_values(theta: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor,
                        theta_range: tuple[float, float]) -> torch.Tensor:
    """``clamp(g_c·θ_c + o_c)``: the θ a channel's gain ``[C, 1]`` and offset ``[C, 1]`` make of ``θ [C, P]``."""
    return (gain * theta + offset).clamp(*theta_range)


class ThetaAffine:
    """The ``theta_affine`` group of a model: per physical layer named in ``names``, a gain ``[C, 1]`` (ones) and
    an offset ``[C, 1]`` (zeros) of every channel's θ, relative to θ as it is now (``θ₀``, kept).

    Not model parameters: :meth:`apply_` writes ``clamp(g ⊙ θ₀ + o)`` into the layer's θ (so a forward pass, a
    snapshot or an artifact of the model holds the calibrated θ), and :meth:`pull_grad` turns the gradient PAT
    left on θ into the gradients of ``g`` and ``o`` (chain rule; zero where the clamp is active)."""

    def __init__(self, model: PNN, names: Sequence[str]):
        prefixes = list(dict.fromkeys(n.rsplit(".", 1)[0] for n in names if is_theta_affine(n)))
        self.layers: dict[str, PhysicalLayer] = {}
        for pre in prefixes:
            layer = model.get_submodule(pre)
            if not isinstance(layer, PhysicalLayer):
                raise ValueError(f"{pre} is not a physical layer: no θ gain/offset")
            self.layers[pre] = layer
        self.base = {pre: layer.theta.detach().clone() for pre, layer in self.layers.items()}
        self.gain = {pre: nn.Parameter(torch.ones(layer.channels, 1)) for pre, layer in self.layers.items()}
        self.offset = {pre: nn.Parameter(torch.zeros(layer.channels, 1)) for pre, layer in self.layers.items()}

    def __bool__(self) -> bool:
        return bool(self.layers)

    def parameters(self) -> list[nn.Parameter]:
        return [p for pre in self.layers for p in (self.gain[pre], self.offset[pre])]

    def named(self) -> dict[str, torch.Tensor]:
        """``{"stages.i.theta_gain": [C, 1], "stages.i.theta_offset": [C, 1], ...}`` (current values)."""
        out = {}
        for pre in self.layers:
            out[f"{pre}.theta_gain"], out[f"{pre}.theta_offset"] = self.gain[pre].detach(), self.offset[pre].detach()
        return out

    @torch.no_grad()
    def apply_(self) -> None:
        for pre, layer in self.layers.items():
            layer.theta.copy_(theta_affine_values(self.base[pre], self.gain[pre], self.offset[pre],
                                                  layer.spec.theta_range))

    @torch.no_grad()
    def pull_grad(self) -> None:
        for pre, layer in self.layers.items():
            g = layer.theta.grad
            layer.theta.grad = None
            if g is None:
                continue
            lo, hi = layer.spec.theta_range
            raw = self.gain[pre] * self.base[pre] + self.offset[pre]
            g = g * ((raw >= lo) & (raw <= hi))
            self.gain[pre].grad = (g * self.base[pre]).sum(1, keepdim=True)
            self.offset[pre].grad = g.sum(1, keepdim=True)


# ---------------------------------------------------------------------------------------------------
# Budget
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """Upper bounds of one calibration on one unit (device calls, wall seconds, labelled samples)."""

    calls: int = 2000
    seconds: float = 120.0
    samples: int = 256

    def __post_init__(self):
        if self.calls < 1 or self.seconds <= 0 or self.samples < 2:
            raise ValueError(f"budget needs calls >= 1, seconds > 0, samples >= 2; got {self}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Budget":
        d = dict(d or {})
        return cls(**{k: type(getattr(cls, k))(d[k]) for k in ("calls", "seconds", "samples") if k in d})


class BudgetExceeded(DeviceError):
    """A calibration would exceed its budget; nothing beyond the budget reached the device."""

    def __init__(self, name: str, message: str):
        super().__init__(name, message)


class BudgetedDevice(Device):
    """Wraps a connected device; refuses (:class:`BudgetExceeded`) any call past ``budget.calls`` or
    after ``budget.seconds`` since :meth:`start`. ``used`` counts the calls that went through."""

    def __init__(self, inner: Device, budget: Budget):
        super().__init__(f"{inner.name}[calibration]")
        self.inner, self.budget = inner, budget
        self._spec = inner.spec
        self.connected = True
        self.t0 = time.perf_counter()
        self._inflight = 0

    def start(self) -> "BudgetedDevice":
        self.t0 = time.perf_counter()
        return self

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    @property
    def used(self) -> int:
        return self.calls

    @property
    def calls_left(self) -> int:
        return self.budget.calls - self.calls

    async def _connect(self, timeout: float) -> None:
        self._spec = self.inner.spec

    async def _apply(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        # Device.apply counts a call only after it returns; count in-flight calls too (concurrent channels)
        if self.calls + self._inflight >= self.budget.calls:
            raise BudgetExceeded(self.name, f"device-call budget of {self.budget.calls} spent")
        if self.elapsed > self.budget.seconds:
            raise BudgetExceeded(self.name, f"time budget of {self.budget.seconds:g} s spent")
        self._inflight += 1
        try:
            return await self.inner.apply(x, theta)
        finally:
            self._inflight -= 1


def calls_per_pass(model: PNN, batch: int) -> int:
    """Device calls of one physical forward pass of ``batch`` samples (channels x chunks per layer)."""
    return sum(layer.channels * math.ceil(batch / layer.spec.max_batch) for layer in model.physical_layers)


# ---------------------------------------------------------------------------------------------------
# The plan shipped in the artifact
# ---------------------------------------------------------------------------------------------------
@dataclass
class CalibrationPlan:
    """What a node may calibrate and how (``artifact.metadata["calibration"]``).

    ``twin``: the twin the node uses for PAT's backward pass. ``"nominal"`` is the datasheet physics of the
    device kind, rebuilt at the node from the spec and ``sim_options`` (nothing fitted is shipped).
    ``reference``: per stage index, ``{"z_mean": [...], "z_std": [...]}`` of that stage's affine output
    measured on the training units (each with its own per-unit parameters), for :func:`renormalize`.
    """

    groups: tuple[str, ...] = DEFAULT_GROUPS
    params: list[str] = field(default_factory=list)
    twin: str = "nominal"
    sim_options: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    lr: float = D.LR_CALIBRATION
    batch: int = 32
    trained_on: list[str] = field(default_factory=list)
    #: how the ``theta_affine`` gains/offsets get their gradient: ``"pat"`` (the twin's, like every other
    #: parameter) or ``"spsa"`` (simultaneous perturbation on the measured loss: two more forward passes per
    #: step, model-free; for units whose twin is poor at telling how θ acts)
    affine_search: str = "pat"
    #: SPSA perturbation of a gain/offset (``± spsa_c``)
    spsa_c: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["groups"] = list(self.groups)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "CalibrationPlan":
        d = dict(d or {})
        known = {k: d[k] for k in ("params", "twin", "sim_options", "reference", "lr", "batch", "trained_on",
                                   "affine_search", "spsa_c") if k in d}
        if known.get("affine_search", "pat") not in ("pat", "spsa"):
            raise ValueError(f"affine_search must be 'pat' or 'spsa', not {known['affine_search']!r}")
        return cls(groups=parse_groups(d.get("groups")), **known)

    @classmethod
    def for_model(cls, model: PNN, groups: str | Sequence[str] | None = None, **kw: Any) -> "CalibrationPlan":
        g = parse_groups(groups)
        return cls(groups=g, params=calibration_param_names(model, g), **kw)


def plan_of(metadata: dict[str, Any] | None) -> CalibrationPlan | None:
    """The calibration plan an artifact's metadata carries (None: the artifact was not made calibratable)."""
    cal = (metadata or {}).get("calibration")
    return CalibrationPlan.from_dict(cal) if isinstance(cal, dict) else None


# ---------------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------------
def _stage_input(stage: nn.Module, u: torch.Tensor) -> torch.Tensor:
    """What a rescaling stage normalises: the routed input of a RangeMap, the bin means of a readout."""
    if isinstance(stage, RangeMap):
        return stage._gather(u)
    if isinstance(stage, BinReadout):
        return u @ stage.bins.T
    raise TypeError(type(stage).__name__)


async def physical_stage_inputs(model: PNN, x: torch.Tensor) -> dict[int, torch.Tensor]:
    """Physical forward of ``x``; the input seen by every RangeMap / BinReadout stage, keyed by index."""
    seen: dict[int, torch.Tensor] = {}
    x = x.detach()
    for i, s in enumerate(model.stages):        # (no no_grad() across awaits: see accuracy_on)
        if isinstance(s, (RangeMap, BinReadout)):
            seen[i] = _stage_input(s, x).detach()
        x = (await s.aforward(x) if isinstance(s, PhysicalLayer) else s(x)).detach()
    return seen


def _stage_output(stage: nn.Module, g: torch.Tensor) -> torch.Tensor:
    """The stage's affine output before any squashing: ``a ⊙ g + b`` (RangeMap) or the logits (readout)."""
    if isinstance(stage, RangeMap):
        return stage.a * g + stage.b
    return stage.scale * g + stage.offset


async def reference_stats(model: PNN, devices: Sequence[Device], x: torch.Tensor,
                          unit_states: Sequence[dict[str, torch.Tensor]] | None = None
                          ) -> dict[str, dict[str, list[float]]]:
    """Reference statistics for :func:`renormalize`, measured on ``devices`` (the training units).

    Per rescaling stage: the per-feature mean and std of its affine output (``a ⊙ u + b`` before the sigmoid
    of a RangeMap, the logits of the readout), averaged over the units. With ``unit_states`` (one dict of
    per-unit parameter values per device, :meth:`pat_runtime.fleet.robust.MultiUnitTrainer.unit_state`) each unit
    is measured with its own per-unit parameters, i.e. in the state the shared parameters were trained for.
    """
    acc: dict[int, list[torch.Tensor]] = {}
    named = dict(model.named_parameters())
    saved = {n: p.detach().clone() for n, p in named.items()}
    try:
        for k, dev in enumerate(devices):
            if unit_states is not None:
                with torch.no_grad():
                    for n, v in unit_states[k].items():
                        named[n].copy_(v)
            model.attach(device=dev)
            for i, u in (await physical_stage_inputs(model, x)).items():
                z = _stage_output(model.stages[i], u).detach()
                acc.setdefault(i, []).append(torch.stack([z.mean(0), z.std(0)]))
    finally:
        with torch.no_grad():
            for n, v in saved.items():
                named[n].copy_(v)
    out = {}
    for i, v in acc.items():
        m = torch.stack(v).mean(0)
        out[str(i)] = {"z_mean": m[0].tolist(), "z_std": m[1].tolist()}
    return out


async def accuracy_on(model: PNN, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of the physical network on ``(x, y)`` (one forward pass, no gradients)."""
    return (await measure_on(model, x, y))[0]


async def measure_on(model: PNN, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` of the physical network on ``(x, y)`` (one forward pass)."""
    model.eval()
    # no ``torch.no_grad()`` around an await: grad mode is per thread, not per task, so holding it across an
    # await would switch gradients off for other coroutines (e.g. a calibration running on the same loop)
    logits = (await model.aforward(x)).detach()
    return float((logits.argmax(1) == y).float().mean()), float(F.cross_entropy(logits, y))


# ---------------------------------------------------------------------------------------------------
# Procedures
# ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def _renorm_stage(stage: nn.Module, u: torch.Tensor, ref: dict[str, list[float]], groups: tuple[str, ...]) -> None:
    """Per feature, choose the stage's gain and offset so that its affine output on this unit has the reference
    mean and std (``a' = sign(a)·s_ref/s_unit``, ``b' = m_ref − a'·m_unit``); features that do not vary on
    this unit (zero padding) keep their values."""
    m, s = u.mean(0), u.std(0)
    if "z_mean" in ref:
        m_t, s_t = torch.tensor(ref["z_mean"]), torch.tensor(ref["z_std"])
    else:   # input-side statistics (older plans): target = what the current gains make of the reference input
        gain = stage.a if isinstance(stage, RangeMap) else stage.scale
        off = stage.b if isinstance(stage, RangeMap) else stage.offset
        m_t = gain * torch.tensor(ref["mean"]) + off
        s_t = gain.abs() * torch.tensor(ref["std"])
    ok = (s > 1e-6) & (s_t > 1e-9)
    gain = stage.a if isinstance(stage, RangeMap) else stage.scale
    off = stage.b if isinstance(stage, RangeMap) else stage.offset
    sign = torch.where(gain < 0, -1.0, 1.0)
    new_gain = torch.where(ok, sign * s_t / s.clamp(min=1e-6), gain)
    new_off = torch.where(ok, m_t - new_gain * m, off)
    gain.copy_(new_gain)
    off.copy_(new_off)


async def renormalize(model: PNN, x: torch.Tensor, plan: CalibrationPlan) -> int:
    """Label-free: re-scale the calibratable RangeMaps / readout so their inputs' statistics on this unit match
    the plan's reference statistics. Stages are fixed in order (each pass sees the already fixed earlier
    stages), one physical pass per calibrated physical depth. Returns the number of stages re-scaled."""
    names = set(plan.params)
    targets = [i for i, s in enumerate(model.stages) if isinstance(s, (RangeMap, BinReadout))
               and str(i) in plan.reference
               and any(n.startswith(f"stages.{i}.") for n in names)]
    done = 0
    for i in targets:
        stage = model.stages[i]
        if i == 0 or not any(isinstance(s, PhysicalLayer) for s in model.stages[:i]):
            # nothing physical before it: its input does not depend on the unit; leave it as trained
            continue
        u = (await physical_stage_inputs_upto(model, x, i))
        _renorm_stage(stage, u, plan.reference[str(i)], plan.groups)
        done += 1
    return done


async def physical_stage_inputs_upto(model: PNN, x: torch.Tensor, index: int) -> torch.Tensor:
    """The input of stage ``index`` after a physical forward through the stages before it."""
    x = x.detach()
    for s in list(model.stages)[:index]:
        x = (await s.aforward(x) if isinstance(s, PhysicalLayer) else s(x)).detach()
    return _stage_input(model.stages[index], x).detach()


@dataclass
class FitReport:
    steps: int = 0
    epochs: int = 0
    calls: int = 0
    seconds: float = 0.0
    stopped: str = "done"          # done | calls | seconds
    loss_first: float | None = None
    loss_last: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def calibrate_pat(model: PNN, dev: BudgetedDevice, x: torch.Tensor, y: torch.Tensor, plan: CalibrationPlan,
                        epochs: int = 20, reserve_calls: int = 0, seed: int = 0, every: int = 0,
                        on_check: Callable[[int], Awaitable[None]] | None = None,
                        check_calls: int = 0) -> FitReport:
    """PAT on the plan's parameters only (others frozen) with ``model`` attached to ``dev``.

    Stops before a step would need more calls than ``dev`` has left minus ``reserve_calls`` (kept for the
    verification passes), or once the time budget is spent. θ is clamped back into its range after each step.
    With ``every`` and ``on_check``, ``await on_check(step)`` runs every ``every`` steps (e.g. measure on
    held-out samples and keep the best state; ``check_calls`` is what one check costs, kept in reserve).
    """
    model.attach(device=dev)
    named = dict(model.named_parameters())
    real = [n for n in plan.params if not is_theta_affine(n)]
    missing = [n for n in real if n not in named]
    if missing:
        raise ValueError(f"calibration plan names parameters this model lacks: {missing}")
    affine = ThetaAffine(model, plan.params)     # θ gain/offset (empty unless the plan has theta_affine)
    train = [named[n] for n in real] + affine.parameters()
    grad_on = set(real) | {f"{pre}.theta" for pre in affine.layers}
    frozen = {n: p.requires_grad for n, p in named.items()}
    for n, p in named.items():
        p.requires_grad_(n in grad_on)
    opt = torch.optim.Adam(train, lr=plan.lr)
    step = PATStep(model, opt)      # gradients for every parameter with requires_grad; ``opt`` updates ``train``
    spsa = bool(affine) and plan.affine_search == "spsa"
    gen = torch.Generator().manual_seed(int(seed))
    rep = FitReport()
    t0, c0 = time.perf_counter(), dev.calls
    per_step = calls_per_pass(model, min(plan.batch, len(x))) * (3 if spsa else 1)
    rng = np.random.default_rng(seed)
    try:
        model.train()
        for epoch in range(epochs):
            order = torch.from_numpy(rng.permutation(len(x)))
            for k in range(0, len(x), plan.batch):
                if dev.calls_left - reserve_calls < per_step:
                    rep.stopped = "calls"
                    return rep
                if dev.elapsed >= dev.budget.seconds * 0.8:   # leave time for verification
                    rep.stopped = "seconds"
                    return rep
                idx = order[k:k + plan.batch]
                torch.set_grad_enabled(True)     # never inherit another coroutine's no_grad
                loss, grads = step.gradients(await step.logits(x[idx]), y[idx])
                step.set_grads(grads)
                affine.pull_grad()          # θ's gradient -> its gain/offset (the ``theta_affine`` group)
                if spsa:
                    await _spsa_affine_grad(model, affine, x[idx], y[idx], plan.spsa_c, gen)
                step.update()
                affine.apply_()
                rep.steps += 1
                rep.loss_last = float(loss.detach())
                if rep.loss_first is None:
                    rep.loss_first = rep.loss_last
                if every and on_check is not None and rep.steps % every == 0 \
                        and dev.calls_left - reserve_calls >= check_calls + per_step:
                    await on_check(rep.steps)
                    model.train()
            rep.epochs = epoch + 1
        return rep
    finally:
        for n, p in named.items():
            p.requires_grad_(frozen[n])
        model.eval()
        rep.calls = dev.calls - c0
        rep.seconds = time.perf_counter() - t0


async def _spsa_affine_grad(model: PNN, affine: ThetaAffine, x: torch.Tensor, y: torch.Tensor, c: float,
                            gen: torch.Generator) -> None:
    """Replace the θ gains'/offsets' gradients by a simultaneous-perturbation estimate on the measured loss:
    ``[L(u + cΔ) − L(u − cΔ)] / 2c · Δ`` (Rademacher ``Δ``; two physical forward passes of ``x``)."""
    params = affine.parameters()
    deltas = [torch.randint(0, 2, p.shape, generator=gen).float() * 2 - 1 for p in params]
    losses = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for p, d in zip(params, deltas):
                p.add_(sign * c * d)
        affine.apply_()
        out = (await model.aforward(x)).detach()   # (no no_grad() across an await: see measure_on)
        losses.append(float(F.cross_entropy(out, y)))
        with torch.no_grad():
            for p, d in zip(params, deltas):
                p.sub_(sign * c * d)
    affine.apply_()
    for layer in affine.layers.values():
        layer.theta.grad = None
    for p, d in zip(params, deltas):
        p.grad = (losses[0] - losses[1]) / (2 * c) * d


# ---------------------------------------------------------------------------------------------------
# The switch rule
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    switch: bool
    reason: str


def decide(candidate: float, threshold: float, serving: float | None) -> Decision:
    """Switch only if ``candidate >= threshold`` and ``candidate >= serving`` (same held-out samples)."""
    if candidate < threshold:
        return Decision(False, f"candidate {candidate:.1%} is below the threshold {threshold:.1%}")
    if serving is not None and candidate < serving:
        return Decision(False, f"candidate {candidate:.1%} is worse than the serving model's {serving:.1%}")
    return Decision(True, f"candidate {candidate:.1%} >= threshold {threshold:.1%}"
                          + ("" if serving is None else f" and >= serving {serving:.1%}"))


def split_calibration(n: int, verify: int | float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, verify) of a calibration set of ``n`` samples; ``verify`` is a count or a fraction."""
    k = int(round(n * verify)) if isinstance(verify, float) else int(verify)
    if not 1 <= k < n:
        raise ValueError(f"need at least one fit and one verification sample (n={n}, verify={verify})")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


__all__ = ["Budget", "BudgetExceeded", "BudgetedDevice", "CalibrationPlan", "DEFAULT_GROUPS", "Decision",
           "THETA_AFFINE", "ThetaAffine", "is_theta_affine", "theta_affine_values",
           "FitReport", "GROUPS", "accuracy_on", "measure_on", "calibrate_pat", "calibration_param_names", "calls_per_pass",
           "decide", "parse_groups", "physical_stage_inputs", "plan_of", "reference_stats", "renormalize",
           "split_calibration"]
