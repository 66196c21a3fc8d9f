#!/usr/bin/env python3
"""Check the import contracts of pyproject.toml ([tool.importlinter], layers and cycles; docs/architecture.md).

    python .ci/lint_imports.py          # exit status 0 when every contract is kept

import-linter (grimp) finds a package's modules by walking its folder, but ``pat_runtime`` spans four folders
(pyproject ``package-dir``: runtime/, devices/, edge/, sims/). So the package is laid out first, as a wheel
would install it, in a temporary folder (the .py files only, by the ``package-dir`` and ``packages`` of
pyproject.toml), and checked there.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lay_out(dest: Path, root: Path = ROOT) -> Path:
    """Copy every package's .py files to ``dest/<package path>``; return ``dest``."""
    cfg = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs: dict[str, str] = cfg["package-dir"]
    for pkg in cfg["packages"]:
        base = max((k for k in dirs if pkg == k or pkg.startswith(k + ".")), key=len)
        src = root / dirs[base] / Path(*pkg[len(base):].lstrip(".").split(".")) if pkg != base else root / dirs[base]
        out = dest / Path(*pkg.split("."))
        out.mkdir(parents=True, exist_ok=True)
        for f in src.glob("*.py"):
            shutil.copy2(f, out / f.name)
    return dest


def main() -> int:
    from importlinter.cli import lint_imports

    with tempfile.TemporaryDirectory(prefix="pat-lint-imports-") as tmp:
        lay_out(Path(tmp))
        sys.path.insert(0, tmp)
        for name in [m for m in sys.modules if m == "pat_runtime" or m.startswith("pat_runtime.")]:
            del sys.modules[name]   # find the laid-out copy, not an installed one
        return lint_imports(config_filename=str(ROOT / "pyproject.toml"), cache_dir=None, no_cache=True, no_logo=True)


if __name__ == "__main__":
    sys.exit(main())
