"""The deploy bench's per-unit reference cache: its key changes with the simulator, so stale results are never
read (bench/deploy_refs.py); the paired gap's standard error is that of the per-sample differences."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from deploy_refs import paired_gap, sim_fingerprint  # noqa: E402


def test_fingerprint_is_stable_and_changes_with_unit_and_effects():
    a = sim_fingerprint("circuit", 1)
    assert a == sim_fingerprint("circuit", 1)
    assert a != sim_fingerprint("circuit", 2)
    assert a != sim_fingerprint("circuit", 1, effects=0)
    assert a != sim_fingerprint("circuit", 1, effects=2)


def test_paired_gap_standard_error():
    ref = np.array([1, 1, 1, 0, 1, 0, 1, 1] * 50, float)
    ours = np.array([1, 0, 1, 0, 1, 1, 1, 1] * 50, float)
    g = paired_gap(ref, ours)
    d = ref - ours
    assert g["gap"] == d.mean() == 0.0
    assert np.isclose(g["se"], d.std(ddof=1) / np.sqrt(len(d)))
    assert g["lo90"] <= g["gap"] <= g["hi90"]
