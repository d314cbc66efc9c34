"""VNN-LIB 2 suites built from ../shared/benchmarks/acasxu, run and scored like the VNN-COMP suites.

    python -m benchmarks.vnnlib2_suites --cap 30 --limit 10 --out vnnlib2_results

VNN-COMP 2026 moved its properties to VNN-LIB 2 and added queries over two networks. Its repository is not
among the shipped suites, so this script writes three suites of that kind from the ACAS Xu networks:

- `acasxu_v2`: the first `--limit` ACAS Xu instances with their properties rewritten in VNN-LIB 2 (tensor
  elements `X[0,3]`); their answers must be expected.csv's.
- `acasxu_pruned`: each of the first `--limit` networks against a copy with its 5% smallest weights per matrix set
  to 0 (`isomorphic-to`, inputs equated): is some output more than 0.05 apart on property 3's box?
- `acasxu_ordered`: each network against itself (`equal-to`) where the second copy's distance input is at most
  the first's (a relation between inputs, not a box): does output 3 rise by more than 0.05?

The last two have no published answers: a `sat` is checked with onnxruntime (benchmarks/vnncomp.py's check, which
also checks that equated inputs are equal and relations hold), an `unsat` cannot be wrong against a reference.
Prints one row per suite as benchmarks/vnncomp.py does.
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

import numpy as np

from benchmarks.vnncomp import find_benchmarks, print_table, score, usage_error
from opwise.cli.options import OneLineParser
from opwise.bounds.vnncomp import run_suite, suite_bar

PRUNED_SHARE = 0.05
GAP = 0.05
#: ACAS Xu property 3's input box (normalised), the box the two-network queries range over
PROPERTY_3 = [(-0.303531156, -0.298552812), (-0.009549297, 0.009549297), (0.493380324, 0.5), (0.3, 0.5), (0.3, 0.5)]
#: the ordered query's box: distance over its whole range, the other inputs as property 3's
ORDERED = [(-0.3, 0.2), *PROPERTY_3[1:]]


def version_2(text: str, inputs: str = "[1,1,1,5]", outputs: str = "[1,5]") -> str:
    """A VNN-LIB 1 ACAS Xu property as VNN-LIB 2: X_i becomes X[0,0,0,i] and Y_j becomes Y[0,j]."""
    body = "\n".join(line for line in text.splitlines() if "declare-const" not in line)
    body = re.sub(r"\bX_(\d+)\b", r"X[0,0,0,\1]", body)
    body = re.sub(r"\bY_(\d+)\b", r"Y[0,\1]", body)
    return (f"(vnnlib-version <2.0>)\n(declare-network f (declare-input X float32 {inputs}) "
            f"(declare-output Y float32 {outputs}))\n{body}\n")


def two_networks(relation: str, box: list[tuple[float, float]], equate: range, extra: str, unsafe: str) -> str:
    """A query over f and g (`relation`: equal-to or isomorphic-to f) on `box` for f's inputs, g's inputs in
    `equate` equal to f's, `extra` asserts, and the unsafe outputs."""
    lines = ["(vnnlib-version <2.0>)",
             "(declare-network f (declare-input X_f float32 [1,1,1,5]) (declare-output Y_f float32 [1,5]))",
             f"(declare-network g ({relation} f) (declare-input X_g float32 [1,1,1,5]) (declare-output Y_g float32 [1,5]))"]
    lines += [f"(assert (and (>= X_f[0,0,0,{i}] {lo}) (<= X_f[0,0,0,{i}] {hi})))" for i, (lo, hi) in enumerate(box)]
    lines += [f"(assert (== X_f[0,0,0,{i}] X_g[0,0,0,{i}]))" for i in equate]
    return "\n".join([*lines, extra, f"(assert {unsafe})", ""])


