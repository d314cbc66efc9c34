"""VNN-COMP result files: the status word, and for `sat` the assignment of every X_i and Y_i.

The words are VNN-COMP's: `unsat` (the property holds), `sat` (a checked counterexample follows),
`timeout`, `unknown`, and `error` (the instance could not be run, with the reason on stderr).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import torch

from opwise.errors import InputError, SpecError

RESULT_LINE = re.compile(r"\(\s*([XY])_(\d+)\s+(\S+?)\s*\)")


@dataclasses.dataclass
class InstanceResult:
    """status: 'unsat' | 'sat' | 'timeout' | 'unknown'; x and y (flat) only for a confirmed 'sat'."""

    status: str
    time: float
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    stats: dict = dataclasses.field(default_factory=dict)



def write_result(path: str | Path, result: InstanceResult) -> None:
    """Write the VNN-COMP result file: the status word, and for `sat` the assignment of every X_i and Y_i.

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
        pairs = [f"(X_{i} {float(v)!r})" for i, v in enumerate(result.x.tolist())]
        pairs += [f"(Y_{i} {float(v)!r})" for i, v in enumerate(result.y.tolist())]
        lines.append("(" + "\n ".join(pairs) + ")")
    Path(path).write_text("\n".join(lines) + "\n")


def read_result(path: str | Path) -> tuple[str, list[float] | None, list[float] | None]:
    """(status, x, y) from a VNN-COMP result file; x and y are None unless the status is sat.

    >>> import tempfile
    >>> path = tempfile.mktemp(); _ = open(path, "w").write("sat\\n((X_0 0.5)\\n (Y_0 2))\\n")
    >>> read_result(path)
    ('sat', [0.5], [2.0])
    """
    text = Path(path).read_text()
    status = text.split(None, 1)[0] if text.strip() else ""
    if status not in ("sat", "unsat", "timeout", "unknown", "violated", "holds", "error"):
        raise SpecError(str(path), 1, f"unknown result word {status!r}")
    if status not in ("sat", "violated"):
        return status, None, None
    values: dict[str, dict[int, float]] = {"X": {}, "Y": {}}
    for kind, index, value in RESULT_LINE.findall(text):
        values[kind][int(index)] = float(value)
    x = [values["X"][i] for i in range(len(values["X"]))] if values["X"] else None
    y = [values["Y"][i] for i in range(len(values["Y"]))] if values["Y"] else None
    return "sat", x, y


def result_file_name(onnx: str, vnnlib: str) -> str:
    """A file name unique per instance: `<onnx stem>__<vnnlib stem>.txt`.

    >>> result_file_name("onnx/net_1.onnx", "vnnlib/prop_2.vnnlib")
    'net_1__prop_2.txt'
    """
    return f"{Path(onnx).stem}__{Path(vnnlib).stem}.txt"


