"""The digits data the demo models are trained and tested on, and the bundled demo inputs.

The full data set is scikit-learn's bundled `load_digits` (1797 8x8 images, no download); only the
training script and the tests need scikit-learn. The split is a fixed permutation, so the held-out
images are the same on every machine. A few held-out digits ship in `data/digits.npz` as default inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from opwise.errors import InputError

DATA_DIR = Path(__file__).resolve().parent / "data"
DEMO_FILE = DATA_DIR / "digits.npz"
SPLIT_SEED = 0
TEST_FRACTION = 0.2
IMAGE_SHAPE = (1, 8, 8)


class Split(NamedTuple):
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def scale(pixels: np.ndarray) -> torch.Tensor:
    """Raw digits pixels (0..16, flat or 8x8) to float32 images (N, 1, 8, 8) in [0, 1].

    >>> scale(np.full((2, 64), 16.0)).amax().item(), scale(np.zeros((2, 64))).shape
    (1.0, torch.Size([2, 1, 8, 8]))
    """
    return torch.as_tensor(np.asarray(pixels, dtype=np.float32) / 16.0).reshape(-1, *IMAGE_SHAPE)


def load_split() -> Split:
    """The fixed train/test split of scikit-learn's digits (needs scikit-learn).

    >>> split = load_split()
    >>> split.test_images.shape, int(split.train_labels.numel())
    (torch.Size([359, 1, 8, 8]), 1438)
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(digits.target))
    n_test = int(len(order) * TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    return Split(scale(digits.data[train]), labels[train], scale(digits.data[test]), labels[test])


def demo_digits(n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` bundled held-out digits: images (n, 1, 8, 8) in [0, 1] and their labels.

    >>> images, labels = demo_digits(3)
    >>> images.shape, labels.dtype
    (torch.Size([3, 1, 8, 8]), torch.int64)
    """
    with np.load(DEMO_FILE) as data:
        images, labels = data["images"], data["labels"]
    if not 1 <= n <= len(labels):
        raise InputError(f"n={n} demo digits requested; {len(labels)} are bundled, ask for 1 to {len(labels)}")
    return torch.as_tensor(images[:n]).reshape(n, *IMAGE_SHAPE), torch.as_tensor(labels[:n], dtype=torch.long)
