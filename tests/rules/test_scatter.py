"""Writes into tensors (opwise/rules/scatter.py): replacing writes route relevance to the element each output
holds, accumulating writes split it in proportion to their terms; both conserve it."""

from __future__ import annotations

import pytest
import torch

from opwise.errors import UnsupportedOperation
from opwise.rules import rule_for
from opwise.rules.scatter import write
from tests.rules.calls import Call

aten = torch.ops.aten


def test_every_write_operator_has_the_rule():
    for key in ("aten.copy.default", "aten.index_put.default", "aten.scatter.src", "aten.scatter.value",
                "aten.scatter_add.default", "aten.scatter_reduce.two", "aten.masked_scatter.default"):
        assert rule_for(key) is write, key


def test_copy_routes_to_the_source_summed_over_its_broadcast():
    """copy(self, src) holds src everywhere; self's values are all overwritten and get nothing."""
    target, source = torch.randn(2, 3), torch.randn(3)
    relevance = torch.arange(6.0).reshape(2, 3)
    to_target, to_source = write(Call(aten.copy.default, [target, source]), relevance)
    assert torch.equal(to_target, torch.zeros(2, 3))
    assert torch.equal(to_source, torch.tensor([3.0, 5.0, 7.0]))


def test_a_repeated_index_gives_relevance_to_the_write_that_wins_only():
    target, values = torch.ones(4), torch.tensor([10.0, 20.0, 30.0])
    call = Call(aten.index_put.default, [target, [torch.tensor([1, 1, 3])], values])
    assert torch.equal(call.output, torch.tensor([1.0, 20.0, 1.0, 30.0]))  # the later write wins on CPU
    to_target, _, to_values = write(call, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert torch.equal(to_target, torch.tensor([1.0, 0.0, 3.0, 0.0]))
    assert torch.equal(to_values, torch.tensor([0.0, 2.0, 4.0]))


def test_a_constant_written_takes_its_positions_relevance():
    x = torch.tensor([[1.0, 2.0, 3.0]])
    call = Call(aten.scatter.value, [x, 1, torch.tensor([[2]]), 5.0])
    to_x, *_ = write(call, torch.tensor([[1.0, 1.0, 1.0]]))
    assert torch.equal(to_x, torch.tensor([[1.0, 1.0, 0.0]]))


def test_accumulating_writes_split_in_proportion_to_their_terms():
    """out[0] = self[0] + v0 + v1 = 1 + 1 + 2: relevance 8 splits 2 : 2 : 4; out[1] = self[1] = 5 keeps all of 3."""
    target, values = torch.tensor([1.0, 5.0]), torch.tensor([1.0, 2.0])
    call = Call(aten.index_put.default, [target, [torch.tensor([0, 0])], values, True])
    to_target, _, to_values, _ = write(call, torch.tensor([8.0, 3.0]))
    torch.testing.assert_close(to_target, torch.tensor([2.0, 3.0]))
    torch.testing.assert_close(to_values, torch.tensor([2.0, 4.0]))


@pytest.mark.parametrize("op", ["scatter_add", "sum", "mean"])
def test_scatter_sums_conserve(op):
    torch.manual_seed(0)
    target, values = torch.rand(2, 5) + 1, torch.rand(2, 4) + 1
    index = torch.tensor([[0, 0, 3, 4], [1, 1, 1, 2]])
    if op == "scatter_add":
        call = Call(aten.scatter_add.default, [target, 1, index, values])
    else:
        call = Call(aten.scatter_reduce.two, [target, 1, index, values, op])
    relevance = torch.randn(2, 5)
    shares = [r for r in write(call, relevance) if r is not None]
    torch.testing.assert_close(sum(r.sum() for r in shares), relevance.sum(), rtol=1e-5, atol=1e-5)


def test_reductions_that_pick_an_element_are_refused():
    call = Call(aten.scatter_reduce.two, [torch.zeros(3), 0, torch.tensor([0, 0]), torch.ones(2), "amax"])
    with pytest.raises(UnsupportedOperation, match="'sum' and 'mean'"):
        write(call, torch.ones(3))
