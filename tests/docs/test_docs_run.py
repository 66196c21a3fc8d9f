"""Every ```bash block of README.md and docs/*.md runs as written (``pytest -m docs``; see docs_run.py).

Not part of the default run (they train models, start brokers and edges: ~N minutes on 2 cores);
``.ci/run`` runs them after the suite. ``PAT_DOCS_LONG=1`` adds the benchmark-regeneration blocks.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from docs_run import DOCS, blocks, run_doc  # noqa: E402

RUNNABLE = [d for d in DOCS if blocks(d)]


def test_docs_have_runnable_blocks():
    names = {d.name for d in RUNNABLE}
    assert {"README.md", "artifacts.md", "devices.md", "fleet.md", "streaming.md"} <= names


@pytest.mark.docs
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("doc", RUNNABLE, ids=[d.name for d in RUNNABLE])
def test_doc_commands_run_as_written(doc):
    r = run_doc(doc, long=bool(os.environ.get("PAT_DOCS_LONG")))
    if r is None:
        pytest.skip(f"{doc.name}: only long blocks (PAT_DOCS_LONG=1 runs them)")
    assert r.returncode == 0, f"{doc.name}: exit {r.returncode}\n{r.stdout[-6000:]}"
    assert "Traceback (most recent call last)" not in r.stdout, r.stdout[-6000:]
