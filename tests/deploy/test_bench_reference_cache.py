"""The deploy bench's per-unit reference cache: its key changes with the simulator, so stale results are never
read (bench/deploy_refs.py); the paired gap's standard error is that of the per-sample differences."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from deploy_refs import combine_references, paired_gap, reference_gap, sim_fingerprint  # noqa: E402


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


def _ref(seed: int, correct) -> dict:
    c = np.asarray(correct, float)
    return {"key": f"k{seed}", "seed": seed, "test_acc": float(c.mean()), "correct": c.tolist()}


def test_reference_over_seeds_is_their_mean_and_its_gap_carries_the_seed_spread():
    rng = np.random.default_rng(0)
    runs = [_ref(s, rng.random(400) < p) for s, p in enumerate((0.70, 0.55, 0.60))]
    ref = combine_references(runs)
    accs = [r["test_acc"] for r in runs]
    assert ref["seeds"] == [0, 1, 2] and ref["accs"] == accs
    assert np.isclose(ref["test_acc"], np.mean(accs))
    assert np.isclose(np.mean(ref["correct"]), np.mean(accs))      # per-sample mean over seeds
    assert ref["first_correct"] == runs[0]["correct"]
    assert np.isclose(ref["seed_sd"], np.std(accs, ddof=1))
    assert np.isclose(ref["seed_se"], np.std(accs, ddof=1) / np.sqrt(3))
    ours = (rng.random(400) < 0.6).astype(float)
    g = reference_gap(ref, ours)
    p = paired_gap(ref["correct"], ours)
    assert np.isclose(g["gap"], np.mean(accs) - ours.mean()) and np.isclose(g["gap"], p["gap"])
    assert np.isclose(g["paired_se"], p["se"])
    assert np.isclose(g["se"], np.hypot(p["se"], ref["seed_se"])) and g["se"] > p["se"]


def test_single_seed_reference_is_that_run():
    run = _ref(0, [1, 0, 1, 1] * 25)
    ref = combine_references([run])
    assert ref["test_acc"] == run["test_acc"] and ref["correct"] == run["correct"]
    assert np.isnan(ref["seed_sd"]) and ref["seed_se"] == 0.0
    ours = np.array([1, 1, 0, 1] * 25, float)
    assert np.isclose(reference_gap(ref, ours)["se"], paired_gap(run["correct"], ours)["se"])
