"""`opwise report [MODEL] [--input FILE] [--eps E] [--composite NAME ...] --out report.html`.

One self-contained HTML page: prediction, relevance per composite, the verdict at ε, the certified
map with the PGD radius, and a counterexample's explanation where one was found.
"""

from __future__ import annotations

import argparse

from opwise.combined.report import DEFAULT_COMPOSITES


def register(subparsers) -> None:
    from opwise.cli.trace import parse_shape

    parser = subparsers.add_parser("report", help="write one HTML page with explanations and verification side by side")
    parser.add_argument("model", nargs="?", default=None, help="model spec (default: the built-in digits CNN)")
    parser.add_argument("--input", default=None, help="input file: .png/.jpg, .npy or .pt (default: the model's example input)")
    parser.add_argument("--input-shape", action="append", type=parse_shape, metavar="SHAPE",
                        help="shape of a random input in [0, 1) with a batch of 1, e.g. 1,3,32,32, for a model without "
                             "example inputs")
    parser.add_argument("--text", default=None, help="text for a token model (needs --tokenizer): relevance per token only")
    parser.add_argument("--tokenizer", default=None, help="tokenizer for --text, as in `opwise explain`")
    parser.add_argument("--composite", action="append", default=None,
                        help="composite to explain with (repeat for several; default epsilon-plus and epsilon-gamma-box)")
    parser.add_argument("--eps", type=float, default=0.05, help="L-infinity radius to verify at (default 0.05)")
    parser.add_argument("--patch", type=int, default=1, help="patch side of the certified map (default 1)")
    parser.add_argument("--method", default="crown",
                        help="bounding method: ibp, crown-ibp, crown (default), forward-crown, alpha-crown; auto_LiRPA's "
                             "names (CROWN, IBP, backward, CROWN-Optimized, ...) work too; or bab: the certified map by "
                             "branch-and-bound on split boxes (the margin table then shows CROWN's bounds)")
    parser.add_argument("--eps-max", type=float, default=0.5, help="largest radius the certified map tries (default 0.5)")
    parser.add_argument("--domain", type=float, nargs=2, default=(0.0, 1.0), metavar=("LOW", "HIGH"),
                        help="valid input range (default 0 1)")
    parser.add_argument("--out", default="report.html", help="where to write the page (default report.html)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import opwise
    from opwise.cli.explain import load_model, one_sample

    spec = args.model or "builtin:cnn"
    model, inputs = load_model(spec)
    if args.text is not None or args.tokenizer is not None:
        return _run_text(args, model)
    model, x = one_sample(spec, model, inputs, args)
    opwise.report(model, x, args.out, composites=args.composite or DEFAULT_COMPOSITES, eps=args.eps, patch=args.patch, method=args.method,
                  eps_max=args.eps_max, domain=tuple(args.domain), title=f"opwise report: {args.model or 'builtin:cnn'}")
    print(f"report written to {args.out}")
    return 0


def _run_text(args: argparse.Namespace, model) -> int:
    """Token models: the prediction and relevance per token (bounds need a continuous input)."""
    import torch

    from opwise.cli.explain_text import _logits, check_vocabulary, load_tokenizer, text_target, tokenize
    from opwise.combined.report import text_report
    from opwise.errors import InputError

    if args.text is None or args.tokenizer is None:
        raise InputError("--text and --tokenizer go together: the text, and how to split it into tokens")
    ids, tokens = tokenize(load_tokenizer(args.tokenizer), args.text)
    check_vocabulary(model, ids)
    with torch.no_grad():
        index, select, kind = text_target(_logits(model(ids)), None)
    text_report(model, ids, tokens, args.out, target=select, label=f"predicted {kind} {index}",
                composites=args.composite or ["attn-lrp"], title=f"opwise report: {args.model}")
    print(f"report written to {args.out}")
    return 0
