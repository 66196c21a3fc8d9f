"""Black-box MLP twin: square features, older twin files, data design."""
from __future__ import annotations

import numpy as np
import torch

from pat_runtime.twins import MLPTwin, TwinData, fit_twin, make_twin, twin_from_dict, twin_to_dict


def test_twin_files_without_square_features_load_as_the_plain_mlp():
    from pat_runtime.devices.spec import DeviceSpec

    spec = DeviceSpec(kind="lab:laser", in_dim=3, param_dim=2, out_dim=4)
    plain = make_twin("mlp", spec, hidden=8, depth=1, square=0, degree=1)
    d = twin_to_dict(plain)
    d["config"] = {"hidden": 8, "depth": 1}                  # what files from before the square features hold
    back = twin_from_dict(d)
    x, th = torch.rand(5, 3) * 2 - 1, torch.rand(2) * 2 - 1
    assert isinstance(back, MLPTwin) and (back.square, back.degree) == (0, 1)
    assert torch.allclose(back(x, th), plain(x, th))
    assert make_twin("mlp", spec).config() == {"hidden": 256, "depth": 3, "square": 0, "degree": 1}
    new = make_twin("mlp", spec, **MLPTwin.DATA_DEFAULTS)      # what pat twin / build_twin fit
    assert new.config() == {"hidden": 512, "depth": 2, "square": 512, "degree": 3, "heads": 64, "inputs": 24,
                            "head_square": 64, "head_depth": 2, "trunk": True, "scout_epochs": 3}
    again = twin_from_dict(twin_to_dict(new))
    assert torch.allclose(again(x, th), new(x, th))


def test_square_features_learn_an_intensity_that_the_plain_mlp_misses():
    """Outputs that are powers of a linear response (y = (W z)², as band powers and spectra are): the
    default twin's squared projections fit them far better than the plain MLP of the same width and budget."""
    from pat_runtime.devices.spec import DeviceSpec

    spec = DeviceSpec(kind="lab:spectrometer", in_dim=8, param_dim=8, out_dim=6)
    g = torch.Generator().manual_seed(0)
    z = torch.rand(2048, 16, generator=g) * 2 - 1
    w = torch.randn(16, 6, generator=g) / 4
    y = (z @ w) ** 2
    y2 = y + 0.01 * torch.randn(2, *y.shape, generator=g)
    data = TwinData(z[:, :8].numpy(), z[:, 8:].numpy(), y2[0].numpy(), y2.numpy(), np.arange(2048) // 4)
    reps = {}
    for sq in (0, 32):
        torch.manual_seed(0)
        reps[sq] = fit_twin(make_twin("mlp", spec, hidden=32, depth=2, square=sq, degree=1 if sq == 0 else 3),
                            data, epochs=20, seed=0).nmse_test
    assert reps[32] < 0.7 * reps[0], reps
