"""`opwise explain MODEL --text "..." --tokenizer SPEC`: relevance per token of a text model's prediction.

The model takes token ids ``[1, T]`` and returns logits, either ``[1, classes]`` (a classifier: the
predicted or ``--target`` class is explained) or ``[1, T, vocabulary]`` (a language model: the logit of
the predicted or ``--target`` next token at the last position is explained). Tokenizers come from a
local folder (transformers' ``AutoTokenizer``, never downloading, never running the folder's own code)
or a ``file.py:factory`` returning a transformers tokenizer or a ``tokenizers.Tokenizer``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from opwise.errors import InputError, ModelLoadError

TEXT_COMPOSITE = "attn-lrp"
TOKENIZER_FORMS = "a local tokenizer folder (loadable by transformers' AutoTokenizer) or file.py:factory"


def load_tokenizer(spec: str) -> Any:
    """A tokenizer from a local folder or from ``file.py:factory`` (see the module docstring).

    >>> load_tokenizer("no/such/folder")
    Traceback (most recent call last):
    ...
    opwise.errors.InputError: tokenizer 'no/such/folder' is neither an existing folder nor file.py:factory; give ...
    """
    path, separator, factory = spec.rpartition(":")
    if separator and path.endswith(".py") and factory.isidentifier():
        from opwise.tracing.loading import call_factory

        return call_factory(Path(path), factory, "tokenizer file")
    if not Path(spec).is_dir():
        raise InputError(f"tokenizer {spec!r} is neither an existing folder nor file.py:factory; give {TOKENIZER_FORMS}")
    try:
        from transformers import AutoTokenizer
    except ImportError as error:
        raise InputError(f"loading the tokenizer folder {spec} needs transformers (pip install transformers): {error}") from error
    try:  # trust_remote_code=False: a folder's own Python (auto_map) is never imported, nor is the user asked
        return AutoTokenizer.from_pretrained(spec, local_files_only=True, trust_remote_code=False)
    except Exception as error:  # noqa: BLE001 - any failure to read the folder is the user's to fix
        if "trust_remote_code" in str(error):
            raise ModelLoadError(
                f"the tokenizer folder {spec} needs its own Python code to load (auto_map in its config) and opwise "
                "never runs code from a tokenizer folder; if you trust it, load it in a file.py:factory and pass that"
            ) from None
        raise ModelLoadError(f"transformers' AutoTokenizer cannot load the folder {spec}: {' '.join(str(error).split())}") from error


def tokenize(tokenizer: Any, text: str) -> tuple[torch.Tensor, list[str]]:
    """Token ids ``[1, T]`` and the token strings, from a transformers tokenizer or a ``tokenizers.Tokenizer``.

    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> words = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    >>> words.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> tokenize(words, "hello big world")
    (tensor([[1, 0, 2]]), ['hello', '[UNK]', 'world'])
    """
    if not text.strip():
        raise InputError("--text is empty; give the text to explain")
    encode = getattr(tokenizer, "encode", None)
    if hasattr(tokenizer, "convert_ids_to_tokens") and callable(tokenizer):
        ids = [int(i) for i in tokenizer(text)["input_ids"]]
        tokens = [str(t) for t in tokenizer.convert_ids_to_tokens(ids)]
    elif callable(encode) and hasattr(encode(text), "ids"):
        encoding = encode(text)
        ids, tokens = list(encoding.ids), list(encoding.tokens)
    else:
        raise InputError(
            f"the tokenizer is a {type(tokenizer).__name__}; expected a transformers tokenizer or a tokenizers.Tokenizer"
        )
    if not ids:
        raise InputError(f"the tokenizer turned the text {text!r} into no tokens; give text it knows")
    return torch.tensor([ids], dtype=torch.long), tokens


def check_vocabulary(model: torch.nn.Module, ids: torch.Tensor) -> None:
    """Token ids beyond the model's input embedding mean the tokenizer belongs to another model."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    rows = getattr(embeddings, "num_embeddings", None)
    if rows is not None and int(ids.max()) >= rows:
        raise InputError(
            f"the tokenizer produced token id {int(ids.max())} but the model's embedding has {rows} rows; "
            "use the tokenizer that belongs to this model"
        )


