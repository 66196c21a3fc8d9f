"""Run the ```bash blocks of README.md and docs/*.md as written, the way a reader pastes them into a terminal.

Conventions the docs follow (README "Documentation commands"):

* a ```bash block is runnable as written from the repository root with the venv's ``bin`` first on PATH
  (``pat``, ``python`` and ``.venv/bin/pat`` all work); syntax summaries with placeholders are ```text;
* a long-running server (``pat edge``, ``pat instruments``, ``mosquitto``, ``tensorboard``) ends in ``&``;
* ``<!-- docs-run: skip REASON -->`` on the line before a block skips it (the test command itself), and
  ``<!-- docs-run: long -->`` marks a block that takes many minutes (benchmark regeneration): it runs only
  with ``PAT_DOCS_LONG=1``.

Each document runs as one bash script (``set -e``; the line that failed is reported) in its own process
group, so background servers are stopped when the document ends. ``PAT_HOME`` points at a scratch folder
(signing keys), and files the document creates in the checkout are removed afterwards.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"(?:^|\n)(?P<pre>[^\n]*)\n(?P<indent>[ \t]*)```bash\n(?P<body>.*?)\n[ \t]*```", re.S)


@dataclass
class Block:
    doc: str
    line: int
    body: str
    long: bool


def blocks(doc: Path) -> list[Block]:
    """The runnable ```bash blocks of ``doc`` in order (skipped ones left out)."""
    text = doc.read_text()
    out = []
    for m in _BLOCK.finditer(text):
        pre = m.group("pre")
        if "docs-run: skip" in pre:
            continue
        indent = m.group("indent")
        body = "\n".join(ln[len(indent):] if ln.startswith(indent) else ln for ln in m.group("body").splitlines())
        out.append(Block(doc.name, text[:m.start("body")].count("\n") + 1, body, "docs-run: long" in pre))
    return out


def script(doc: Path, long: bool = False) -> str | None:
    """One bash script for ``doc``; ``None`` when it has nothing to run."""
    parts = []
    for b in blocks(doc):
        if b.long and not long:
            continue
        parts.append(f"# --- {b.doc}:{b.line}\n{b.body}\n")
    if not parts:
        return None
    head = ("set -eE\n"
            "trap 'echo \"docs-run: FAILED ($?) at: $BASH_COMMAND\" >&2' ERR\n")
    return head + "\n".join(parts)


def _entries() -> set[Path]:
    """Top-level entries of the checkout and of its runs/ folder (what a document's commands create)."""
    found = set(ROOT.iterdir())
    if (ROOT / "runs").is_dir():
        found |= set((ROOT / "runs").iterdir())
    return found


def run_doc(doc: Path, long: bool = False, timeout: float = 3600) -> subprocess.CompletedProcess | None:
    """Run ``doc``'s commands; returns the finished bash (``returncode``, combined ``stdout``)."""
    src = script(doc, long)
    if src is None:
        return None
    before = _entries()
    scratch = Path(tempfile.mkdtemp(prefix="pat-docs-"))
    env = {**os.environ, "PAT_HOME": str(scratch / "pat-home"), "PYTHONUNBUFFERED": "1",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", ""),
                                     "/usr/local/sbin", "/usr/sbin", "/sbin"])}  # apt's mosquitto
    env.pop("VIRTUAL_ENV", None)
    log = scratch / "output.log"
    with open(log, "w") as fh:   # a file, not a pipe: background servers keep their stdout open
        proc = subprocess.Popen(["bash", "-c", src], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    try:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            with open(log, "a") as fh:
                fh.write(f"\ndocs-run: TIMEOUT after {timeout:g} s\n")
    finally:
        _stop_group(proc.pid)                       # servers first, so their last lines are in the log
        out = log.read_text(errors="replace")
        for path in sorted(_entries() - before, key=lambda p: len(p.parts), reverse=True):
            _remove(path)
        shutil.rmtree(scratch, ignore_errors=True)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out)


def _stop_group(pgid: int) -> None:
    """Stop the document's background servers: SIGTERM (background jobs of a script ignore SIGINT), then
    SIGKILL after a grace period."""
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + grace
        while time.monotonic() < end:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


if __name__ == "__main__":  # python tests/docs/docs_run.py [DOC ...]: run and show the output
    names = sys.argv[1:]
    for d in DOCS:
        if names and d.name not in names:
            continue
        r = run_doc(d, long=bool(os.environ.get("PAT_DOCS_LONG")))
        if r is not None:
            print(f"===== {d.name}: rc {r.returncode}\n{r.stdout[-4000:]}")
