"""Quality and speed of the simulators, measured in one run on one CPU thread.

    .venv/bin/python bench/sims_quality.py [kind ...]

Prints per simulator: dims, mismatch of the nominal model against 8 hidden units (mean/min/max), the size
of the second-order effects the datasheet model lacks (``effects``: mean over the 8 units),
output use of the ADC range (clip fraction, std, 1-99 % spread), theta effect, nonlinearity in x, and the
time of one ``measure`` call for B=256 with its ratio to the 20 ms budget and to the circuit baseline.
"""
from __future__ import annotations

import sys

import torch

from pat_runtime.sims import SIMS, make_sim
from pat_runtime.sims.quality import report

BUDGET_MS = 20.0


def main(kinds: list[str]) -> None:
    torch.set_num_threads(1)
    rows = {k: report(k) for k in kinds}
    base = rows["circuit"]["measure_ms_b256"] if "circuit" in rows else None
    print(f"{'sim':12s} {'dims':>10s} {'mismatch':>17s} {'clip':>6s} {'std':>5s} {'spread':>6s} "
          f"{'effects':>7s} {'theta':>5s} {'nonlin':>6s} {'ms/B256':>7s} {'/budget':>7s} {'/circuit':>8s}")
    for k, r in rows.items():
        s = make_sim(k).spec
        dims = f"{s.in_dim}/{s.param_dim}/{s.out_dim}"
        mm = f"{r['mismatch_mean']:.2f} [{r['mismatch_min']:.2f},{r['mismatch_max']:.2f}]"
        ratio = f"{r['measure_ms_b256'] / base:8.2f}" if base else f"{'-':>8s}"
        print(f"{k:12s} {dims:>10s} {mm:>17s} {r['clip_fraction']:6.3f} {r['std']:5.2f} {r['spread']:6.2f} "
              f"{r['effect_gap']:7.2f} {r['theta_effect']:5.2f} {r['linear_resid']:6.2f} {r['measure_ms_b256']:7.2f} "
              f"{r['measure_ms_b256'] / BUDGET_MS:7.2f} {ratio}")


if __name__ == "__main__":
    main(sys.argv[1:] or list(SIMS))
