"""docs/devices.md's Python blocks run as written, in order, in one namespace (a new user's session)."""
from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "devices.md"


def test_devices_guide_python_blocks_run(capsys):
    from pat_runtime.devices.registry import unregister_scheme

    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 4
    ns: dict = {"__name__": "devices_guide"}
    try:
        for i, code in enumerate(blocks):
            exec(compile(code, f"{DOC.name}[python block {i}]", "exec"), ns)
    finally:
        unregister_scheme("toy")
    out = capsys.readouterr().out
    assert "refused: [toy] theta outside the safe range" in out
    assert "refused: [toy] cannot open: no answer on the serial line" in out
    assert "toy: unknown option 'gian'; valid options: gain, name, timeout" in out
    acc = float(re.search(r"test accuracy ([0-9.]+)", out).group(1))
    assert 0.0 <= acc <= 1.0
