"""The registry of built-in demo models: name -> architecture, shipped weights, recorded accuracy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from opwise.errors import ModelLoadError
from opwise.models.cnn import DigitsCNN
from opwise.models.digits import demo_digits
from opwise.models.mlp import DigitsMLP
from opwise.models.transformer import DigitsTransformer

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
METADATA_FILE = WEIGHTS_DIR / "metadata.json"

ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "cnn": DigitsCNN,
    "mlp": DigitsMLP,
    "transformer": DigitsTransformer,
}
NAMES = tuple(ARCHITECTURES)


def _check_name(name: str) -> None:
    if name not in ARCHITECTURES:
        raise ModelLoadError(f"unknown built-in model {name!r}; built-in models are {', '.join(NAMES)}")


def architecture(name: str) -> nn.Module:
    """A built-in architecture with fresh random weights (what the training script starts from).

    >>> type(architecture("mlp")).__name__
    'DigitsMLP'
    """
    _check_name(name)
    return ARCHITECTURES[name]()


def weights_path(name: str) -> Path:
    """Where the shipped state dict of a built-in model lives."""
    _check_name(name)
    return WEIGHTS_DIR / f"{name}.pt"


def builtin(name: str) -> nn.Module:
    """A built-in demo model with its trained weights, in eval mode.

    >>> import opwise
    >>> model = opwise.models.builtin("cnn")
    >>> images, labels = opwise.models.demo_inputs("cnn", n=4)
    >>> model(images).shape, model.training
    (torch.Size([4, 10]), False)
    """
    model = architecture(name)
    path = weights_path(name)
    if not path.is_file():
        raise ModelLoadError(
            f"weights of built-in model {name!r} are missing at {path}; run scripts/train_demo_models.py"
        )
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def demo_inputs(name: str, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` bundled held-out digits shaped for the built-in model `name`, and their labels.

    Every built-in model reads (N, 1, 8, 8) images with pixels in [0, 1].

    >>> images, labels = demo_inputs("transformer", n=2)
    >>> images.shape, labels.shape
    (torch.Size([2, 1, 8, 8]), torch.Size([2]))
    """
    _check_name(name)
    return demo_digits(n)


def metadata(name: str | None = None) -> dict:
    """Recorded facts about the shipped weights (test accuracy, parameter count, split), per model.

    >>> metadata("cnn")["test_accuracy"] >= 0.95
    True
    """
    with open(METADATA_FILE) as handle:
        recorded = json.load(handle)
    if name is None:
        return recorded
    _check_name(name)
    return recorded[name]
