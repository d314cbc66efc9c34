"""Certified-robustness maps: time per map, growth with the number of patches, batched vs single bound passes,
and the rank correlation between relevance and certified radius.

1. The built-in digits CNN on bundled held-out digits (8x8, every pixel a patch: 64 rows per pass).
2. A random conv net (fixed seed) on a 32x32x3 input near one of its decision boundaries, with patches of
   8, 4 and 2 pixels (16, 64, 256 patches): time per map and bound passes, and the 256-patch map against
   256 single-row bound passes of the same method (one patch's box per pass, timed on `--singles` of them
   and scaled to 256), alternating over `--rounds` rounds (medians), the map with and without its trace;
   also one bound pass over the 256 boxes cut into passes of 16, 64 and 256 rows.
3. Per composite, Spearman(|relevance| per pixel, certified radius) on the held-out digits (mean, spread,
   and how many digits had a defined correlation: a map certified everywhere up to eps-max has none).

    PYTHONPATH=. python benchmarks/certified_map.py [--digits 16] [--steps 8] [--method crown] [--eps-max 0.5] [--singles 32]
        [--rounds 3] [--batch-size N] [--parts cnn,conv32] [--no-correlations] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

import opwise
from opwise.bounds import BoundedModel
from opwise.combined.certified_map import patch_masks, rows_per_pass

COMPOSITES = ("epsilon", "epsilon-plus", "epsilon-plus-flat", "epsilon-gamma-box", "epsilon-alpha2-beta1")


def random_conv_net(seed: int = 0) -> torch.nn.Module:
    """A 32x32x3 -> 10 conv net with default (Kaiming-uniform) random weights."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(16 * 8 * 8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10),
    ).eval()


def builtin_cnn(args) -> None:
    model = opwise.models.builtin("cnn")
    images, _ = opwise.models.demo_inputs("cnn", n=args.digits)
    print(f"== built-in CNN, 8x8 digits, every pixel (64 patches), {args.method}, eps-max {args.eps_max}, {args.steps} steps")
    opwise.certified_map(model, images[:1], method=args.method, eps_max=args.eps_max, steps=args.steps,
                         batch_size=args.batch_size)  # warm-up: the first trace of a process costs more
    bound_times, attack_times, passes = [], [], []
    maps = []
    for index in range(args.digits):
        x = images[index : index + 1]
        result = opwise.certified_map(model, x, method=args.method, eps_max=args.eps_max, steps=args.steps,
                                      batch_size=args.batch_size)
        bound_times.append(result.seconds)
        attack_times.append(result.attack_seconds)
        passes.append(result.passes)
        maps.append((x, result))
        found = torch.isfinite(result.attack_radius)
        print(f"digit {index}: class {result.target}, {result.passes} passes, {result.seconds:.2f} s bounds "
              f"(trace included), {result.attack_seconds:.2f} s PGD; certified radius min {float(result.radius.min()):.3f} "
              f"median {float(result.radius.median()):.3f} mean {float(result.radius.mean()):.4f}; PGD broke {int(found.sum())} pixels"
              + (f", closest {float(result.attack_radius[found].min()):.3f}" if found.any() else ""))
    print(f"mean per map: {statistics.mean(bound_times):.2f} s bounds, {statistics.mean(attack_times):.2f} s PGD, "
          f"{statistics.mean(passes):.1f} passes, mean certified radius {statistics.mean(float(m.radius.mean()) for _, m in maps):.4f}")
    if args.correlations:
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


