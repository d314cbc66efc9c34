"""Bound propagation benchmark: per model and method, seconds per call and mean bound width.

    python -m benchmarks.bounds [--eps 0.01] [--repeat 3] [--onnx] [--auto-lirpa DIR]

Models: seeded random ReLU MLP, CNN and GELU MLP (always), the built-in demo models (sigmoid/tanh MLP, CNN,
and the small ViT-like transformer) when opwise.load_model is available, and ACAS Xu networks from ../shared/benchmarks with --onnx (needs the ONNX importer). Widths
are of the margins y_target − y_j (specs = classes − 1); lower is tighter. `--auto-lirpa DIR` adds
auto_LiRPA (a source checkout, e.g. from github:Verified-Intelligence/auto_LiRPA, with its pure-Python
dependencies appdirs/graphviz/tqdm importable; never a dependency of opwise) on the same models and specs,
and prints the width and time ratios opwise / auto_LiRPA (α-CROWN at matched settings and at each tool's defaults).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import opwise
from opwise.bounds import METHODS, BoundedModel
from opwise.bounds.alpha import AlphaOptions
from opwise.errors import OpwiseError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"


def random_models() -> dict[str, tuple[torch.nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 100), torch.nn.ReLU(), torch.nn.Linear(100, 100),
                              torch.nn.ReLU(), torch.nn.Linear(100, 10))
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, stride=2, padding=1),
                              torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 50), torch.nn.ReLU(),
                              torch.nn.Linear(50, 10))
    gelu = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 64),
                               torch.nn.GELU(), torch.nn.Linear(64, 10))
    return {"relu_mlp_64-100-100-10": (mlp, torch.rand(1, 1, 8, 8)), "relu_cnn_16x16": (cnn, torch.rand(1, 1, 16, 16)),
            "gelu_mlp_64-64-64-10": (gelu, torch.rand(1, 1, 8, 8))}


def builtin_models() -> dict[str, tuple[torch.nn.Module, torch.Tensor]]:
    load = getattr(opwise, "load_model", None)
    if load is None:
        return {}
    models = {}
    for name in ("mlp", "cnn", "transformer"):  # the transformer: a small ViT (image rows as tokens)
        try:
            model, inputs = load(f"builtin:{name}")
        except OpwiseError as error:
            print(f"skipping builtin:{name}: {error}")
            continue
        models[f"builtin:{name}"] = (model, inputs[0] if isinstance(inputs, (tuple, list)) else inputs)
    return models


def onnx_models() -> dict[str, tuple[object, torch.Tensor]]:
    load = getattr(opwise, "load_model", None)
    folder = SHARED / "acasxu" / "onnx"
    if load is None or not folder.is_dir():
        print("skipping ONNX networks (no opwise.load_model or no ../shared/benchmarks)")
        return {}
    models = {}
    for path in sorted(folder.glob("*.onnx"))[:3]:
        model, inputs = load(str(path))
        models[path.stem] = (model, inputs[0] if isinstance(inputs, (tuple, list)) else inputs)
    return models


def measure(model, x: torch.Tensor, eps: float, repeat: int) -> list[tuple[str, float, float]]:
    bounded = BoundedModel(model, x)
    with torch.no_grad():
        target = int(bounded(x).reshape(1, -1).argmax())
    rows = []
    for method in METHODS:
        try:
            bounded.compute_bounds(x, eps=eps, method=method, target=target)  # warm-up (linearization caches, lazy imports)
            start = time.perf_counter()
            for _ in range(repeat):
                bounds = bounded.compute_bounds(x, eps=eps, method=method, target=target)
            seconds = (time.perf_counter() - start) / repeat
        except OpwiseError as error:
            print(f"  {method}: {error}")
            continue
        rows.append((method, seconds, float(bounds.width.mean())))
    return rows


def compare_auto_lirpa(source: str, models: dict, eps: float, repeat: int) -> None:
    """Width and time ratios opwise / auto_LiRPA per model and method.

    α-CROWN twice: `alpha-crown` with matched settings (20 Adam steps, lr 0.1 for every α, patience 4, and
    auto_LiRPA's stopping rule for both: any improvement resets the patience, i.e. tolerance 0), and `alpha-crown*` with
    each tool's own defaults, what a user of either gets (auto_LiRPA: 20 steps, lr 0.5, patience 10, and it
    optimises the upper and the lower bound in two runs; opwise: `AlphaOptions()`, both sides in one run).
    """
    sys.path.insert(0, source)
    from auto_LiRPA import BoundedModule, BoundedTensor, PerturbationLpNorm

    from opwise.bounds.spec import margin_matrix

    print(f"\n{'model':28s} {'method':12s} {'width ratio':>12s} {'max |lower diff|':>17s} {'time ratio':>11s}")
    for name, (model, x) in models.items():
        if not isinstance(model, torch.nn.Module):
            continue
        model.eval()
        with torch.no_grad():
            output = model(x).reshape(1, -1)
        C = margin_matrix(output.shape[1], int(output.argmax()))[None]
        try:
            theirs = BoundedModule(model, torch.zeros_like(x), device="cpu")
        except Exception as error:  # noqa: BLE001 -- a model auto_LiRPA cannot load is a result to print
            print(f"{name:28s} {'all':12s} auto_LiRPA failed: {type(error).__name__}: {str(error).splitlines()[0][:80]}")
            continue
        matched = {"iteration": 20, "lr_alpha": 0.1, "early_stop_patience": 4}
        defaults = {"iteration": 20, "lr_alpha": 0.5, "early_stop_patience": 10}  # auto_LiRPA's own
        box = BoundedTensor(x, PerturbationLpNorm(norm=float("inf"), eps=eps))
        ours = BoundedModel(model, x)
        rows = (("ibp", "IBP", matched, None), ("crown", "CROWN", matched, None),
                ("alpha-crown", "alpha-CROWN", matched, AlphaOptions(tolerance=0.0, slope_learning_rate=None)),
                ("alpha-crown*", "alpha-CROWN", defaults, AlphaOptions()))
        for label, their_method, their_options, our_options in rows:
            method = label.rstrip("*")
            theirs.set_bound_opts({"optimize_bound_args": their_options})
            times = []
            try:
                for run in (lambda: theirs.compute_bounds(x=(box,), C=C, method=their_method),
                            lambda: ours.compute_bounds(x, eps=eps, method=method, C=C, alpha=our_options)):
                    result = run()
                    start = time.perf_counter()
                    for _ in range(repeat):
                        result = run()
                    times.append(((time.perf_counter() - start) / repeat, result))
            except Exception as error:  # noqa: BLE001 -- a model the other tool cannot bound is a result to print
                side = "auto_LiRPA" if not times else "opwise"
                print(f"{name:28s} {label:12s} {side} failed: {type(error).__name__}: {str(error).splitlines()[0][:80]}")
                continue
            (their_time, (their_lower, their_upper)), (our_time, our_bounds) = times
            ratio = float(our_bounds.width.mean()) / float((their_upper - their_lower).detach().mean())
            difference = float((our_bounds.lower - their_lower.detach()).abs().max())
            print(f"{name:28s} {label:12s} {ratio:12.6f} {difference:17.2e} {our_time / their_time:11.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eps", type=float, default=0.01)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--onnx", action="store_true", help="also the ACAS Xu networks from ../shared/benchmarks")
    parser.add_argument("--auto-lirpa", default=None, metavar="DIR", help="an auto_LiRPA source checkout to compare with")
    parser.add_argument("--models", default=None, metavar="TEXT", help="only the models whose name contains TEXT")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = {**random_models(), **builtin_models(), **(onnx_models() if args.onnx else {})}
    models = {name: entry for name, entry in models.items() if args.models is None or args.models in name}
    print(f"{'model':28s} {'method':12s} {'seconds':>9s} {'mean width':>11s} {'width/ibp':>9s}")
    for name, (model, x) in models.items():
        rows = measure(model, x, args.eps, args.repeat)
        ibp = next((width for method, _, width in rows if method == "ibp"), None)
        for method, seconds, width in rows:
            ratio = f"{width / ibp:9.3f}" if ibp else "        -"
            print(f"{name:28s} {method:12s} {seconds:9.4f} {width:11.4f} {ratio}")
    if args.auto_lirpa:
        compare_auto_lirpa(args.auto_lirpa, models, args.eps, args.repeat)


if __name__ == "__main__":
    main()
