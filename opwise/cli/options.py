"""Options several commands share, and the checks that make a bad value one line and exit code 2.

Numbers are checked when parsed (argparse `type=` functions), outputs before any work starts
(`check_output`), devices when chosen (`resolve_device`).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import torch

from opwise.errors import InputError


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (no usage block) and exit code 2."""

    def error(self, message: str):
        print(f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def finite_float(text: str) -> float:
    """A finite number (no nan, no inf).

    >>> finite_float("0.5")
    0.5
    """
    return _number(text)


def positive_float(text: str) -> float:
    """A finite number above zero (seconds, radii).

    >>> positive_float("2")
    2.0
    """
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above zero")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number at least zero (ε, γ of LRP rules).

    >>> nonnegative_float("0")
    0.0
    """
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def percentile(text: str) -> float:
    """A percentile in (0, 100].

    >>> percentile("99.5")
    99.5
    """
    value = _number(text)
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentile in (0, 100]")
    return value


def _whole(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum}")
    return value


def positive_int(text: str) -> int:
    """A whole number above zero (counts).

    >>> positive_int("3")
    3
    """
    return _whole(text, 1)


def nonnegative_int(text: str) -> int:
    """A whole number at least zero (class indices).

    >>> nonnegative_int("0")
    0
    """
    return _whole(text, 0)


def add_common(parser: argparse.ArgumentParser) -> None:
    """`--device` and `--quiet`, which every command takes.

    >>> parser = argparse.ArgumentParser()
    >>> add_common(parser)
    >>> parser.parse_args(["--quiet"])
    Namespace(device='cpu', quiet=True)
    """
    parser.add_argument("--device", default="cpu", help="where to run: cpu (default), cuda or cuda:N")
    parser.add_argument("--quiet", action="store_true",
                        help="print nothing but warnings and errors (files are still written)")


def resolve_device(name: str) -> torch.device:
    """The torch device `--device` names; CUDA only when this machine has it.

    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("tpu")
    Traceback (most recent call last):
    ...
    opwise.errors.InputError: --device 'tpu' is not a device; use cpu, cuda or cuda:N
    """
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def check_output(path: str | None, suffixes: tuple[str, ...], option: str) -> None:
    """Refuse an output path before any work: wrong suffix, a directory, a missing or unwritable folder.

    >>> check_output("no/such/folder/r.png", (".png",), "--out")
    Traceback (most recent call last):
    ...
    opwise.errors.InputError: --out no/such/folder/r.png: the folder no/such/folder does not exist; create it first
    """
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{option} {path} is a directory; give a file name")
    if suffixes and target.suffix.lower() not in suffixes:
        raise InputError(f"{option} {path}: the file name must end in {' or '.join(suffixes)}")
    folder = target.parent
    if not folder.is_dir():
        raise InputError(f"{option} {path}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise InputError(f"{option} {path}: not writable")


def check_graph_shapes(spec: str, graph, shapes):
    """`graph` (a model file imported at fixed shapes) for the `--input-shape` shapes, or InputError. Shapes that
    differ only in the leading axis are taken, at their batch size (`Graph.for_batch`), when the file declares a
    symbolic batch; a file with a fixed batch is held to it."""
    expected = [tuple(graph.info(n).shape) for n in graph.input_nodes]
    given = [tuple(s) for s in shapes]
    if given == expected:
        return graph
    batch = given[0][0] if given and given[0] else None
    same_but_batch = len(given) == len(expected) and all(
        len(g) == len(e) and g[1:] == e[1:] and g[0] == batch for g, e in zip(given, expected))
    declares_symbolic = _declares_symbolic_batch(spec)
    symbolic = same_but_batch and declares_symbolic
    if symbolic and graph.for_batch(batch).batch_size == batch:
        return graph.for_batch(batch)
    where = " (it declares a symbolic batch but imports at no other batch size)" if symbolic else ""
    hint = "; export it with a symbolic batch axis to use others" if same_but_batch and not symbolic else \
        "; only the leading (batch) size may differ" if declares_symbolic and not same_but_batch else ""
    raise InputError(f"{spec} is imported with fixed input shapes {expected}{where}; drop --input-shape or match "
                     f"them{hint}")


def _declares_symbolic_batch(spec: str) -> bool:
    """Whether `spec` is an ONNX file whose inputs all leave the leading (batch) axis symbolic."""
    if not str(spec).endswith((".onnx", ".onnx.gz")):
        return False
    from opwise.tracing.onnx.files import read_onnx_file

    try:
        model = read_onnx_file(spec, load_external_data=False)
    except Exception:  # noqa: BLE001 - it was imported once already; anything unreadable now keeps shapes fixed
        return False
    initializers = {init.name for init in model.graph.initializer}
    leading = [value.type.tensor_type.shape.dim[:1] for value in model.graph.input if value.name not in initializers]
    return bool(leading) and all(dims and dims[0].dim_value <= 0 for dims in leading)
