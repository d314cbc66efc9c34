"""Certified-robustness maps: time per map, growth with the number of patches, batched vs single bound passes,
and the rank correlation between relevance and certified radius.

1. The built-in digits CNN on bundled held-out digits (8x8, every pixel a patch: 64 rows per pass).
2. A random conv net on 32x32x3 inputs (fixed seed) with patches of 8, 4 and 2 pixels (16, 64, 256 patches):
   time per map and bound passes, and the 256-patch map against 256 single-row bound passes of the same
   method (one patch's box per pass, timed on `--singles` of them and scaled to 256).
3. Per composite, Spearman(|relevance| per pixel, certified radius) on the held-out digits (mean, spread,
   and how many digits had a defined correlation: a map certified everywhere up to eps-max has none).

    PYTHONPATH=. python benchmarks/certified_map.py [--digits 16] [--steps 8] [--method crown] [--eps-max 0.5] [--singles 32]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

import opwise
from opwise.bounds import BoundedModel
from opwise.combined.certified_map import patch_masks

COMPOSITES = ("epsilon", "epsilon-plus", "epsilon-plus-flat", "epsilon-gamma-box", "epsilon-alpha2-beta1")


def random_conv_net(seed: int = 0) -> torch.nn.Module:
    """A 32x32x3 -> 10 conv net with default (Kaiming-uniform) random weights."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(16 * 8 * 8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10),
    ).eval()


def timed(function):
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def builtin_cnn(args) -> None:
    model = opwise.models.builtin("cnn")
    images, _ = opwise.models.demo_inputs("cnn", n=args.digits)
    print(f"== built-in CNN, 8x8 digits, every pixel (64 patches), {args.method}, eps-max {args.eps_max}, {args.steps} steps")
    bound_times, attack_times, passes = [], [], []
    maps = []
    for index in range(args.digits):
        x = images[index : index + 1]
        result, seconds = timed(lambda: opwise.certified_map(model, x, method=args.method, eps_max=args.eps_max,
                                                             steps=args.steps, attack=False))
        _, with_attack = timed(lambda: opwise.certified_map(model, x, method=args.method, eps_max=args.eps_max,
                                                            steps=args.steps, attack=True))
        bound_times.append(seconds)
        attack_times.append(with_attack - seconds)
        passes.append(result.passes)
        maps.append((x, result))
        print(f"digit {index}: class {result.target}, {result.passes} passes, {seconds:.2f} s bounds "
              f"(trace included), +{with_attack - seconds:.2f} s PGD; radius min {float(result.radius.min()):.3f} "
              f"median {float(result.radius.median()):.3f}")
    print(f"mean per map: {statistics.mean(bound_times):.2f} s bounds, {statistics.mean(attack_times):.2f} s PGD, "
          f"{statistics.mean(passes):.1f} passes")
    correlations(model, maps)


def correlations(model, maps) -> None:
    print("Spearman(|relevance| per pixel, certified radius), held-out digits:")
    for composite in COMPOSITES:
        values = []
        for x, result in maps:
            relevance = opwise.explain(model, x, target=result.target, composite=composite).relevance
            value = result.relevance_correlation(relevance)
            if not math.isnan(value):
                values.append(value)
        spread = statistics.pstdev(values) if len(values) > 1 else 0.0
        mean = statistics.mean(values) if values else math.nan
        print(f"  {composite:22s} mean {mean:+.3f} (sd {spread:.3f}) over {len(values)}/{len(maps)} digits")


def conv32(args) -> None:
    model = random_conv_net()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    print(f"== random conv net, 32x32x3, {args.method}, eps-max {args.eps_max}, {args.steps} steps")
    BoundedModel(model, x)  # warm the tracer's caches, so the first map is not charged for them
    times = {}
    for patch in (8, 4, 2):
        result, seconds = timed(lambda: opwise.certified_map(model, x, patch=patch, method=args.method, eps_max=args.eps_max,
                                                             steps=args.steps, attack=False))
        times[result.masks.shape[0]] = seconds
        print(f"{patch}x{patch} patches: {result.masks.shape[0]:4d} patches, {result.passes} passes, {seconds:.2f} s "
              f"(trace included); radius min {float(result.radius.min()):.4f} median {float(result.radius.median()):.4f}")
    counts = sorted(times)
    print("growth: " + ", ".join(f"x{b // a} patches -> x{times[b] / times[a]:.2f} time" for a, b in zip(counts, counts[1:])))
    bounded = BoundedModel(model, x)
    masks = patch_masks((3, 32, 32), 2)
    eps = args.eps_max / 4
    target = int(bounded(x).argmax())
    lower, upper = (x - eps * masks).clamp(0, 1), (x + eps * masks).clamp(0, 1)
    bounded.compute_bounds(x_lower=lower[:1], x_upper=upper[:1], target=target, method=args.method, bound_upper=False)
    _, single = timed(lambda: [bounded.compute_bounds(x_lower=lower[i : i + 1], x_upper=upper[i : i + 1], target=target,
                                                      method=args.method, bound_upper=False) for i in range(args.singles)])
    per_single = single / args.singles
    _, batched = timed(lambda: bounded.compute_bounds(x_lower=lower, x_upper=upper, target=target, method=args.method, bound_upper=False))
    print(f"one single-row pass {per_single * 1000:.1f} ms (mean of {args.singles}); 256 of them {256 * per_single:.2f} s; "
          f"one 256-row pass {batched:.2f} s ({batched / (256 * per_single):.2f} of 256 singles)")
    print(f"256-patch map / 256 single passes: {times[256] / (256 * per_single):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", type=int, default=16, help="held-out digits for the CNN maps (at most 16)")
    parser.add_argument("--steps", type=int, default=8, help="bisection steps")
    parser.add_argument("--method", default="crown")
    parser.add_argument("--eps-max", type=float, default=0.5)
    parser.add_argument("--singles", type=int, default=32, help="single-row passes timed for the ratio")
    args = parser.parse_args()
    torch.set_num_threads(1)
    builtin_cnn(args)
    conv32(args)


if __name__ == "__main__":
    main()
