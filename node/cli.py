"""`hark-node`: the node agent's command line."""

from __future__ import annotations

import argparse
import sys

from hub import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hark-node", description="The hark node agent (configured by HARK_* variables).")
    parser.add_argument("--version", action="version", version=f"hark-node {__version__}")
    parser.parse_args(argv)
    print("hark-node: the node agent is not in this release yet; only the hub runs.", file=sys.stderr)
    return 2
