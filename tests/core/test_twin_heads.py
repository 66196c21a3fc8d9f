"""Per-output heads of the MLP twin: batched heads = separate networks, black-box input discovery, files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pat_runtime.devices.spec import DeviceSpec
from pat_runtime.twins import TwinData, fit_twin, make_twin, twin_from_dict, twin_to_dict
from pat_runtime.twins.heads import OutputHeads
from pat_runtime.twins.structure import input_saliency, top_inputs


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_batched_heads_are_independent_networks_on_their_own_inputs():
    torch.manual_seed(0)
    heads = OutputHeads(n_inputs=10, n_out=3, k=4, hidden=8, depth=2, square=5, degree=2)
    heads.idx.copy_(torch.tensor([[0, 1, 2, 3], [2, 4, 6, 8], [1, 5, 7, 9]]))
    z = (torch.rand(6, 10) * 2 - 1).requires_grad_(True)
    out = heads(z)
    assert out.shape == (6, 3)
    for o in range(3):
        (g,) = torch.autograd.grad(out[:, o].sum(), z, retain_graph=True)
        used = set(heads.idx[o].tolist())
        assert all(float(g[:, i].abs().max()) == 0.0 for i in range(10) if i not in used)
        assert all(float(g[:, i].abs().max()) > 0.0 for i in used)
    # head o by hand, with its own slice of every grouped weight
    o = 1
    zs = z[:, heads.idx[o]]
    p = torch.cat([zs, zs ** 2], 1)
    h = torch.cat([p, (p @ heads.proj.weight[o] + heads.proj.bias[o]) ** 2], 1)
    for layer in heads.layers:
        h = torch.nn.functional.silu(h @ layer.weight[o] + layer.bias[o])
    assert torch.allclose(out[:, o], (h @ heads.last.weight[o] + heads.last.bias[o])[:, 0], atol=1e-6)


def _sparse_data(n=3072, seed=0):
    """Four outputs, each a nonlinear function of two of twelve inputs (which ones the twin is not told)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.rand(n, 12, generator=g) * 2 - 1
    deps = [(0, 7), (3, 9), (5, 11), (2, 8)]
    y = torch.stack([torch.sin(2.5 * z[:, a]) * z[:, b] + 0.5 * z[:, b] ** 2 for a, b in deps], 1)
    y2 = y + 0.01 * torch.randn(2, *y.shape, generator=g)
    data = TwinData(z[:, :6].numpy(), z[:, 6:].numpy(), y2[0].numpy(), y2.numpy(), np.arange(n) // 4)
    return DeviceSpec(kind="lab:sparse", in_dim=6, param_dim=6, out_dim=4), data, deps


def test_saliency_of_a_known_function_ranks_its_inputs_first():
    w = torch.zeros(12, 3)
    w[4, 0], w[1, 1], w[10, 2], w[2, 2] = 3.0, -1.0, 2.0, 0.5
    sal = input_saliency(lambda z: torch.tanh(z @ w), torch.rand(256, 12) * 2 - 1)
    assert top_inputs(sal, 1).tolist() == [[4], [1], [10]]
    assert top_inputs(sal, 2)[2].tolist() == [2, 10]


def test_heads_twin_finds_each_outputs_inputs_from_data_and_saves_them():
    spec, data, deps = _sparse_data()
    torch.manual_seed(0)
    twin = make_twin("mlp", spec, hidden=64, depth=2, square=16, degree=2, heads=16, inputs=3, head_square=4,
                     trunk=False, scout_epochs=10)
    rep = fit_twin(twin, data, epochs=30, batch=64, seed=0)
    for o, (a, b) in enumerate(deps):                 # discovered from a scout fit's input gradients
        assert {a, b} <= set(twin.heads.idx[o].tolist()), (o, twin.heads.idx[o].tolist())
    assert rep.nmse_test < 0.1, rep
    back = twin_from_dict(twin_to_dict(twin))
    assert torch.equal(back.heads.idx, twin.heads.idx)
    x, th = torch.from_numpy(data.x[:9]), torch.from_numpy(data.theta[:9])
    assert torch.allclose(back(x, th), twin(x, th))
