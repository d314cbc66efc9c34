"""Incomplete verification alone (no attack, no branch-and-bound) on a VNN-COMP suite: how many instances
one bound pass proves, per method, and its time.

    python -m benchmarks.alpha_vnncomp eran_2021 --filter SIGMOID [--iterations 20] [--shard 0/2]

Methods: CROWN, α-CROWN on the final bound only (`AlphaOptions(intermediate=False)`) and α-CROWN with
every intermediate bound optimised too (the default), both stopping early once every row is proved. An
instance counts as proved when every input box has, in every unsafe disjunct, one row whose lower bound
exceeds its threshold. Times are CPU seconds of this process (one torch thread), so a loaded machine
does not inflate them. Expected answers come from the suite's expected.csv (a proved `sat` instance
would be a soundness bug and is flagged).
"""

from __future__ import annotations

import argparse
import dataclasses
import csv
import time
from pathlib import Path

import torch

from opwise.bounds import BoundedModel
from opwise.bounds.strategies.alpha import AlphaOptions
from opwise.bounds.vnncomp.vnnlib import parse_vnnlib
from opwise.tracing.onnx import load_onnx

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"


def proved(bounded: BoundedModel, specs, method: str, options: AlphaOptions | None) -> bool:
    """Whether one bound pass rules out every unsafe disjunct of every input box."""
    for spec in specs:
        C, d = torch.cat([d.C for d in spec.unsafe]), torch.cat([d.d for d in spec.unsafe])
        if options is not None:  # every row above its threshold: nothing left to gain
            options = dataclasses.replace(options, stop_above=d[:, None])
        lower = bounded.compute_bounds(x_lower=spec.x_lower, x_upper=spec.x_upper, C=C, method=method,
                                       bound_upper=False, alpha=options).lower[0]
        if not spec.ruled_out(lower):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite")
    parser.add_argument("--filter", default="", help="only instances whose ONNX path contains this text")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--shard", default="0/1", metavar="I/N", help="only every N-th instance, from the I-th")
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = SHARED / args.suite
    index, count = map(int, args.shard.split("/"))
    with open(folder / "expected.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if args.filter in row["onnx"]][index::count]
    common = dict(iterations=args.iterations, learning_rate=args.learning_rate)
    methods = {"crown": ("crown", None),
               "alpha final-only": ("alpha-crown", AlphaOptions(intermediate=False, **common)),
               "alpha-crown": ("alpha-crown", AlphaOptions(**common))}
    counts, seconds, models = {name: 0 for name in methods}, {name: 0.0 for name in methods}, {}
    for row in rows:
        if row["onnx"] not in models:
            graph = load_onnx(str(folder / row["onnx"]), batch_size=1)
            shape = tuple(graph.info(graph.explained_inputs[0]).shape)
            models[row["onnx"]] = (BoundedModel(graph, torch.zeros(shape)), shape)
        bounded, shape = models[row["onnx"]]
        specs = parse_vnnlib(folder / row["vnnlib"], shape)
        line = []
        for name, (method, options) in methods.items():
            start = time.process_time()
            ok = proved(bounded, specs, method, options)
            used = time.process_time() - start
            seconds[name] += used
            counts[name] += ok
            line.append(f"{name}={'unsat' if ok else '-'} {used:6.1f}s")
            if ok and row["expected"] == "sat":
                print(f"  SOUNDNESS BUG: {row['vnnlib']} is sat but {name} proved it")
        print(f"{Path(row['vnnlib']).name:42s} expected {row['expected']:7s} " + " ".join(line), flush=True)
    print(f"\n{len(rows)} instances ({sum(r['expected'] == 'unsat' for r in rows)} expected unsat)")
    for name in methods:
        print(f"{name:18s} proved {counts[name]:3d}   {seconds[name] / max(len(rows), 1):7.2f} CPU s per instance")


if __name__ == "__main__":
    main()
