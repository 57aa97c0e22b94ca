"""``python -m services.ca_sim serve|requests|approve ...``: the same as ``certfleet ca``."""

from __future__ import annotations

import argparse
import sys

from services.ca_sim.cli import add_arguments, main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="certfleet ca", description="the CA simulator")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
