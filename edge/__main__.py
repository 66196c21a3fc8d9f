"""``python -m pat_runtime.edge --device sim:plate --connect tcp://127.0.0.1:5555 --node-id node1`` == ``pat edge ...``."""
import sys

import typer

from pat_runtime.cli import app, configure_logging

if __name__ == "__main__":
    configure_logging()
    typer.main.get_command(app).commands["edge"].main(sys.argv[1:], prog_name="python -m pat_runtime.edge")
