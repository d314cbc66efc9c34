"""VNN-COMP result files: the status word, and for `sat` the assignment of every X_i and Y_i.

The words are VNN-COMP's: `unsat` (the property holds), `sat` (a checked counterexample follows),
`timeout`, `unknown`, and `error` (the instance could not be run, with the reason on stderr).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from opwise.bounds.vnncomp.networks import network_stem
from opwise.errors import InputError, OpwiseError, SpecError

RESULT_LINE = re.compile(r"\(\s*([XY])_(\d+)\s+(\S+?)\s*\)")
#: a VNN-LIB 2 assignment's tensor line, `X float32 [1,5]` (its values follow, one per line)
ASSIGNMENT_HEADER = re.compile(r"^(\S+)\s+(\S+)\s+\[([0-9,\s]*)\]$")


@dataclasses.dataclass
class InstanceResult:
    """status: 'unsat' | 'sat' | 'timeout' | 'unknown' | 'error'; x and y (flat) only for a confirmed 'sat';
    `reason` says why an instance is `error`, `unknown` or `timeout` where that is known."""

    status: str
    time: float
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    stats: dict = dataclasses.field(default_factory=dict)
    reason: str = ""
    #: a VNN-LIB 2 query's vnnlib2.Layout: its `sat` is written as the query names its tensors (None: X_i, Y_i)
    layout: Any = dataclasses.field(default=None, repr=False)


def write_result(path: str | Path, result: InstanceResult) -> None:
    """Write the VNN-COMP result file: the status word, and for `sat` the assignment of every X_i and Y_i (of
    every declared tensor for a VNN-LIB 2 query, `InstanceResult.layout`); otherwise the reason, if any, on a second line. Written to a temporary file and renamed, so a file is
    never seen half written (a killed worker or runner leaves the old one or none).

    >>> import tempfile, torch
    >>> path = tempfile.mktemp()
    >>> write_result(path, InstanceResult("sat", 0.1, torch.tensor([0.5, -1.0]), torch.tensor([2.0])))
    >>> print(open(path).read())
    sat
    ((X_0 0.5)
     (X_1 -1.0)
     (Y_0 2.0))
    <BLANKLINE>
    """
    lines = [result.status]
    if result.status == "sat":
        if result.x is None or result.y is None:
            raise InputError("a 'sat' result needs its counterexample x and output y")
        if result.layout is not None:
            lines.append(result.layout.assignment(result.x, result.y))
        else:
            pairs = [f"(X_{i} {float(v)!r})" for i, v in enumerate(result.x.tolist())]
            pairs += [f"(Y_{i} {float(v)!r})" for i, v in enumerate(result.y.tolist())]
            lines.append("(" + "\n ".join(pairs) + ")")
    elif result.reason:
        lines.append(" ".join(result.reason.split()))
    write_atomically(path, "\n".join(lines) + "\n")


def failure_reason(error: BaseException) -> str:
    """The one-line reason an `error` result carries: opwise's own messages as they are, others with their type.

    >>> failure_reason(RecursionError("maximum recursion depth exceeded")), failure_reason(MemoryError())
    ('RecursionError: maximum recursion depth exceeded', 'MemoryError')
    """
    text = " ".join(str(error).split())
    if isinstance(error, OpwiseError):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def write_atomically(path: str | Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path` (os.replace).

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "r.txt"); write_atomically(path, "unsat\\n"); open(path).read()
    'unsat\\n'
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_result(path: str | Path, layout: Any = None) -> tuple[str, list[float] | None, list[float] | None]:
    """(status, x, y) from a VNN-COMP result file; x and y are None unless the status is sat.

    A VNN-LIB 2 assignment (`NAME TYPE [SHAPE]` and its values, per declared tensor) is read with the query's
    `layout` (vnnlib2.Layout) as the joint input x and output y; without it, x holds every value in the file's
    order and y is empty.

    >>> import tempfile
    >>> path = tempfile.mktemp(); _ = open(path, "w").write("sat\\n((X_0 0.5)\\n (Y_0 2))\\n")
    >>> read_result(path)
    ('sat', [0.5], [2.0])
    >>> _ = open(path, "w").write("sat\\nX real [2]\\n0.5\\n1\\nY real [1]\\n-2\\n")
    >>> read_result(path)
    ('sat', [0.5, 1.0, -2.0], [])
    """
    text = Path(path).read_text()
    status = text.split(None, 1)[0] if text.strip() else ""
    if status not in ("sat", "unsat", "timeout", "unknown", "violated", "holds", "error"):
        raise SpecError(str(path), 1, f"unknown result word {status!r}")
    if status not in ("sat", "violated"):
        return status, None, None
    lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]
    if lines and ASSIGNMENT_HEADER.match(lines[0]):
        return "sat", *_read_assignment(str(path), lines, layout)
    values: dict[str, dict[int, float]] = {"X": {}, "Y": {}}
    for kind, index, value in RESULT_LINE.findall(text):
        values[kind][int(index)] = float(value)
    x = [values["X"][i] for i in range(len(values["X"]))] if values["X"] else None
    y = [values["Y"][i] for i in range(len(values["Y"]))] if values["Y"] else None
    return "sat", x, y


def _read_assignment(path: str, lines: list[str], layout: Any) -> tuple[list[float], list[float]]:
    """(x, y) of a VNN-LIB 2 textual assignment: blocks of a `NAME TYPE [SHAPE]` line and one value per element."""
    blocks: list[list[float]] = []
    position = 0
    while position < len(lines):
        header = ASSIGNMENT_HEADER.match(lines[position])
        if header is None:
            raise SpecError(path, None, f"expected a line NAME TYPE [SHAPE], got {lines[position]!r}")
        count = math.prod(int(s) for s in header[3].replace(" ", "").split(",") if s)
        values = lines[position + 1:position + 1 + count]
        if len(values) != count:
            raise SpecError(path, None, f"{header[1]} needs {count} values, the file has {len(values)}")
        try:
            blocks.append([float(v) for v in values])
        except ValueError as error:
            raise SpecError(path, None, f"a value of {header[1]} is not a number ({error})") from None
        position += 1 + count
    if layout is None:
        return [v for block in blocks for v in block], []
    x: list[float | None] = [None] * layout.inputs
    y: list[float] = []
    coordinates = iter(layout.coordinates)
    block = iter(blocks)
    for network in layout.networks:
        for tensor in network.inputs:
            for coordinate, value in zip(next(coordinates).tolist(), next(block)):
                if x[coordinate] is not None and x[coordinate] != value:
                    raise SpecError(path, None, f"{tensor.name} takes {value!r} where an element the query equates "
                                                f"with it takes {x[coordinate]!r}")
                x[coordinate] = value
        for _ in network.outputs:
            y.extend(next(block))
    return x, y


def is_complete(path: str | Path) -> bool:
    """Whether a result file exists and reads back whole: a known status word, and for `sat` every X_i and Y_i.

    >>> import tempfile
    >>> path = tempfile.mktemp(); _ = open(path, "w").write("sat\\n((X_0 0.5)\\n")
    >>> is_complete(path), is_complete(path + ".missing")
    (False, False)
    """
    try:
        status, x, y = read_result(path)
    except (OSError, ValueError, SpecError):
        return False
    return status != "sat" or (x is not None and y is not None)


def result_file_name(onnx: str, vnnlib: str) -> str:
    """A readable file name for one instance: `<onnx stem>__<vnnlib stem>.txt` (unique only where the stems
    are; a suite names its files with `result_file_names`).

    >>> result_file_name("onnx/net_1.onnx", "vnnlib/prop_2.vnnlib")
    'net_1__prop_2.txt'
    >>> result_file_name("[('f', 'onnx/a.onnx'), ('g', 'onnx/b.onnx')]", "vnnlib/instance_0.vnnlib.gz")
    'f_g__instance_0.txt'
    """
    prop = Path(vnnlib).name
    for suffix in (".gz", ".vnnlib"):
        prop = prop[:-len(suffix)] if prop.endswith(suffix) else prop
    return f"{_safe(network_stem(onnx))}__{_safe(prop)}.txt"


def result_file_names(instances: list[tuple[str, str]]) -> list[str]:
    """One file name per (onnx, vnnlib) instance, unique within the list: `result_file_name` where no other
    instance has the same stems, else that name with a short hash of both paths (`net__prop__1a2b3c4d.txt`).

    >>> result_file_names([("a/net.onnx", "a/p.vnnlib"), ("b/net.onnx", "b/p.vnnlib"), ("x.onnx", "p.vnnlib")])
    ['net__p__4bdab8fd.txt', 'net__p__19180306.txt', 'x__p.txt']
    """
    plain = [result_file_name(onnx, vnnlib) for onnx, vnnlib in instances]
    counts: dict[str, int] = {}
    for name in plain:
        counts[name] = counts.get(name, 0) + 1
    names: list[str] = []
    for index, (name, (onnx, vnnlib)) in enumerate(zip(plain, instances)):
        if counts[name] > 1:
            digest = hashlib.sha1(f"{onnx}\n{vnnlib}".encode()).hexdigest()[:8]
            name = f"{name[:-len('.txt')]}__{digest}.txt"
        if name in names:  # the same instance listed twice: one file each, told apart by its row
            name = f"{name[:-len('.txt')]}__{index}.txt"
        names.append(name)
    return names


def _safe(stem: str) -> str:
    """A stem with characters other than letters, digits, `.`, `_`, `-` replaced by `_`."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem)


