"""Continuous physics-aware training from a live stream of labelled samples, with bounded memory.

For each new message ``(seq, x, y)`` of the source (duplicates are skipped by seq, see
:class:`~pat_runtime.stream.sources.SeqTracker`), one *prequential* step::

    logits = await pnn.aforward(x)           physical forward on the device (PAT); measurements are observed
    record accuracy / loss of this batch     (test-then-train: the batch was not trained on yet)
    loss.backward(); optimizer.step()        twin-VJP gradients; θ projected back into its safe range
                                             (these three lines are :class:`pat_runtime.pat.PATStep`)
    every `eval_every` steps                 held-out accuracy on the device (optional)
    if the refresher says so                 refit the twin on the replay buffer (periodic or drift)
    every `checkpoint_every` steps           atomic checkpoint, then ``source.commit(offset)``

Poison samples (a payload that does not decode, the wrong feature count, NaN/inf inputs, labels outside the
model's classes) are written to ``dead_letter.jsonl`` in the checkpoint folder with the reason and skipped;
their seq counts as processed, so a restart never replays them into a crash (:mod:`.deadletter`).

With ``update_model=False`` the model only serves (forward, accuracy) -- the "frozen model" baseline; with
``refresh=None`` the twin never changes -- the "frozen twin" baseline.

Memory is bounded: the replay buffer has a fixed capacity, metric history and the committed-seq log are
bounded deques, the seq tracker bounds out-of-order seqs and the source's spool is truncated at commits.

Exactly-once across restarts: a checkpoint holds the model, optimizer, twin, replay buffer, refresher, seq
tracker (offset = next seq), RNG states and the log of seqs whose updates it contains. A new trainer on the
same directory resumes from the newest readable checkpoint and asks the source for ``seq >= offset``;
updates made after the last checkpoint were never persisted, so replaying those samples applies each
sample's update to the persisted model exactly once.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from pat_runtime.devices.errors import DeviceError
from pat_runtime.pat import PATStep

from .checkpoint import CheckpointManager, rng_state, set_rng_state
from .deadletter import FILENAME as DEAD_LETTER_FILE
from .deadletter import DeadLetter
from .refresh import RefreshConfig, TwinRefresher
from .replay import ReplayBuffer
from .sources import Sample, SeqTracker, Source

log = logging.getLogger(__name__)


@dataclass
class StreamConfig:
    lr: float = 0.01
    update_model: bool = True
    refresh: RefreshConfig | None = field(default_factory=RefreshConfig)   # None: frozen twin
    replay_capacity: int = 4096
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    eval_every: int = 0            # 0: no held-out evaluation
    history_len: int = 5000        # metric records kept (bounded)
    seq_log_len: int = 1_000_000   # committed seqs kept in checkpoints (bounded)
    grad_clip: float | None = 10.0


class StreamTrainer:
    """Trains ``pnn`` (a :class:`pat_runtime.pat.PNN` attached to its device and ``twin``) from ``source``."""

    def __init__(self, pnn: Any, twin: torch.nn.Module, source: Source, checkpoint_dir: str | Path | None = None,
                 config: StreamConfig | None = None, eval_data: tuple[np.ndarray, np.ndarray] | None = None,
                 on_step: Callable[[dict[str, Any]], None] | None = None, seed: int = 0,
                 dead_letter: DeadLetter | None = None):
        self.pnn, self.twin, self.source = pnn, twin, source
        self.dead_letter = dead_letter or DeadLetter(Path(checkpoint_dir) / DEAD_LETTER_FILE if checkpoint_dir
                                                     else None)
        self.dead_letters = 0  # poison samples skipped (persisted in checkpoints)
        self.cfg = config or StreamConfig()
        spec = pnn.spec
        self.replay = ReplayBuffer(self.cfg.replay_capacity, spec.in_dim, spec.param_dim, spec.out_dim)
        self.refresher = TwinRefresher(twin, self.replay, self.cfg.refresh) if self.cfg.refresh else None
        #: the one PAT step (:class:`pat_runtime.pat.PATStep`), gradients clipped to ``grad_clip``
        self.pat_step = PATStep(pnn, torch.optim.Adam(pnn.parameters(), lr=self.cfg.lr), grad_clip=self.cfg.grad_clip)
        self.opt = self.pat_step.opt
        self.ckpt = CheckpointManager(checkpoint_dir, self.cfg.keep_checkpoints) if checkpoint_dir else None
        self.tracker = SeqTracker()
        self.eval_data = eval_data
        self.on_step = on_step
        self.np_rng = np.random.default_rng(seed)
        self.step = 0
        self.samples = 0
        self.history: deque[dict[str, Any]] = deque(maxlen=self.cfg.history_len)
        self.evals: deque[dict[str, Any]] = deque(maxlen=self.cfg.history_len)
        self.seq_log: deque[int] = deque(maxlen=self.cfg.seq_log_len)
        self.resumed_from: int | None = None
        self._observing = True
        pnn.attach(twin=twin)
        pnn.add_observer(self._observe)

    # ----- measurements -> replay ----------------------------------------------------------------
    def _observe(self, name: str, x: np.ndarray, theta: np.ndarray, y: np.ndarray) -> None:
        if not self._observing:
            return
        if self.refresher is not None:
            self.refresher.observe(x, theta, y)
        self.replay.add(x, theta, y)

    # ----- checkpoint / resume ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step, "samples": self.samples, "offset": self.tracker.offset,
            "tracker": self.tracker.state_dict(), "model": self.pnn.state_dict(), "optimizer": self.opt.state_dict(),
            "twin": self.twin.state_dict(), "replay": self.replay.state_dict(),
            "refresh": self.refresher.state_dict() if self.refresher else None,
            "rng": rng_state(self.np_rng), "history": list(self.history), "evals": list(self.evals),
            "seq_log": list(self.seq_log), "config": _plain(asdict(self.cfg)), "dead_letters": self.dead_letters,
        }

    def load_state_dict(self, st: dict[str, Any]) -> None:
        try:
            self.pnn.load_state_dict(st["model"])
            self.twin.load_state_dict(st["twin"])
        except RuntimeError as e:
            raise ValueError(f"checkpoint does not fit this model/twin (different architecture?): {e}") from None
        self.opt.load_state_dict(st["optimizer"])
        self.replay.load_state_dict(st["replay"])
        if self.refresher is not None and st.get("refresh"):
            self.refresher.load_state_dict(st["refresh"])
        self.tracker.load_state_dict(st["tracker"])
        set_rng_state(st["rng"], self.np_rng)
        self.step, self.samples = int(st["step"]), int(st["samples"])
        self.dead_letters = int(st.get("dead_letters", 0))
        self.history.clear()
        self.history.extend(_py(st.get("history", [])))
        self.evals.clear()
        self.evals.extend(_py(st.get("evals", [])))
        self.seq_log.clear()
        self.seq_log.extend(int(s) for s in st.get("seq_log", []))

    def resume(self) -> bool:
        """Load the newest checkpoint if there is one; True when resumed."""
        if self.ckpt is None:
            return False
        st = self.ckpt.latest()
        if st is None:
            return False
        self.load_state_dict(st)
        self.resumed_from = self.step
        log.info("resumed at step %d, offset %d", self.step, self.tracker.offset)
        return True

    async def checkpoint(self) -> None:
        if self.ckpt is None:
            return
        st = self.state_dict()
        await asyncio.to_thread(self.ckpt.save, st, self.step)
        await self.source.commit(self.tracker.offset)

    # ----- poison samples ------------------------------------------------------------------------
    def poison_reason(self, s: Sample) -> str | None:
        """Why ``s`` cannot be trained on (None: it can)."""
        if s.poison:
            return s.poison
        n_feat, n_cls = self.pnn.config.get("n_features"), self.pnn.config.get("n_classes")
        if s.x.ndim != 2 or (n_feat is not None and s.x.shape[1] != n_feat):
            return f"x has shape {list(s.x.shape)}, the model takes [B, {n_feat}]"
        if not np.isfinite(s.x).all():
            return "x contains NaN or inf"
        if s.y.shape != (s.x.shape[0],):
            return f"y has shape {list(s.y.shape)}, expected [{s.x.shape[0]}]"
        if s.y.size and (s.y.min() < 0 or (n_cls is not None and s.y.max() >= n_cls)):
            return f"labels in [{int(s.y.min())}, {int(s.y.max())}] are outside the model's classes [0, {n_cls})"
        return None

    def _dead(self, s: Sample, reason: str) -> None:
        self.dead_letters += 1
        self.dead_letter.add(s.seq, reason, x=s.x, y=s.y, source=type(self.source).__name__)

    # ----- training ------------------------------------------------------------------------------
    async def train_step(self, s: Sample) -> dict[str, Any]:
        x, y = torch.from_numpy(s.x), torch.from_numpy(s.y)
        if self.cfg.update_model:
            loss, logits = await self.pat_step(x, y)
        else:
            with torch.no_grad():
                logits = await self.pnn.aforward(x)
                loss = float(F.cross_entropy(logits, y))
        acc = float((logits.argmax(1) == y).float().mean())
        return {"seq": s.seq, "step": self.step + 1, "loss": loss, "acc": acc, "n": int(len(y)),
                "twin_err": self.refresher.err_ema if self.refresher else None, "t": time.time()}

    @torch.no_grad()
    async def evaluate(self) -> dict[str, Any]:
        """Held-out accuracy on the device (the measurements also feed the replay buffer)."""
        x, y = self.eval_data
        self.pnn.eval()
        logits = await self.pnn.aforward(torch.from_numpy(np.asarray(x, np.float32)))
        acc = float((logits.argmax(1).numpy() == np.asarray(y)).mean())
        return {"step": self.step, "samples": self.samples, "acc": acc}

    async def run(self, max_steps: int | None = None, stop: asyncio.Event | None = None,
                  resume: bool = True) -> dict[str, Any]:
        """Consume the source until it ends, ``max_steps`` new steps were made, or ``stop`` is set.

        A clean end writes a final checkpoint. Cancellation (a crash, from the checkpoint's view) does not.
        """
        if resume:
            self.resume()
        await self.source.start(self.tracker.offset)
        start_step, t0 = self.step, time.perf_counter()
        if self.eval_data is not None and self.cfg.eval_every and not self.evals:
            self.evals.append(await self.evaluate())
        try:
            it = self.source.__aiter__()
            while max_steps is None or self.step - start_step < max_steps:
                if stop is not None and stop.is_set():
                    break
                nxt = asyncio.ensure_future(it.__anext__())
                if stop is not None:
                    waiter = asyncio.ensure_future(stop.wait())
                    done, _ = await asyncio.wait({nxt, waiter}, return_when=asyncio.FIRST_COMPLETED)
                    if nxt not in done:
                        nxt.cancel()
                        await asyncio.gather(nxt, return_exceptions=True)
                        waiter.cancel()
                        break
                    waiter.cancel()
                    await asyncio.gather(waiter, return_exceptions=True)
                try:
                    s = await nxt
                except StopAsyncIteration:
                    break
                if not self.tracker.accept(s.seq):
                    continue
                if (reason := self.poison_reason(s)) is not None:
                    self._dead(s, reason)
                    continue
                try:
                    rec = await self.train_step(s)
                except DeviceError:
                    raise  # the device, not the sample: stop (a restart resumes from the checkpoint)
                except (ValueError, IndexError, RuntimeError) as e:
                    self._dead(s, f"training step failed: {type(e).__name__}: {e}")
                    continue
                self.step += 1
                self.samples += rec["n"]
                self.seq_log.append(s.seq)
                self.history.append(rec)
                if self.refresher is not None and (reason := self.refresher.due(self.step)):
                    rec["refit"] = await self.refresher.arefit(self.step, reason)
                if self.eval_data is not None and self.cfg.eval_every and self.step % self.cfg.eval_every == 0:
                    self.evals.append(await self.evaluate())
                if self.on_step is not None:
                    self.on_step(rec)
                if self.ckpt is not None and self.step % self.cfg.checkpoint_every == 0:
                    await self.checkpoint()
            await self.checkpoint()
        finally:
            await self.source.close()
        return self.summary(time.perf_counter() - t0, self.step - start_step)

    def summary(self, seconds: float = 0.0, steps: int = 0) -> dict[str, Any]:
        recent = list(self.history)[-50:]
        return {
            "steps": self.step, "new_steps": steps, "samples": self.samples, "offset": self.tracker.offset,
            "duplicates": self.tracker.duplicates, "gaps": self.tracker.gaps, "seconds": seconds,
            "recent_acc": float(np.mean([r["acc"] for r in recent])) if recent else None,
            "eval_acc": self.evals[-1]["acc"] if self.evals else None,
            "refits": self.refresher.refits if self.refresher else 0,
            "drift_events": self.refresher.drift_events if self.refresher else 0,
            "replay": len(self.replay), "resumed_from": self.resumed_from, "dead_letters": self.dead_letters,
        }

    def close(self) -> None:
        self.pnn.remove_observer(self._observe)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _py(records: list[Any]) -> list[Any]:
    """Checkpointed records come back with tensors in place of numbers only if they were tensors; keep as is."""
    return [dict(r) if isinstance(r, dict) else r for r in records]
