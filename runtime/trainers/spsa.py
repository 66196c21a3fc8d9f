"""In-situ SPSA: model-free training from device measurements alone (Spall 1992, 1998).

The parameters *upstream* of the last physical layer (θ of every physical layer, the input and
inter-layer rescalings) only reach the loss through the device, so their gradient is estimated by
simultaneous perturbation. In coordinates normalised per parameter tensor (``w = s ⊙ u``, ``s`` = half
the θ range for θ, the initial RMS magnitude for the rescalings) and with Rademacher ``Δ ∈ {±1}^n``::

    ĝ_k = mean over q = 1..Q of [L(u + c_k Δ_q) − L(u − c_k Δ_q)] / (2 c_k) · Δ_q      (Q = spsa_samples)
    u_{k+1} = u_k − a_k ĝ_k,     a_k = a / (k + 1 + A)^0.602,     c_k = c / (k + 1)^0.101

with Spall's standard exponents; ``A`` defaults to 10 % of the planned iterations (Spall's rule of
thumb), θ is projected back into ``theta_range`` after each step. ``a`` and ``c`` are tuned on the
validation split by :func:`pat_runtime.trainers.spsa_tune.tune_spsa` (``pat train --spsa-tune``).

The parameters *downstream* of the last physical layer (the digital readout) see the measured outputs
directly, so their exact gradient needs no model: it is back-propagated from the loss through the
readout only (measured outputs detached) and applied with Adam at ``lr``. No twin is used anywhere.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pat_runtime.pat import PNN, PhysicalLayer

from .common import Method, TrainConfig

ALPHA, GAMMA = 0.602, 0.101


def spall_gains(k: int, a: float, c: float, A: float) -> tuple[float, float]:
    """Spall's gain sequences at iteration ``k`` (0-based): ``(a_k, c_k)``."""
    return a / (k + 1 + A) ** ALPHA, c / (k + 1) ** GAMMA


def spsa_gradient(loss_fn, u: torch.Tensor, ck: float, samples: int, gen: torch.Generator):
    """Averaged simultaneous-perturbation gradient of ``loss_fn`` at ``u`` (synchronous helper)."""
    g = torch.zeros_like(u)
    for _ in range(max(1, samples)):
        d = torch.randint(0, 2, u.shape, generator=gen).to(u.dtype) * 2 - 1
        g += (loss_fn(u + ck * d) - loss_fn(u - ck * d)) / (2 * ck) * d
    return g / max(1, samples)


def minimize_spsa(loss_fn, u0: torch.Tensor, steps: int, a: float, c: float, A: float | None = None,
                  samples: int = 1, seed: int = 0) -> torch.Tensor:
    """Plain SPSA with Spall gains on a function of a flat tensor (reference implementation, tests)."""
    gen = torch.Generator().manual_seed(seed)
    A = 0.1 * steps if A is None else A
    u = u0.clone()
    for k in range(steps):
        ak, ck = spall_gains(k, a, c, A)
        u = u - ak * spsa_gradient(loss_fn, u, ck, samples, gen)
    return u


def _split_params(model) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """(upstream of the last physical layer, downstream of it) trainable parameters."""
    if not isinstance(model, PNN) or not model.physical_layers:
        return [p for p in model.parameters() if p.requires_grad], []
    stages = list(model.stages)
    last = max(i for i, s in enumerate(stages) if isinstance(s, PhysicalLayer))
    up = [p for s in stages[:last + 1] for p in s.parameters() if p.requires_grad]
    down = [p for s in stages[last + 1:] for p in s.parameters() if p.requires_grad]
    return up, down


class SPSAMethod(Method):
    name = "spsa"
    physical = True

    def __init__(self, model, cfg: TrainConfig):
        super().__init__(model, cfg)
        self.up, self.down = _split_params(model)
        theta_ids = {id(layer.theta) for layer in getattr(model, "physical_layers", [])}
        half = None
        if isinstance(model, PNN):
            lo, hi = model.spec.theta_range
            half = (hi - lo) / 2
        self.scales = [half if (id(p) in theta_ids and half) else
                       max(float(p.detach().pow(2).mean().sqrt()), 1e-2) for p in self.up]
        self.opt = torch.optim.Adam(self.down, lr=cfg.lr) if self.down else None
        self.k = 0
        self.gen = torch.Generator().manual_seed(cfg.seed + 7919)

    def _A(self) -> float:
        if self.cfg.spsa_A is not None:
            return float(self.cfg.spsa_A)
        return 0.1 * (self.cfg.max_steps or 20) * self.cfg.epochs   # run_experiment sets the exact value

    async def _measure(self, x: torch.Tensor) -> torch.Tensor:
        """Physical outputs of the last physical layer (readout input), no graph."""
        self.model.project_()
        with torch.no_grad():
            h = x
            stages = list(self.model.stages) if isinstance(self.model, PNN) else [self.model]
            last = max((i for i, s in enumerate(stages) if isinstance(s, PhysicalLayer)), default=len(stages) - 1)
            for s in stages[:last + 1]:
                h = await s.aforward(h) if isinstance(s, PhysicalLayer) else s(h)
        return h

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        stages = list(self.model.stages) if isinstance(self.model, PNN) else []
        last = max((i for i, s in enumerate(stages) if isinstance(s, PhysicalLayer)), default=len(stages) - 1)
        for s in stages[last + 1:]:
            h = s(h)
        return h

    async def step(self, x, y):
        self.model.eval()
        ak, ck = spall_gains(self.k, self.cfg.spsa_a, self.cfg.spsa_c, self._A())
        self.k += 1
        base = [p.detach().clone() for p in self.up]
        grads = [torch.zeros_like(p) for p in self.up]
        Q = max(1, self.cfg.spsa_samples)
        hs, losses = [], []
        for _ in range(Q):
            deltas = [torch.randint(0, 2, p.shape, generator=self.gen).float() * 2 - 1 for p in self.up]
            lp = []
            for sign in (1.0, -1.0):
                with torch.no_grad():
                    for p, b, d, s in zip(self.up, base, deltas, self.scales):
                        p.copy_(b + sign * ck * s * d)
                h = await self._measure(x)
                with torch.no_grad():
                    loss = float(F.cross_entropy(self._head(h), y))
                lp.append(loss)
                losses.append(loss)
                hs.append(h)
            for g, d in zip(grads, deltas):
                g.add_((lp[0] - lp[1]) / (2 * ck) * d / Q)
        with torch.no_grad():
            for p, b, g, s in zip(self.up, base, grads, self.scales):
                # normalised coordinates: u -= a_k ĝ  <=>  w -= a_k s ĝ  (ĝ is d L / d u)
                p.copy_(b - ak * s * g)
        if isinstance(self.model, PNN):
            self.model.project_()
        # exact, model-free gradient of the digital readout at the measured outputs
        h_mean = torch.stack(hs).mean(0)
        if self.opt is not None:
            self.opt.zero_grad(set_to_none=True)
            out = self._head(h_mean)
            F.cross_entropy(out, y).backward()
            self.opt.step()
        with torch.no_grad():
            out = self._head(h_mean)
        return sum(losses) / len(losses), out.detach()

    def end_epoch(self, epoch: int) -> None:  # gains decay per step; no per-epoch schedule
        return None

