"""``vowels-synth``: a **synthetic** 10-vowel classification task built from formant tables.

Not recorded speech. Each sample is the spectral envelope of an all-pole formant model of one
of the 10 American-English vowels of Peterson & Barney (1952), spoken by a simulated speaker.

Per speaker (``n_speakers``, classes balanced: each speaker says every vowel once):

* group g in {man, woman, child} (equal odds) gives the P&B mean formants ``F_k(v, g)``, k=1..3;
* a vocal-tract length factor ``s ~ LogNormal(0, speaker_sd)`` scales all formants;

Per token (one vowel by one speaker): ``F_k = s * F_k(v, g) * exp(token_sd * N(0,1))`` and
bandwidths ``B_k = 50 Hz + 0.06 F_k``. Each formant is a 2-pole resonator
``H_k(f) = |p_k|^2 / |(j2pi f - p_k)(j2pi f - p_k*)|`` with ``p_k = -pi B_k + j 2pi F_k``; with a
-6 dB/octave source+radiation tilt the envelope in dB is

    E(f) = sum_k 20 log10 H_k(f) - 6 log2(f / 100 Hz) + noise_db * N(0,1)  (per band),

sampled at ``n_bands`` centres equally spaced on the mel scale from 150 Hz to 5 kHz. Features
are ``x = clip((E - max_f E + dyn_range_db) / dyn_range_db, 0, 1)`` (peak = 1, floor at
-``dyn_range_db``). The data are generated from ``data_seed`` (fixed default), independent of
the split ``seed`` of :func:`pat_runtime.datasets.load_task`.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

VOWELS = ("i", "I", "E", "ae", "a", "o", "U", "u", "V", "3r")  # heed hid head had hod hawed hood who'd hud heard
GROUPS = ("man", "woman", "child")
# Peterson & Barney (1952) mean formants in Hz, [vowel][group] = (F1, F2, F3)
PB_FORMANTS = np.array([
    [(270, 2290, 3010), (310, 2790, 3310), (370, 3200, 3730)],   # i   heed
    [(390, 1990, 2550), (430, 2480, 3070), (530, 2730, 3600)],   # I   hid
    [(530, 1840, 2480), (610, 2330, 2990), (690, 2610, 3570)],   # E   head
    [(660, 1720, 2410), (860, 2050, 2850), (1010, 2320, 3320)],  # ae  had
    [(730, 1090, 2440), (850, 1220, 2810), (1030, 1370, 3170)],  # a   hod
    [(570, 840, 2410), (590, 920, 2710), (680, 1060, 3180)],     # o   hawed
    [(440, 1020, 2240), (470, 1160, 2680), (560, 1410, 3310)],   # U   hood
    [(300, 870, 2240), (370, 950, 2670), (430, 1170, 3260)],     # u   who'd
    [(640, 1190, 2390), (760, 1400, 2780), (850, 1590, 3360)],   # V   hud
    [(490, 1350, 1690), (500, 1640, 1960), (560, 1820, 2160)],   # 3r  heard
], dtype=np.float64)
N_CLASSES = len(VOWELS)
DESCRIPTION = ("SYNTHETIC vowels: spectral envelopes (mel bands, dB) of a 3-formant model using "
               "Peterson & Barney (1952) mean formants with per-speaker vocal-tract scaling, "
               "per-token jitter and noise; 10 vowel classes")


def mel(f_hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f_hz) / 700.0)


def band_centres(n_bands: int, lo_hz: float = 150.0, hi_hz: float = 5000.0) -> np.ndarray:
    """``n_bands`` frequencies (Hz) equally spaced in mel between ``lo_hz`` and ``hi_hz``."""
    m = np.linspace(mel(lo_hz), mel(hi_hz), n_bands)
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def envelope_db(formants: np.ndarray, f_hz: np.ndarray) -> np.ndarray:
    """Envelope in dB of resonators at ``formants[..., K]`` (Hz), evaluated at ``f_hz[F]``."""
    fk = formants[..., :, None]
    bk = 50.0 + 0.06 * fk
    p = -np.pi * bk + 2j * np.pi * fk
    s = 2j * np.pi * f_hz
    h = np.abs(p) ** 2 / np.abs((s - p) * (s - np.conj(p)))
    return 20.0 * np.log10(h).sum(axis=-2) - 6.0 * np.log2(f_hz / 100.0)


@lru_cache(maxsize=4)
def _generate(n_speakers: int, n_bands: int, speaker_sd: float, token_sd: float,
              noise_db: float, dyn_range_db: float, data_seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(data_seed)
    group = rng.integers(0, len(GROUPS), size=n_speakers)
    scale = np.exp(speaker_sd * rng.standard_normal(n_speakers))
    means = PB_FORMANTS[:, group, :].transpose(1, 0, 2)          # [S, V, 3]
    formants = scale[:, None, None] * means * np.exp(token_sd * rng.standard_normal(means.shape))
    formants = np.sort(formants, axis=-1)                         # keep F1 < F2 < F3
    env = envelope_db(formants, band_centres(n_bands))            # [S, V, n_bands]
    env = env + noise_db * rng.standard_normal(env.shape)
    env = env - env.max(axis=-1, keepdims=True) + dyn_range_db
    x = np.clip(env / dyn_range_db, 0.0, 1.0).astype(np.float32).reshape(-1, n_bands)
    y = np.tile(np.arange(N_CLASSES, dtype=np.int64), n_speakers)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def load_synth_vowels_xy(n_speakers: int = 200, n_bands: int = 32, speaker_sd: float = 0.05,
                         token_sd: float = 0.06, noise_db: float = 1.5,
                         dyn_range_db: float = 60.0, data_seed: int = 0
                         ) -> tuple[np.ndarray, np.ndarray]:
    """``x[n_speakers * 10, n_bands]`` in [0, 1] and vowel labels ``y`` in 0..9."""
    for label, v, lo in (("n_speakers", n_speakers, 2), ("n_bands", n_bands, 2)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"vowels-synth: {label} must be an int >= {lo}, got {v!r}")
    for label, v in (("speaker_sd", speaker_sd), ("token_sd", token_sd), ("noise_db", noise_db)):
        if not v >= 0:
            raise ValueError(f"vowels-synth: {label} must be >= 0, got {v!r}")
    if not dyn_range_db > 0:
        raise ValueError(f"vowels-synth: dyn_range_db must be > 0, got {dyn_range_db!r}")
    return _generate(n_speakers, n_bands, float(speaker_sd), float(token_sd), float(noise_db),
                     float(dyn_range_db), int(data_seed))
