"""Per-output networks trained as one: ``O`` small MLPs, each on its own subset of the inputs.

For a device whose outputs are *different* functions of *few* inputs each (a filter bank read out in
windows: each output sees its window's samples and its channel's settings), one shared trunk has to split
its capacity over all outputs. :class:`OutputHeads` gives every output ``o`` its own network on the inputs
``z[:, idx[o]]`` (``idx``: ``[O, K]``, e.g. found by :func:`pat_runtime.twins.structure.discover_inputs`)::

    p_o = [z_S, z_S², z_S³]  (S = idx[o])      h_o = MLP_o([p_o, (A_o p_o + a_o)²])      y_o = w_o · h_o + c_o

All ``O`` networks run as batched matrix products (one ``einsum`` per layer, the output index as the batch
dimension), so 32 heads cost one pass of a few large matmuls, not 32 small ones.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class GroupedLinear(nn.Module):
    """``O`` independent linear maps ``[B, O, I] -> [B, O, H]`` (``nn.Linear`` init per group)."""

    def __init__(self, groups: int, n_in: int, n_out: int):
        super().__init__()
        bound = 1.0 / math.sqrt(max(1, n_in))
        self.weight = nn.Parameter(torch.empty(groups, n_in, n_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(groups, n_out).uniform_(-bound, bound))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.einsum("boi,oih->boh", h, self.weight) + self.bias


class OutputHeads(nn.Module):
    """One MLP per output on its own ``K`` inputs (``idx`` buffer ``[O, K]``), all evaluated in one batch."""

    def __init__(self, n_inputs: int, n_out: int, k: int, hidden: int = 64, depth: int = 2, square: int = 32,
                 degree: int = 3):
        super().__init__()
        if not 1 <= k <= n_inputs:
            raise ValueError(f"heads: inputs per output must be in 1..{n_inputs}, got {k}")
        self.k, self.degree = int(k), int(degree)
        # default selection: the first k inputs (replaced by prepare / discover_inputs)
        self.register_buffer("idx", torch.arange(self.k).repeat(n_out, 1))
        n_p = self.k * self.degree
        self.proj = GroupedLinear(n_out, n_p, square) if square else None
        dims = [n_p + square] + [hidden] * depth
        self.layers = nn.ModuleList(GroupedLinear(n_out, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.last = GroupedLinear(n_out, dims[-1], 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        zs = z[:, self.idx]                                              # [B, O, K]
        p = torch.cat([zs ** j for j in range(1, self.degree + 1)], dim=2) if self.degree > 1 else zs
        h = torch.cat([p, self.proj(p) ** 2], dim=2) if self.proj is not None else p
        for layer in self.layers:
            h = nn.functional.silu(layer(h))
        return self.last(h).squeeze(2)                                   # [B, O]


__all__ = ["GroupedLinear", "OutputHeads"]
