"""Black-box structure discovery: which inputs does each output depend on?

Measured data only (no physics): a quick *scout* model is fitted to all outputs, and its input gradients
give each output's sensitivity to each normalised input,

    S[o, i] = mean_rows |∂ŷ_o / ∂ẑ_i|          (ŷ standardised, ẑ = [x̂, θ̂] in [-1, 1])

:func:`top_inputs` keeps the ``k`` most influential inputs of every output; per-output networks on only
those (:class:`~pat_runtime.twins.heads.OutputHeads`) then spend their capacity where the dependence is.
"""
from __future__ import annotations

import math
from typing import Callable

import torch


def fit_scout(model: Callable[[torch.Tensor], torch.Tensor], params, z: torch.Tensor, ys: torch.Tensor,
              epochs: int = 3, lr: float = 2e-3, batch: int = 256, seed: int = 0) -> None:
    """Fit ``model(z) -> ys`` (standardised outputs) with Adam and a one-cycle schedule, no validation
    (the scout only ranks inputs; its own accuracy is never reported). Small data sets use smaller batches
    (at least 32 steps per epoch)."""
    params = list(params)
    batch = max(16, min(int(batch), len(z) // 32))
    opt = torch.optim.Adam(params, lr=lr)
    steps = max(4, epochs * math.ceil(len(z) / batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.3)
    g = torch.Generator().manual_seed(seed)
    done = 0
    for _ in range(epochs):
        perm = torch.randperm(len(z), generator=g)
        for i in range(0, len(z), batch):
            if done >= steps:
                break
            idx = perm[i:i + batch]
            loss = ((model(z[idx]) - ys[idx]) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            done += 1


def input_saliency(model: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, rows: int = 2048,
                   seed: int = 0) -> torch.Tensor:
    """``S[o, i] = mean |∂model(z)_o / ∂z_i|`` over (up to) ``rows`` rows of ``z``: ``[out, in]``."""
    g = torch.Generator().manual_seed(seed)
    zr = z[torch.randperm(len(z), generator=g)[:rows]].detach().clone().requires_grad_(True)
    out = model(zr)
    sal = []
    for o in range(out.shape[1]):
        (grad,) = torch.autograd.grad(out[:, o].sum(), zr, retain_graph=o + 1 < out.shape[1])
        sal.append(grad.abs().mean(0))
    return torch.stack(sal).detach()


def top_inputs(saliency: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` inputs of largest saliency per output, in input order: ``[out, k]`` (long)."""
    k = min(int(k), saliency.shape[1])
    return saliency.topk(k, dim=1).indices.sort(dim=1).values


__all__ = ["fit_scout", "input_saliency", "top_inputs"]
