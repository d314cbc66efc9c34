"""`opwise explain [MODEL] [--input FILE | --input-shape S | --text TEXT --tokenizer SPEC] [options]`.

Images (and other tensor inputs) get a relevance heatmap, drawn beside the input; text goes through a
tokenizer and gets one relevance value per token, drawn as coloured tokens. Every model spec works:
builtin, file.py:factory (with or without example inputs), .pt2, .onnx, ARCH@weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from opwise.cli.options import (
    add_common, check_graph_shapes, check_output, finite_float, nonnegative_float, nonnegative_int, percentile,
    resolve_device,
)
from opwise.errors import InputError

DEFAULT_MODEL = "builtin:cnn"
DEFAULT_COMPOSITE = "epsilon-plus-flat"
SIGN_MODES = ("all", "positive", "negative", "absolute")
MAX_BARS = 32  # vector inputs up to this many features are drawn as bars (one per feature), longer ones as a strip


def register(subparsers) -> None:
    from opwise.attribution.pictures import DEFAULT_CLIP
    from opwise.cli.trace import parse_shape
    from opwise.tracing.loading import SPEC_FORMS

    parser = subparsers.add_parser("explain", help="explain a prediction with LRP and write a heatmap PNG",
                                   description="Explain a prediction with LRP and write a heatmap PNG.")
    parser.add_argument("model", nargs="?", default=None, help=f"model spec: {SPEC_FORMS} (default: {DEFAULT_MODEL})")
    parser.add_argument("--input", default=None, help="input file: .png/.jpg, .npy or .pt (default: the model's example)")
    parser.add_argument("--input-shape", action="append", type=parse_shape, metavar="SHAPE",
                        help="shape of a random input in [0, 1), e.g. 1,3,32,32, for a model without example inputs "
                             "(repeat for several inputs)")
    parser.add_argument("--text", default=None, help="text to explain with a text model (needs --tokenizer)")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer for --text: a local folder transformers' AutoTokenizer loads, or file.py:factory")
    parser.add_argument("--target", type=nonnegative_int, default=None,
                        help="class (or, for a language model, next-token id) to explain (default: the prediction)")
    parser.add_argument("--composite", default=None,
                        help="rule composite: epsilon, epsilon-plus, epsilon-plus-flat, epsilon-alpha2-beta1, "
                             "epsilon-gamma-box, attn-lrp, cp-lrp; Zennit's names work too "
                             f"(default: {DEFAULT_COMPOSITE}; attn-lrp for text)")
    parser.add_argument("--epsilon", type=nonnegative_float, default=None, help="ε of the composite's epsilon rules")
    parser.add_argument("--gamma", type=nonnegative_float, default=None, help="γ of the gamma rules (epsilon-gamma-box)")
    parser.add_argument("--low", type=finite_float, default=None, help="lowest input value (epsilon-gamma-box's z-box)")
    parser.add_argument("--high", type=finite_float, default=None, help="highest input value (epsilon-gamma-box's z-box)")
    parser.add_argument("--out", default="relevance.png", help="where to write the picture, a .png (default: relevance.png)")
    parser.add_argument("--save", default=None, help="also save the relevance as a .npy array (the whole input's shape)")
    parser.add_argument("--clip", type=percentile, default=None,
                        help=f"percentile of |relevance| where the colour scale ends (default {DEFAULT_CLIP} for images, "
                             "100 for tokens)")
    parser.add_argument("--sign", choices=SIGN_MODES, default="all",
                        help="draw all relevance (red for, blue against), only positive, only negative, or absolute")
    add_common(parser)
    parser.set_defaults(func=run)


def load_model(spec: str):
    """`(model, example inputs)` for a spec, through the public loader."""
    from opwise.tracing.loading import load_model as load

    return load(spec)


def read_input(path: str, example: torch.Tensor | None) -> torch.Tensor:
    """Read an input file (opwise.cli.input_files: nothing is unpickled) and shape it like `example` (batch of
    one, channels and size checked); without an example, images get a batch axis ([1, C, H, W]) and arrays
    are taken as they are.

    >>> import numpy, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy"); numpy.save(path, numpy.zeros((8, 8), "float32"))
    >>> read_input(path, torch.zeros(1, 1, 8, 8)).shape, read_input(path, None).shape
    (torch.Size([1, 1, 8, 8]), torch.Size([8, 8]))
    """
    from opwise.cli.input_files import IMAGE_SUFFIXES, read_tensor_file

    value = read_tensor_file(path)
    image = Path(path).suffix.lower() in IMAGE_SUFFIXES
    if example is None:
        return value[None] if image else value
    if image and example.dim() == 4 and example.shape[1] == 1 and value.shape[0] != 1:
        value = value.mean(0, keepdim=True)
    value = value.to(example.dtype)
    if value.numel() != example.numel():
        raise InputError(
            f"input file {path} has shape {tuple(value.shape)} but the model expects {tuple(example.shape)} "
            "(batch of one); resize the input to match"
        )
    return value.reshape(example.shape)


def one_sample(spec: str, model, examples, args: argparse.Namespace):
    """The model (specialized to `--input-shape` where it is a model file) and the one sample `certify` and `report`
    work on: `--input`, else a seeded random input of `--input-shape` or of the shape a model file declares, else
    the first example input ([1, ...]).

    >>> model, examples = load_model("builtin:cnn")
    >>> args = argparse.Namespace(input=None, input_shape=None)
    >>> one_sample("builtin:cnn", model, examples, args)[1].shape
    torch.Size([1, 1, 8, 8])
    """
    from opwise.tracing.graph import Graph

    if args.input_shape and any(shape[0] != 1 for shape in args.input_shape):
        raise InputError(f"--input-shape {','.join(map(str, args.input_shape[0]))}: certified maps and reports are made "
                         "for one sample; give a batch size of 1")
    if args.input_shape and isinstance(model, Graph):
        model = check_graph_shapes(spec, model, args.input_shape)
    inputs = model_inputs(spec, model, examples, args)
    if len(inputs) != 1:
        raise InputError(f"{spec} takes {len(inputs)} inputs; certified maps and reports are made for one input")
    if args.input is None and examples is None:
        announce_random(inputs)
    return model, inputs[0][:1]


def announce_random(inputs: list[torch.Tensor]) -> None:
    """Say that the inputs are random (the model came without example inputs), and how to give one's own."""
    shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
    print(f"input: random values in [0, 1) of shape {shapes} (seeded; the model comes without example inputs): "
          "pass --input FILE to use your own")


