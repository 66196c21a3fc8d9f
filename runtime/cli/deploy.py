"""`pat deploy` (not implemented yet)."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the `deploy` command to `app`."""
