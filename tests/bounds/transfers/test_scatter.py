"""Writes into tensors (opwise/bounds/transfers/scatter.py): CROWN is exact and IBP sound on every write
operator (affine in what it writes and what it writes into), repeated indices follow the write that wins,
and positions computed from the input are refused."""

import pytest
import torch

from opwise.bounds import BoundedModel
from opwise.errors import UnsupportedOperation
from tests.bounds.helpers import METHOD_NAMES
from tests.bounds.transfers.test_affine import Case, assert_exact_and_ibp_sound

INDEX = torch.tensor([4, 0, 2])


def _written(h):
    h = h.clone()
    h[:, 1:3] = 0
    h += 1
    return h


# each maps a [2, 6] linear layer's output through one write (see test_affine.Case)
CASES = {
    "slice_write_then_add": _written,
    "element_write": lambda h: h.clone().index_fill(1, INDEX, 0.5),
    "index_add": lambda h: torch.ones(2, 5).index_add(1, torch.tensor([0, 2, 0, 1, 4, 4]), h, alpha=-2),
    "index_copy": lambda h: torch.ones(2, 5).index_copy(1, INDEX, h[:, :3]),
    "index_write_tensor": lambda h: h.index_put((torch.arange(2)[:, None], INDEX[None]), -h[:, 3:]),
    "index_put_accumulate": lambda h: h.index_put((torch.arange(2)[:, None], torch.tensor([[1, 1, 5]])), h[:, :3],
                                                  accumulate=True),
    "scatter": lambda h: torch.full((2, 7), -1.0).scatter(1, torch.tensor([[6, 0, 3]]).expand(2, 3), h[:, ::2]),
    "scatter_value": lambda h: h.scatter(1, torch.tensor([[5, 1]]).expand(2, 2), 3.0),
    "scatter_add": lambda h: h.scatter_add(1, torch.tensor([[5, 5, 0]]).expand(2, 3), h[:, :3]),
    "scatter_reduce_mean": lambda h: h.scatter_reduce(1, torch.tensor([[5, 5, 0]]).expand(2, 3), h[:, :3], "mean"),
    "slice_scatter": lambda h: torch.slice_scatter(h, 3 * h[:, :2], 1, 2, 6, 2),
    "select_scatter": lambda h: torch.select_scatter(h, h[:, 0] - h[:, 1], 1, 4),
    "masked_scatter": lambda h: h.masked_scatter(torch.tensor([True, False, False, True, False, True]), -h[:, :3]),
    "fill": lambda h: h.clone().fill_(2.0) + h,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_crown_is_exact_and_ibp_sound_on_writes(name):
    assert_exact_and_ibp_sound(Case(CASES[name]), 5, name, methods=("crown", "forward-crown"))


class RepeatedWrite(torch.nn.Module):
    """x0 and x1 both written to position 0, the later (x1) winning; x2 to position 1. The vjp credits x0 too."""

    def forward(self, x):
        return torch.zeros(1, 2).index_put((torch.tensor([0]), torch.tensor([0, 0, 1])), x[0])


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_a_repeated_index_follows_the_write_that_wins(method):
    x_lower, x_upper = torch.tensor([[-1.0, 2.0, 5.0]]), torch.tensor([[1.0, 3.0, 7.0]])
    model = RepeatedWrite()
    assert torch.equal(model(x_upper), torch.tensor([[3.0, 7.0]]))
    bounds = BoundedModel(model, x_lower).compute_bounds(x_lower=x_lower, x_upper=x_upper, method=method)
    torch.testing.assert_close(bounds.lower, torch.tensor([[2.0, 5.0]]))
    torch.testing.assert_close(bounds.upper, torch.tensor([[3.0, 7.0]]))


class InputPositions(torch.nn.Module):
    """Where a value is written depends on the input: not an affine map of it."""

    def forward(self, x):
        return torch.zeros(1, 3).scatter(1, (x > 0).long(), x)


def test_positions_that_depend_on_the_input_are_refused():
    x = torch.tensor([[0.5, -0.5]])
    with pytest.raises(UnsupportedOperation):
        BoundedModel(InputPositions(), x).compute_bounds(x, eps=0.1, method="crown")
