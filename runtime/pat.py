"""Physics-aware training (PAT): physical layers and physical neural networks (PNNs).

Wright et al., *Nature* 601, 549 (2022). A physical system computes ``y = f_p(x, θ)``; a differentiable
digital twin ``f_m(x, θ)`` approximates it. PAT trains θ with the *measured* forward pass and the
twin's gradients::

    forward:   y = f_p(x, θ)                                  (the device, measured)
    backward:  ∂L/∂x = (∂f_m/∂x)ᵀ(x, θ) · ∂L/∂y
               ∂L/∂θ = (∂f_m/∂θ)ᵀ(x, θ) · ∂L/∂y              (twin VJP at the applied x, θ)

so the loss is that of the real hardware while the gradient direction comes from the model.
:class:`PATFunction` is exactly this autograd rule. Because :meth:`pat_runtime.devices.base.Device.apply` is a
coroutine, the measurement happens first (``await``) and its result enters the graph through
:func:`pat_apply`.

Building blocks

* :class:`RangeMap` — trainable elementwise affine then a sigmoid squash into the device's safe range,
  ``x = lo + (hi - lo) · σ(a ⊙ u + b)``; the device never sees out-of-range inputs.
* :class:`PhysicalLayer` — ``C`` channels, each with its own θ_c ∈ ``theta_range``, measured in ONE device
  call per chunk (:meth:`~pat_runtime.devices.base.Device.apply_many`, one request for a remote device) when the device
  takes several θ at once, else one call per channel
  (``θ`` is clamped back after each optimizer step by :meth:`PNN.project_`); batches larger than
  ``spec.max_batch`` are split. ``aforward`` = physical (PAT), ``forward`` = twin only (in silico).
* :class:`BinReadout` — fixed bin-averaging of the physical outputs into classes plus a per-class
  trainable scale and offset (the paper's "sum output bins" readout).
* :class:`PNN` — a sequence of digital modules and physical layers; the same device may appear as several
  layers (deep PNN), with trainable rescaling between them, and digital layers make hybrid nets.
  :meth:`PNN.to_artifact_dict` / :meth:`PNN.from_artifact_dict` serialize θ, digital weights, the device
  spec and the architecture; :meth:`PNN.add_observer` sees every ``(x, θ, y_physical)`` PAT measures.
* The one physical forward, :meth:`PNN.aforward`: each physical layer is measured on its own device and
  differentiated through its own twin, or on whatever a :data:`Resolver` names for it (a fleet measures
  layer ``k`` on some node's device with that node's twin: :func:`per_layer`).
* :class:`PATStep` — the one training step (forward -> loss -> backward through the twins' VJP ->
  optimizer -> θ projection) that every trainer, the fleet trainers, multi-unit training, per-unit
  calibration and the stream trainer run.
"""
from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pat_runtime.devices.base import Device
from pat_runtime.devices.spec import DeviceSpec

