"""`opwise certify [MODEL] [--input FILE] [--patch 2] [--method crown] [--eps-max E] --out map.png`.

Per patch, the largest L∞ radius at which the prediction is certified when only that patch changes,
beside the closest counterexample PGD found and the relevance map (with their rank correlation).
"""

from __future__ import annotations

import argparse
import math

from opwise.cli.options import nonnegative_int

DEFAULT_EPS_MAX = 0.5


def register(subparsers) -> None:
    from opwise.cli.trace import parse_shape

    parser = subparsers.add_parser("certify", help="map the certified robustness radius per patch and write a PNG")
    parser.add_argument("model", nargs="?", default=None, help="model spec (default: the built-in digits CNN)")
    parser.add_argument("--input", default=None, help="input file: .png/.jpg, .npy or .pt (default: the model's example input)")
    parser.add_argument("--input-shape", action="append", type=parse_shape, metavar="SHAPE",
                        help="shape of a random input in [0, 1) with a batch of 1, e.g. 1,3,32,32, for a model without "
                             "example inputs")
    parser.add_argument("--patch", type=int, default=1, help="patch side in features (default 1: every feature)")
    parser.add_argument("--method", default="crown", help="bounding method: ibp, crown-ibp, crown (default), forward-crown, alpha-crown "
                        "(auto_LiRPA's names such as CROWN, IBP, backward work too), or bab: branch-and-bound on split boxes")
    parser.add_argument("--eps-max", type=float, default=DEFAULT_EPS_MAX, help=f"largest radius tried (default {DEFAULT_EPS_MAX})")
    parser.add_argument("--steps", type=nonnegative_int, default=8, help="search precision: a radius stops within eps-max / 2**steps of one the method failed at (default 8)")
    parser.add_argument("--domain", type=float, nargs=2, default=(0.0, 1.0), metavar=("LOW", "HIGH"),
                        help="valid input range the boxes are clipped to (default 0 1)")
    parser.add_argument("--composite", default="epsilon-plus-flat", help="composite for the relevance beside the map")
    parser.add_argument("--out", default="certified_map.png", help="where to write the picture (default certified_map.png)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import opwise
    from opwise.cli.explain import first_relevance, load_model, one_sample
    from opwise.combined.pictures import certified_map_figure

    spec = args.model or "builtin:cnn"
    model, x = one_sample(spec, *load_model(spec), args)
    result = opwise.certified_map(model, x, patch=args.patch, method=args.method, eps_max=args.eps_max,
                                  steps=args.steps, domain=tuple(args.domain))
    relevance = first_relevance(opwise.explain(model, x, target=result.target, composite=args.composite))
    found = result.attack_radius.isfinite()
    print(f"class {result.target}: {result.masks.shape[0]} patches, {result.passes} batched bound passes ({result.method}), "
          f"{result.seconds:.2f} s")
    print(f"certified radius: min {float(result.radius.min()):.4f}, median {float(result.radius.median()):.4f}, "
          f"{int((result.radius >= args.eps_max).sum())} patches certified up to eps-max {args.eps_max:g}")
    print(f"PGD counterexamples: {int(found.sum())} patches"
          + (f", closest at {float(result.attack_radius[found].min()):.4f}" if found.any() else ""))
    correlation = result.relevance_correlation(relevance)
    print(f"Spearman(|relevance| per patch, certified radius) under {args.composite}: "
          + (f"{correlation:.3f}" if math.isfinite(correlation) else "undefined (every patch has the same radius)"))
    certified_map_figure(result, relevance, path=args.out)
    print(f"map written to {args.out}")
    return 0
