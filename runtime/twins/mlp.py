"""Black-box twin: an MLP on the normalised ``[x̂, θ̂]`` with polynomial and square features, predicting
standardised outputs. It uses nothing but the shapes and ranges of ``x``, ``θ`` and ``y`` (no physics)::

    p = [ẑ, ẑ², ẑ³],   ẑ = [x̂, θ̂]               (per-input polynomial: static input nonlinearities)
    q = (A p + a)²                                (``square`` learned projections, squared)
    y = μ_y + σ_y ⊙ MLP([p, q])                   (μ_y, σ_y from the training data in :meth:`prepare`)

Why the features: measured outputs are very often intensities, powers or spectra, i.e. quadratic in a
linear response of the drives, behind a static nonlinearity on each input (a Hammerstein-type structure).
A plain SiLU MLP has to build every product of inputs from its activations; the squared projections give
it all second-order interactions in one layer. Measured on the stock plate at the defaults (65536 rows,
θ every 16 rows, 12 epochs): held-out NMSE 0.029 vs 0.095 for the plain MLP (10 epochs), noise floor 0.0068
(docs/sims.md, ``bench/twin_quality.py``). Those are :attr:`MLPTwin.DATA_DEFAULTS`, used by ``pat twin``
and :func:`~pat_runtime.twins.build_twin`; ``MLPTwin(spec)`` alone is the plain MLP (``square=0, degree=1``).
"""
from __future__ import annotations

import torch
from torch import nn

from pat_runtime.devices.spec import DeviceSpec

from .base import Twin


def mlp(n_in: int, n_out: int, hidden: int, depth: int, zero_last: bool = False) -> nn.Sequential:
    dims = [n_in] + [hidden] * depth
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.SiLU()]
    last = nn.Linear(dims[-1], n_out)
    if zero_last:
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


class MLPTwin(Twin):
    kind = "mlp"
    default_lr = 2e-3

    #: the options `pat twin --kind mlp` / build_twin / fit_best_twin use (65536 rows by default); the
    #: constructor's own defaults stay the plain 3 x 256 MLP, which overfits less on a few hundred rows
    #: or a few distinct θ (quick twins of fleets and streams)
    DATA_DEFAULTS = {"hidden": 256, "depth": 2, "square": 256, "degree": 3}

    def __init__(self, spec: DeviceSpec, hidden: int = 256, depth: int = 3, square: int = 0, degree: int = 1):
        super().__init__(spec)
        if int(degree) < 1 or int(square) < 0:
            raise ValueError(f"mlp twin: degree must be >= 1 and square >= 0, got {degree}, {square}")
        self.hidden, self.depth, self.square, self.degree = int(hidden), int(depth), int(square), int(degree)
        n = (spec.in_dim + spec.param_dim) * self.degree
        self.proj = nn.Linear(n, self.square) if self.square else None
        self.net = mlp(n + self.square, spec.out_dim, self.hidden, self.depth)
        self.register_buffer("y_mean", torch.zeros(spec.out_dim))
        self.register_buffer("y_std", torch.ones(spec.out_dim))

    def config(self):
        return {"hidden": self.hidden, "depth": self.depth, "square": self.square, "degree": self.degree}

    @torch.no_grad()
    def prepare(self, x, theta, y):
        self.y_mean.copy_(y.mean(0))
        self.y_std.copy_(y.std(0).clamp(min=1e-6))

    def features(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        z = self.normalized_inputs(x, theta)
        p = torch.cat([z ** k for k in range(1, self.degree + 1)], dim=1) if self.degree > 1 else z
        return torch.cat([p, self.proj(p) ** 2], dim=1) if self.proj is not None else p

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return self.y_mean + self.y_std * self.net(self.features(x, theta))
