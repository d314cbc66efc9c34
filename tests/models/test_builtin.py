"""The shipped demo models: weights load safely, accuracy matches the record, inputs are bundled."""

from __future__ import annotations

import pytest
import torch

import opwise
from opwise.models import registry


@pytest.fixture(scope="module")
def split():
    pytest.importorskip("sklearn")
    from opwise.models.digits import load_split

    return load_split()


@pytest.mark.parametrize("name", opwise.models.NAMES)
def test_shipped_weights_meet_recorded_test_accuracy(name, split):
    model = opwise.models.builtin(name)
    with torch.no_grad():
        predictions = model(split.test_images).argmax(dim=1)
    accuracy = (predictions == split.test_labels).float().mean().item()
    recorded = opwise.models.metadata(name)
    assert recorded["test_size"] == len(split.test_labels)
    # One held-out image of slack: a borderline logit may flip under another BLAS.
    assert accuracy >= recorded["test_accuracy"] - 1 / len(split.test_labels)


def test_cnn_reaches_95_percent(split):
    assert opwise.models.metadata("cnn")["test_accuracy"] >= 0.95


@pytest.mark.parametrize("name", opwise.models.NAMES)
def test_builtin_is_in_eval_mode_and_classifies_demo_digits(name):
    model = opwise.models.builtin(name)
    assert not any(module.training for module in model.modules())
    images, labels = opwise.models.demo_inputs(name, n=20)
    assert images.shape == (20, 1, 8, 8)
    assert 0.0 <= images.min() and images.max() <= 1.0
    with torch.no_grad():
        correct = (model(images).argmax(dim=1) == labels).float().mean().item()
    assert correct >= 0.8


@pytest.mark.parametrize("name", opwise.models.NAMES)
def test_weights_are_plain_state_dicts_matching_the_architecture(name):
    state = torch.load(registry.weights_path(name), weights_only=True)
    assert set(state) == set(opwise.models.architecture(name).state_dict())


def test_weights_are_small_together():
    total = sum(registry.weights_path(name).stat().st_size for name in opwise.models.NAMES)
    assert total < 1_000_000


def test_unknown_builtin_names_the_known_ones():
    with pytest.raises(opwise.ModelLoadError, match="cnn, mlp, transformer"):
        opwise.models.builtin("resnet")
    with pytest.raises(opwise.ModelLoadError, match="unknown built-in"):
        opwise.models.demo_inputs("resnet")


def test_too_many_demo_digits_is_an_input_error():
    with pytest.raises(opwise.InputError, match="ask for 1 to 20"):
        opwise.models.demo_inputs("cnn", n=100)
