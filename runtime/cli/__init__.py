"""The ``pat`` command line. Each sub-command lives in its own module and registers itself on ``app``."""
from __future__ import annotations

import importlib
import logging
import sys

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="pat-runtime: physics-aware training of physical neural networks.")

#: modules that define sub-commands (each has ``register(app)``)
COMMAND_MODULES = ["train", "twin", "results", "edge", "fleet", "stream", "deploy", "instruments", "security",
                   "keys", "fleet_train"]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("pat-runtime")
        except PackageNotFoundError:
            v = "unknown (not installed)"
        typer.echo(f"pat-runtime {v}")
        raise typer.Exit()


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging"),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")):
    configure_logging(verbose)


def configure_logging(verbose: bool = False) -> None:
    """The log format and level of every ``pat`` command (``-v``: debug)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}").register(app)


def main() -> None:
    try:
        app()
    except Exception as e:  # the last line of defence: one line, not a traceback (pat -v shows it)
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        print(f"error: {type(e).__name__}: {e}  (run with pat -v ... for the traceback)", file=sys.stderr)
        sys.exit(1)


__all__ = ["COMMAND_MODULES", "app", "configure_logging", "main"]
