"""GenBaB's branching compared side by side: verified counts with the same timeout per instance.

    python -m benchmarks.genbab_compare [--suite digits eran cgan lstm gates products attention] [--timeout 30]
        [--workers 2] [--eps 0.02 0.04 0.06 0.08] [--digits 10] [--eran-instances 36]
        [--nets 5] [--net-eps 0.05 0.1 0.2 0.3] [--strategies bbps+table bbps+midpoint]
    python -m benchmarks.genbab_compare --vnncomp eran_2021 dist_shift_2023 [--only SIGMOID] [--cap 60] [--workers 1]
        [--genbab]

Strategies: "no branching" (GenBaB's root bound: α-CROWN), "bbps+table" (GenBaB: bound propagation with
shortcuts, split points from the shipped tables), "bbps+midpoint", "largest-interval+midpoint", "fsb+table"
(strong branching: BBPS's best candidates, each measured by a bound pass of its children).
Cases: the built-in sigmoid/tanh digits MLP (`opwise.models.builtin("mlp")`) on the first correctly
classified bundled digits at each ε; eran_2021's sigmoid 6x200 network and cgan_2023_nonlinear from
../shared/benchmarks (first input box of each property); and small random networks whose nonlinearities
are products (`--nets` seeds per ε in `--net-eps`, robustness of the predicted class in the L∞ ball around a
random input): "lstm" (torch.nn.LSTM over 3 steps), "gates" (an LSTM cell written out, σ(·)·tanh(·)),
"products" (a(x)·b(x) and a(x)·tanh(b(x))), "attention" (one softmax self-attention head; its matrix
products and softmax's exponentials are split). A PGD attack runs first, once per case; cases it falsifies
are counted apart and not given to the strategies. Each (case, strategy) runs in its own worker process with
one torch thread (`--strategies` picks the columns). Prints status, seconds and domains per run, one table
row per case group, then bbps+table beside bbps+midpoint per case group over the cases that branched.

`--vnncomp SUITE...` instead runs VNN-COMP instances from ../shared/benchmarks (those whose paths contain an
`--only` string) as `verify_instance` does (PGD, root bounds, then the complete search the orchestrator
chooses), at the competition timeout capped at `--cap`, once with GenBaB's default split points (the table)
and, where that run reached GenBaB and branched, again with `split_point="midpoint"`: an instance decided by
the attack or at the root, or given to input splitting, never reads the table (`--genbab` forces GenBaB in
both runs, to measure the table where the orchestrator would split inputs). Prints per instance the
expected answer and each mode's status, domains, seconds and last open lower bound, then totals.
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
STRATEGIES = {"bbps+table": ("bbps", "table"), "bbps+midpoint": ("bbps", "midpoint"),
              "largest-interval+midpoint": ("largest-interval", "midpoint"), "fsb+table": ("fsb", "table")}
COLUMNS = ["no branching", *STRATEGIES]
#: the random product networks: name -> input shape
NETS = {"lstm": (1, 3, 2), "gates": (1, 4), "products": (1, 4), "attention": (1, 3, 4)}


class LSTMNet(torch.nn.Module):
    """torch.nn.LSTM (2 features, 4 hidden) over a 3-step sequence, its last output to 3 logits."""

    def __init__(self):
        super().__init__()
        self.lstm, self.last = torch.nn.LSTM(2, 4, batch_first=True), torch.nn.Linear(4, 3)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.last(out[:, -1])


class GateNet(torch.nn.Module):
    """One LSTM cell written out: c = σ(f)·c0 + σ(i)·tanh(g), h = σ(o)·tanh(c), c0 from the input too."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.first, self.last = torch.nn.Linear(4, 5 * width), torch.nn.Linear(width, 3)

    def forward(self, x):
        i, f, g, o, c0 = self.first(x).chunk(5, -1)
        c = torch.sigmoid(f) * c0 + torch.sigmoid(i) * torch.tanh(g)
        return self.last(torch.sigmoid(o) * torch.tanh(c))


class ProductNet(torch.nn.Module):
    """a(x)·b(x) and a(x)·tanh(b(x)) side by side, to 3 logits."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.first, self.last = torch.nn.Linear(4, 2 * width), torch.nn.Linear(2 * width, 3)

    def forward(self, x):
        a, b = self.first(x).chunk(2, -1)
        return self.last(torch.cat([a * b, a * torch.tanh(b)], -1))


class AttentionNet(torch.nn.Module):
    """One self-attention head over 3 tokens of 4 features: softmax(q kᵀ / 2) v, flattened to 3 logits."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Linear(4, 4) for _ in range(3))
        self.last = torch.nn.Linear(12, 3)

    def forward(self, x):
        scores = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2) / 2.0, -1)
        return self.last((scores @ self.v(x)).flatten(1))


