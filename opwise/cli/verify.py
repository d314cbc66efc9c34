"""`opwise verify [MODEL] [--input FILE] [--eps E] [--norm N] [--method M] [--bab] [--out R.json|R.csv]`.

Robustness per sample, as a table (and a JSON or CSV file with `--out`). With no MODEL, the built-in
sigmoid/tanh MLP around bundled digits. `MODEL.onnx PROPERTY.vnnlib` runs a VNN-COMP style instance
instead (opwise.bounds.vnncomp): the property gives the input set and the output constraints, so the
options that describe those here are refused there.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from opwise.cli.options import (
    add_common, check_output, finite_float, nonnegative_float, nonnegative_int, positive_float, positive_int,
    resolve_device,
)
from opwise.errors import InputError
from opwise.progress import LiveLine

DEFAULT_MODEL = "builtin:mlp"
DEFAULT_EPS = 0.01
DEFAULT_SAMPLES = 5
NORMS = {"inf": math.inf, "2": 2.0, "1": 1.0}
# Options that describe the input set, outputs or search of robustness mode; a VNN-LIB file gives its own.
ROBUSTNESS_ONLY = ("input", "input_shape", "eps", "norm", "method", "domain", "samples", "target", "bab", "explain")
RESULT_FIELDS = ("sample", "target", "status", "margin_lower", "seconds", "counterexample")


def register(subparsers) -> None:
    from opwise.cli.trace import parse_shape

    parser = subparsers.add_parser(
        "verify", help="verify robustness of a model around inputs (PGD attack, bounds, branch-and-bound)",
        description="Verify that the model's prediction (or --target) stays the top output on a ball around each "
                    "input; or, given MODEL.onnx PROPERTY.vnnlib, decide a VNN-COMP instance.")
    parser.add_argument("model", nargs="?", default=None,
                        help=f"model spec (builtin:NAME, file.py:factory, ARCH@weights.pt, .pt2, .onnx; default {DEFAULT_MODEL})")
    parser.add_argument("vnnlib", nargs="?", default=None,
                        help="a .vnnlib property, VNN-LIB 1 or 2 (with an .onnx MODEL; NAME=A.onnx,NAME=B.onnx for a "
                             "query over several networks)")
    parser.add_argument("--input", default=None,
                        help="inputs to verify around, a batch: .pt tensor, .npy or .npz (first array)")
    parser.add_argument("--input-shape", action="append", type=parse_shape, metavar="SHAPE",
                        help="verify around random inputs in [0, 1) of this shape (a model without example inputs)")
    parser.add_argument("--eps", type=nonnegative_float, default=None, help=f"radius of the ball (default {DEFAULT_EPS})")
    parser.add_argument("--norm", choices=tuple(NORMS), default=None, help="the ball's norm: inf (default), 2 or 1")
    parser.add_argument("--method", default=None,
                        help="bounding method: auto (default), ibp, crown-ibp, crown, forward-crown, alpha-crown; "
                             "auto_LiRPA's names (CROWN, IBP, backward, CROWN-Optimized, ...) work too")
    parser.add_argument("--bab", action="store_true",
                        help="complete what the bounds leave unknown by branch-and-bound (norm 1 and 2: neuron splits over the ball)")
    parser.add_argument("--domain", type=finite_float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="valid input range the ball is clipped to")
    parser.add_argument("--samples", type=positive_int, default=None,
                        help=f"how many samples to verify (default: {DEFAULT_SAMPLES} built-in digits, else every given input)")
    parser.add_argument("--target", "--label", dest="target", type=nonnegative_int, default=None,
                        help="the class that must stay on top, for every sample (default: each sample's prediction)")
    parser.add_argument("--timeout", type=positive_float, default=None,
                        help="seconds per sample (per VNN-LIB instance: default 60)")
    parser.add_argument("--out", default=None,
                        help="results: .json or .csv per sample (status, margin bound, time, counterexample .npy file); "
                             "with a VNN-LIB property, the VNN-COMP result file")
    parser.add_argument("--explain", nargs="?", const="counterexamples", default=None, metavar="DIR",
                        help="write one picture per counterexample found into DIR (default counterexamples/): x, x', "
                             "perturbation and relevance at both")
    add_common(parser)
    parser.set_defaults(func=run)


def _load_inputs(path: str) -> torch.Tensor:
    """A batch of inputs from a tensor file (.pt, .npy, .npz), read without unpickling anything."""
    from opwise.cli.input_files import TENSOR_SUFFIXES, read_tensor_file

    return read_tensor_file(path, TENSOR_SUFFIXES).to(torch.float32)

def _inputs(spec: str, args: argparse.Namespace) -> tuple[object, torch.Tensor]:
    """(model, the batch of inputs to verify around), honouring --input, --input-shape and --samples."""
    from opwise import models
    from opwise.tracing.loading import example_inputs, load_model

    loaded = load_model(spec)
    builtin = spec.startswith("builtin:")
    if args.input is not None and args.input_shape:
        raise InputError("give --input or --input-shape, not both")
    if args.input is not None:
        inputs = _load_inputs(args.input)
        examples = loaded.example_inputs or (None if _needs_shape(loaded) else example_inputs(loaded))
        if examples is not None:
            single = tuple(examples[0].shape[1:])
            if tuple(inputs.shape) == single:
                inputs = inputs[None]
            if tuple(inputs.shape[1:]) != single:
                raise InputError(f"--input {args.input} has shape {tuple(inputs.shape)}; the model takes a batch of {single}")
    elif builtin and not args.input_shape:
        count = args.samples or DEFAULT_SAMPLES
        name = spec.removeprefix("builtin:").split("@")[0]
        inputs = models.demo_inputs(name, n=count)[0]
    else:
        given = example_inputs(loaded, args.input_shape)
        if len(given) != 1:
            raise InputError(f"{spec} takes {len(given)} inputs; verify bounds models of one input")
        inputs = given[0]
    if args.samples is not None and not builtin and inputs.shape[0] < args.samples:
        raise InputError(f"--samples {args.samples}: only {inputs.shape[0]} input(s) given")
    if args.samples is not None:
        inputs = inputs[: args.samples]
    return loaded.model, inputs


def _needs_shape(loaded) -> bool:
    from opwise.tracing.graph import Graph

    return loaded.example_inputs is None and not isinstance(loaded.model, Graph)


def format_row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()


def run(args: argparse.Namespace) -> int:
    if args.vnnlib is not None:
        return _run_vnnlib(args)
    from opwise.bounds import BoundedModel, verify
    from opwise.bounds.methods import method_name

    check_output(args.out, (".json", ".csv"), "--out")
    device = resolve_device(args.device)
    method = method_name(args.method or "auto", extra=("auto",))
    norm = NORMS[args.norm or "inf"]
    if args.domain is not None and args.domain[0] >= args.domain[1]:
        raise InputError(f"--domain {args.domain[0]:g} {args.domain[1]:g}: LOW must be below HIGH")
    eps = DEFAULT_EPS if args.eps is None else args.eps
    spec = args.model or DEFAULT_MODEL
    model, inputs = _inputs(spec, args)
    line = _live_line(args)
    bounded = BoundedModel(model, inputs[:1], device=device, progress=line)
    bab = {"progress": line} if args.bab and line is not None else args.bab
    header = ["sample", "target", "status", "margin lower bound", "time (s)"]
    rows, records = [], []
    for index in range(inputs.shape[0]):
        start = time.monotonic()
        try:
            result = verify(bounded, inputs[index : index + 1].to(device), eps=eps, norm=norm, method=method,
                            timeout=args.timeout, domain=tuple(args.domain) if args.domain else None,
                            target=args.target, bab=bab)
        finally:
            if line is not None:
                line.close()
        seconds = time.monotonic() - start
        margin = "-" if result.margin_lower is None else f"{result.margin_lower:.4f}"
        rows.append([str(index), str(result.target), result.status, margin, f"{seconds:.3f}"])
        records.append({"sample": index, "target": result.target, "status": result.status,
                        "margin_lower": result.margin_lower, "seconds": round(seconds, 4),
                        "counterexample": _save_counterexample(args.out, index, result.counterexample)})
        if args.out:
            write_results(args.out, records)  # after every sample: a later failure loses nothing
        if args.explain and result.counterexample is not None:
            _write_explanation(model, inputs[index : index + 1], result, Path(args.explain) / f"sample_{index}.png")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(format_row(header, widths))
    print(format_row(["-" * w for w in widths], widths))
    for row in rows:
        print(format_row(row, widths))
    counts = {status: sum(r[2] == status for r in rows) for status in ("verified", "falsified", "unknown", "timeout")}
    print(f"eps={eps:g} norm={args.norm or 'inf'} method={method}{' +bab' if args.bab else ''}: "
          + ", ".join(f"{n} {s}" for s, n in counts.items() if n or s != "timeout"))
    if args.out:
        print(f"results written to {args.out}")
    return 0


def _live_line(args: argparse.Namespace) -> LiveLine | None:
    """The live progress line (bound passes' layers, α-CROWN's steps, branch-and-bound's rounds) on a
    terminal's stderr, unless --quiet; None otherwise."""
    return LiveLine() if not getattr(args, "quiet", False) and sys.stderr.isatty() else None


def _write_explanation(model, x: torch.Tensor, result, path: Path) -> None:
    from opwise.combined import explain_counterexample
    from opwise.combined.pictures import counterexample_figure

    path.parent.mkdir(parents=True, exist_ok=True)
    counterexample = result.counterexample.to(x.device)
    counterexample_figure(explain_counterexample(model, x, counterexample, true_class=result.target), path)
    print(f"counterexample explanation written to {path}")


def _save_counterexample(out: str | None, index: int, counterexample: torch.Tensor | None) -> str:
    """Next to the results file: `<stem>.counterexample<index>.npy`; the path, or "" when none."""
    if out is None or counterexample is None:
        return ""
    path = Path(out).with_name(f"{Path(out).stem}.counterexample{index}.npy")
    np.save(path, counterexample.detach().cpu().numpy())
    return str(path)


def write_results(path: str, records: list[dict]) -> None:
    """Per-sample results as JSON (a list of objects) or CSV (a header row), by the file's suffix.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "r.csv")
    >>> write_results(path, [{"sample": 0, "target": 3, "status": "verified", "margin_lower": 0.5,
    ...                       "seconds": 0.1, "counterexample": ""}])
    >>> open(path).read().splitlines()
    ['sample,target,status,margin_lower,seconds,counterexample', '0,3,verified,0.5,0.1,']
    """
    temporary = Path(path).with_name(Path(path).name + ".partial")
    with open(temporary, "w", newline="") as handle:
        if Path(path).suffix.lower() == ".json":
            json.dump(records, handle, indent=1)
        else:
            writer = csv.DictWriter(handle, fieldnames=RESULT_FIELDS)
            writer.writeheader()
            writer.writerows(records)
    temporary.replace(path)


def _run_vnnlib(args: argparse.Namespace) -> int:
    """`MODEL.onnx PROPERTY.vnnlib`: refuse what does not apply, check the output, then run the instance."""
    from opwise.bounds.vnncomp.networks import parse_networks
    from opwise.bounds.vnncomp.vnnlib import existing

    networks = parse_networks(args.model) if args.model else []
    if not (networks and all(path.endswith((".onnx", ".onnx.gz")) for _, path in networks)
            and args.vnnlib.endswith((".vnnlib", ".vnnlib.gz"))):
        raise InputError("a second positional argument must be a .vnnlib file, with an .onnx MODEL (or, for a query "
                         "over several networks, NAME=PATH.onnx,NAME=PATH.onnx)")
    given = [name for name in ROBUSTNESS_ONLY if getattr(args, name) not in (None, False)]
    if given:
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        raise InputError(f"{options} {'does' if len(given) == 1 else 'do'} not apply with a VNN-LIB property, which gives the input set and the "
                         "output constraints; drop them (only --timeout, --out, --device and --quiet apply)")
    for path, what in [*((one, "ONNX model") for _, one in networks), (args.vnnlib, "VNN-LIB property")]:
        if not existing(path).is_file():
            raise InputError(f"{what} {path} does not exist")
    check_output(args.out, (), "--out")
    from opwise.cli.vnncomp import main_verify

    return main_verify(args, device=resolve_device(args.device))