def pruned(source: Path, target: Path) -> None:
    """The network at `source` with the `PRUNED_SHARE` smallest |weights| of each matrix set to 0."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    for tensor in model.graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.ndim == 2:
            cut = np.quantile(np.abs(array), PRUNED_SHARE)
            tensor.CopyFrom(numpy_helper.from_array(np.where(np.abs(array) < cut, 0, array).astype(array.dtype),
                                                    tensor.name))
    onnx.save(model, str(target))


def build(acasxu: Path, out: Path, limit: int, timeout: float = 116.0) -> list[Path]:
    """Write the three suites (instances.csv, expected.csv, networks, properties) under `out`; their folders."""
    with open(acasxu / "expected.csv", newline="") as handle:
        expected = {(row["onnx"], row["vnnlib"]): row["expected"] for row in csv.DictReader(handle)}
    with open(acasxu / "instances.csv", newline="") as handle:
        every = [row for row in csv.reader(handle) if row]
    instances = every[:limit]
    networks = sorted({row[0].strip() for row in every})[:limit]
    folders = []

    suite = out / "acasxu_v2"
    (suite / "vnnlib").mkdir(parents=True, exist_ok=True)
    rows, answers = [], []
    for onnx_path, vnnlib_path, _ in instances:
        target = suite / "vnnlib" / Path(vnnlib_path).name
        target.write_text(version_2((acasxu / vnnlib_path).read_text()))
        network = str((acasxu / onnx_path).resolve())
        rows.append((network, f"vnnlib/{target.name}", timeout))
        answers.append((network, f"vnnlib/{target.name}", expected.get((onnx_path, vnnlib_path), "unknown")))
    folders.append(_write(suite, rows, answers))

    suite = out / "acasxu_pruned"
    (suite / "onnx").mkdir(parents=True, exist_ok=True)
    query = two_networks("isomorphic-to", PROPERTY_3, range(5), "", "(or " + " ".join(
        f"(> (- Y_g[0,{j}] Y_f[0,{j}]) {GAP}) (< (- Y_g[0,{j}] Y_f[0,{j}]) -{GAP})" for j in range(5)) + ")")
    (suite / "equivalent.vnnlib").write_text(query)
    rows = []
    for network in networks:
        copy = suite / "onnx" / f"pruned_{Path(network).name}"
        pruned(acasxu / network, copy)
        rows.append((repr([("f", str((acasxu / network).resolve())), ("g", f"onnx/{copy.name}")]), "equivalent.vnnlib", timeout))
    folders.append(_write(suite, rows, [(r[0], r[1], "unknown") for r in rows]))

    suite = out / "acasxu_ordered"
    suite.mkdir(parents=True, exist_ok=True)
    query = two_networks("equal-to", ORDERED, range(1, 5), f"(assert (and (>= X_g[0,0,0,0] {ORDERED[0][0]}) "
                         "(<= X_g[0,0,0,0] X_f[0,0,0,0])))", f"(> (- Y_g[0,3] Y_f[0,3]) {GAP})")
    (suite / "ordered.vnnlib").write_text(query)
    rows = [(str((acasxu / network).resolve()), "ordered.vnnlib", timeout) for network in networks]
    folders.append(_write(suite, rows, [(r[0], r[1], "unknown") for r in rows]))
    return folders


def _write(suite: Path, rows: list[tuple], answers: list[tuple]) -> Path:
    with open(suite / "instances.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    with open(suite / "expected.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["onnx", "vnnlib", "expected"])
        writer.writerows(answers)
    return suite


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="vnnlib2_suites", description=__doc__.splitlines()[0])
    parser.add_argument("--cap", type=float, default=30.0, help="cap on each instance's timeout, seconds")
    parser.add_argument("--limit", type=int, default=10, help="instances (and networks) per suite")
    parser.add_argument("--workers", type=int, default=2, help="instances run in parallel")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--benchmarks", default=None, help="the benchmarks folder (default ../shared/benchmarks)")
    parser.add_argument("--out", default="vnnlib2_results", help="folder for the suites, results and result files")
    args = parser.parse_args(argv)
    if args.limit < 1 or args.workers < 1 or args.threads < 1 or not args.cap > 0:
        usage_error("--limit, --workers and --threads must be at least 1, --cap positive")
    acasxu = find_benchmarks(args.benchmarks) / "acasxu"
    table = []
    for suite in build(acasxu, Path(args.out), args.limit):
        print(f"{suite.name}: running {suite / 'instances.csv'}", file=sys.stderr)
        results = run_suite(suite / "instances.csv", suite / "results.csv", cap=args.cap, workers=args.workers,
                            result_dir=suite / "files", progress=suite_bar, threads=args.threads)
        table.append((suite.name, score(suite, results, suite / "files")))
    print(f"cap {args.cap} s, {args.workers} workers, {args.threads} threads")
    return print_table(table)


if __name__ == "__main__":
    sys.exit(main())
