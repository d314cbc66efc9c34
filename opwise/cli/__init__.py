"""`opwise <command>`: a thin layer over the public API.

Each command lives in its own module with `register(subparsers)` that adds its parser and sets
`func`. Errors opwise raises on purpose (bad model specs, inputs, files) print as one line on stderr
with exit code 2; anything else as one line with exit code 1; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from opwise.errors import OpwiseError

COMMANDS = ("trace", "explain", "verify", "certify", "report")

# Failures caused by what the user asked for (exit code 2); anything else is opwise's fault (exit code 1).
USER_ERRORS = (OpwiseError, FileNotFoundError, ValueError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opwise", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"opwise.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 2 a user error, 1 an unexpected one).

    >>> main(["trace", "builtin:nonexistent"])
    2
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # noqa: BLE001 - every failure becomes one line unless --debug
        if args.debug:
            traceback.print_exc()
        elif isinstance(error, USER_ERRORS):
            print(f"opwise {args.command}: error: {_one_line(error)}", file=sys.stderr)
        else:
            print(
                f"opwise {args.command}: unexpected {type(error).__name__}: {_one_line(error)} "
                "(rerun with --debug for the traceback and please report it)",
                file=sys.stderr,
            )
        return 2 if isinstance(error, USER_ERRORS) else 1


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__

if __name__ == "__main__":
    sys.exit(main())
