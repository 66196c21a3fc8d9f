"""Hostile artifacts against an edge node's deploy path, before/after: outcome, time, memory, event-loop stall.

Each attack (:mod:`pat_runtime.testing.artifact_attacks`: one defect, checksums recomputed, signed by a key the
node trusts -- the worst case) is deployed in a fresh process to a :class:`pat_runtime.edge.deployed.Deployment` that
already serves version 1, exactly as a DEPLOY request would be handled. Measured per attack::

    outcome     the ArtifactError code, ACCEPTED, or the exception that escaped (a crash of the handler)
    seconds     wall time of the install attempt
    +MiB        peak resident memory above the process's level before the attempt
    stall ms    the longest gap between ticks of a 20 ms heartbeat-like task on the node's event loop
    serving     the model version the node serves afterwards

    python bench/artifact_attacks.py                        # this tree
    python bench/artifact_attacks.py --code /path/to/old    # another checkout (e.g. `git archive` of main)

Prints one row per attack; with two ``--code`` trees, the rows are side by side (run one after the other).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r'''
import asyncio, json, resource, sys, time
from pathlib import Path
blob = Path(sys.argv[1]).read_bytes(); v1 = Path(sys.argv[2]).read_bytes(); work = Path(sys.argv[3])
from pat_runtime.edge.deployed import Deployment
from pat_runtime.edge.service import NodeService
from pat_runtime.testing import sim_device

def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

async def main():
    dev = await sim_device("circuit", unit=2, seed=5, noise=0.0)
    dep = Deployment(work / "dep")
    await dep(NodeService(dev, "node1"))
    await dep.install(v1)
    gaps = [0.0]
    stop = False
    async def ticker():
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0.02)
            now = time.perf_counter()
            gaps.append(now - last - 0.02)
            last = now
    t = asyncio.create_task(ticker())
    await asyncio.sleep(0.1)
    base = rss_mib()
    t0 = time.perf_counter()
    try:
        await dep.install(blob)
        outcome = "ACCEPTED"
    except Exception as e:
        code = getattr(e, "code", None)
        outcome = code if code and type(e).__name__ == "ArtifactError" else f"{type(e).__name__} (escaped)"
    secs = time.perf_counter() - t0
    await asyncio.sleep(0.05)
    stop = True
    await t
    print(json.dumps({"outcome": outcome, "seconds": secs, "mib": rss_mib() - base,
                      "stall_ms": max(gaps) * 1000, "serving": dep.current.artifact.model_version if dep.current else None}))

asyncio.run(main())
'''


def build(workdir: Path, bomb_mib: int) -> tuple[Path, dict[str, tuple[Path, str]]]:
    from pat_runtime.signing import generate_key
    from pat_runtime.testing import sim_device
    from pat_runtime.testing.artifact_attacks import attacks
    from pat_runtime.testing.deploy import pnn_artifact

    home = workdir / "pat_home"
    _, _, key = generate_key(home)
    os.environ["PAT_HOME"] = str(home)
    dev = asyncio.run(sim_device("circuit", unit=2, seed=5, noise=0.0))
    _, v1 = pnn_artifact(dev, version="1", seed=1, sign=key)
    _, plain = pnn_artifact(dev, version="2", seed=2, sign=False)
    _, other = pnn_artifact(dev, version="2", seed=2, sign=generate_key(workdir / "stranger", trust=False)[2])
    v1_path = workdir / "v1.pnn"
    v1_path.write_bytes(v1)
    cases = {"unsigned v2": (plain, "unsigned"), "v2 signed by an untrusted key": (other, "untrusted_key")}
    cases.update(attacks(plain, key=key, bomb_bytes=bomb_mib * 2**20))
    out = {}
    for i, (name, (blob, code)) in enumerate(cases.items()):
        p = workdir / f"attack{i}.pnn"
        p.write_bytes(blob)
        out[name] = (p, code)
    return v1_path, out


def run_one(code_root: Path, blob: Path, v1: Path, workdir: Path, timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code_root), "OMP_NUM_THREADS": "1"}
    work = Path(tempfile.mkdtemp(dir=workdir))
    try:
        r = subprocess.run([sys.executable, "-c", CHILD, str(blob), str(v1), str(work)], env=env, cwd=code_root,
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"outcome": f"no verdict in {timeout:.0f} s", "seconds": timeout, "mib": float("nan"),
                "stall_ms": timeout * 1000, "serving": "?"}
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        err = (r.stderr.strip().splitlines() or ["?"])[-1]
        return {"outcome": f"process died: {err[:60]}", "seconds": float("nan"), "mib": float("nan"),
                "stall_ms": float("nan"), "serving": "-"}
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--code", action="append", type=Path, help="code tree(s) to test (default: this one)")
    ap.add_argument("--bomb-mib", type=int, default=250, help="decompressed size of the deflate bomb")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    trees = args.code or [ROOT]
    with tempfile.TemporaryDirectory() as tmp:
        v1, cases = build(Path(tmp), args.bomb_mib)
        results = {name: [run_one(t.resolve(), p, v1, Path(tmp), args.timeout) for t in trees]
                   for name, (p, _) in cases.items()}
    head = f"{'attack':36s}" + "".join(f" | {t.resolve().name[:28]:28s} {'s':>6s} {'+MiB':>6s} {'stall ms':>8s} serves"
                                       for t in trees)
    print(head)
    print("-" * len(head))
    for name, rows in results.items():
        print(f"{name[:36]:36s}" + "".join(
            f" | {r['outcome'][:28]:28s} {r['seconds']:6.2f} {r['mib']:6.0f} {r['stall_ms']:8.0f} {str(r['serving']):>6s}"
            for r in rows))
    print(f"\nexpected codes: " + ", ".join(f"{n}: {c}" for n, (_, c) in cases.items()))


if __name__ == "__main__":
    main()