def near_boundary(model: torch.nn.Module, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """A point a tenth of the way back from the decision boundary between two random inputs the model
    classifies differently: a random net's prediction on a random input rarely depends on one small patch.
    The last layer's bias is first centred on the candidates' mean logits, so that more than one class wins."""
    candidates = torch.rand(64, *shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        model[-1].bias.sub_(model(candidates).mean(0))
        classes = model(candidates).argmax(1)
    a, b = candidates[:1], candidates[int(torch.nonzero(classes != classes[0])[0])][None]
    for _ in range(30):
        middle = (a + b) / 2
        with torch.no_grad():
            a, b = (middle, b) if bool(model(middle).argmax(1) == classes[0]) else (a, middle)
    return a + 0.1 * (candidates[:1] - a)


def conv32(args) -> None:
    model = random_conv_net()
    x = near_boundary(model, (3, 32, 32))
    print(f"== random conv net, 32x32x3 (an input near a decision boundary), {args.method}, eps-max {args.eps_max}, "
          f"{args.steps} steps, {rows_per_pass(16, args.batch_size)}, {rows_per_pass(64, args.batch_size)} and "
          f"{rows_per_pass(256, args.batch_size)} rows per pass for 16, 64 and 256 patches")
    BoundedModel(model, x)  # warm the tracer's caches, so the first map is not charged for them
    times = {}
    for patch in (8, 4, 2):
        result = opwise.certified_map(model, x, patch=patch, method=args.method, eps_max=args.eps_max, steps=args.steps,
                                      batch_size=args.batch_size)
        times[result.masks.shape[0]] = result.seconds
        found = torch.isfinite(result.attack_radius)
        print(f"{patch}x{patch} patches: {result.masks.shape[0]:4d} patches, {result.passes} passes, {result.seconds:.2f} s "
              f"bounds (trace included), {result.attack_seconds:.2f} s PGD; certified radius min {float(result.radius.min()):.4f} "
              f"median {float(result.radius.median()):.4f} mean {float(result.radius.mean()):.5f}; PGD broke {int(found.sum())} patches")
    counts = sorted(times)
    print("growth: " + ", ".join(f"{a} -> {b} patches: x{times[b] / times[a]:.2f} time" for a, b in zip(counts, counts[1:])))
    bounded = BoundedModel(model, x)
    masks = patch_masks((3, 32, 32), 2)
    eps = float(result.radius.median())
    target = int(bounded(x).argmax())
    lower, upper = (x - eps * masks).clamp(0, 1), (x + eps * masks).clamp(0, 1)

    def seconds_per_row(size: int, rows: int) -> float:
        bounded.compute_bounds(x_lower=lower[:size], x_upper=upper[:size], target=target, method=args.method, bound_upper=False)
        start = time.perf_counter()
        for first in range(0, rows, size):
            bounded.compute_bounds(x_lower=lower[first : first + size], x_upper=upper[first : first + size], target=target,
                                   method=args.method, bound_upper=False)
        return (time.perf_counter() - start) / rows

    for size in (16, 64, 256):
        per_row = seconds_per_row(size, 256)
        print(f"  one pass over the 256 boxes in {256 // size:3d} passes of {size:3d} rows: {256 * per_row:.2f} s")
    # the map and the single passes it is compared with alternate, round after round, so that a change in the
    # machine's load hits both; medians over the rounds. The map from a module includes its trace; from a
    # Graph traced at the map's batch size it does not, as the single passes do not.
    graph = opwise.trace(model, x.expand(rows_per_pass(256, args.batch_size), *x.shape[1:]))
    singles, with_trace, without_trace = [], [], []
    for _ in range(args.rounds):
        singles.append(seconds_per_row(1, args.singles))
        options = dict(patch=2, method=args.method, eps_max=args.eps_max, steps=args.steps, batch_size=args.batch_size,
                       attack=False)
        with_trace.append(opwise.certified_map(model, x, **options).seconds)
        without_trace.append(opwise.certified_map(graph, x, **options).seconds)
    per_single = statistics.median(singles)
    print(f"single-row pass (one 2x2 patch's box at eps {eps:.3f}): {per_single * 1000:.1f} ms (median of {args.rounds} "
          f"rounds of {args.singles}); 256 of them {256 * per_single:.2f} s")
    for name, seconds in (("with its trace", with_trace), ("bound passes only", without_trace)):
        ratio = statistics.median(t / (256 * s) for t, s in zip(seconds, singles))
        print(f"256-patch map ({result.passes} passes), {name}: {statistics.median(seconds):.2f} s = {ratio:.2f} of 256 "
              f"single passes (rounds: {', '.join(f'{t / (256 * s):.2f}' for t, s in zip(seconds, singles))}); "
              f"{ratio / result.passes:.2f} of a search per patch with as many single passes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", type=int, default=16, help="held-out digits for the CNN maps (at most 16)")
    parser.add_argument("--steps", type=int, default=8, help="bisection steps")
    parser.add_argument("--method", default="crown")
    parser.add_argument("--eps-max", type=float, default=0.5)
    parser.add_argument("--singles", type=int, default=32, help="single-row passes timed per round for the ratio")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of map and single passes, alternating")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="rows per bound pass (default: certified_map's own choice, rows_per_pass)")
    parser.add_argument("--parts", default="cnn,conv32", help="which parts to run: cnn (with the correlations), conv32")
    parser.add_argument("--no-correlations", dest="correlations", action="store_false",
                        help="skip the relevance correlations of part cnn")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    for name in ("digits", "singles", "rounds", "batch_size", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.exit(2, f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}\n")
    torch.set_num_threads(args.threads)
    parts = args.parts.split(",")
    unknown = [part for part in parts if part not in ("cnn", "conv32")]
    if unknown:
        parser.exit(2, f"unknown --parts {', '.join(unknown)}: choose from cnn, conv32\n")
    if "cnn" in parts:
        builtin_cnn(args)
    if "conv32" in parts:
        conv32(args)


if __name__ == "__main__":
    main()
