"""Trace every zoo model and print one row each: trace time, node count, distinct ops, strategy, error.

Run: python -m benchmarks.trace_zoo [NAME ...] [--strategy auto|export|fx]

The first trace in a process pays torch.export's warm-up; it is run once, untimed, on a tiny model.
`max error` is the largest absolute difference between the Graph and the model on the example inputs.
The last lines list the distinct operators across the zoo, all and input-dependent only.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

import opwise
from opwise.models.zoo import ZOO, zoo_case


def _reference(case) -> torch.Tensor:
    with torch.no_grad():
        result = case.model(*case.args, **case.kwargs)
    return result if isinstance(result, torch.Tensor) else result[case.output]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(ZOO), help=f"zoo models (default: all of {list(ZOO)})")
    parser.add_argument("--strategy", default="auto", choices=["auto", "export", "fx"])
    options = parser.parse_args()
    warnings.simplefilter("ignore")
    opwise.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2))
    every_op: set[str] = set()
    input_ops: set[str] = set()
    print(f"{'model':<10} {'trace s':>8} {'nodes':>6} {'ops':>5} {'distinct':>8} {'input-dep':>9}  {'strategy':<8} {'max error':>9}")
    for name in options.names:
        case = zoo_case(name)
        start = time.perf_counter()
        graph = opwise.trace(case.model, *case.args, output=case.output, strategy=options.strategy, **case.kwargs)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            error = (graph(*graph.layout.flatten(case.args, case.kwargs)) - _reference(case)).abs().max().item()
        operations = list(graph.call_nodes())
        dependent = {graph.info(n).op for n in operations if graph.depends_on_input(n)}
        every_op |= set(graph.op_counts())
        input_ops |= dependent
        print(
            f"{name:<10} {seconds:>8.2f} {len(graph):>6} {len(operations):>5} {len(graph.op_counts()):>8} "
            f"{len(dependent):>9}  {graph.strategy:<8} {error:>9.1e}"
        )
    print(f"\ndistinct operators across the zoo ({len(every_op)}): {', '.join(sorted(every_op))}")
    print(f"\non the input-dependent path ({len(input_ops)}): {', '.join(sorted(input_ops))}")


if __name__ == "__main__":
    main()
