"""The digits split is fixed and disjoint; the bundled demo digits come from the held-out part."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from opwise.models.digits import demo_digits, load_split, scale


@pytest.fixture(scope="module")
def split():
    pytest.importorskip("sklearn")
    return load_split()


def test_split_sizes_and_range(split):
    assert len(split.train_labels) + len(split.test_labels) == 1797
    for images in (split.train_images, split.test_images):
        assert images.dtype == torch.float32 and 0.0 <= images.min() and images.max() <= 1.0


def test_split_is_reproducible_and_disjoint(split):
    again = load_split()
    assert torch.equal(split.test_images, again.test_images)
    train = {tuple(image.flatten().tolist()) for image in split.train_images}
    test_rows = [tuple(image.flatten().tolist()) for image in split.test_images]
    # digits has a few duplicate images; nearly all held-out images are unseen in training.
    assert sum(row in train for row in test_rows) <= 5


def test_demo_digits_are_held_out_images_of_every_class(split):
    images, labels = demo_digits(20)
    assert labels.tolist() == list(range(10)) * 2
    flat_test = split.test_images.flatten(1)
    for image, label in zip(images, labels):
        match = (flat_test == image.flatten()).all(dim=1).nonzero().flatten()
        assert len(match) >= 1 and int(split.test_labels[match[0]]) == int(label)


def test_scale_maps_raw_pixels_to_unit_interval():
    raw = np.arange(64, dtype=np.float64).reshape(1, 64) % 17
    images = scale(raw)
    assert images.shape == (1, 1, 8, 8)
    assert torch.allclose(images.flatten(), torch.as_tensor(raw.flatten() / 16.0, dtype=torch.float32))
