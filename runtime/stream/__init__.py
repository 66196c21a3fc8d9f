"""Streaming online training: live labelled sources, bounded replay, twin refresh, checkpoints, resume.

See docs/streaming.md. Modules: :mod:`.sources`, :mod:`.replay`, :mod:`.refresh`, :mod:`.checkpoint`,
:mod:`.trainer`.
"""
from __future__ import annotations

from .checkpoint import CheckpointManager
from .replay import ReplayBuffer
from .sources import IteratorSource, MqttSource, Sample, SeqTracker, Source, task_stream

__all__ = ["CheckpointManager", "IteratorSource", "MqttSource", "ReplayBuffer", "Sample", "SeqTracker",
           "Source", "task_stream"]
