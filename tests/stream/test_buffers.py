"""Replay buffer bounds, sequence tracking, checkpoint atomicity and seekable sources."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pat_runtime.stream.checkpoint import CheckpointManager, rng_state, set_rng_state
from pat_runtime.stream.replay import ReplayBuffer
from pat_runtime.stream.sources import IteratorSource, Sample, SeqTracker, decode_sample, encode_sample, task_stream


def test_replay_is_a_bounded_fifo():
    buf = ReplayBuffer(10, in_dim=3, param_dim=2, out_dim=3)
    nbytes = buf.nbytes
    for i in range(7):  # 7 batches of 3 -> 21 triples through a 10-slot buffer
        x = np.full((3, 3), i, np.float32) + np.arange(3)[:, None] / 10
        buf.add(x, np.array([i, -i], np.float32), x * 2)
    assert len(buf) == 10 and buf.total == 21 and buf.nbytes == nbytes
    x, t, y = buf.arrays()
    # the newest 10 triples, oldest first: the last of batch 3, then batches 4..6
    assert np.allclose(x[:, 0], [3.2, 4.0, 4.1, 4.2, 5.0, 5.1, 5.2, 6.0, 6.1, 6.2])
    assert np.allclose(t[:, 0], x[:, 0].astype(int)) and np.allclose(y, 2 * x)
    rx, _, _ = buf.recent(3)
    assert np.allclose(rx[:, 0], [6.0, 6.1, 6.2])
    sx, st, sy = buf.sample(50, np.random.default_rng(0))
    assert sx.shape == (50, 3) and np.allclose(sy, 2 * sx)
    clone = ReplayBuffer(10, 3, 2, 3)
    clone.load_state_dict(buf.state_dict())
    assert all(np.array_equal(a, b) for a, b in zip(clone.arrays(), buf.arrays())) and clone.total == 21
    with pytest.raises(ValueError):
        buf.add(np.zeros((2, 3)), np.zeros((3, 2)), np.zeros((2, 3)))


def test_seq_tracker_exactly_once_and_bounded():
    tr = SeqTracker()
    assert [tr.accept(s) for s in [0, 1, 1, 3, 2, 0, 4]] == [True, True, False, True, True, False, True]
    assert tr.offset == 5 and not tr.ahead and tr.duplicates == 2
    tr2 = SeqTracker(max_ahead=3)
    for s in [0, 2, 3, 4, 5]:  # seq 1 never comes: given up once more than 3 are waiting
        tr2.accept(s)
    assert tr2.offset == 6 and tr2.gaps == 1
    tr3 = SeqTracker()
    tr3.load_state_dict(tr.state_dict())
    assert tr3.offset == 5 and not tr3.accept(4) and tr3.accept(5)


def test_checkpoints_are_atomic_rotated_and_skip_damaged(tmp_path):
    mgr = CheckpointManager(tmp_path, keep=2)
    rng = np.random.default_rng(5)
    for step in (10, 20, 30):
        mgr.save({"step": step, "arr": np.arange(step, dtype=np.float32), "rng": rng_state(rng)}, step)
    assert [p.name for p in mgr.paths()] == ["ckpt-0000000020.pt", "ckpt-0000000030.pt"]
    st = mgr.latest()
    assert st["step"] == 30 and torch.equal(st["arr"], torch.arange(30, dtype=torch.float32))
    expect = rng.random(3)
    rng2 = np.random.default_rng(99)
    set_rng_state(st["rng"], rng2)
    assert np.allclose(rng2.random(3), expect)
    mgr.paths()[-1].write_bytes(b"torn write")  # newest damaged -> fall back to the previous one
    assert mgr.latest()["step"] == 20
    assert CheckpointManager(tmp_path / "none").latest() is None


async def test_task_stream_is_seekable_and_deterministic():
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.arange(20) % 3
    gen = task_stream(x, y, batch_size=4, seed=1, limit=12)
    src = await IteratorSource(gen).start(0)
    full = [s async for s in src]
    assert [s.seq for s in full] == list(range(12))
    ep0 = np.concatenate([s.x[:, 0] for s in full[:5]])
    assert sorted(ep0 // 2) == list(range(20))  # one epoch = every sample once
    resumed = [s async for s in await IteratorSource(gen).start(7)]
    assert [s.seq for s in resumed] == list(range(7, 12))
    assert all(np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y) for a, b in zip(full[7:], resumed))
    # a non-seekable iterator of plain (x, y) pairs is replayed from the start and skipped ahead
    pairs = [(x[i], y[i]) for i in range(6)]
    src = await IteratorSource(lambda start: iter(pairs), seekable=False).start(4)
    got = [s async for s in src]
    assert [s.seq for s in got] == [4, 5] and got[0].x.shape == (1, 2) and got[0].y.tolist() == [y[4]]
    await src.close()


def test_sample_messages_round_trip_and_reject_garbage():
    s = decode_sample(encode_sample(7, np.ones((2, 3)), [1, 2]))
    assert s.seq == 7 and s.x.shape == (2, 3) and s.y.tolist() == [1, 2]
    j = decode_sample(b'{"seq": 3, "x": [0.5, 0.25], "y": 4}')
    assert j.seq == 3 and j.x.shape == (1, 2) and j.y.tolist() == [4]
    for bad in (b"\x00\x01", b'{"x": [1]}', b'{"seq": 1, "x": [1, 2], "y": [1, 2]}', b'{"seq": 1, "x": [NaN], "y": 1}'):
        with pytest.raises(ValueError):
            decode_sample(bad)
    assert isinstance(Sample.make(0, [1.0], 0), Sample)
