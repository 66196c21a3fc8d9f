"""PAT core: the autograd rule, ranges, batch splitting, observers, serialization."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pat_runtime.pat import PNN, PATFunction, PhysicalLayer, RangeMap, build_pnn, interleave_index, pat_apply
from pat_runtime.testing.pat import FunctionDevice, toy_physics, toy_spec, toy_twin


async def _device(**kw) -> FunctionDevice:
    dev = FunctionDevice(toy_spec(**kw))
    await dev.connect()
    return dev


async def test_forward_is_physical_and_backward_is_twin_vjp():
    dev = await _device()
    layer = PhysicalLayer(dev.spec, toy_twin, dev, channels=1)
    x = torch.rand(5, 4) * 1.6 - 0.8
    x.requires_grad_(True)
    w = torch.randn(5, 4)

    y = await layer.aforward(x)
    # forward: exactly the measured values (twin + offset + 0.3 x², which the twin does not know)
    expected = toy_physics(x.detach(), layer.theta.detach())
    assert torch.allclose(y, expected, atol=1e-6)
    assert not torch.allclose(y, toy_twin(x.detach(), layer.theta.detach()), atol=1e-2)
    (y * w).sum().backward()
    gx_pat, gt_pat = x.grad.clone(), layer.theta.grad.clone()

    # reference: (∂f_m/∂x)ᵀ w and (∂f_m/∂θ)ᵀ w from the twin alone
    xr = x.detach().clone().requires_grad_(True)
    tr = layer.theta.detach()[0].clone().requires_grad_(True)
    (toy_twin(xr, tr) * w).sum().backward()
    assert torch.allclose(gx_pat, xr.grad, atol=1e-6)
    assert torch.allclose(gt_pat[0], tr.grad, atol=1e-6)
    # and it is not the physical gradient (which has the extra 0.6 x term)
    xp = x.detach().clone().requires_grad_(True)
    (toy_physics(xp, tr.detach()) * w).sum().backward()
    assert not torch.allclose(gx_pat, xp.grad, atol=1e-3)


def test_pat_function_gradcheck_against_twin():
    x = torch.rand(3, 4, dtype=torch.float64, requires_grad=True)
    th = torch.rand(4, dtype=torch.float64, requires_grad=True)
    y_phys = torch.zeros(3, 4, dtype=torch.float64)     # forward value is irrelevant for the backward
    out = pat_apply(x, th, y_phys, toy_twin)
    assert torch.equal(out, y_phys)
    g = torch.randn(3, 4, dtype=torch.float64)
    gx, gt = torch.autograd.grad(out, (x, th), g)
    rx, rt = torch.autograd.grad(toy_twin(x, th), (x, th), g)
    assert torch.allclose(gx, rx) and torch.allclose(gt, rt)
    assert type(out.grad_fn) is PATFunction._backward_cls   # pat_apply inserts exactly the PATFunction rule


def test_pat_function_layer_of_channels_matches_per_channel_rule():
    """One PAT node for a layer of C channels gives exactly the per-channel VJPs (each with its own θ_c)."""
    torch.manual_seed(0)
    C = 3
    x = torch.rand(5, C, 4, dtype=torch.float64, requires_grad=True)
    th = torch.rand(C, 4, dtype=torch.float64, requires_grad=True)
    y_phys = torch.rand(5, C, 4, dtype=torch.float64)
    out = pat_apply(x, th, y_phys, toy_twin)
    assert torch.equal(out, y_phys) and type(out.grad_fn) is PATFunction._backward_cls
    g = torch.randn(5, C, 4, dtype=torch.float64)
    gx, gt = torch.autograd.grad(out, (x, th), g)
    per = [torch.autograd.grad(pat_apply(x[:, c], th[c], y_phys[:, c], toy_twin), (x, th), g[:, c]) for c in range(C)]
    assert torch.equal(gx, sum(p[0] for p in per)) and torch.equal(gt, sum(p[1] for p in per))
    # θ alone (inputs held fixed): the x-gradient is not asked for
    (gt_only,) = torch.autograd.grad(pat_apply(x.detach(), th, y_phys, toy_twin), (th,), g)
    assert torch.equal(gt_only, gt)


async def test_theta_projected_and_inputs_never_out_of_range():
    dev = await _device()
    model = build_pnn(6, 3, toy_twin, dev, layers=2, seed=1)
    lo, hi = dev.spec.theta_range
    for layer in model.physical_layers:
        assert float(layer.theta.detach().min()) >= lo and float(layer.theta.detach().max()) <= hi
    opt = torch.optim.SGD(model.parameters(), lr=50.0)     # absurd steps push θ far out of range
    x = torch.tensor([[1e6, -1e6, 0.0, 3.0, -7.0, 1e3]] * 4)
    y = torch.tensor([0, 1, 2, 0])
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(await model.aforward(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.project_()
        for layer in model.physical_layers:
            assert float(layer.theta.detach().min()) >= lo and float(layer.theta.detach().max()) <= hi
    assert dev.received, "the device was never called"
    for xs, th in dev.received:
        assert xs.min() >= dev.spec.x_range[0] and xs.max() <= dev.spec.x_range[1]
        assert th.min() >= lo and th.max() <= hi


async def test_batches_larger_than_max_batch_are_split_in_order():
    dev = await _device(max_batch=16)
    layer = PhysicalLayer(dev.spec, toy_twin, dev, channels=2)
    x = torch.rand(50, 8) * 2 - 1
    y = await layer.aforward(x)
    assert y.shape == (50, 8)
    assert dev.calls == 2 * 4                                # 2 channels x ceil(50/16)
    assert max(r[0].shape[0] for r in dev.received) <= 16
    ref = torch.cat([toy_physics(x[:, :4], layer.theta[0].detach()), toy_physics(x[:, 4:], layer.theta[1].detach())], 1)
    assert torch.allclose(y, ref, atol=1e-6)


async def test_observer_sees_every_measured_triple():
    dev = await _device(max_batch=8)
    model = build_pnn(4, 2, toy_twin, dev, layers=2, seed=0)
    seen = []
    model.add_observer(lambda name, x, th, y: seen.append((name, x.shape, th.shape, y.shape)))
    await model.aforward(torch.rand(20, 4))
    assert len(seen) == dev.calls == 2 * 3                  # 2 layers x ceil(20/8) chunks
    assert {s[0] for s in seen} == {"phys1[0]", "phys2[0]"}
    assert all(s[2] == (4,) and s[1] == s[3] for s in seen)
    model.remove_observer(model.physical_layers[0].observers[0])
    await model.aforward(torch.rand(3, 4))
    assert len(seen) == 6


@pytest.mark.parametrize("hybrid", [False, True])
async def test_artifact_round_trip(hybrid):
    dev = await _device()
    model = build_pnn(10, 3, toy_twin, dev, layers=3, hybrid=hybrid, seed=2)
    model.calibrate(torch.rand(32, 10))
    with torch.no_grad():
        for layer in model.physical_layers:
            layer.theta.uniform_(-0.5, 0.5)
    d = json.loads(json.dumps(model.to_artifact_dict()))
    assert d["spec"]["kind"] == "toy" and len(d["theta"]) == 3
    back = PNN.from_artifact_dict(d, device=dev, twin=toy_twin)
    x = torch.rand(7, 10)
    assert torch.allclose(model(x), back(x), atol=1e-6)
    assert torch.allclose(await model.aforward(x), await back.aforward(x), atol=1e-6)
    with pytest.raises(ValueError, match="format"):
        PNN.from_artifact_dict({"format": "nope"})


async def test_shapes_multilayer_hybrid_and_channels():
    dev = await _device()
    for hybrid in (False, True):
        model = build_pnn(9, 3, toy_twin, dev, layers=2, hybrid=hybrid)
        assert model.config["channels"] == 3                  # ceil(9 / 4)
        x = torch.rand(5, 9)
        assert model(x).shape == (5, 3)
        assert (await model.aforward(x)).shape == (5, 3)
    n = model.n_parameters()
    assert n["physical"] == 2 * 3 * 4 and n["total"] > n["physical"]
    with pytest.raises(RuntimeError, match="no device"):
        await build_pnn(9, 3, toy_twin, spec=dev.spec).aforward(torch.rand(2, 9))


def test_range_map_stays_in_range_and_routes():
    rm = RangeMap(3, 8, -1.0, 2.0, scale=5.0, index=interleave_index(3, 2, 4))
    u = torch.tensor([[1e9, -1e9, 0.5]])
    out = rm(u).detach()
    assert out.shape == (1, 8) and float(out.min()) >= -1.0 and float(out.max()) <= 2.0
    # channel 0 gets features 0, 2, pad, pad; channel 1 gets 1, pad, pad, pad
    assert interleave_index(3, 2, 4).tolist() == [0, 2, 3, 3, 1, 3, 3, 3]
    assert rm.pad
    with pytest.raises(ValueError):
        RangeMap(3, 4, 0, 1)
    np.testing.assert_allclose(float(out[0, 0]), 2.0, atol=1e-6)


async def test_acalibrate_uses_measured_outputs():
    """`acalibrate` sets every rescaling from the device's measured outputs (the toy device has an offset and
    a term its twin lacks): the next stage's drive is centred with the asked spread on the device, and the
    readout's logits are centred on the device; `calibrate` (twin only) is not centred there."""
    dev = await _device()
    x = torch.rand(256, 10)

    async def second_drive(model):
        with torch.no_grad():
            y1 = await model.physical_layers[0].aforward(model.stages[0](x))    # measured on the device
            rm = model.stages[2]
            return rm.drive(y1)

    on_device = build_pnn(10, 3, toy_twin, dev, layers=2, seed=0)
    await on_device.acalibrate(x, spread=1.5)
    z = await second_drive(on_device)
    assert z.mean(0).abs().max() < 1e-4 and abs(float(z.std()) - 1.5) < 0.05
    with torch.no_grad():
        assert (await on_device.aforward(x)).mean(0).abs().max() < 1e-4
    twin_only = build_pnn(10, 3, toy_twin, dev, layers=2, seed=0)
    twin_only.calibrate(x, spread=1.5)
    assert (await second_drive(twin_only)).mean(0).abs().max() > 0.05     # the twin lacks the device's offset
