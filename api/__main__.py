"""``python -m api [--port N ...]``: ``traffic serve`` without loading the other sub-commands.

``traffic`` imports every sub-command module (Apache Beam among them) to build
its parser, which costs about 150 MB of resident memory the API never uses.
"""

from __future__ import annotations

import argparse
import sys

from api import cli
from schemas.exceptions import TrafficError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except (TrafficError, OSError) as exc:
        print(f"api: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
