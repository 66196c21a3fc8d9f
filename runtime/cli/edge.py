"""`pat edge` (not implemented yet)."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the `edge` command to `app`."""
