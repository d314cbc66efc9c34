"""Run VNN-COMP suites from ../shared/benchmarks and score them against expected.csv.

    python -m benchmarks.vnncomp acasxu --cap 30 --workers 2
    python -m benchmarks.vnncomp all --cap 60
    python -m benchmarks.vnncomp all --cap 60 --resume    # after an interruption: only what has no result file
    python -m benchmarks.vnncomp mnist_fc_2022 --only 256x4 --cap 30   # a subset: paths containing '256x4'

A `sat` answer counts as solved only when its counterexample, clipped into the property's input box, makes
the output constraints hold in an onnxruntime forward pass (independent of opwise's importer); an `unsat`
answer is wrong where expected.csv says `sat` (a known counterexample exists). Prints one row per suite:
solved / timeout / unknown / error / wrong, total and median time.
"""

from __future__ import annotations

import csv
import gzip
import statistics
import sys
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch

from opwise.bounds.vnncomp import read_result, run_suite, suite_bar
from opwise.cli.options import OneLineParser
from opwise.errors import InputError, SpecError
from opwise.bounds.vnncomp.joint import network_files
from opwise.bounds.vnncomp.networks import parse_networks, resolve_networks
from opwise.bounds.vnncomp.products import Products
from opwise.bounds.vnncomp.vnnlib import existing, parse_property, violates

REPO = Path(__file__).resolve().parents[1]
SEARCH = (REPO.parent / "shared" / "benchmarks", REPO.parent.parent / "shared" / "benchmarks")


def find_benchmarks(given: str | None) -> Path:
    tried = [Path(given)] if given else SEARCH
    for folder in tried:
        if folder.is_dir():
            return folder
    usage_error(f"benchmark folder not found (looked in {', '.join(map(str, tried))}); pass --benchmarks DIR")


def usage_error(message: str) -> NoReturn:
    """End a benchmark script as argparse ends on a bad option: the message on one line, exit status 2."""
    print(f"{Path(sys.argv[0]).stem}: error: {message}", file=sys.stderr)
    sys.exit(2)


def suite_names(root: Path, given: list[str]) -> list[str]:
    """The suites to run (every folder of `root` with an instances.csv for 'all'); exits naming the ones there
    when a given name has none."""
    known = sorted(p.name for p in root.iterdir() if (p / "instances.csv").is_file())
    if given == ["all"]:
        return known
    missing = [name for name in given if name not in known]
    if missing:
        usage_error(f"no suite {', '.join(map(repr, missing))} in {root} (a folder with an instances.csv); "
                    f"the suites there: {', '.join(known) or 'none'}")
    return given


def counterexample_holds(suite_dir: Path, onnx_field: str, vnnlib_path: Path, result_path: Path) -> bool:
    """Whether a `sat` result file's input, clipped into the nearest input box of the property, lies in its input set
    and violates it, each network run by onnxruntime (a VNN-LIB 2 query's networks on their declared inputs)."""
    import onnxruntime

    query = parse_property(vnnlib_path, dtype=torch.float64)
    try:
        _, x, _ = read_result(result_path, query.layout)
    except SpecError:  # malformed, or inputs the query equates with different values
        return False
    if x is None:
        return False
    point = torch.tensor([x], dtype=torch.float64)
    if point.shape[1] != query.specs[0].x_lower.numel():
        return False
    spec = min(query.specs, key=lambda s: float((torch.max(torch.min(point, s.x_upper.flatten(1)), s.x_lower.flatten(1))
                                                 - point).abs().max()))
    clipped = torch.max(torch.min(point, spec.x_upper.flatten(1)), spec.x_lower.flatten(1))
    if not spec.region.contains(clipped.reshape(spec.x_lower.shape), tolerance=1e-6):
        return False
    field = resolve_networks(onnx_field, suite_dir)
    if query.layout is None:
        runs = [(parse_networks(field)[0][1], [clipped.flatten()])]
    else:
        files = network_files(query.layout, field)
        coordinates = iter(query.layout.coordinates)
        runs = [(files[n.name], [clipped.flatten()[next(coordinates)] for _ in n.inputs]) for n in query.layout.networks]
    outputs = []
    for path, values in runs:
        resolved = existing(path)
        model = gzip.open(resolved).read() if resolved.name.endswith(".gz") else str(resolved)
        session = onnxruntime.InferenceSession(model)
        feeds = {}
        for declared, value in zip(session.get_inputs(), values):
            shape = [dim if isinstance(dim, int) else 1 for dim in declared.shape]
            dtype = {"tensor(double)": np.float64, "tensor(float16)": np.float16}.get(declared.type, np.float32)
            feeds[declared.name] = value.numpy().astype(dtype).reshape(shape)
        results = session.run(None, feeds)
        results = results if query.layout is not None else results[:1]  # VNN-LIB 1: the first output, as VNN-COMP
        outputs.extend(torch.tensor(np.asarray(y), dtype=torch.float64).flatten() for y in results)
    y = torch.cat(outputs)
    if spec.unsafe[0].C.shape[1] > len(y):  # rows over the outputs, then the inputs, then products of variables
        products = query.products or Products()
        y = torch.cat([y, clipped.flatten(), products.values(y[None], clipped, len(y), clipped.numel()).flatten()])
    return violates(spec, y)


