"""Poison stream samples go to dead_letter.jsonl with the reason and are skipped; restarts never crash-loop."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import torch

from pat_runtime.pat import build_pnn
from pat_runtime.stream.checkpoint import CheckpointManager
from pat_runtime.stream.sources import IteratorSource, MqttSource, Sample, publish_samples
from pat_runtime.stream.trainer import StreamConfig, StreamTrainer
from pat_runtime.testing import sim_device
from pat_runtime.twins import make_twin, sim_options_of
from pat_runtime.testing import wait_until

torch.set_num_threads(1)
N_FEAT, N_CLS = 16, 4


def _good(seq, rng):
    return Sample(seq, rng.random((4, N_FEAT), dtype=np.float32), rng.integers(0, N_CLS, 4))


def _poison(seq, rng):
    """Each kind of poison, chosen by seq."""
    kind = seq % 4
    if kind == 0:
        return Sample(seq, rng.random((4, N_FEAT + 1), dtype=np.float32), rng.integers(0, N_CLS, 4)), "shape"
    if kind == 1:
        x = rng.random((4, N_FEAT), dtype=np.float32)
        x[1, 2] = np.nan
        return Sample(seq, x, rng.integers(0, N_CLS, 4)), "NaN"
    if kind == 2:
        return Sample(seq, rng.random((4, N_FEAT), dtype=np.float32), np.array([0, 1, N_CLS + 5, 2])), "classes"
    return Sample(seq, rng.random((4, N_FEAT), dtype=np.float32), rng.integers(0, N_CLS, 3)), "y has shape"


async def _trainer(source, ckpt, on_step=None):
    dev = await sim_device("plate", noise=0.0, unit=1, seed=3)
    twin = make_twin("greybox", dev.spec, sim_options=sim_options_of(dev))
    pnn = build_pnn(N_FEAT, N_CLS, twin, device=dev, layers=1, seed=0)
    cfg = StreamConfig(lr=0.01, checkpoint_every=5, replay_capacity=256, refresh=None)
    return StreamTrainer(pnn, twin, source, checkpoint_dir=ckpt, config=cfg, on_step=on_step, seed=1)


async def test_poison_samples_are_dead_lettered_and_skipped(tmp_path):
    rng = np.random.default_rng(0)
    poison_seqs = {3, 8, 13, 14}
    msgs, reasons = [], {}
    for seq in range(20):
        if seq in poison_seqs:
            s, why = _poison(seq, rng)
            reasons[seq] = why
        else:
            s = _good(seq, rng)
        msgs.append(s)
    tr = await _trainer(IteratorSource(lambda start: iter(msgs[start:])), tmp_path)
    summary = await tr.run()
    assert summary["offset"] == 20 and summary["dead_letters"] == 4 and summary["steps"] == 16
    recs = [json.loads(line) for line in (tmp_path / "dead_letter.jsonl").read_text().splitlines()]
    assert {r["seq"] for r in recs} == poison_seqs
    for r in recs:
        assert reasons[r["seq"]] in r["reason"], r
    assert sorted(CheckpointManager(tmp_path).latest()["seq_log"]) == sorted(set(range(20)) - poison_seqs)


@pytest.mark.mqtt
async def test_a_poison_sample_spooled_before_a_crash_does_not_crash_the_restart(tmp_path):
    from pat_runtime.testing.mosquitto import mosquitto_broker, require_mosquitto

    require_mosquitto()
    rng = np.random.default_rng(1)
    good = [_good(i, rng) for i in range(12)]
    wrong_width, _ = _poison(4, rng)  # seq 4: 17 features; it decodes fine, so it is spooled
    async with mosquitto_broker() as broker:
        import aiomqtt

        url = f"{broker.url}/lab/samples"
        spool = tmp_path / "ckpt"

        class Crash(RuntimeError):
            pass

        def crash_at(rec):
            if rec["seq"] == 6:
                raise Crash("simulated crash before the next checkpoint")

        src = MqttSource(url, spool, fsync=False)
        a = await _trainer(src, spool, on_step=crash_at)
        task = asyncio.create_task(a.run())
        await wait_until(lambda: src.connected, what="the trainer's source subscribed")
        await publish_samples(url, good[:4] + [wrong_width] + good[5:8])
        async with aiomqtt.Client("127.0.0.1", broker.port) as cl:  # undecodable payloads, one with a seq
            await cl.publish("lab/samples", b'{"seq": 8, "x": [[NaN]], "y": [0]}', qos=1)
            await cl.publish("lab/samples", b"\x00garbage without a seq", qos=1)
        with pytest.raises(Crash):
            await asyncio.wait_for(task, 30)
        # restart: the spool replays seq 4 (poison) before the crash point; it is dead-lettered again, no crash
        stop = asyncio.Event()
        src = MqttSource(url, spool, fsync=False)
        b = await _trainer(src, spool, on_step=lambda rec: stop.set() if rec["seq"] == 11 else None)
        task = asyncio.create_task(b.run(stop=stop))
        await wait_until(lambda: src.connected, what="the restarted trainer's source subscribed")
        await publish_samples(url, good[9:12])
        summary = await asyncio.wait_for(task, 30)
    assert summary["offset"] == 12
    seqs = sorted(CheckpointManager(spool).latest()["seq_log"])
    assert seqs == [0, 1, 2, 3, 5, 6, 7, 9, 10, 11]
    recs = [json.loads(line) for line in (spool / "dead_letter.jsonl").read_text().splitlines()]
    by_seq = {r["seq"]: r["reason"] for r in recs}
    assert "[B, 16]" in by_seq[4] and "NaN" in by_seq[8] and None in by_seq
