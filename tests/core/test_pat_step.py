"""The one PAT step (PATStep) and the one physical forward (PNN.aforward with a resolver)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from pat_runtime.pat import PATStep, build_pnn, per_layer
from pat_runtime.testing.pat import FunctionDevice, toy_physics, toy_spec, toy_twin


async def _device(f=toy_physics, name="fn") -> FunctionDevice:
    dev = FunctionDevice(toy_spec(), f, name=name)
    await dev.connect()
    return dev


def _data(n=12):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


async def test_resolver_measures_each_layer_on_the_device_it_names():
    own, a, b = await _device(name="own"), await _device(name="a"), await _device(name="b")
    model = build_pnn(6, 3, toy_twin, device=own, layers=2, seed=0)
    x, _ = _data()
    y_own = await model.aforward(x)
    assert len(own.received) == 4       # 2 layers x 2 channels, one call each
    y = await model.aforward(x, per_layer([a, b], [toy_twin, toy_twin]))
    assert len(own.received) == 4       # the layers' own device is not used
    assert len(a.received) == 2 and len(b.received) == 2
    assert torch.allclose(y, y_own)     # identical units: identical outputs
    # layer 2 of `b` sees layer 1's outputs (what `a` measured), not the raw input
    assert torch.equal(torch.from_numpy(b.received[0][0]), torch.from_numpy(own.received[2][0]))
    with pytest.raises(ValueError, match="physical layer 1 has no device"):
        await model.aforward(x, per_layer([a], [toy_twin]))


async def test_resolver_twin_gives_the_backward():
    dev = await _device()
    model = build_pnn(6, 3, toy_twin, device=dev, layers=1, seed=0)
    x, y = _data()
    g_own = torch.autograd.grad(F.cross_entropy(await model.aforward(x), y), model.physical_layers[0].theta)[0]

    def double_twin(xx, th):
        return 2 * toy_twin(xx, th)

    out = await model.aforward(x, lambda k, layer: (None, double_twin))   # own device, another twin
    g = torch.autograd.grad(F.cross_entropy(out, y), model.physical_layers[0].theta)[0]
    assert torch.allclose(g, 2 * g_own, atol=1e-6)


async def test_step_equals_hand_written_pat_update():
    dev = await _device()
    model = build_pnn(6, 3, toy_twin, device=dev, layers=2, seed=0)
    ref = copy.deepcopy(model).attach(device=dev, twin=toy_twin)
    x, y = _data()
    step = PATStep(model, lr=0.05)
    loss, logits = await step(x, y)

    opt = torch.optim.Adam([p for p in ref.parameters() if p.requires_grad], lr=0.05)
    out = await ref.aforward(x)
    ref_loss = F.cross_entropy(out, y)
    opt.zero_grad()
    ref_loss.backward()
    opt.step()
    ref.project_()
    assert loss == pytest.approx(float(ref_loss.detach()))
    assert torch.allclose(logits, out.detach())
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    lo, hi = model.spec.theta_range
    assert all(float(t.theta.detach().min()) >= lo and float(t.theta.detach().max()) <= hi for t in model.physical_layers)


async def test_sharded_gradients_summed_then_divided_equal_the_whole_batch_step():
    """The fleet's split (gradients per shard, one apply per batch) is the same update as one step."""
    dev = await _device()
    whole = build_pnn(6, 3, toy_twin, device=dev, layers=1, seed=0)
    split = copy.deepcopy(whole).attach(device=dev, twin=toy_twin)
    x, y = _data(12)
    await PATStep(whole, lr=0.05)(x, y)

    step = PATStep(split, lr=0.05)
    acc = None
    for i in range(0, 12, 4):
        _, grads = step.gradients(await step.logits(x[i:i + 4]), y[i:i + 4], reduction="sum")
        acc = grads if acc is None else [a + g for a, g in zip(acc, grads)]
    step.apply(acc, divisor=12)
    for p, q in zip(whole.parameters(), split.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


async def test_grad_clip_bounds_the_applied_gradient():
    dev = await _device()
    model = build_pnn(6, 3, toy_twin, device=dev, layers=1, seed=0)
    step = PATStep(model, torch.optim.SGD(model.parameters(), lr=1.0), grad_clip=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    await step(*_data())
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert 0 < float(moved.norm()) <= 1e-3 + 1e-6
