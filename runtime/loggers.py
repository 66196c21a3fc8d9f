"""Per-epoch loggers beside ``metrics.jsonl``: TensorBoard event files (``torch.utils.tensorboard``).

``pat train`` writes ``RUN/tb/``; view with ``tensorboard --logdir runs``. The ``tensorboard`` package is
optional (``pip install 'pat-runtime[tensorboard]'``, included in ``[dev]``); without it a one-line
notice is printed and training goes on.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'pat-runtime[tensorboard]'"

#: metrics.jsonl key -> TensorBoard tag
TAGS = {"train_loss": "loss/train", "test_loss": "loss/test", "train_acc": "accuracy/train",
        "test_acc": "accuracy/test_physical", "twin_test_acc": "accuracy/test_twin_predicted",
        "val_acc": "accuracy/val", "val_loss": "loss/val",
        "samples_per_s": "speed/samples_per_s", "device_calls": "device/calls"}


class EpochLogger(Protocol):
    def log_epoch(self, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class TensorBoardLogger:
    """Scalars per epoch (step = epoch). ``first_epoch`` > 1 when resuming: later stale events are purged."""

    def __init__(self, log_dir: str | Path, first_epoch: int = 1, text: dict[str, str] | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        if first_epoch > 1 and self.log_dir.is_dir():
            _after_second_of(sorted(p.name for p in self.log_dir.glob("events.out.tfevents.*")))
        self.writer = SummaryWriter(str(self.log_dir), purge_step=first_epoch if first_epoch > 1 else None)
        for k, v in (text or {}).items():
            self.writer.add_text(k, v, global_step=first_epoch)

    def log_epoch(self, row: dict[str, Any]) -> None:
        step = int(row["epoch"])
        for key, tag in TAGS.items():
            v = row.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(tag, float(v), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def make_loggers(out: str | Path | None, tensorboard: bool = True, first_epoch: int = 1,
                 text: dict[str, str] | None = None, notice=print) -> list[EpochLogger]:
    """The loggers for a run folder (empty without ``out``)."""
    loggers: list[EpochLogger] = []
    if out is None or not tensorboard:
        return loggers
    if not tensorboard_available():
        notice(f"note: TensorBoard logging is off (the tensorboard package is not installed: {INSTALL_HINT})")
        return loggers
    loggers.append(TensorBoardLogger(Path(out) / "tb", first_epoch=first_epoch, text=text))
    return loggers



def _after_second_of(before: list[str]) -> None:
    """Return once the clock has passed the creation second of the run's earlier event files.

    TensorBoard reads a folder's event files in name order, and the purge of stale steps on resume only
    works when the resumed file comes last. Names are ``events.out.tfevents.SECONDS.HOST.PID.N`` with a
    per-process counter N, so a file created in the same second and process (the Python API, tests) can
    sort before an earlier one ("...10" < "...9"); a later second always sorts after (at most 1 s wait).
    """
    stamps = [int(n.split(".")[3]) for n in before if n.split(".")[3:4] and n.split(".")[3].isdigit()]
    if not stamps:
        return
    last = max(stamps)
    while int(time.time()) <= last:
        time.sleep(max(0.0, last + 1 - time.time()) + 0.01)