def net_cases(kinds: list[str], eps_values: list[float], count: int) -> list[tuple[str, dict]]:
    return [(f"{kind} eps={eps}", {"kind": "net", "net": kind, "index": seed, "eps": eps})
            for kind in kinds for eps in eps_values for seed in range(count)]


def build_net(name: str, seed: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """The seeded random network and its input point."""
    torch.manual_seed(seed)
    model = {"lstm": LSTMNet, "gates": GateNet, "products": ProductNet, "attention": AttentionNet}[name]().eval()
    return model, torch.randn(NETS[name])


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

    if case["kind"] == "net":
        model, x = build_net(case["net"], case["index"])
        with torch.no_grad():
            label = int(model(x).argmax())
        spec = Specification(x - case["eps"], x + case["eps"], robustness_disjuncts(3, label))
        bounded = BoundedModel(model, x)
        return bounded, lambda z: bounded(z).reshape(z.shape[0], -1), spec
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
    """(status, seconds, stats) of one strategy on one case; status "error" (the message in stats, printed)
    where the search raised, so that one failing case does not end the comparison."""
    from opwise.bounds.strategies.genbab.bounding import DomainBounder
    from opwise.bounds.strategies.genbab.search import branch_and_bound

    torch.set_num_threads(1)
    _, case, strategy, timeout = job
    bounded, _, spec = load_case(case)
    start = time.monotonic()
    try:
        if strategy == "no branching":
            lower = DomainBounder(bounded, spec).root(start + timeout).lower
            return ("verified" if lower > 0 else "unknown"), time.monotonic() - start, {"margin": lower}
        branching, split_point = STRATEGIES[strategy]
        result = branch_and_bound(bounded, spec, branching=branching, split_point=split_point, timeout=timeout)
    except Exception as error:  # noqa: BLE001 (reported as the case's status)
        return "error", time.monotonic() - start, {"error": f"{type(error).__name__}: {error}"}
    return result.status, time.monotonic() - start, result.stats


def run_vnncomp(job: tuple[str, str, float, str, bool]) -> dict:
    """One VNN-COMP instance with one split-point mode, every input box through `verify_specification` with
    a complete search, as verify_instance runs it ("table" is the default search; "midpoint" forces GenBaB
    with midpoint split points; `genbab` forces GenBaB in both). Returns status, seconds (loading excluded), GenBaB's domains and rounds
    summed over the boxes, the searches used and GenBaB's last reported open lower bound."""
    from opwise.bounds.verify import verify_specification
    from opwise.bounds.vnncomp.instance import load_with_engine
    from opwise.bounds.vnncomp.vnnlib import parse_vnnlib
    from opwise.errors import TimeLimitReached

    torch.set_num_threads(1)
    onnx, vnnlib, timeout, split_point, genbab = job
    bounded, input_shape = load_with_engine(onnx)
    specs = [spec.to(bounded.device, torch.float32) for spec in parse_vnnlib(vnnlib, input_shape, dtype=torch.float64)]
    record = {"domains": 0, "rounds": 0, "searches": [], "lower": None}

    def progress(report: dict) -> None:
        if report.get("search") == "GenBaB" and report.get("lower") is not None:
            record["lower"] = float(report["lower"])

    complete = ({"strategy": "genbab"} if genbab else True) if split_point == "table" else {"strategy": "genbab", "split_point": split_point}
    start, outcomes = time.monotonic(), []
    for spec in specs:
        remaining = timeout - (time.monotonic() - start)
        if remaining <= 0:
            outcomes.append("timeout")
            break
        try:
            result = verify_specification(bounded, spec, complete=complete, timeout=remaining, progress=progress)
        except TimeLimitReached:
            outcomes.append("timeout")
            break
        search = result.stats.get("bab", {})
        record["domains"] += search.get("domains_visited", 0)
        record["rounds"] += search.get("rounds", 0)
        record["searches"].append(result.stats.get("search") or ("attack" if result.status == "falsified" else "root"))
        outcomes.append(result.vnncomp_status)
        if outcomes[-1] == "sat":
            break
    status = ("sat" if "sat" in outcomes else "unsat" if outcomes == ["unsat"] * len(specs) else
              "timeout" if "timeout" in outcomes else "unknown")
    return {**record, "status": status, "seconds": time.monotonic() - start}


def vnncomp_instances(suites: list[str], only: list[str] | None) -> list[tuple[str, str, str, float, str]]:
    """(suite, onnx path, vnnlib path, competition timeout, expected answer) of each selected instance."""
    found = []
    for suite in suites:
        folder = SHARED / suite
        if not folder.is_dir():
            print(f"skipping {suite}: {folder} not found", file=sys.stderr)
            continue
        with open(folder / "instances.csv", newline="") as handle:
            rows = [row for row in csv.reader(handle) if row]
        with open(folder / "expected.csv", newline="") as handle:
            expected = {(row["onnx"], row["vnnlib"]): row["expected"] for row in csv.DictReader(handle)}
        for onnx, vnnlib, timeout in rows:
            onnx, vnnlib = onnx.strip(), vnnlib.strip()
            if only and not any(text in onnx or text in vnnlib for text in only):
                continue
            found.append((suite, str(folder / onnx), str(folder / vnnlib), float(timeout), expected.get((onnx, vnnlib), "?")))
    return found


def compare_vnncomp(suites: list[str], only: list[str] | None, cap: float, workers: int, genbab: bool = False) -> None:
    """Table vs midpoint on VNN-COMP instances (see the module docstring), printed per instance and in total."""
    from multiprocessing.pool import ThreadPool

    instances = vnncomp_instances(suites, only)
    context = multiprocessing.get_context("spawn")

    def both(instance) -> tuple[dict, dict | None]:
        _, onnx, vnnlib, timeout, _ = instance
        limit = min(timeout, cap)
        table = pool.apply(run_vnncomp, ((onnx, vnnlib, limit, "table", genbab),))
        if "genbab" not in table["searches"] or table["rounds"] == 0:
            return table, None  # never split in GenBaB (decided before, input splitting, out of time): no table read
        return table, pool.apply(run_vnncomp, ((onnx, vnnlib, limit, "midpoint", genbab),))

    def cell(run: dict | None) -> str:
        if run is None:
            return "(same: not branched)"
        lower = "" if run["lower"] is None else f", lower {run['lower']:.4f}"
        return f"{run['status']} {run['domains']} dom {run['seconds']:.1f} s{lower}"

    rows = []
    with context.Pool(workers, maxtasksperchild=1) as pool, ThreadPool(workers) as threads:
        for instance, (table, midpoint) in zip(instances, threads.imap(both, instances)):
            suite, _, vnnlib, _, expected = instance
            wrong = {("unsat", "sat"), ("sat", "unsat")}
            flags = [f"WRONG ({mode})" for mode, run in (("table", table), ("midpoint", midpoint))
                     if run is not None and (run["status"], expected) in wrong]
            rows.append((instance, table, midpoint))
            print(f"{suite} {Path(vnnlib).name} [{expected}] {'+'.join(table['searches'])}: table {cell(table)} | "
                  f"midpoint {cell(midpoint)} {' '.join(flags)}", flush=True)
    branched = [(table, midpoint) for _, table, midpoint in rows if midpoint is not None]
    solved = lambda run: run["status"] in ("sat", "unsat")
    both_solved = [(t, m) for t, m in branched if solved(t) and solved(m)]
    print(f"\n{len(rows)} instances, cap {cap:g} s; {len(rows) - len(branched)} never branched in GenBaB (decided by the "
          f"attack, the root bounds or input splitting, or out of time before a split: the table is not read); "
          f"{len(branched)} branched in GenBaB:")
    print("| mode | solved | domains (all branched) | seconds (all branched) | domains (both solved) | seconds (both solved) |")
    print("|---|---|---|---|---|---|")
    for index, mode in enumerate(("table", "midpoint")):
        runs = [pair[index] for pair in branched]
        solved_runs = [pair[index] for pair in both_solved]
        print(f"| {mode} | {sum(map(solved, runs))}/{len(runs)} | {sum(r['domains'] for r in runs)} | "
              f"{sum(r['seconds'] for r in runs):.1f} | {sum(r['domains'] for r in solved_runs)} | "
              f"{sum(r['seconds'] for r in solved_runs):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", nargs="+", default=["digits", "eran", "cgan", *NETS], choices=["digits", "eran", "cgan", *NETS])
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--eps", type=float, nargs="+", default=[0.02, 0.04, 0.06, 0.08])
    parser.add_argument("--digits", type=int, default=10, help="correctly classified digits per eps")
    parser.add_argument("--eran-instances", type=int, default=36, help="first N sigmoid instances of eran_2021")
    parser.add_argument("--nets", type=int, default=5, help="random networks (seeds) per product-network kind and eps")
    parser.add_argument("--net-eps", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3])
    parser.add_argument("--strategies", nargs="+", default=COLUMNS, choices=COLUMNS, metavar="STRATEGY",
                        help=f"which columns to run (default all: {', '.join(COLUMNS)})")
    parser.add_argument("--vnncomp", nargs="+", metavar="SUITE", help="compare table vs midpoint on these VNN-COMP suites")
    parser.add_argument("--only", nargs="+", metavar="TEXT", help="with --vnncomp: instances whose paths contain one")
    parser.add_argument("--cap", type=float, default=60.0, help="with --vnncomp: cap on each instance's timeout, seconds")
    parser.add_argument("--genbab", action="store_true",
                        help="with --vnncomp: GenBaB even where the orchestrator would split inputs (few free inputs)")
    args = parser.parse_args()
    if args.vnncomp:
        compare_vnncomp(args.vnncomp, args.only, args.cap, args.workers, args.genbab)
        return
    cases = []
    if "digits" in args.suite:
        cases += digits_cases(args.eps, args.digits)
    if "eran" in args.suite:
        cases += vnncomp_cases("eran_2021", "SIGMOID", args.eran_instances)
    if "cgan" in args.suite:
        cases += vnncomp_cases("cgan_2023_nonlinear", "", 1)
    cases += net_cases([kind for kind in NETS if kind in args.suite], args.net_eps, args.nets)
    columns = args.strategies
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.workers, maxtasksperchild=1) as pool:
        falsified = pool.map(attack_case, [(group, case, args.timeout) for group, case in cases])
        jobs = [(group, case, strategy, args.timeout) for (group, case), found in zip(cases, falsified) if not found
                for strategy in columns]
        results = []
        for job, result in zip(jobs, pool.imap(run_strategy, jobs)):  # printed as they come in
            results.append(result)
            print(f"{job[0]} {job[1].get('index', job[1].get('vnnlib'))} {job[2]}: {result[0]} {result[1]:.1f}s "
                  f"{result[2].get('domains_visited', 1)} domains {result[2].get('error', '')}", flush=True)
    groups: dict[str, dict] = {}
    for (group, _), found in zip(cases, falsified):
        row = groups.setdefault(group, {"cases": 0, "falsified by PGD": 0, **{c: 0 for c in columns}, "seconds": {c: [] for c in columns}})
        row["cases"] += 1
        row["falsified by PGD"] += found
    for (group, _, strategy, _), (status, seconds, _) in zip(jobs, results):
        groups[group][strategy] += status == "verified"
        groups[group]["seconds"][strategy].append(seconds)
    print(f"\nverified per case group, timeout {args.timeout:g} s per case and strategy:")
    print("| cases | n | PGD falsified | " + " | ".join(columns) + " |")
    print("|---|---|---|" + "---|" * len(columns))
    for group, row in groups.items():
        cells = [f"{row[c]} ({sum(row['seconds'][c]) / max(1, len(row['seconds'][c])):.1f} s)" for c in columns]
        print(f"| {group} | {row['cases']} | {row['falsified by PGD']} | " + " | ".join(cells) + " |")
    if {"bbps+table", "bbps+midpoint"} <= set(columns):
        print_table_vs_midpoint(jobs, results)


