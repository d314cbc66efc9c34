"""`opwise verify [MODEL] [--input FILE] [--eps E] [--method M]`: robustness per sample, as a table.

With no MODEL, the built-in sigmoid/tanh MLP around bundled digits. `MODEL.onnx PROPERTY.vnnlib` runs a
VNN-COMP style instance instead (opwise.bounds.vnncomp).
"""

from __future__ import annotations

import argparse
import time

import torch

from opwise.bounds import METHODS, BoundedModel, verify
from opwise.cli.input_files import TENSOR_SUFFIXES, read_tensor_file
from opwise.errors import InputError
from opwise.models import demo_inputs
from opwise.tracing.loading import load_model

DEFAULT_EPS = 0.01
DEFAULT_SAMPLES = 5


def register(subparsers) -> None:
    parser = subparsers.add_parser("verify", help="verify robustness of a model around inputs (PGD attack + bounds)")
    parser.add_argument("model", nargs="?", default=None,
                        help="model spec (builtin:NAME, file.py:factory, ARCH@weights.pt, .pt2) or an .onnx file (default: builtin:mlp)")
    parser.add_argument("vnnlib", nargs="?", default=None, help="a .vnnlib property (with an .onnx MODEL)")
    parser.add_argument("--input", default=None, help="inputs to verify around: .pt tensor, .npy or .npz (first array)")
    parser.add_argument("--eps", type=float, default=DEFAULT_EPS, help=f"L-infinity radius (default {DEFAULT_EPS})")
    parser.add_argument("--method", default="auto", choices=("auto", *METHODS), help="bounding method (default auto)")
    parser.add_argument("--domain", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="valid input range the ball is clipped to")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="how many built-in digits (no --input)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per sample (or per VNN-LIB instance)")
    parser.add_argument("--out", default=None, help="result file for a VNN-LIB instance; with --explain, the picture folder")
    parser.add_argument("--explain", action="store_true",
                        help="write one picture per counterexample found: x, x', perturbation and relevance at both (to --out, default counterexamples/)")
    parser.set_defaults(func=run)


def _load_inputs(path: str) -> torch.Tensor:
    return read_tensor_file(path, TENSOR_SUFFIXES).to(torch.float32)


def _load_model(spec: str | None) -> tuple[torch.nn.Module, torch.Tensor | None]:
    """(model, default inputs or None) through `opwise.load_model`, which never unpickles arbitrary objects."""
    loaded = load_model(spec or "builtin:mlp")
    if spec is None:
        return loaded.model, demo_inputs("mlp", DEFAULT_SAMPLES)[0]
    inputs = loaded.example_inputs
    return loaded.model, inputs[0] if inputs else None


def _write_explanation(model, x: torch.Tensor, result, path: Path) -> None:
    from opwise.combined import explain_counterexample
    from opwise.combined.pictures import counterexample_figure

    counterexample_figure(explain_counterexample(model, x, result.counterexample, true_class=result.target), path)
    print(f"counterexample explanation written to {path}")


def format_row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()


def run(args: argparse.Namespace) -> int:
    if args.vnnlib is not None and args.explain:
        raise InputError("--explain applies to MODEL with --input, not to a VNN-LIB instance")
    if args.model and args.model.endswith(".onnx") and args.vnnlib and args.vnnlib.endswith(".vnnlib"):
        from opwise.cli.vnncomp import main_verify

        return main_verify(args)
    if args.vnnlib is not None:
        raise InputError("a second positional argument must be a .vnnlib file, with an .onnx MODEL")
    model, inputs = _load_model(args.model)
    if args.input is not None:
        inputs = _load_inputs(args.input)
    if inputs is None:
        raise InputError("no inputs to verify around: pass --input FILE")
    if args.model is None or args.input is None:
        inputs = inputs[: args.samples]
    bounded = BoundedModel(model, inputs[:1])
    header = ["sample", "target", "status", "margin lower bound", "time (s)"]
    rows = []
    for index in range(inputs.shape[0]):
        start = time.monotonic()
        result = verify(bounded, inputs[index : index + 1], eps=args.eps, method=args.method, timeout=args.timeout,
                        domain=tuple(args.domain) if args.domain else None)
        margin = "-" if result.margin_lower is None else f"{result.margin_lower:.4f}"
        rows.append([str(index), str(result.target), result.status, margin, f"{time.monotonic() - start:.3f}"])
        if args.explain and result.counterexample is not None:
            _write_explanation(model, inputs[index : index + 1], result, Path(args.out or "counterexamples") / f"sample_{index}.png")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(format_row(header, widths))
    print(format_row(["-" * w for w in widths], widths))
    for row in rows:
        print(format_row(row, widths))
    counts = {status: sum(r[2] == status for r in rows) for status in ("verified", "falsified", "unknown")}
    print(f"eps={args.eps} method={args.method}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0
