"""The network field of a VNN-COMP instance: one ONNX path, or several named ones for a VNN-LIB 2 query.

VNN-COMP 2026's instances CSVs name the networks of a query that declares several as a Python-style list,
`"[('f', 'onnx/a.onnx'), ('g', 'onnx/b.onnx')]"`; on the command line `f=a.onnx,g=b.onnx` says the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

from opwise.errors import InputError


def parse_networks(field: str) -> list[tuple[str | None, str]]:
    """(network name, path) pairs of a network field; a plain path is one pair without a name.

    >>> parse_networks("[('f', 'onnx/a.onnx'), ('g', 'onnx/b.onnx')]")
    [('f', 'onnx/a.onnx'), ('g', 'onnx/b.onnx')]
    >>> parse_networks("f=a.onnx,g=b.onnx"), parse_networks("onnx/net.onnx")
    ([('f', 'a.onnx'), ('g', 'b.onnx')], [(None, 'onnx/net.onnx')])
    """
    text = field.strip()
    if text.startswith("["):
        try:
            entries = ast.literal_eval(text)
        except (SyntaxError, ValueError):
            raise InputError(f"cannot read the network list {field!r}: expected [('NAME', 'PATH'), ...]") from None
        if not isinstance(entries, list) or not entries or not all(
                isinstance(e, (tuple, list)) and len(e) == 2 and all(isinstance(v, str) for v in e) for e in entries):
            raise InputError(f"the network list {field!r} must be a non-empty list of ('NAME', 'PATH') pairs")
        return [(name, path) for name, path in entries]
    if "=" in text and not Path(text).exists():
        pairs = [part.split("=", 1) for part in text.split(",")]
        if all(len(p) == 2 and p[0].strip() and p[1].strip() for p in pairs):
            return [(name.strip(), path.strip()) for name, path in pairs]
    return [(None, field)]


def format_networks(pairs: list[tuple[str | None, str]]) -> str:
    """The network field for `pairs`: the plain path of one unnamed network, else the list form.

    >>> format_networks([(None, "a.onnx")]), format_networks([("f", "a.onnx"), ("g", "b.onnx")])
    ('a.onnx', "[('f', 'a.onnx'), ('g', 'b.onnx')]")
    """
    if len(pairs) == 1 and pairs[0][0] is None:
        return pairs[0][1]
    return repr([(name, path) for name, path in pairs])


def resolve_networks(field: str, folder: Path) -> str:
    """The network field with every path taken relative to `folder` (an instances CSV's).

    >>> resolve_networks("[('f', 'onnx/a.onnx'), ('g', 'onnx/b.onnx')]", Path("/suite"))
    "[('f', '/suite/onnx/a.onnx'), ('g', '/suite/onnx/b.onnx')]"
    """
    return format_networks([(name, str(folder / path.strip())) for name, path in parse_networks(field)])


def network_stem(field: str) -> str:
    """A short name for a network field, for result file names: the file stem, or the network names joined by `_`
    (as VNN-COMP names its counterexample files).

    >>> network_stem("onnx/net.onnx.gz"), network_stem("[('f', 'a.onnx'), ('g', 'b.onnx')]")
    ('net', 'f_g')
    """
    pairs = parse_networks(field)
    if len(pairs) == 1 and pairs[0][0] is None:
        name = Path(pairs[0][1]).name
        for suffix in (".gz", ".onnx"):
            name = name[:-len(suffix)] if name.endswith(suffix) else name
        return name
    return "_".join(str(name) for name, _ in pairs)