def print_table_vs_midpoint(jobs: list, results: list) -> None:
    """bbps+table beside bbps+midpoint per case group, over the cases where the table run branched (more than
    one domain): verified counts, and domains and seconds summed over the cases both verified."""
    runs: dict[tuple, dict] = {}
    for (group, case, strategy, _), result in zip(jobs, results):
        runs.setdefault((group, str(sorted(case.items()))), {})[strategy] = result
    rows: dict[str, list] = {}
    for (group, _), by_strategy in runs.items():
        table, midpoint = by_strategy["bbps+table"], by_strategy["bbps+midpoint"]
        if table[2].get("domains_visited", 1) > 1 or midpoint[2].get("domains_visited", 1) > 1:
            rows.setdefault(group, []).append((table, midpoint))
    print("\nbbps+table vs bbps+midpoint, cases that branched (verified; domains and seconds summed where both verified):")
    print("| cases | branched | table verified | midpoint verified | table domains | midpoint domains | table s | midpoint s |")
    print("|---|---|---|---|---|---|---|---|")
    for group, pairs in [*rows.items(), ("total", [pair for pairs in rows.values() for pair in pairs])]:
        both = [(t, m) for t, m in pairs if t[0] == m[0] == "verified"]
        domains = [sum(pair[i][2].get("domains_visited", 1) for pair in both) for i in (0, 1)]
        seconds = [sum(pair[i][1] for pair in both) for i in (0, 1)]
        print(f"| {group} | {len(pairs)} | {sum(t[0] == 'verified' for t, _ in pairs)} | {sum(m[0] == 'verified' for _, m in pairs)} | "
              f"{domains[0]} | {domains[1]} | {seconds[0]:.1f} | {seconds[1]:.1f} |")


if __name__ == "__main__":
    main()