#: ``observer(layer_name, x[b, in], theta[P], y[b, out])`` with float32 numpy arrays
Observer = Callable[[str, np.ndarray, np.ndarray, np.ndarray], None]
TwinFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``resolver(k, layer) -> (device, twin)``: the device that measures physical layer ``k`` (0-based, in
#: order) and the twin whose VJP is its backward; ``None`` in either place keeps the layer's own
Resolver = Callable[[int, "PhysicalLayer"], "tuple[Device | None, nn.Module | TwinFn | None]"]

ARTIFACT_FORMAT = "pat-pnn/1"


# ---------------------------------------------------------------------------------------------------
# The PAT rule
# ---------------------------------------------------------------------------------------------------
class PATFunction(torch.autograd.Function):
    """``forward(x, θ, y_phys, f_m) = y_phys``; ``backward`` = VJP of the twin ``f_m`` at ``(x, θ)``.

    One channel: ``x[B, in]``, ``θ[P]``, ``y_phys[B, out]``. A whole layer of ``C`` channels:
    ``x[B, C, in]``, ``θ[C, P]``, ``y_phys[B, C, out]``, each channel's VJP taken with its own ``θ_c``
    (one autograd node for the layer instead of one per channel plus the selects and the concatenation).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, theta: torch.Tensor, y_phys: torch.Tensor, twin: TwinFn):
        ctx.save_for_backward(x, theta)
        ctx.twin = twin
        return y_phys.clone()

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x, theta = ctx.saved_tensors
        need_x, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_x or need_t):
            return None, None, None, None
        if x.dim() == 2:
            gx, gt = _twin_vjp(ctx.twin, x, theta, grad_y, need_x, need_t)
            return gx, gt, None, None
        per = [_twin_vjp(ctx.twin, x[:, c], theta[c], grad_y[:, c], need_x, need_t) for c in range(x.shape[1])]
        gx = torch.stack([torch.zeros_like(x[:, c]) if g is None else g for c, (g, _) in enumerate(per)],
                         dim=1) if need_x else None
        gt = torch.stack([torch.zeros_like(theta[c]) if g is None else g for c, (_, g) in enumerate(per)],
                         dim=0) if need_t else None
        return gx, gt, None, None


def _twin_vjp(twin: TwinFn, x: torch.Tensor, theta: torch.Tensor, grad_y: torch.Tensor, need_x: bool,
              need_t: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(grad_y · ∂f_m/∂x, grad_y · ∂f_m/∂θ)`` at ``(x, θ)`` (``None`` where not needed)."""
    with torch.enable_grad():
        xm = x.detach().requires_grad_(need_x)
        tm = theta.detach().requires_grad_(need_t)
        inputs = [t for t in (xm, tm) if t.requires_grad]
        grads = iter(torch.autograd.grad(twin(xm, tm), inputs, grad_y, allow_unused=True))
    gx = next(grads) if need_x else None
    gt = next(grads) if need_t else None
    return gx, gt


def pat_apply(x: torch.Tensor, theta: torch.Tensor, y_phys: torch.Tensor | np.ndarray, twin: TwinFn) -> torch.Tensor:
    """Insert a measured ``y_phys = f_p(x, θ)`` into the autograd graph with the twin's backward (one channel
    ``x[B, in]``, or a layer of channels ``x[B, C, in]``, ``θ[C, P]``, ``y_phys[B, C, out]``: see :class:`PATFunction`)."""
    y = torch.as_tensor(y_phys, dtype=x.dtype)
    return PATFunction.apply(x, theta, y, twin)


async def measure(device: Device, x: torch.Tensor, theta: torch.Tensor, max_batch: int | None = None,
                  observers: Sequence[Observer] = (), name: str = "", concurrent: bool = True) -> torch.Tensor:
    """``f_p(x, θ)`` on the device, splitting ``x`` into chunks of at most ``max_batch`` rows.

    With ``concurrent`` the chunks are sent together (a remote device pipelines them), otherwise one after
    another; outputs keep the input order either way.
    """
    spec = device.spec
    mb = int(max_batch or spec.max_batch)
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"{name or device.name}: expected a non-empty batch [B, {spec.in_dim}], got {list(x.shape)}")
    xs = x.detach().to(torch.float32).cpu().numpy()
    th = theta.detach().to(torch.float32).cpu().numpy()
    chunks = [xs[i:i + mb] for i in range(0, xs.shape[0], mb)]
    if concurrent:
        ys = await asyncio.gather(*(device.apply(c, th) for c in chunks))
    else:
        ys = [await device.apply(c, th) for c in chunks]
    for c, y in zip(chunks, ys):
        for obs in observers:
            obs(name, c, th, y)
    return torch.from_numpy(np.concatenate(ys, axis=0)).to(x.dtype)


def batches_channels(device: Device) -> bool:
    """Does ``device`` take all channels of a layer in one call (it overrides ``_apply_many``)?"""
    return type(device)._apply_many is not Device._apply_many


