"""Every `pat ...` command in README.md and docs/*.md parses as written: the sub-command and every option
exist, every value has the right type and range, and every sim:/visa: device URI is accepted by its factory.
(The flows themselves run in their own tests: deploy over ZeroMQ/MQTT, stream resume, VISA training.)"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from pat_runtime.devices.factory import make_device
from pat_runtime.cli import app

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def documented_commands() -> list[tuple[str, list[str]]]:
    found = []
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.S):
            text = block.replace("\\\n", " ")
            for line in text.splitlines():
                for part in line.split("&&"):
                    part = re.sub(r"\[[^\]]*\]", "", part)          # [--optional args] in usage lines
                    lex = shlex.shlex(part, posix=True, punctuation_chars=True)
                    lex.whitespace_split, lex.commenters = True, "#"
                    words = []
                    for w in lex:                                  # stop at `&`, `>`, `|`, `;`
                        if w and set(w) <= set("&|;<>()"):
                            break
                        words.append(w)
                    if words and words[0] in ("pat", ".venv/bin/pat"):
                        found.append((f"{doc.name}: {part.strip()}", words[1:]))
    return found


COMMANDS = documented_commands()


def test_the_docs_have_commands():
    assert len(COMMANDS) >= 25
    names = {w[0] for _, w in COMMANDS}
    assert {"train", "twin", "edge", "fleet", "stream", "deploy", "instruments"} <= names


@pytest.mark.parametrize("where,args", COMMANDS, ids=[c[0][:90] for c in COMMANDS])
def test_documented_command_parses(where, args):
    group = typer.main.get_command(app)
    ctx = group.make_context("pat", list(args), resilient_parsing=False) if args[0].startswith("-") else None
    if ctx is not None:
        return  # `pat --version` style: parsed above
    cmd = group.get_command(None, args[0])
    assert cmd is not None, f"{where}: no such command {args[0]!r}"
    if "--help" in args:
        return
    sub = cmd.make_context(args[0], list(args[1:]))       # raises on an unknown option or a bad value
    dev = sub.params.get("device")
    if isinstance(dev, str) and dev.startswith(("sim:", "visa:")):
        make_device(dev)                                    # the URI's options are valid (nothing connects)
