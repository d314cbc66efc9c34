"""`opwise trace [MODEL]`: print the traced graph as a table and a summary."""

from __future__ import annotations

import argparse

import torch

from opwise.tracing import Graph, trace


def register(subparsers) -> None:
    parser = subparsers.add_parser("trace", help="trace a model and print its operation-level graph")
    parser.add_argument("model", nargs="?", default=None, help="model spec (default: the built-in demo model)")
    parser.add_argument("--all", action="store_true", help="also list nodes that do not depend on the input")
    parser.set_defaults(func=run)


def format_table(graph: Graph, show_all: bool = False) -> str:
    from opwise.rules import rule_name

    rows = [("node", "op", "shape", "input-dependent", "rule", "module")]
    for node in graph.call_nodes():
        info = graph.info(node)
        if not (show_all or info.depends_on_input):
            continue
        shape = "x".join(map(str, info.shape)) if info.shape is not None else "-"
        dependent = "yes" if info.depends_on_input else "no"
        rows.append((node.name, info.op, shape, dependent, rule_name(graph, node), info.module_path or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary(graph: Graph) -> str:
    operations = list(graph.call_nodes())
    dependent = sum(graph.depends_on_input(n) for n in operations)
    from opwise.rules import coverage

    return (
        f"{len(operations)} operations ({len(graph.op_counts())} distinct), {dependent} input-dependent; "
        f"traced with {graph.strategy}\n{coverage(graph)}"
    )


def run(args: argparse.Namespace) -> int:
    from opwise.models.loading import load_model

    model, inputs = load_model(args.model or "builtin:cnn")
    graph = trace(model, *inputs) if isinstance(model, torch.nn.Module) else model
    print(format_table(graph, args.all))
    print(summary(graph))
    return 0
