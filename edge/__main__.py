"""``python -m pat_runtime.edge --device sim:plate --connect tcp://127.0.0.1:5555 --node-id node1`` == ``pat edge ...``."""
import sys

from pat_runtime.cli import app

if __name__ == "__main__":
    app(["edge", *sys.argv[1:]], prog_name="python -m")