async def measure_many(device: Device, xs: torch.Tensor, theta: torch.Tensor, max_batch: int | None = None,
                       observers: Sequence[Observer] = (), name: str = "",
                       concurrent: bool = True) -> list[torch.Tensor]:
    """``f_p(x_c, θ_c)`` for every channel ``c`` with ONE device call per chunk of rows.

    ``xs[B, C, in_dim]``, ``theta[C, P]`` -> ``C`` tensors ``[B, out_dim]``. Rows are split into chunks of at
    most ``max_batch``; each chunk is one :meth:`~pat_runtime.devices.base.Device.apply_many` (one request for a remote
    device). Observers see each channel as ``name[c]``, as with :func:`measure`.
    """
    spec = device.spec
    mb = int(max_batch or spec.max_batch)
    if xs.dim() != 3 or xs.shape[0] == 0:
        raise ValueError(f"{name or device.name}: expected a non-empty batch [B, C, {spec.in_dim}], "
                         f"got {list(xs.shape)}")
    xa = np.ascontiguousarray(xs.detach().to(torch.float32).cpu().numpy().transpose(1, 0, 2))   # [C, B, in]
    th = np.ascontiguousarray(theta.detach().to(torch.float32).cpu().numpy())
    chunks = [xa[:, i:i + mb] for i in range(0, xa.shape[1], mb)]
    if concurrent and len(chunks) > 1:
        ys = await asyncio.gather(*(device.apply_many(c, th) for c in chunks))
    else:
        ys = [await device.apply_many(c, th) for c in chunks]
    y = np.concatenate(ys, axis=1) if len(ys) > 1 else ys[0]                                 # [C, B, out]
    if observers:
        for c in range(xa.shape[0]):
            for xc, yc in zip(chunks, ys):
                for obs in observers:
                    obs(f"{name}[{c}]", xc[c], th[c], yc[c])
    return [torch.from_numpy(y[c]).to(xs.dtype) for c in range(y.shape[0])]


# ---------------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------------
class RangeMap(nn.Module):
    """``x = lo + (hi - lo) · σ(a ⊙ u[index] + b)``: trainable elementwise rescaling into ``[lo, hi]``.

    ``index`` (fixed, length ``n_out``) routes input features to outputs; the value ``n_in`` selects a
    constant zero (padding). ``None`` means the identity (``n_in == n_out``). The output always lies inside
    the range (and is clamped once more for float rounding), so the device never sees invalid inputs.
    """

    def __init__(self, n_in: int, n_out: int, lo: float, hi: float, scale: float = 1.0,
                 shift: float = 0.0, index: torch.Tensor | None = None):
        super().__init__()
        self.n_in, self.n_out, self.lo, self.hi = int(n_in), int(n_out), float(lo), float(hi)
        if index is None:
            if n_in != n_out:
                raise ValueError(f"RangeMap {n_in}->{n_out} needs an index")
        else:
            index = torch.as_tensor(index, dtype=torch.long)
            if index.shape != (n_out,) or int(index.min()) < 0 or int(index.max()) > n_in:
                raise ValueError(f"RangeMap index must have shape [{n_out}] with values in [0, {n_in}]")
        self.register_buffer("index", index, persistent=False)
        #: does the routing insert zero padding?
        self.pad = index is not None and bool((index == n_in).any())
        self.a = nn.Parameter(torch.full((n_out,), float(scale)))
        self.b = nn.Parameter(torch.full((n_out,), float(shift)))

    def _gather(self, u: torch.Tensor) -> torch.Tensor:
        if self.index is None:
            return u
        return torch.cat([u, u.new_zeros(u.shape[0], 1)], dim=1)[:, self.index]

    def drive(self, u: torch.Tensor) -> torch.Tensor:
        """The pre-sigmoid drive ``a ⊙ u[index] + b`` (what :meth:`calibrate` centres and spreads)."""
        return self.a * self._gather(u) + self.b

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        z = self.drive(u)
        return (self.lo + (self.hi - self.lo) * torch.sigmoid(z)).clamp(self.lo, self.hi)

    @torch.no_grad()
    def calibrate(self, u: torch.Tensor, spread: float = 2.0) -> None:
        """Set ``a, b`` so that ``a ⊙ u + b`` has mean 0 and std ``spread`` (global std, per-feature mean)."""
        g = self._gather(u)
        std = float(g.std())
        a = spread / std if std > 1e-6 else 1.0
        self.a.fill_(a)
        self.b.copy_(-a * g.mean(0))


