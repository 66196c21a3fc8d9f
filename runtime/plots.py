"""Matplotlib (Agg) figures: training curves of one run; the method comparison, accuracy against depth and
PAT − in-silico gap against depth of ``pat results``."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402



def _save(fig, path: Path) -> Path:
    """Lay out, write (creating the folder) and close a figure."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

def _nan(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def plot_curves(history: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Train/validation/test loss (left) and accuracies (right, physical; twin-predicted dotted) per epoch."""
    path = Path(path)
    ep = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax1.plot(ep, [h["train_loss"] for h in history], "o-", ms=3, label="train loss")
    if any(h.get("val_loss") is not None for h in history):
        ax1.plot(ep, [_nan(h.get("val_loss")) for h in history], "d--", ms=3, label="validation loss")
    if any(h.get("test_loss") is not None for h in history):
        ax1.plot(ep, [_nan(h.get("test_loss")) for h in history], "s--", ms=3, label="test loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy")
    ax1.legend()
    ax2.plot(ep, [h["train_acc"] for h in history], "o-", ms=3, label="train acc")
    if any(h.get("val_acc") is not None for h in history):
        ax2.plot(ep, [_nan(h.get("val_acc")) for h in history], "d-", ms=3, label="validation acc (physical)")
    if any(h.get("test_acc") is not None for h in history):
        ax2.plot(ep, [_nan(h.get("test_acc")) for h in history], "s-", ms=3, label="test acc (physical)")
    if any(h.get("twin_test_acc") is not None for h in history):
        ax2.plot(ep, [_nan(h.get("twin_test_acc")) for h in history], "^:", ms=3, label="test acc (twin-predicted)")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    ax2.set_ylim(0, 1)
    ax2.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_comparison(table: Mapping[str, Mapping[str, float]], path: str | Path, title: str = "",
                    errors: Mapping[str, Mapping[str, float]] | None = None) -> Path:
    """Grouped bars: ``table[group][method] = accuracy`` (e.g. group = device)."""
    path = Path(path)
    groups = list(table)
    methods: list[str] = []
    for g in groups:
        methods += [m for m in table[g] if m not in methods]
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups) + 2) + 1.6, 3.6))
    for i, m in enumerate(methods):
        xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(groups))]
        vals = [table[g].get(m, float("nan")) for g in groups]
        err = [errors[g].get(m, 0.0) for g in groups] if errors else None
        ax.bar(xs, vals, width, label=m, yerr=err, capsize=2)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("test accuracy (physical)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_depth(table: Mapping[str, Mapping[str, Sequence[tuple[int, float, float, float]]]], path: str | Path,
               title: str = "") -> Path:
    """One panel per device: accuracy against physical layers per method, with interval bars.

    ``table[device][method] = [(depth, mean, lo, hi), ...]``.
    """
    path = Path(path)
    devs = list(table)
    fig, axes = plt.subplots(1, max(len(devs), 1), figsize=(4.2 * max(len(devs), 1), 3.4), squeeze=False)
    for ax, d in zip(axes[0], devs):
        for i, (m, pts) in enumerate(table[d].items()):
            pts = sorted(pts)
            xs = [p[0] + (i - 1.5) * 0.06 for p in pts]
            ys = [p[1] for p in pts]
            err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
            ax.errorbar(xs, ys, yerr=err, marker="o", ms=4, capsize=3, label=m)
        ax.set_title(d)
        ax.set_xlabel("physical layers")
        ax.set_xticks(sorted({p[0] for pts in table[d].values() for p in pts}))
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (physical)")
    axes[0][-1].legend(fontsize=8, loc="lower left")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_gap(table: Mapping[str, Sequence[tuple[int, float, float, float]]], path: str | Path,
             title: str = "", target: float | None = None) -> Path:
    """PAT − in-silico accuracy gap (points) against physical layers, one line per device, interval bars.

    ``table[device] = [(depth, mean, lo, hi), ...]`` in accuracy units (plotted ×100).
    """
    path = Path(path)
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for i, (d, pts) in enumerate(table.items()):
        pts = sorted(pts)
        xs = [p[0] + (i - 0.5) * 0.08 for p in pts]
        ys = [100 * p[1] for p in pts]
        err = [[100 * (p[1] - p[2]) for p in pts], [100 * (p[3] - p[1]) for p in pts]]
        ax.errorbar(xs, ys, yerr=err, marker="o", ms=5, capsize=3, label=d)
    ax.axhline(0, color="k", lw=0.8)
    if target is not None:
        ax.axhline(target, color="gray", ls="--", lw=0.8, label=f"target +{target:g}")
    ax.set_xlabel("physical layers")
    ax.set_ylabel("PAT − in-silico (accuracy points)")
    depths = sorted({p[0] for pts in table.values() for p in pts})
    if depths:
        ax.set_xticks(depths)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)
