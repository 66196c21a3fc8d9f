"""The ``pat`` command line. Each sub-command lives in its own module and registers itself on ``app``."""
from __future__ import annotations

import importlib
import logging

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="pat-runtime: physics-aware training of physical neural networks.")

#: modules that define sub-commands (each has ``register(app)``)
COMMAND_MODULES = ["train", "twin", "results", "edge", "fleet", "stream", "deploy", "instruments"]


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging")):
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}").register(app)


def main() -> None:
    app()