def score(suite_dir: Path, results: list[dict], result_dir: Path) -> dict:
    """Counts per outcome for one suite, and the list of wrong instances."""
    with open(suite_dir / "expected.csv", newline="") as handle:
        expected = {(row["onnx"], row["vnnlib"]): row["expected"] for row in csv.DictReader(handle)}
    counts = {"instances": len(results), "sat": 0, "unsat": 0, "timeout": 0, "unknown": 0, "error": 0, "wrong": 0}
    wrong = []
    for row in results:
        status, answer = row["status"], expected.get((row["onnx"], row["vnnlib"]), "unknown")
        if status == "sat":
            ok = counterexample_holds(suite_dir, row["onnx"], suite_dir / row["vnnlib"], result_dir / row["result_file"])
        elif status == "unsat":
            ok = answer != "sat"
        else:
            counts[status if status in counts else "error"] += 1
            continue
        counts[status if ok else "wrong"] += 1
        if not ok:
            wrong.append(f"{row['onnx']} {row['vnnlib']}: answered {status}, expected {answer}")
    times = [float(row["time"]) for row in results]
    counts["total_s"] = sum(times)
    counts["median_s"] = statistics.median(times) if times else 0.0
    counts["wrong_list"] = wrong
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="vnncomp", description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="+", help="suite folder names, or 'all'")
    parser.add_argument("--cap", type=float, default=None, help="cap on each instance's timeout, seconds")
    parser.add_argument("--workers", type=int, default=2, help="instances run in parallel")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per worker (default: the CPUs shared out among the workers)")
    parser.add_argument("--ray", default=None, metavar="ADDRESS", help="run on a Ray cluster instead")
    parser.add_argument("--benchmarks", default=None, help="the benchmarks folder (default ../shared/benchmarks)")
    parser.add_argument("--out", default="vnncomp_results", help="folder for results CSVs and result files")
    parser.add_argument("--device", default=None, help="where the workers verify: cpu or cuda (default: the CPU)")
    parser.add_argument("--resume", action="store_true",
                        help="skip instances whose result files in --out are complete (after an interrupted run)")
    parser.add_argument("--only", nargs="+", default=(), metavar="TEXT",
                        help="run only the instances whose onnx or vnnlib path contains one of these strings")
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        print(f"vnncomp: error: --threads must be at least 1, got {args.threads}", file=sys.stderr)
        return 2
    root = find_benchmarks(args.benchmarks)
    names = suite_names(root, args.suites)
    table = []
    for name in names:
        suite_dir = root / name
        out = Path(args.out) / name
        out.mkdir(parents=True, exist_ok=True)
        print(f"{name}: running {suite_dir / 'instances.csv'}", file=sys.stderr)
        try:
            results = run_suite(suite_dir / "instances.csv", out / "results.csv", cap=args.cap, workers=args.workers,
                                ray_address=args.ray, result_dir=out / "files", resume=args.resume, device=args.device,
                                progress=suite_bar, only=args.only, threads=args.threads)
        except InputError as error:  # --only matches none of this suite's instances
            print(f"{name}: skipped: {error}", file=sys.stderr)
            continue
        table.append((name, score(suite_dir, results, out / "files")))
    if not table:
        print("vnncomp: error: no instance to run (see the lines above)", file=sys.stderr)
        return 2
    print(f"cap {args.cap} s, {args.workers} workers, {args.threads or 'default'} threads, device {args.device or 'cpu'}")
    return print_table(table)


def print_table(table: list[tuple[str, dict]]) -> int:
    """One row per suite (`score`'s counts), then every wrong answer; the exit status: 1 if any is wrong."""
    print(f"{'suite':<22}{'inst':>6}{'solved':>8}{'sat':>6}{'unsat':>7}{'timeout':>9}{'unknown':>9}{'error':>7}{'wrong':>7}"
          f"{'total s':>10}{'median s':>10}")
    for name, c in table:
        solved = c["sat"] + c["unsat"]
        print(f"{name:<22}{c['instances']:>6}{solved:>8}{c['sat']:>6}{c['unsat']:>7}{c['timeout']:>9}{c['unknown']:>9}"
              f"{c['error']:>7}{c['wrong']:>7}{c['total_s']:>10.1f}{c['median_s']:>10.2f}")
    for name, c in table:
        for line in c["wrong_list"]:
            print(f"WRONG {name}: {line}")
    return 1 if any(c["wrong"] for _, c in table) else 0


if __name__ == "__main__":
    sys.exit(main())
