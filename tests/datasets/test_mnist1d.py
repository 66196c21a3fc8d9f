"""mnist1d task: generated locally with the package's published arguments, no side effects."""
from __future__ import annotations

import random

import numpy as np
import pytest

mnist1d_data = pytest.importorskip("mnist1d.data")

from pat_runtime.datasets import load_task, task_info  # noqa: E402
from pat_runtime.datasets.mnist1d_task import load_mnist1d_xy  # noqa: E402


def test_defaults_are_the_published_arguments():
    args = mnist1d_data.get_dataset_args(as_dict=True)
    opts = task_info("mnist1d")["options"]
    assert opts["num_samples"] == args["num_samples"] == 5000
    assert opts["final_seq_length"] == args["final_seq_length"] == 40
    assert opts["data_seed"] == args["seed"]
    assert opts["iid_noise_scale"] == args["iid_noise_scale"]
    assert opts["corr_noise_scale"] == args["corr_noise_scale"]
    assert opts["shuffle_seq"] == args["shuffle_seq"]


def test_matches_make_dataset_up_to_minmax_scaling():
    x, y = load_mnist1d_xy(num_samples=500)
    args = mnist1d_data.get_dataset_args()
    args.num_samples = 500
    d = mnist1d_data.make_dataset(args)
    raw = np.concatenate([d["x"], d["x_test"]])
    assert np.array_equal(y, np.concatenate([d["y"], d["y_test"]]))
    want = (raw - raw.min()) / (raw.max() - raw.min())
    assert np.allclose(x, want, atol=1e-6)
    assert np.bincount(y).tolist() == [50] * 10


def test_loading_leaves_global_rngs_alone():
    np.random.seed(123)
    random.seed(123)
    load_mnist1d_xy(num_samples=300, data_seed=5)  # fresh generation (not cached)
    after_np, after_py = np.random.random(), random.random()
    np.random.seed(123)
    random.seed(123)
    assert (np.random.random(), random.random()) == (after_np, after_py)


def test_options_change_the_data():
    t = load_task("mnist1d", num_samples=400, final_seq_length=24)
    assert t.n_features == 24 and t.n_train + t.n_test == 400
    a, _ = load_mnist1d_xy(num_samples=300, data_seed=1)
    b, _ = load_mnist1d_xy(num_samples=300, data_seed=2)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("kw,msg", [({"num_samples": 50}, "num_samples must be an int >= 100"),
                                    ({"final_seq_length": 1}, "final_seq_length must be"),
                                    ({"iid_noise_scale": -1.0}, "iid_noise_scale must be >= 0")])
def test_bad_options(kw, msg):
    with pytest.raises(ValueError, match=msg):
        load_task("mnist1d", **kw)
