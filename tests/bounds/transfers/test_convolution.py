"""Convolution backward (opwise/bounds/transfers/convolution.py)."""

import pytest
import torch

from opwise.bounds import BoundedModel
from opwise.bounds.transfers import convolution
from tests.bounds.helpers import assert_sound


def _patch_embedding(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 4, stride=4), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(8 * 2 * 2, 3)).eval()


@pytest.mark.parametrize("size", [8, 10])  # 10: two input rows and columns past the last window
def test_patch_embedding_backward_by_matrix_products_gives_the_bounds_of_the_transposed_convolution(size, monkeypatch):
    model = _patch_embedding(size)
    x = torch.randn(1, 3, size, size)
    fast = BoundedModel(model, x).compute_bounds(x_lower=x - 0.1, x_upper=x + 0.1, method="crown")
    monkeypatch.setattr(convolution, "patchwise_backward", lambda *args: None)
    slow = BoundedModel(model, x).compute_bounds(x_lower=x - 0.1, x_upper=x + 0.1, method="crown")
    assert torch.allclose(fast.lower, slow.lower, atol=1e-5) and torch.allclose(fast.upper, slow.upper, atol=1e-5)


def test_patch_embedding_bounds_are_sound():
    model = _patch_embedding(0)
    x = torch.randn(1, 3, 10, 10)
    assert_sound(model, x - 0.1, x + 0.1, methods=("crown", "alpha-crown"), samples=2000)


def test_overlapping_or_padded_convolutions_take_the_general_path():
    weight = torch.randn(4, 3, 3, 3)
    assert convolution.patchwise_backward(torch.randn(1, 4, 2, 2), weight, (2, 2), (0, 0), (1, 1), 1, (3, 5, 5)) is None
    assert convolution.patchwise_backward(torch.randn(1, 4, 2, 2), weight, (3, 3), (1, 1), (1, 1), 1, (3, 4, 4)) is None


def test_window_matrices_kept_across_engines_follow_changes_to_the_weights():
    """`_window_matrix` keeps a window's Jacobian for later engines over the same weights, and builds it anew once
    the weights change in place."""
    weight = torch.randn(4, 3, 3, 3)
    first = convolution._window_matrix(weight, (2, 2), (1, 1), 1, (4, 2, 2), None)
    assert convolution._window_matrix(weight.detach(), (2, 2), (1, 1), 1, (4, 2, 2), None) is first
    with torch.no_grad():
        weight.mul_(2.0)
    again = convolution._window_matrix(weight, (2, 2), (1, 1), 1, (4, 2, 2), None)
    torch.testing.assert_close(again, 2 * first)
