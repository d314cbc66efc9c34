"""Bound propagation benchmark: per model and method, seconds per call and mean bound width.

    python -m benchmarks.bounds [--eps 0.01] [--repeat 3] [--onnx] [--auto-lirpa DIR] [--device cuda] [--methods crown,alpha-crown]

Models: seeded random ReLU MLP, CNN and GELU MLP, two CIFAR-sized (3×32×32) ReLU conv nets (always), the built-in demo models (sigmoid/tanh MLP, CNN,
and the small ViT-like transformer) when opwise.load_model is available, and ACAS Xu networks from ../shared/benchmarks with --onnx (needs the ONNX importer). Widths
are of the margins y_target − y_j (specs = classes − 1); lower is tighter. `--auto-lirpa DIR` adds
auto_LiRPA (a source checkout, e.g. from github:Verified-Intelligence/auto_LiRPA, with its pure-Python
dependencies appdirs/graphviz/tqdm importable; never a dependency of opwise) on the same models and specs,
and prints the width and time ratios opwise / auto_LiRPA (α-CROWN at matched settings and at each tool's defaults),
with construction (tracing, BoundedModel / BoundedModule) timed apart from computing bounds; the two tools'
calls alternate and each tool's median call is reported, so a change of machine load hits both alike.
`--device` runs both tools on that device (default: CUDA where present); `--methods` keeps only the named
methods (the comparison's rows by their opwise names: ibp, crown, alpha-crown, alpha-crown*).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import opwise
from opwise.bounds import METHODS, BoundedModel
from opwise.bounds.strategies.alpha import AlphaOptions
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


class _ResidualBlock(torch.nn.Module):
    """conv-ReLU-conv plus the input (a 1×1 strided projection where the shape changes), then ReLU."""

    def __init__(self, inputs: int, outputs: int, stride: int):
        super().__init__()
        self.first = torch.nn.Conv2d(inputs, outputs, 3, stride, 1)
        self.second = torch.nn.Conv2d(outputs, outputs, 3, 1, 1)
        self.shortcut = torch.nn.Conv2d(inputs, outputs, 1, stride) if stride != 1 or inputs != outputs else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(self.second(torch.relu(self.first(x))) + shortcut)


def cifar_models() -> dict[str, tuple[torch.nn.Module, torch.Tensor]]:
    """CIFAR-sized conv nets as verification users bring them (the 4-layer net of the CROWN papers, a wider 6-layer
    one, and a ResNet of three stages, 32-128 channels, whose intermediate bounds are most of a pass's time), seeded
    random weights."""
    torch.manual_seed(0)
    four = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 4, stride=2, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(16, 32, 4, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(32 * 8 * 8, 100), torch.nn.ReLU(), torch.nn.Linear(100, 10))
    six = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 4, stride=2, padding=1),
                              torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(64, 64, 4, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(64 * 8 * 8, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    inputs = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)  # drawn before the ResNet: the inputs of earlier runs
    resnet = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), _ResidualBlock(32, 32, 1),
                                 _ResidualBlock(32, 64, 2), _ResidualBlock(64, 128, 2), torch.nn.AvgPool2d(8),
                                 torch.nn.Flatten(), torch.nn.Linear(128, 10))
    with torch.no_grad():  # halved weights: outputs of the size of the others' at PyTorch's initialisation
        for module in resnet.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                module.weight.mul_(0.5)
    return {"cifar_cnn_4layer": (four.eval(), inputs[0]), "cifar_cnn_6layer": (six.eval(), inputs[1]),
            "cifar_resnet_3stage": (resnet.eval(), torch.rand(1, 3, 32, 32))}


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


def measure(model, x: torch.Tensor, eps: float, repeat: int, device: str,
            methods: tuple[str, ...] = tuple(METHODS)) -> list[tuple[str, float, float]]:
    bounded = BoundedModel(model, x, device=device)
    with torch.no_grad():
        target = int(bounded(x).reshape(1, -1).argmax())
    rows = []
    for method in methods:
        try:
            bounded.compute_bounds(x, eps=eps, method=method, target=target)  # warm-up (linearization caches, lazy imports)
            start = time.perf_counter()
            for _ in range(repeat):
                bounds = bounded.compute_bounds(x, eps=eps, method=method, target=target)
            _synchronize(device)
            seconds = (time.perf_counter() - start) / repeat
        except OpwiseError as error:
            print(f"  {method}: {error}")
            continue
        rows.append((method, seconds, float(bounds.width.mean())))
    return rows


def _synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _timed(run, device: str):
    """(seconds, result) of one call, device work included."""
    _synchronize(device)
    start = time.perf_counter()
    result = run()
    _synchronize(device)
    return time.perf_counter() - start, result


def compare_auto_lirpa(source: str, models: dict, eps: float, repeat: int, device: str, methods: tuple[str, ...] | None = None) -> None:
    """Width and time ratios opwise / auto_LiRPA per model and method.

    α-CROWN twice: `alpha-crown` with matched settings (20 Adam steps, lr 0.1 for every α, patience 4, and
    auto_LiRPA's stopping rule for both: any improvement resets the patience, i.e. tolerance 0), and `alpha-crown*` with
    each tool's own defaults, what a user of either gets (auto_LiRPA: 20 steps, lr 0.5, patience 10, and it
    optimises the upper and the lower bound in two runs; opwise: `AlphaOptions()`, both sides in one run).
    """
    sys.path.insert(0, source)
    from auto_LiRPA import BoundedModule, BoundedTensor, PerturbationLpNorm

    from opwise.bounds.spec import margin_matrix

    print(f"\ndevice {device}; construction: opwise BoundedModel / auto_LiRPA BoundedModule seconds; compute: per call")
    print(f"{'model':28s} {'method':12s} {'width ratio':>12s} {'max |lower diff|':>17s} {'time ratio':>11s} "
          f"{'opwise s':>9s} {'auto_LiRPA s':>12s}")
    for name, (model, x) in models.items():
        if not isinstance(model, torch.nn.Module):
            continue
        model = model.eval().to(device)
        x = x.to(device)
        with torch.no_grad():
            output = model(x).reshape(1, -1)
        C = margin_matrix(output.shape[1], int(output.argmax()))[None].to(device)
        try:
            their_build, theirs = _timed(lambda: BoundedModule(model, torch.zeros_like(x), device=device), device)
        except Exception as error:  # noqa: BLE001 -- a model auto_LiRPA cannot load is a result to print
            print(f"{name:28s} {'all':12s} auto_LiRPA failed: {type(error).__name__}: {str(error).splitlines()[0][:80]}")
            continue
        matched = {"iteration": 20, "lr_alpha": 0.1, "early_stop_patience": 4}
        defaults = {"iteration": 20, "lr_alpha": 0.5, "early_stop_patience": 10}  # auto_LiRPA's own
        box = BoundedTensor(x, PerturbationLpNorm(norm=float("inf"), eps=eps))
        our_build, ours = _timed(lambda: BoundedModel(model, x, device=device), device)
        print(f"{name:28s} {'construction':12s} {'':12s} {'':17s} {our_build / their_build:11.2f} {our_build:9.3f} {their_build:12.3f}")
        rows = (("ibp", "IBP", matched, None), ("crown", "CROWN", matched, None),
                ("alpha-crown", "alpha-CROWN", matched, AlphaOptions(tolerance=0.0, slope_learning_rate=None)),
                ("alpha-crown*", "alpha-CROWN", defaults, AlphaOptions()))
        for label, their_method, their_options, our_options in rows:
            if methods is not None and label not in methods:
                continue
            method = label.rstrip("*")
            theirs.set_bound_opts({"optimize_bound_args": their_options})
            runs = {"auto_LiRPA": lambda: theirs.compute_bounds(x=(box,), C=C, method=their_method),
                    "opwise": lambda: ours.compute_bounds(x, eps=eps, method=method, C=C, alpha=our_options)}
            seconds, results, side = {side: [] for side in runs}, {}, None
            try:
                for side, run in runs.items():  # warm-up
                    run()
                for _ in range(repeat):  # the tools take turns
                    for side, run in runs.items():
                        elapsed, results[side] = _timed(run, device)
                        seconds[side].append(elapsed)
            except Exception as error:  # noqa: BLE001 -- a model the other tool cannot bound is a result to print
                print(f"{name:28s} {label:12s} {side} failed: {type(error).__name__}: {str(error).splitlines()[0][:80]}")
                continue
            their_time, our_time = (statistics.median(seconds[side]) for side in runs)
            (their_lower, their_upper), our_bounds = results["auto_LiRPA"], results["opwise"]
            ratio = float(our_bounds.width.mean()) / float((their_upper - their_lower).detach().mean())
            difference = float((our_bounds.lower - their_lower.detach()).abs().max())
            print(f"{name:28s} {label:12s} {ratio:12.6f} {difference:17.2e} {our_time / their_time:11.2f} "
                  f"{our_time:9.4f} {their_time:12.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eps", type=float, default=0.01)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--onnx", action="store_true", help="also the ACAS Xu networks from ../shared/benchmarks")
    parser.add_argument("--auto-lirpa", default=None, metavar="DIR", help="an auto_LiRPA source checkout to compare with")
    parser.add_argument("--models", default=None, metavar="TEXT", help="only the models whose name contains TEXT")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for both tools")
    parser.add_argument("--methods", default=None, metavar="LIST",
                        help=f"comma-separated methods to run (default: all of {', '.join(METHODS)}; alpha-crown* in the comparison)")
    args = parser.parse_args()
    methods = None if args.methods is None else tuple(args.methods.split(","))
    torch.set_num_threads(args.threads)
    models = {**random_models(), **cifar_models(), **builtin_models(), **(onnx_models() if args.onnx else {})}
    models = {name: entry for name, entry in models.items() if args.models is None or args.models in name}
    print(f"{'model':28s} {'method':12s} {'seconds':>9s} {'mean width':>11s} {'width/ibp':>9s}")
    for name, (model, x) in models.items():
        rows = measure(model, x, args.eps, args.repeat, args.device,
                       tuple(METHODS) if methods is None else tuple(m for m in methods if m in METHODS))
        ibp = next((width for method, _, width in rows if method == "ibp"), None)
        for method, seconds, width in rows:
            ratio = f"{width / ibp:9.3f}" if ibp else "        -"
            print(f"{name:28s} {method:12s} {seconds:9.4f} {width:11.4f} {ratio}")
    if args.auto_lirpa:
        compare_auto_lirpa(args.auto_lirpa, models, args.eps, args.repeat, args.device, methods)


if __name__ == "__main__":
    main()
