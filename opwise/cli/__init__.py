"""`opwise <command>`: a thin layer over the public API.

Each command lives in its own module with `register(subparsers)` that adds its parser and sets
`func`. Errors opwise raises on purpose print as one line on stderr with exit code 2; `--debug`
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from opwise.errors import OpwiseError

COMMANDS = ("trace", "explain")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opwise", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"opwise.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (OpwiseError, FileNotFoundError, ValueError) as error:
        if args.debug:
            traceback.print_exc()
        else:
            print(f"opwise {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
