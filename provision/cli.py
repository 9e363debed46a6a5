"""`hark-provision`: the installer's command line."""

from __future__ import annotations

import argparse
import sys

from hub import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hark-provision", description="Find, enroll and secure hark nodes on the LAN.")
    parser.add_argument("--version", action="version", version=f"hark-provision {__version__}")
    parser.parse_args(argv)
    print("hark-provision: provisioning is not in this release yet.", file=sys.stderr)
    return 2
