"""``python -m services.ca_sim serve|requests|approve ...``: the same as ``certfleet ca``, with
the same error lines and exit statuses."""

from __future__ import annotations

import argparse
import sys

from services.ca_sim.cli import add_arguments, main
from shared.failures import run

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="certfleet ca", description="the CA simulator")
    add_arguments(parser)
    sys.exit(run(main, parser.parse_args()))
