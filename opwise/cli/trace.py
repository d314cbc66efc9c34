"""`opwise trace [MODEL] [--input-shape 1,1,8,8]`: print the traced graph as a table and a summary."""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
from typing import Iterator

import torch

from opwise.cli.options import add_common, check_graph_shapes, resolve_device
from opwise.tracing import Graph, trace
from opwise.tracing.loading import SPEC_FORMS, example_inputs, load_model

DEFAULT_MODEL = "builtin:cnn"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "trace",
        help="trace a model and print its operation-level graph",
        description="Trace a model into opwise's operation-level graph and print one row per operation.",
    )
    parser.add_argument(
        "model", nargs="?", default=DEFAULT_MODEL, help=f"model spec: {SPEC_FORMS} (default: {DEFAULT_MODEL})"
    )
    parser.add_argument(
        "--input-shape",
        action="append",
        type=parse_shape,
        metavar="SHAPE",
        help="shape of a random example input, e.g. 1,3,32,32 (repeat for several inputs; "
        "default: the model's own examples)",
    )
    parser.add_argument("--all", action="store_true", help="also list operations that do not depend on the input")
    add_common(parser)
    parser.set_defaults(func=run)


def parse_shape(text: str) -> tuple[int, ...]:
    """`"1,3,32,32"` -> `(1, 3, 32, 32)`; also accepts `x` as separator.

    >>> parse_shape("1,3,32,32"), parse_shape("2x8")
    ((1, 3, 32, 32), (2, 8))
    """
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape; write it like 1,3,32,32") from None
    if not shape or any(size <= 0 for size in shape):
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape; sizes must be positive, like 1,3,32,32")
    return shape


def format_table(graph: Graph, show_all: bool = False) -> str:
    """One row per operation: node, op key, output shape, input dependence, relevance rule, boundable, module path.

    >>> import opwise
    >>> graph = opwise.trace(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()), torch.zeros(2, 4))
    >>> print(format_table(graph))
    node    op                   shape  input-dependent  rule      bound  module
    ------  -------------------  -----  ---------------  --------  -----  ------
    linear  aten.linear.default  2x3    yes              linear    yes    0
    relu    aten.relu.default    2x3    yes              identity  yes    1
    """
    from opwise.bounds import coverage as bound_coverage
    from opwise.rules import rule_name

    boundable = bound_coverage(graph).supported
    rows = [("node", "op", "shape", "input-dependent", "rule", "bound", "module")]
    for node in graph.call_nodes():
        info = graph.info(node)
        if not (show_all or info.depends_on_input):
            continue
        shape = "x".join(map(str, info.shape)) if info.shape is not None else "-"
        dependent = "yes" if info.depends_on_input else "no"
        bound = {True: "yes", False: "no"}.get(boundable.get(node.name), "-")
        rows.append((node.name, info.op, shape, dependent, rule_name(graph, node), bound, info.module_path or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary(graph: Graph) -> str:
    """One line: operation counts, input dependence, inputs and output shapes, the tracer used.

    >>> import opwise
    >>> print(summary(opwise.trace(torch.nn.Linear(4, 3), torch.zeros(2, 4))))
    1 operations (1 distinct), 1 input-dependent; inputs arg0 2x4 -> output 2x3; traced with export
    """
    operations = list(graph.call_nodes())
    dependent = sum(graph.depends_on_input(n) for n in operations)
    names = graph.input_names
    inputs = ", ".join(f"{name} {_shape(graph, node)}" for name, node in zip(names, graph.input_nodes))
    return (
        f"{len(operations)} operations ({len(graph.op_counts())} distinct), {dependent} input-dependent; "
        f"inputs {inputs} -> output {_shape(graph, graph.output)}; traced with {graph.strategy}"
    )


def _shape(graph: Graph, node) -> str:
    shape = graph.info(node).shape
    return "x".join(map(str, shape)) if shape is not None else "?"


@contextlib.contextmanager
def quiet_torch_logs() -> Iterator[None]:
    """Hide torch's warnings while tracing: a rejected export logs and prints (to stderr) the graph it
    gave up on, though the fallback tracer handles the model and failures raise errors anyway.
    """
    loggers = [logging.getLogger(name) for name in ("torch", "torch.fx.experimental.symbolic_shapes")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    loaded = load_model(args.model)
    if isinstance(loaded.model, Graph):
        graph = loaded.model
        if args.input_shape:
            graph = check_graph_shapes(args.model, graph, args.input_shape)
        graph.module.to(device)
    else:
        inputs = example_inputs(loaded, args.input_shape)
        model, inputs = loaded.model.to(device), [t.to(device) for t in inputs]
        with contextlib.nullcontext() if args.debug else quiet_torch_logs():
            graph = trace(model, *inputs)
    from opwise.bounds import coverage as bound_coverage
    from opwise.rules import coverage as rule_coverage

    print(format_table(graph, args.all))
    print(summary(graph) + ("" if device.type == "cpu" else f" on {device}"))
    print(rule_coverage(graph))
    bounds = bound_coverage(graph)
    missing = sorted({op for _, op in bounds.missing})
    print(f"bound transfers cover {bounds.fraction:.0%} of input-dependent operations"
          + (f"; missing: {', '.join(missing)}" if missing else ""))
    return 0
