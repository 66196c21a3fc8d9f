"""vowels-synth task: synthetic formant-model vowels (no package needed)."""
from __future__ import annotations

import numpy as np
import pytest

from pat_runtime.datasets import load_task
from pat_runtime.datasets.synth_vowels import (PB_FORMANTS, VOWELS, band_centres, envelope_db,
                                           load_synth_vowels_xy, mel)


def test_band_centres_equally_spaced_in_mel():
    f = band_centres(10)
    assert f[0] == pytest.approx(150.0) and f[-1] == pytest.approx(5000.0)
    assert np.allclose(np.diff(mel(f)), np.diff(mel(f))[0])


def test_envelope_peaks_at_the_formants():
    f = np.linspace(100.0, 4000.0, 3901)       # 1 Hz grid
    env = envelope_db(np.array([500.0, 1500.0, 2500.0]), f) + 6.0 * np.log2(f / 100.0)
    peaks = [f[i] for i in range(1, len(f) - 1) if env[i] > env[i - 1] and env[i] > env[i + 1]]
    # neighbouring resonators' skirts pull each peak by a small part of its bandwidth B = 50 + 0.06 F
    formants = np.array([500.0, 1500.0, 2500.0])
    assert len(peaks) == 3
    assert (np.abs(np.array(peaks) - formants) < (50.0 + 0.06 * formants) / 4).all()
    single = envelope_db(np.array([1000.0]), np.array([1.0, 1000.0]))
    # a lone resonator: ~0 dB near DC, gain ~F/B at its peak (minus the -6 dB/oct tilt)
    tilt = -6.0 * np.log2(np.array([1.0, 1000.0]) / 100.0)
    gain = single - tilt
    assert gain[0] == pytest.approx(0.0, abs=0.01)
    assert gain[1] == pytest.approx(20 * np.log10(np.hypot(1000.0, 55.0) / 110.0), abs=0.05)


def test_pb_table_shape_and_order():
    assert PB_FORMANTS.shape == (len(VOWELS), 3, 3)
    assert (np.diff(PB_FORMANTS, axis=-1) > 0).all()        # F1 < F2 < F3
    assert (PB_FORMANTS[:, 2, :] > PB_FORMANTS[:, 0, :]).all()  # children above men


def test_balanced_deterministic_and_seeded():
    x, y = load_synth_vowels_xy(n_speakers=30, n_bands=16)
    assert x.shape == (300, 16) and np.bincount(y).tolist() == [30] * 10
    x2, _ = load_synth_vowels_xy(n_speakers=30, n_bands=16)
    x3, _ = load_synth_vowels_xy(n_speakers=30, n_bands=16, data_seed=1)
    assert np.array_equal(x, x2) and not np.array_equal(x, x3)
    assert np.allclose(x.max(axis=1), 1.0)  # each envelope is normalised to its peak


def test_vowels_are_separable_but_not_trivially():
    from sklearn.linear_model import LogisticRegression

    t = load_task("vowels-synth", seed=0)
    acc = LogisticRegression(max_iter=2000).fit(t.x_train, t.y_train).score(t.x_test, t.y_test)
    assert 0.6 < acc < 0.99  # measured 0.85: above chance (0.1) and not a solved toy


@pytest.mark.parametrize("kw,msg", [({"n_speakers": 1}, "n_speakers must be an int >= 2"),
                                    ({"n_bands": 2.0}, "n_bands must be an int"),
                                    ({"noise_db": -1.0}, "noise_db must be >= 0"),
                                    ({"dyn_range_db": 0.0}, "dyn_range_db must be > 0")])
def test_bad_options(kw, msg):
    with pytest.raises(ValueError, match=msg):
        load_task("vowels-synth", **kw)
