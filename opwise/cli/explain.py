"""`opwise explain [MODEL] [--input FILE | --text TEXT --tokenizer SPEC] [--target N] [--composite NAME] [--out PATH]`.

Images (and other tensor inputs) get a relevance heatmap; text goes through a tokenizer and gets one
relevance value per token, drawn as colored tokens.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from opwise.errors import InputError


def register(subparsers) -> None:
    parser = subparsers.add_parser("explain", help="explain a prediction with LRP and write a heatmap PNG")
    parser.add_argument("model", nargs="?", default=None, help="model spec (default: the built-in digits CNN)")
    parser.add_argument("--input", default=None, help="input file: .png/.jpg, .npy or .pt (default: bundled digit)")
    parser.add_argument("--text", default=None, help="text to explain with a text model (needs --tokenizer)")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer for --text: a local folder transformers' AutoTokenizer loads, or file.py:factory")
    parser.add_argument("--target", type=int, default=None,
                        help="class (or, for a language model, next-token id) to explain (default: the prediction)")
    parser.add_argument("--composite", default=None,
                        help="rule composite, see opwise.rules.COMPOSITES (default: epsilon-plus-flat; attn-lrp for text)")
    parser.add_argument("--out", default="relevance.png", help="where to write the heatmap (default: relevance.png)")
    parser.set_defaults(func=run)


def load_model(spec: str):
    """`(model, example inputs)` for a spec, through the public loader."""
    from opwise.tracing.loading import load_model as load

    return load(spec)


def read_input(path: str, example: torch.Tensor) -> torch.Tensor:
    """Read an input file and shape it like `example` (batch of one, channels and size checked).

    >>> import numpy, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy"); numpy.save(path, numpy.zeros((8, 8), "float32"))
    >>> read_input(path, torch.zeros(1, 1, 8, 8)).shape
    torch.Size([1, 1, 8, 8])
    """
    suffix = Path(path).suffix.lower()
    if not Path(path).is_file():
        raise InputError(f"input file {path} does not exist")
    if suffix in (".png", ".jpg", ".jpeg"):
        import matplotlib.image

        image = torch.as_tensor(matplotlib.image.imread(path), dtype=torch.float32)
        if image.max() > 1:
            image = image / 255
        image = image.permute(2, 0, 1)[:3] if image.dim() == 3 else image[None]
        if example.dim() == 4 and example.shape[1] == 1 and image.shape[0] != 1:
            image = image.mean(0, keepdim=True)
        value = image
    elif suffix == ".npy":
        import numpy

        value = torch.as_tensor(numpy.load(path))
    elif suffix == ".pt":
        value = torch.load(path, weights_only=True)
    else:
        raise InputError(f"input file {path}: unsupported type {suffix!r}; use .png, .jpg, .npy or .pt")
    value = value.to(example.dtype)
    if value.numel() != example.numel():
        raise InputError(
            f"input file {path} has shape {tuple(value.shape)} but the model expects {tuple(example.shape)} "
            "(batch of one); resize the input to match"
        )
    return value.reshape(example.shape)


def run(args: argparse.Namespace) -> int:
    if args.text is not None or args.tokenizer is not None:
        from opwise.cli.explain_text import run_text

        return run_text(args)
    import opwise

    model, inputs = load_model(args.model or "builtin:cnn")
    inputs = list(inputs)
    if args.input:
        inputs[0] = read_input(args.input, inputs[0])
    explanation = opwise.explain(model, *inputs, target=args.target, composite=args.composite or "epsilon-plus-flat")
    relevance = first_relevance(explanation)
    prediction = int(explanation.output.reshape(explanation.output.shape[0], -1)[0].argmax())
    print(f"prediction: {prediction}")
    print(f"explained: output {int(explanation.target[0])} = {float(explanation.explained_output[0]):.4f}")
    print_conservation(explanation)
    from opwise.attribution.pictures import heatmap

    heatmap(relevance[0], image=inputs[0][0], path=args.out)
    print(f"heatmap written to {args.out}")
    return 0


def first_relevance(explanation) -> torch.Tensor:
    """The relevance of the first explained input (explanations of several inputs hold a tuple)."""
    relevance = explanation.relevance
    return relevance if isinstance(relevance, torch.Tensor) else relevance[0]


def print_conservation(explanation) -> None:
    """One line: the input relevance total against the explained output (first sample)."""
    total, explained = explanation.conservation[0].tolist()
    print(f"conservation: input relevance sums to {total:.4f} ({total / explained:.1%} of the explained output)"
          if explained else f"conservation: input relevance sums to {total:.4f}")
