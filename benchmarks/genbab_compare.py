"""GenBaB's branching compared side by side: verified counts with the same timeout per instance.

    python -m benchmarks.genbab_compare [--suite digits eran cgan lstm gates products attention] [--timeout 30]
        [--workers 2] [--eps 0.02 0.04 0.06 0.08] [--digits 10] [--eran-instances 36]
        [--nets 5] [--net-eps 0.05 0.1 0.2 0.3]

Strategies: "no branching" (GenBaB's root bound: α-CROWN), "bbps+table" (GenBaB: bound propagation with
shortcuts, split points from the shipped tables), "bbps+midpoint", "largest-interval+midpoint".
Cases: the built-in sigmoid/tanh digits MLP (`opwise.models.builtin("mlp")`) on the first correctly
classified bundled digits at each ε; eran_2021's sigmoid 6x200 network and cgan_2023_nonlinear from
../shared/benchmarks (first input box of each property); and small random networks whose nonlinearities
are products (`--nets` seeds per ε in `--net-eps`, robustness of the predicted class in the L∞ ball around a
random input): "lstm" (torch.nn.LSTM over 3 steps), "gates" (an LSTM cell written out, σ(·)·tanh(·)),
"products" (a(x)·b(x) and a(x)·tanh(b(x))), "attention" (one softmax self-attention head; its matrix
products and softmax's exponentials are split). A PGD attack runs first, once per case; cases it falsifies
are counted apart and not given to the strategies. Each (case, strategy) runs in its own worker process with
one torch thread. Prints one table row per case group.
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
              "largest-interval+midpoint": ("largest-interval", "midpoint")}
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
    """(status, seconds, stats) of one strategy on one case."""
    from opwise.bounds.strategies.genbab.bounding import DomainBounder
    from opwise.bounds.strategies.genbab.search import branch_and_bound

    torch.set_num_threads(1)
    _, case, strategy, timeout = job
    bounded, _, spec = load_case(case)
    start = time.monotonic()
    if strategy == "no branching":
        lower = DomainBounder(bounded, spec).root(start + timeout).lower
        return ("verified" if lower > 0 else "unknown"), time.monotonic() - start, {"margin": lower}
    branching, split_point = STRATEGIES[strategy]
    result = branch_and_bound(bounded, spec, branching=branching, split_point=split_point, timeout=timeout)
    return result.status, time.monotonic() - start, result.stats


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
    args = parser.parse_args()
    cases = []
    if "digits" in args.suite:
        cases += digits_cases(args.eps, args.digits)
    if "eran" in args.suite:
        cases += vnncomp_cases("eran_2021", "SIGMOID", args.eran_instances)
    if "cgan" in args.suite:
        cases += vnncomp_cases("cgan_2023_nonlinear", "", 1)
    cases += net_cases([kind for kind in NETS if kind in args.suite], args.net_eps, args.nets)
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