def model_inputs(spec: str, model, examples, args: argparse.Namespace) -> list[torch.Tensor]:
    """The inputs to explain: `--input` (shaped like the example), `--input-shape` or the model's examples. A model
    file (Graph) comes already specialized to `--input-shape` (`check_graph_shapes` in `run`)."""
    from opwise.tracing.graph import Graph
    from opwise.tracing.loading import LoadedModel, example_inputs

    loaded = LoadedModel(model, tuple(examples) if examples is not None else None)
    if args.input is None:
        return list(example_inputs(loaded, args.input_shape))
    if loaded.example_inputs is None and not args.input_shape and not isinstance(model, Graph):
        value = read_input(args.input, None)
        try:
            return list(example_inputs(LoadedModel(model, (value,))))  # runs the model once on it
        except InputError as error:
            raise InputError(f"{error}; the model has no example input to read {args.input} like, so give its "
                             "shape with --input-shape (e.g. 1,1,H,W for a grayscale model)") from error
    inputs = list(example_inputs(loaded, args.input_shape))
    inputs[0] = read_input(args.input, inputs[0]).to(inputs[0].device)  # where the model is (a factory may use a GPU)
    return inputs


def composite_options(args: argparse.Namespace) -> dict:
    """The composite parameters given on the command line (the composite refuses those it does not take).

    >>> composite_options(argparse.Namespace(epsilon=0.1, gamma=None, low=0.0, high=1.0))
    {'epsilon': 0.1, 'low': 0.0, 'high': 1.0}
    >>> composite_options(argparse.Namespace(epsilon=None, gamma=None, low=1.0, high=0.0))
    Traceback (most recent call last):
    ...
    opwise.errors.InputError: --low 1.0 must be below --high 0.0
    """
    if args.low is not None and args.high is not None and args.low >= args.high:
        raise InputError(f"--low {args.low} must be below --high {args.high}")
    names = ("epsilon", "gamma", "low", "high")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def to_device(model, inputs: list[torch.Tensor], device: torch.device):
    """Model (module or imported Graph) and inputs on `device`."""
    if device.type == "cpu":
        return model, inputs
    from opwise.tracing.graph import Graph

    (model.module if isinstance(model, Graph) else model).to(device)
    return model, [t.to(device) for t in inputs]


