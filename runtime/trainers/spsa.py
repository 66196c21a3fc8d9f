"""In-situ SPSA: model-free training with two physical evaluations per step (Spall 1992).

For all trainable parameters ``w`` (θ and the digital rescalings) and a Rademacher ``Δ ∈ {±1}^n``::

    ĝ = [L(w + c_k Δ) - L(w - c_k Δ)] / (2 c_k) · Δ,        c_k = c / k^0.101

averaged over ``spsa_samples`` perturbations, then an Adam step with ``ĝ`` and θ projected back into
``theta_range``. No twin is used: the gradient estimate comes from the device alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import Method, TrainConfig, make_scheduler


class SPSAMethod(Method):
    name = "spsa"
    physical = True

    def __init__(self, model, cfg: TrainConfig):
        super().__init__(model, cfg)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr)
        self.sched = make_scheduler(self.opt, cfg)
        self.k = 0
        self.gen = torch.Generator().manual_seed(cfg.seed + 7919)

    async def _loss(self, x, y) -> tuple[float, torch.Tensor]:
        self.model.project_()
        with torch.no_grad():
            out = await self.model.aforward(x)
        return float(F.cross_entropy(out, y)), out

    async def step(self, x, y):
        self.model.eval()
        self.k += 1
        ck = self.cfg.spsa_c / self.k ** 0.101
        base = [p.detach().clone() for p in self.params]
        grads = [torch.zeros_like(p) for p in self.params]
        losses, outs = [], []
        for _ in range(max(1, self.cfg.spsa_samples)):
            deltas = [torch.randint(0, 2, p.shape, generator=self.gen).float() * 2 - 1 for p in self.params]
            lp = []
            for sign in (1.0, -1.0):
                with torch.no_grad():
                    for p, b, d in zip(self.params, base, deltas):
                        p.copy_(b + sign * ck * d)
                loss, out = await self._loss(x, y)
                lp.append(loss)
                losses.append(loss)
                outs.append(out)
            for g, d in zip(grads, deltas):
                g.add_((lp[0] - lp[1]) / (2 * ck) * d / max(1, self.cfg.spsa_samples))
        with torch.no_grad():
            for p, b, g in zip(self.params, base, grads):
                p.copy_(b)
                p.grad = g
        self.opt.step()
        self.model.project_()
        return sum(losses) / len(losses), torch.stack(outs).mean(0)
