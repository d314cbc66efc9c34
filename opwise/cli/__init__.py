"""`opwise <command>`: a thin layer over the public API.

Each command lives in its own module with `register(subparsers)` that adds its parser and sets
`func`. Errors opwise raises on purpose (bad model specs, inputs, files) and bad arguments print as one
line on stderr with exit code 2; anything else as one line with exit code 1; `--debug` shows the
traceback instead. Warnings opwise gives while a command runs print as one `warning:` line each (no
source line); `--quiet` silences the command's own printing, not the warnings (they say a result may be off).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import sys
import traceback
import warnings
from pathlib import Path

from opwise.cli.options import OneLineParser
from opwise.errors import OpwiseError

COMMANDS = ("trace", "explain", "verify", "certify", "report")

# Failures caused by what the user asked for (exit code 2); anything else is opwise's fault (exit code 1).
USER_ERRORS = (OpwiseError, OSError, ValueError)
OPWISE_FOLDER = str(Path(__file__).resolve().parents[1])


def build_parser() -> argparse.ArgumentParser:
    from opwise import __version__

    parser = OneLineParser(prog="opwise", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"opwise {__version__}")
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
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version, or a bad argument (already printed as one line)
        return done.code if isinstance(done.code, int) else 2
    try:
        with _warnings_as_lines(args), _quiet(args):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # noqa: BLE001 - every failure becomes one line unless --debug
        if args.debug:
            traceback.print_exc()
        elif _out_of_memory(error):
            print(f"opwise {args.command}: error: not enough memory ({_one_line(error)[:200]}); give smaller inputs "
                  "(--input-shape, fewer --samples) or run on a machine with more memory", file=sys.stderr)
            return 2
        elif isinstance(error, RecursionError):
            print(f"opwise {args.command}: error: the input is nested too deeply for Python's recursion limit "
                  f"({sys.getrecursionlimit()}), e.g. a VNN-LIB formula or a model with thousands of nested calls; "
                  "flatten it", file=sys.stderr)
            return 2
        elif isinstance(error, USER_ERRORS):
            print(f"opwise {args.command}: error: {_one_line(error)}", file=sys.stderr)
        else:
            print(
                f"opwise {args.command}: unexpected {type(error).__name__}: {_one_line(error)} "
                "(rerun with --debug for the traceback and please report it)",
                file=sys.stderr,
            )
        return 2 if isinstance(error, USER_ERRORS) else 1


def _out_of_memory(error: BaseException) -> bool:
    """An allocation failed: too large a request for this machine (e.g. an ONNX file's huge declared input),
    which the user can change, not a bug."""
    text = str(error)
    return isinstance(error, MemoryError) or (
        isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())
    )


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


@contextlib.contextmanager
def _quiet(args: argparse.Namespace):
    """With `--quiet`, the command's printing to stdout goes nowhere (warnings and errors still reach stderr)."""
    if getattr(args, "quiet", False):
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    else:
        yield


@contextlib.contextmanager
def _warnings_as_lines(args: argparse.Namespace):
    """opwise's own warnings become one `opwise CMD: warning: ...` line each on stderr; other libraries'
    warnings (torch's deprecations while tracing) are dropped unless --debug, which shows everything."""
    if args.debug:
        yield
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            seen = set()
            for warning in caught:
                text = _one_line(warning.message)
                if warning.filename.startswith(OPWISE_FOLDER) and text not in seen:
                    seen.add(text)
                    print(f"opwise {args.command}: warning: {text}", file=sys.stderr)

if __name__ == "__main__":
    sys.exit(main())