def run(args: argparse.Namespace) -> int:
    from opwise.rules.composites import composite_name

    check_output(args.out, (".png",), "--out")
    check_output(args.save, (".npy",), "--save")
    device = resolve_device(args.device)
    if args.composite is not None:
        args.composite = composite_name(args.composite)
    options = composite_options(args)
    if args.text is not None or args.tokenizer is not None:
        from opwise.cli.explain_text import run_text

        return run_text(args, options, device)
    import opwise
    from opwise.tracing.graph import Graph

    spec = args.model or DEFAULT_MODEL
    model, examples = load_model(spec)
    if args.input_shape and isinstance(model, Graph):  # a model file at another batch size: specialized once
        model = check_graph_shapes(spec, model, args.input_shape)
    inputs = model_inputs(spec, model, examples, args)
    if args.input is None and examples is None:
        announce_random(inputs)
    model, inputs = to_device(model, inputs, device)
    composite = args.composite or DEFAULT_COMPOSITE
    explanation = opwise.explain(model, *inputs, target=args.target, composite=composite, **options)
    relevance = first_relevance(explanation)
    prediction = int(explanation.output.reshape(explanation.output.shape[0], -1)[0].argmax())
    target, explained = int(explanation.target[0]), float(explanation.explained_output[0])
    print(f"prediction: {prediction}")
    print(f"explained: output {target} = {explained:.4f}")
    print_conservation(explanation)
    if args.save:
        np.save(args.save, relevance.detach().cpu().numpy())
        print(f"relevance saved to {args.save} (shape {tuple(relevance.shape)})")
    from opwise.attribution.pictures import DEFAULT_CLIP, feature_bars, heatmap

    parameters = ", ".join(f"{k}={v:g}" for k, v in options.items())
    title = (f"{Path(spec).name if not spec.startswith('builtin:') else spec} · composite {composite}"
             + (f" ({parameters})" if parameters else "")
             + f"\nprediction {prediction} · explained output {target} = {explained:.3g}")
    if relevance[0].numel() <= MAX_BARS and not is_image(relevance[0]):
        feature_bars(relevance[0].detach().cpu(), path=args.out, title=title)
        print(f"relevance per input feature written to {args.out}")
        return 0
    picture, image = as_picture(relevance[0], inputs[0][0])
    heatmap(picture, image=image, path=args.out, suptitle=title, title="relevance",
            clip=args.clip if args.clip is not None else DEFAULT_CLIP, sign=args.sign)
    print(f"heatmap written to {args.out}")
    return 0


def is_image(relevance: torch.Tensor) -> bool:
    """[C, H, W] with 1 or 3 channels and both sides above one: drawn as a heatmap, not as bars.

    >>> is_image(torch.zeros(3, 8, 8)), is_image(torch.zeros(4, 8, 8)), is_image(torch.zeros(1, 1, 8))
    (True, False, False)
    """
    return relevance.dim() == 3 and relevance.shape[0] in (1, 3) and relevance.shape[1] > 1 and relevance.shape[2] > 1


def as_picture(relevance: torch.Tensor, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One sample's relevance as something `heatmap` draws (a strip for vectors), and the input beside it
    when the input is an image ([C, H, W] with 1 or 3 channels).

    >>> [None if t is None else tuple(t.shape) for t in as_picture(torch.zeros(5), torch.zeros(5))]
    [(1, 5), None]
    >>> [tuple(t.shape) for t in as_picture(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4))]
    [(3, 4, 4), (3, 4, 4)]
    """
    relevance = relevance.detach().cpu()
    if is_image(relevance):
        image = sample.detach().cpu().float() if sample.shape == relevance.shape and sample.is_floating_point() else None
        return relevance, image
    if relevance.dim() == 2:
        return relevance, None
    return relevance.reshape(1, -1), None


def first_relevance(explanation) -> torch.Tensor:
    """The relevance of the first explained input (explanations of several inputs hold a tuple)."""
    relevance = explanation.relevance
    return relevance if isinstance(relevance, torch.Tensor) else relevance[0]


def _ends_in_log_softmax(explanation) -> bool:
    plan = getattr(explanation, "plan", None)
    if plan is None:
        return False
    graph = plan.graph
    last = graph.output
    return hasattr(last, "op") and last.op == "call_function" and graph.info(last).op == "aten._log_softmax.default"


def print_conservation(explanation) -> None:
    """One line: the input relevance total against the explained output (first sample), and what a far-off
    total means."""
    total, explained = explanation.conservation[0].tolist()
    if not explained:
        print(f"conservation: input relevance sums to {total:.4f}")
        return
    ratio = total / explained
    print(f"conservation: input relevance sums to {total:.4f} ({ratio:.1%} of the explained output)")
    if _ends_in_log_softmax(explanation) and not 0.5 <= ratio <= 1.5:
        print("  (the model ends in log_softmax: the explained output is a log-probability, at most 0; its relevance "
              "decomposes the class's score against the softmax-weighted scores, which need not sum to it)")
    elif explained < 0 and not 0.5 <= ratio <= 1.5:
        print("  (the explained output is negative, and LRP's rules follow positive evidence: the total cannot "
              "match; explain the predicted class (drop --target) or compare maps by their pattern)")
    elif not 0.5 <= ratio <= 1.5:
        print("  (far from 100%: biases, normalisation layers and stabilisers absorb or add relevance; "
              "see 'Concepts' in the README)")
