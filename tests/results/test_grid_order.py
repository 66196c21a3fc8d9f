"""The order a cached-twin grid runs its device jobs in (what an interrupted grid has finished)."""
from __future__ import annotations

from pat_runtime.results.grid import GridSpec, _device_runs, depth_priority


def test_deepest_first_then_from_one_up():
    assert depth_priority((1, 2, 3, 4)) == [4, 1, 2, 3]
    assert depth_priority((3, 1)) == [3, 1]
    assert depth_priority((2,)) == [2]


def test_device_runs_of_one_depth():
    spec = GridSpec(depths=(1, 2, 3, 4), spsa_depths=(1,))
    assert _device_runs(spec, "plate", 0, (0,), (4,)) == [(0, 4, "pat"), (0, 4, "insilico")]
    assert _device_runs(spec, "plate", 0, (0,), (1,)) == [(0, 1, "pat"), (0, 1, "insilico"), (0, 1, "spsa")]
    assert len(_device_runs(spec, "plate", 0, (0, 1))) == 2 * (4 * 2 + 1)
