"""Run a VNN-COMP suite folder (instances.csv, onnx/, vnnlib/) and print its results.csv.

Uses ../shared/benchmarks/acasxu when present (two instances with FAST=1), else writes a tiny suite here:
an ONNX network and two properties, one that holds and one that does not.
Run: python examples/vnncomp_suite.py [SUITE_FOLDER]
"""

import csv
import os
import sys
import warnings
from pathlib import Path

import torch

from opwise.bounds.vnncomp import run_suite, suite_bar

FAST = os.environ.get("FAST") == "1"


def tiny_suite(folder: Path) -> Path:
    (folder / "onnx").mkdir(parents=True, exist_ok=True)
    (folder / "vnnlib").mkdir(exist_ok=True)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with warnings.catch_warnings():  # torch's note that this exporter is the legacy one
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 2),), str(folder / "onnx" / "net.onnx"), dynamo=False)
    box = "".join(f"(declare-const X_{i} Real)\n(assert (>= X_{i} 0.0))\n(assert (<= X_{i} 0.1))\n" for i in range(2))
    outputs = "(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
    (folder / "vnnlib" / "never.vnnlib").write_text(box + outputs + "(assert (>= Y_0 100.0))\n")
    (folder / "vnnlib" / "always.vnnlib").write_text(box + outputs + "(assert (<= Y_0 100.0))\n")
    rows = [f"onnx/net.onnx,vnnlib/{name}.vnnlib,30" for name in ("never", "always")]
    (folder / "instances.csv").write_text("\n".join(rows) + "\n")
    return folder


def main() -> None:
    shared = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "acasxu"
    if len(sys.argv) > 1:
        suite = Path(sys.argv[1])
    elif shared.is_dir() and not FAST:
        suite = shared
    else:
        suite = tiny_suite(Path("tiny_suite"))

    results = run_suite(suite / "instances.csv", "results.csv", cap=10 if FAST else 60, workers=2, result_dir="results",
                        progress=suite_bar)
    for row in csv.DictReader(open("results.csv")):
        print(f"{row['onnx']:>30}  {row['vnnlib']:>24}  {row['status']:>8}  {row['time']:>7} s")
    print(f"{len(results)} instances; unsat = the property's violation cannot happen (verified), sat = it can")


if __name__ == "__main__":  # the suite's workers are new processes that import this file: run only once
    main()
