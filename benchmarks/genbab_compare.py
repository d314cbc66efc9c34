"""GenBaB's branching compared side by side: verified counts with the same timeout per instance.

    python -m benchmarks.genbab_compare [--suite digits eran cgan] [--timeout 30] [--workers 2]
        [--eps 0.02 0.04 0.06 0.08] [--digits 10] [--eran-instances 36]

Strategies: "alpha-crown only" (GenBaB's root bound: α-CROWN, no branching), "bbps+table" (GenBaB:
bound propagation with shortcuts, split points from the shipped table), "largest-interval+midpoint".
Cases: the built-in sigmoid/tanh digits MLP (`opwise.models.builtin("mlp")`) on the first correctly
classified bundled digits at each ε; eran_2021's sigmoid 6x200 network and cgan_2023_nonlinear from
../shared/benchmarks (first input box of each property). A PGD attack runs first, once per case; cases
it falsifies are counted apart and not given to the strategies. Each (case, strategy) runs in its own
worker process with one torch thread. Prints one table row per case group.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import sys
import time
from pathlib import Path

import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
STRATEGIES = {"bbps+table": ("bbps", "table"), "largest-interval+midpoint": ("largest-interval", "midpoint")}
COLUMNS = ["alpha-crown only", *STRATEGIES]


def digits_cases(eps_values: list[float], count: int) -> list[tuple[str, dict]]:
    import opwise

    model = opwise.models.builtin("mlp")
    images, labels = opwise.models.demo_inputs("mlp", n=16)
    with torch.no_grad():
        correct = (model(images).argmax(1) == labels).nonzero().flatten()[:count].tolist()
    return [(f"digits mlp eps={eps}", {"kind": "digits", "index": index, "eps": eps}) for eps in eps_values
            for index in correct]


def vnncomp_cases(suite: str, onnx_filter: str, limit: int) -> list[tuple[str, dict]]:
    folder = SHARED / suite
    if not folder.is_dir():
        print(f"skipping {suite}: {folder} not found", file=sys.stderr)
        return []
    with open(folder / "instances.csv", newline="") as handle:
        rows = [row for row in csv.reader(handle) if onnx_filter in row[0]][:limit]
    return [(suite, {"kind": "onnx", "onnx": str(folder / row[0].strip()), "vnnlib": str(folder / row[1].strip())})
            for row in rows]


def load_case(case: dict):
    """(bounded model, forward function, specification) of a case."""
    from opwise.bounds import BoundedModel
    from opwise.bounds.spec import Specification, robustness_disjuncts

    if case["kind"] == "digits":
        import opwise

        model = opwise.models.builtin("mlp")
        images, labels = opwise.models.demo_inputs("mlp", n=16)
        x, label = images[case["index"] : case["index"] + 1], int(labels[case["index"]])
        spec = Specification((x - case["eps"]).clamp(0, 1), (x + case["eps"]).clamp(0, 1), robustness_disjuncts(10, label))
        bounded = BoundedModel(model, x)
        return bounded, lambda z: bounded(z).reshape(z.shape[0], -1), spec
    from opwise.bounds.vnncomp.instance import load_with_engine
    from opwise.bounds.vnncomp.vnnlib import parse_vnnlib

    bounded, input_shape = load_with_engine(case["onnx"])
    spec = parse_vnnlib(case["vnnlib"], input_shape)[0]
    return bounded, bounded, spec


def attack_case(job: tuple[str, dict, float]) -> bool:
    """Whether PGD finds a confirmed counterexample (the case is then left out of the comparison)."""
    from opwise.bounds.attack import pgd_attack

    torch.set_num_threads(1)
    _, case, timeout = job
    _, function, spec = load_case(case)
    return bool(pgd_attack(function, spec, seed=0, time_limit=min(timeout, 10.0)).found)


def run_strategy(job: tuple[str, dict, str, float]) -> tuple[str, float, dict]:
    """(status, seconds, stats) of one strategy on one case."""
    from opwise.bounds.strategies.genbab.bounding import DomainBounder
    from opwise.bounds.strategies.genbab.search import branch_and_bound

    torch.set_num_threads(1)
    _, case, strategy, timeout = job
    bounded, _, spec = load_case(case)
    start = time.monotonic()
    if strategy == "alpha-crown only":
        lower = DomainBounder(bounded, spec).root(start + timeout).lower
        return ("verified" if lower > 0 else "unknown"), time.monotonic() - start, {"margin": lower}
    branching, split_point = STRATEGIES[strategy]
    result = branch_and_bound(bounded, spec, branching=branching, split_point=split_point, timeout=timeout)
    return result.status, time.monotonic() - start, result.stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", nargs="+", default=["digits", "eran", "cgan"], choices=["digits", "eran", "cgan"])
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--eps", type=float, nargs="+", default=[0.02, 0.04, 0.06, 0.08])
    parser.add_argument("--digits", type=int, default=10, help="correctly classified digits per eps")
    parser.add_argument("--eran-instances", type=int, default=36, help="first N sigmoid instances of eran_2021")
    args = parser.parse_args()
    cases = []
    if "digits" in args.suite:
        cases += digits_cases(args.eps, args.digits)
    if "eran" in args.suite:
        cases += vnncomp_cases("eran_2021", "SIGMOID", args.eran_instances)
    if "cgan" in args.suite:
        cases += vnncomp_cases("cgan_2023_nonlinear", "", 1)
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.workers, maxtasksperchild=1) as pool:
        falsified = pool.map(attack_case, [(group, case, args.timeout) for group, case in cases])
        jobs = [(group, case, strategy, args.timeout) for (group, case), found in zip(cases, falsified) if not found
                for strategy in COLUMNS]
        results = []
        for job, result in zip(jobs, pool.imap(run_strategy, jobs)):  # printed as they come in
            results.append(result)
            print(f"{job[0]} {job[1].get('index', job[1].get('vnnlib'))} {job[2]}: {result[0]} {result[1]:.1f}s", flush=True)
    groups: dict[str, dict] = {}
    for (group, _), found in zip(cases, falsified):
        row = groups.setdefault(group, {"cases": 0, "falsified by PGD": 0, **{c: 0 for c in COLUMNS}, "seconds": {c: [] for c in COLUMNS}})
        row["cases"] += 1
        row["falsified by PGD"] += found
    for (group, _, strategy, _), (status, seconds, _) in zip(jobs, results):
        groups[group][strategy] += status == "verified"
        groups[group]["seconds"][strategy].append(seconds)
    print(f"\nverified per case group, timeout {args.timeout:g} s per case and strategy:")
    print("| cases | n | PGD falsified | " + " | ".join(COLUMNS) + " |")
    print("|---|---|---|" + "---|" * len(COLUMNS))
    for group, row in groups.items():
        cells = [f"{row[c]} ({sum(row['seconds'][c]) / max(1, len(row['seconds'][c])):.1f} s)" for c in COLUMNS]
        print(f"| {group} | {row['cases']} | {row['falsified by PGD']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