def text_target(logits: torch.Tensor, target: int | None) -> tuple[int, Callable[[torch.Tensor], torch.Tensor], str]:
    """What to explain in a text model's logits: (index, target callable for explain, description).

    >>> index, select, what = text_target(torch.tensor([[[0.0, 1.0], [3.0, 2.0]]]), None)
    >>> index, select(torch.tensor([[[0.0, 1.0], [3.0, 2.0]]])), what
    (0, tensor([3.]), 'next token')
    """
    if logits.dim() == 2:
        kind, size = "class", logits.shape[1]
        scores = logits[0]
    elif logits.dim() == 3:
        kind, size = "next token", logits.shape[2]
        scores = logits[0, -1]
    else:
        raise InputError(
            f"the model returned logits of shape {tuple(logits.shape)}; text models must return [1, classes] "
            "(classifier) or [1, tokens, vocabulary] (language model)"
        )
    index = int(scores.argmax()) if target is None else target
    if not 0 <= index < size:
        raise InputError(f"--target {index} is out of range: the model scores {size} values per {kind}; use 0..{size - 1}")
    if logits.dim() == 2:
        return index, lambda out: out[:, index], kind
    return index, lambda out: out[:, -1, index], kind


def run_text(args: argparse.Namespace, options: dict | None = None, device: torch.device | None = None) -> int:
    """The text branch of `opwise explain` (called when --text or --tokenizer is given); `options` are the
    composite parameters, `device` where the model runs."""
    import opwise
    from opwise.attribution.pictures import token_heatmap
    from opwise.cli.explain import first_relevance, load_model, print_conservation

    if args.input is not None:
        raise InputError("give either --input (a tensor or image file) or --text, not both")
    if getattr(args, "input_shape", None):
        raise InputError("--input-shape does not apply to --text: the text's tokens give the input's shape")
    if args.text is None:
        raise InputError("--tokenizer needs --text: the text to explain")
    if args.tokenizer is None:
        raise InputError(f"--text needs --tokenizer SPEC: {TOKENIZER_FORMS}")
    if args.model is None:
        raise InputError("--text needs a text model, e.g. my_model.py:make_model; the built-in models read images")
    tokenizer = load_tokenizer(args.tokenizer)
    ids, tokens = tokenize(tokenizer, args.text)
    model = load_model(args.model)[0]
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"{args.model} is not a torch module; text explanations need one that takes token ids of any length")
    check_vocabulary(model, ids)
    device = device or torch.device("cpu")
    model, ids = model.to(device), ids.to(device)
    with torch.no_grad():
        logits = _logits(model(ids))
    index, select, kind = text_target(logits, args.target)
    composite = args.composite or TEXT_COMPOSITE
    explanation = opwise.explain(model, ids, target=select, composite=composite, **(options or {}))
    relevance = first_relevance(explanation)
    if relevance.shape != ids.shape:
        raise InputError(
            f"relevance has shape {tuple(relevance.shape)}, not one value per token {tuple(ids.shape)}; "
            "the model's first input must be the token ids"
        )
    name = _target_name(kind, index, tokenizer)
    explained = float(explanation.explained_output[0])
    values = relevance[0].detach().cpu()
    print(f"tokens ({len(tokens)}): " + " ".join(f"{token}[{float(value):+.3g}]" for token, value in zip(tokens, values)))
    print(f"prediction: {kind} {name}" if args.target is None else f"target: {kind} {name}")
    print(f"explained: logit of {kind} {name} = {explained:.4f}")
    print_conservation(explanation)
    if args.save:
        np.save(args.save, relevance.detach().cpu().numpy())
        print(f"relevance saved to {args.save} (shape {tuple(relevance.shape)})")
    title = f"{Path(args.model).name} · {composite} · {'prediction' if args.target is None else 'target'} {kind} {name} · logit {explained:.3g}"
    token_heatmap(tokens, values, path=args.out, title=title, clip=args.clip, sign=args.sign)
    print(f"token heatmap written to {args.out}")
    return 0


def _logits(output: Any) -> torch.Tensor:
    """The logits tensor of a model's output: the tensor itself, its ``logits`` entry, or its first entry."""
    while not isinstance(output, torch.Tensor):
        if hasattr(output, "keys") and "logits" in output.keys():
            output = output["logits"]
        elif isinstance(output, (tuple, list)) and output:
            output = output[0]
        else:
            raise InputError(f"the model returned a {type(output).__name__}; text models must return logits")
    return output


def _target_name(kind: str, index: int, tokenizer: Any) -> str:
    """`'word' (id 7)` for next tokens when the tokenizer can name it, else the bare index."""
    if kind != "next token":
        return str(index)
    convert = getattr(tokenizer, "convert_ids_to_tokens", None) or getattr(tokenizer, "id_to_token", None)
    word = convert(index) if convert else None
    return f"{word!r} (id {index})" if word is not None else f"id {index}"