class BinReadout(nn.Module):
    """``logits_k = s_k · mean_{j ∈ bin k} y_j + c_k``: contiguous output bins -> classes (fixed sum)."""

    def __init__(self, n_in: int, n_classes: int):
        super().__init__()
        if n_in < n_classes:
            raise ValueError(f"BinReadout needs at least one output per class: {n_in} outputs < {n_classes} classes")
        cls = (torch.arange(n_in) * n_classes) // n_in
        m = torch.zeros(n_classes, n_in)
        m[cls, torch.arange(n_in)] = 1.0
        self.register_buffer("bins", m / m.sum(1, keepdim=True), persistent=False)
        self.scale = nn.Parameter(torch.ones(n_classes))
        self.offset = nn.Parameter(torch.zeros(n_classes))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.scale * (y @ self.bins.T) + self.offset

    @torch.no_grad()
    def calibrate(self, y: torch.Tensor, spread: float = 3.0) -> None:
        z = y @ self.bins.T
        std = float(z.std())
        self.scale.fill_(spread / std if std > 1e-6 else 1.0)
        self.offset.copy_(-self.scale * z.mean(0))


class PhysicalLayer(nn.Module):
    """A device used as a layer: ``C`` channels, channel ``c`` computes ``f_p(x_c, θ_c)``.

    Input ``[B, C·in_dim]`` (already inside ``x_range``), output ``[B, C·out_dim]``. ``θ`` is an
    ``nn.Parameter[C, P]`` initialised uniformly in the central ``init_frac`` of ``theta_range``.
    The twin is held by reference (it is not a sub-module: its weights are not trained by PAT).
    """

    def __init__(self, spec: DeviceSpec, twin: nn.Module | TwinFn, device: Device | None = None,
                 channels: int = 1, init_frac: float = 0.5, name: str = "phys",
                 generator: torch.Generator | None = None):
        super().__init__()
        self.spec, self.channels, self.name = spec, int(channels), name
        self.__dict__["device"] = device          # plain attributes, not registered sub-modules
        self.__dict__["twin"] = twin
        self.observers: list[Observer] = []
        #: send the channels' (and chunks') device calls concurrently (pipelining for remote devices);
        #: ``False`` measures them one after another, which makes noisy simulators reproducible
        self.concurrent = True
        lo, hi = spec.theta_range
        mid, half = (lo + hi) / 2, (hi - lo) / 2 * init_frac
        u = torch.rand(self.channels, spec.param_dim, generator=generator)
        self.theta = nn.Parameter(mid + half * (2 * u - 1))

    @property
    def n_in(self) -> int:
        return self.channels * self.spec.in_dim

    @property
    def n_out(self) -> int:
        return self.channels * self.spec.out_dim

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.n_in:
            raise ValueError(f"{self.name}: expected input [B, {self.n_in}], got {list(x.shape)}")
        return x.clamp(*self.spec.x_range).reshape(x.shape[0], self.channels, self.spec.in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """In-silico forward: the twin ``f_m`` for every channel."""
        xs = self._split(x)
        return torch.cat([self.twin(xs[:, c], self.theta[c]) for c in range(self.channels)], dim=1)

    async def aforward(self, x: torch.Tensor, device: Device | None = None,
                       twin: nn.Module | TwinFn | None = None, theta: torch.Tensor | None = None) -> torch.Tensor:
        """Physical forward through PAT: measured outputs, twin gradients.

        ``device`` / ``twin`` measure and differentiate this call elsewhere than the layer's own (one shared
        model served by many fleet nodes at once cannot re-attach its layers); ``theta`` replaces the
        layer's θ for this call (a unit's own copy in multi-unit training)."""
        device = self.device if device is None else device
        twin = self.twin if twin is None else twin
        if device is None:
            raise RuntimeError(f"{self.name}: no device attached (in-silico only model); use forward()")
        xs = self._split(x)
        theta = (self.theta if theta is None else theta).clamp(*self.spec.theta_range)
        if batches_channels(device):  # one call (one request) for all channels
            ys = await measure_many(device, xs, theta, observers=self.observers, name=self.name,
                                    concurrent=self.concurrent)
            y = pat_apply(xs, theta, torch.stack(ys, dim=1), twin)          # [B, C, out]: one node per layer
            return y.reshape(y.shape[0], self.n_out)
        calls = [measure(device, xs[:, c], theta[c], observers=self.observers, name=f"{self.name}[{c}]",
                         concurrent=self.concurrent) for c in range(self.channels)]
        if self.concurrent:
            ys = await asyncio.gather(*calls)
        else:
            ys = [await c for c in calls]
        y = pat_apply(xs, theta, torch.stack(ys, dim=1), twin)
        return y.reshape(y.shape[0], self.n_out)

    @torch.no_grad()
    def project_(self) -> None:
        """Clamp θ back into ``theta_range`` (call after every optimizer step)."""
        self.theta.clamp_(*self.spec.theta_range)


class PNN(nn.Module):
    """A physical neural network: ``stages`` run in order; physical layers go through the device.

    ``forward(x)`` is the in-silico model (twins only); ``await aforward(x)`` is the physical network.
    ``config`` records how the net was built (:func:`build_pnn` arguments) for :meth:`from_artifact_dict`.
    """

    def __init__(self, stages: Sequence[nn.Module], spec: DeviceSpec, config: dict[str, Any] | None = None):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.spec = spec
        self.config = dict(config or {})

    @property
    def physical_layers(self) -> list[PhysicalLayer]:
        return [s for s in self.stages if isinstance(s, PhysicalLayer)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for s in self.stages:
            x = s(x)
        return x

    async def aforward(self, x: torch.Tensor, resolver: Resolver | None = None,
                       overrides: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The physical network (PAT): digital stages run here, physical layer ``k`` is measured on the
        device ``resolver(k, layer)`` names (default: the layer's own) with that twin's VJP as backward.

        ``overrides`` replaces named parameters (``"stages.i.name"``) for this call only, without touching
        the module (concurrent calls for different units each pass their own copies)."""
        k = 0
        for i, s in enumerate(self.stages):
            own = {n.split(".", 2)[2]: v for n, v in overrides.items()
                   if n.startswith(f"stages.{i}.")} if overrides else {}
            if isinstance(s, PhysicalLayer):
                device, twin = resolver(k, s) if resolver is not None else (None, None)
                x = await s.aforward(x, device, twin, theta=own.get("theta"))
                k += 1
            elif own:
                x = torch.func.functional_call(s, own, (x,), strict=False)
            else:
                x = s(x)
        return x

    def attach(self, device: Device | None = None, twin: nn.Module | TwinFn | None = None) -> "PNN":
        """Point every physical layer at ``device`` and/or ``twin`` (e.g. after loading, or a refreshed twin)."""
        for layer in self.physical_layers:
            if device is not None:
                layer.__dict__["device"] = device
            if twin is not None:
                layer.__dict__["twin"] = twin
        return self

    def project_(self) -> None:
        for layer in self.physical_layers:
            layer.project_()

    def set_concurrent(self, concurrent: bool) -> "PNN":
        """Measure channels and chunks concurrently (default) or sequentially (reproducible with sims)."""
        for layer in self.physical_layers:
            layer.concurrent = bool(concurrent)
        return self

    def add_observer(self, fn: Observer) -> None:
        """``fn(layer_name, x, θ, y_physical)`` is called for every batch a physical layer measures."""
        for layer in self.physical_layers:
            layer.observers.append(fn)

    def remove_observer(self, fn: Observer) -> None:
        for layer in self.physical_layers:
            if fn in layer.observers:
                layer.observers.remove(fn)

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor, spread: float = 2.0) -> None:
        """Data-dependent init of the rescaling stages using the twin (no device calls); ``spread`` is the
        std of every :class:`RangeMap`'s pre-sigmoid drive (:meth:`RangeMap.calibrate`)."""
        for s in self.stages:
            if isinstance(s, RangeMap):
                s.calibrate(x, spread)
            elif isinstance(s, BinReadout):
                s.calibrate(x)
            x = s(x)

    async def acalibrate(self, x: torch.Tensor, spread: float = 2.0) -> None:
        """Data-dependent init of the rescaling stages on the *measured* outputs of each physical layer
        (one forward pass of ``x`` through the device): the rescalings after a layer then match what the
        device really outputs, including anything its twin does not model. For methods whose forward pass
        is the device (PAT, SPSA); in-silico training, which never sees the device, uses :meth:`calibrate`."""
        x = x.detach()
        for s in self.stages:
            if isinstance(s, RangeMap):
                s.calibrate(x, spread)
            elif isinstance(s, BinReadout):
                s.calibrate(x)
            if isinstance(s, PhysicalLayer):
                x = (await s.aforward(x)).detach()
            else:
                with torch.no_grad():
                    x = s(x)

    def n_parameters(self) -> dict[str, int]:
        phys = sum(p.numel() for layer in self.physical_layers for p in layer.parameters())
        total = sum(p.numel() for p in self.parameters())
        return {"physical": phys, "digital": total - phys, "total": total}

    # ----- serialization ---------------------------------------------------------------------------
    def to_artifact_dict(self) -> dict[str, Any]:
        """A JSON/msgpack-friendly description: architecture, device spec, θ per layer, all weights."""
        return {
            "format": ARTIFACT_FORMAT,
            "config": dict(self.config),
            "spec": self.spec.to_dict(),
            "theta": [layer.theta.detach().tolist() for layer in self.physical_layers],
            "state_dict": {k: {"shape": list(v.shape), "data": v.detach().flatten().tolist()}
                           for k, v in self.state_dict().items()},
        }

    @classmethod
    def from_artifact_dict(cls, d: dict[str, Any], device: Device | None = None,
                           twin: nn.Module | TwinFn | None = None) -> "PNN":
        if d.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"not a PNN artifact (format={d.get('format')!r}, expected {ARTIFACT_FORMAT!r})")
        spec = DeviceSpec.from_dict(d["spec"])
        if device is not None and device.connected and (device.spec.in_dim, device.spec.param_dim,
                                                        device.spec.out_dim) != (spec.in_dim, spec.param_dim, spec.out_dim):
            raise ValueError(f"artifact was built for {spec.kind} {spec.in_dim}/{spec.param_dim}/{spec.out_dim}, "
                             f"device {device.name} is {device.spec.in_dim}/{device.spec.param_dim}/{device.spec.out_dim}")
        cfg = dict(d["config"])
        model = build_pnn(spec=spec, device=device, twin=twin or _missing_twin, **cfg)
        state = {k: torch.tensor(v["data"], dtype=torch.float32).reshape(v["shape"]) for k, v in d["state_dict"].items()}
        model.load_state_dict(state)
        return model


def per_layer(devices: Sequence[Device], twins: Sequence[nn.Module | TwinFn]) -> Resolver:
    """A :data:`Resolver` measuring physical layer ``k`` on ``devices[k]`` with twin ``twins[k]``."""
    if len(devices) != len(twins):
        raise ValueError(f"per_layer: {len(devices)} devices for {len(twins)} twins")

    def resolve(k: int, layer: PhysicalLayer) -> tuple[Device, nn.Module | TwinFn]:
        if k >= len(devices):
            raise ValueError(f"{layer.name}: physical layer {k} has no device ({len(devices)} given)")
        return devices[k], twins[k]
    return resolve


# ---------------------------------------------------------------------------------------------------
# The training step
# ---------------------------------------------------------------------------------------------------
class PATStep:
    """One training step, the same for every trainer, the fleet and the stream trainer::

        logits = await model.aforward(x, resolver)   physical forward (PAT), or ``forward(x)`` if given
        loss   = CE(logits, y)                         mean, or a sum for shards (:meth:`gradients`)
        grads  = ∂loss/∂w                              through each physical layer's twin VJP
        w      <- optimizer(w, grads / divisor)        clipped to ``grad_clip``; θ projected into range

    Split in two where a coordinator gathers gradients from several places before one update (the fleet):
    :meth:`gradients` per shard, :meth:`apply` once per batch. ``forward`` replaces the physical forward
    (``model(x)`` for in-silico training, a digital baseline); ``optimizer`` defaults to Adam at ``lr``
    over the parameters that require gradients.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *, lr: float = 0.02,
                 grad_clip: float | None = None,
                 forward: Callable[[torch.Tensor], Any] | None = None,
                 params: Sequence[nn.Parameter] | None = None):
        self.model = model
        #: what gradients are taken for (default: the model's trainable parameters; multi-unit training adds
        #: each unit's own copies)
        self.params = list(params) if params is not None else [p for p in model.parameters() if p.requires_grad]
        self.opt = optimizer if optimizer is not None else torch.optim.Adam(self.params, lr=lr)
        self.grad_clip = grad_clip
        self.forward = forward

    async def logits(self, x: torch.Tensor, resolver: Resolver | None = None) -> torch.Tensor:
        """The forward this step trains through (physical unless ``forward`` was given)."""
        if self.forward is not None:
            return await self.forward(x)
        return await self.model.aforward(x, resolver=resolver)

    def gradients(self, logits: torch.Tensor, y: torch.Tensor,
                  reduction: str = "mean") -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """``(loss, ∂loss/∂w per parameter)``; ``None`` for a parameter the loss does not reach."""
        loss = F.cross_entropy(logits, y, reduction=reduction)
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        return loss.detach(), [None if g is None else g.detach() for g in grads]

    def apply(self, grads: Sequence[torch.Tensor | None], divisor: float | None = None) -> None:
        """One optimizer update with ``grads / divisor``, then θ clamped back into its safe range."""
        self.set_grads(grads, divisor)
        self.update()

    def set_grads(self, grads: Sequence[torch.Tensor | None], divisor: float | None = None) -> None:
        """``p.grad = g / divisor`` for every parameter (first half of :meth:`apply`: a caller may adjust
        gradients, e.g. per-unit calibration folding θ's gradient into its gain/offset, before the update)."""
        for p, g in zip(self.params, grads):
            p.grad = None if g is None else (g if divisor is None else g / divisor)

    def update(self) -> None:
        """The optimizer step on the gradients set, then θ clamped back into range (second half of apply)."""
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.opt.step()
        project = getattr(self.model, "project_", None)
        if project is not None:
            project()

    async def __call__(self, x: torch.Tensor, y: torch.Tensor,
                       resolver: Resolver | None = None) -> tuple[float, torch.Tensor]:
        """Forward, loss, backward and update on one batch; ``(loss, detached logits)``."""
        self.model.train()
        out = await self.logits(x, resolver)
        loss, grads = self.gradients(out, y)
        self.apply(grads)
        return float(loss), out.detach()


def _missing_twin(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    raise RuntimeError("this PNN was loaded without a twin: pass twin= to from_artifact_dict or call attach(twin=...)")


# ---------------------------------------------------------------------------------------------------
# Builder
# ---------------------------------------------------------------------------------------------------
def build_pnn(n_features: int, n_classes: int, twin: nn.Module | TwinFn, device: Device | None = None,
              spec: DeviceSpec | None = None, layers: int = 2, hybrid: bool = False,
              channels: int | None = None, seed: int = 0, init_frac: float = 0.5) -> PNN:
    """Build a PNN for ``n_features`` -> ``n_classes``.

    Physical-only (``hybrid=False``, the paper's style)::

        u -> RangeMap (pad to C·in_dim) -> Phys_1 -> RangeMap -> Phys_2 ... -> Phys_K -> BinReadout

    with ``C = ceil(n_features / in_dim)`` channels unless given. Hybrid (``hybrid=True``)::

        u -> Linear(n_features, C·in_dim) -> RangeMap -> Phys_1 -> ... -> Phys_K -> Linear(C·out_dim, n_classes)

    The same ``device`` serves every physical layer (a multi-layer PNN on one system). ``θ`` starts
    uniform in the central ``init_frac`` of ``theta_range`` (:class:`PhysicalLayer`).
    """
    if spec is None:
        if device is None:
            raise ValueError("build_pnn needs a connected device or a spec")
        spec = device.spec
    if layers < 1:
        raise ValueError(f"layers must be >= 1, got {layers}")
    C = int(channels or max(1, math.ceil(n_features / spec.in_dim)))
    with torch.random.fork_rng(devices=[]):     # deterministic init without touching the global RNG
        torch.manual_seed(int(seed))
        stages = _stages(n_features, n_classes, twin, device, spec, layers, hybrid, C, init_frac)
    config = {"n_features": int(n_features), "n_classes": int(n_classes), "layers": int(layers),
              "hybrid": bool(hybrid), "channels": C, "seed": int(seed)}
    return PNN(stages, spec, config)


def interleave_index(n_in: int, channels: int, width: int) -> torch.Tensor:
    """Route feature ``k·C + c`` to slot ``k`` of channel ``c`` (``[C, width]`` row-major output).

    Each channel then sees an evenly spread subset of all features (and, between layers, outputs of every
    channel of the previous layer), so physical-only nets mix information across channels. Features beyond
    ``n_in`` are zero padding (index ``n_in``); when ``n_in > C·width`` the sources are spread evenly (some dropped).
    """
    c = torch.arange(channels).unsqueeze(1)
    k = torch.arange(width).unsqueeze(0)
    src = (k * channels + c).flatten()
    if n_in > channels * width:
        src = (src * n_in) // (channels * width)
    return torch.where(src < n_in, src, torch.full_like(src, n_in))


def _stages(n_features, n_classes, twin, device, spec, layers, hybrid, C, init_frac=0.5) -> list[nn.Module]:
    lo, hi = spec.x_range
    stages: list[nn.Module] = []
    if hybrid:
        stages += [nn.Linear(n_features, C * spec.in_dim), RangeMap(C * spec.in_dim, C * spec.in_dim, lo, hi)]
    else:
        stages.append(RangeMap(n_features, C * spec.in_dim, lo, hi, scale=4.0, shift=-2.0,
                               index=interleave_index(n_features, C, spec.in_dim)))
    for k in range(layers):
        if k > 0:
            stages.append(RangeMap(C * spec.out_dim, C * spec.in_dim, lo, hi,
                                   index=interleave_index(C * spec.out_dim, C, spec.in_dim)))
        stages.append(PhysicalLayer(spec, twin, device, channels=C, name=f"phys{k + 1}", init_frac=init_frac))
    if hybrid:
        stages.append(nn.Linear(C * spec.out_dim, n_classes))
    else:
        stages.append(BinReadout(C * spec.out_dim, n_classes))
    return stages


__all__ = ["ARTIFACT_FORMAT", "BinReadout", "Observer", "PATFunction", "PATStep", "PNN", "PhysicalLayer", "RangeMap",
           "Resolver", "batches_channels", "build_pnn", "measure", "measure_many", "pat_apply", "per_layer"]
