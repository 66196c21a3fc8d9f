"""Matplotlib (Agg) figures: training curves of one run and the method comparison of ``pat results``."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(history: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Train loss (left) and train / physical test / twin-predicted test accuracy (right) per epoch."""
    path = Path(path)
    ep = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax1.plot(ep, [h["train_loss"] for h in history], "o-", ms=3, label="train loss")
    ax1.plot(ep, [h["test_loss"] for h in history], "s--", ms=3, label="test loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy")
    ax1.legend()
    ax2.plot(ep, [h["train_acc"] for h in history], "o-", ms=3, label="train acc")
    ax2.plot(ep, [h["test_acc"] for h in history], "s-", ms=3, label="test acc (physical)")
    if any(h.get("twin_test_acc") is not None for h in history):
        ax2.plot(ep, [h.get("twin_test_acc") for h in history], "^:", ms=3, label="test acc (twin-predicted)")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    ax2.set_ylim(0, 1)
    ax2.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
