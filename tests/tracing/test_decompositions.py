"""Our decompositions of scaled dot-product attention, roll, cdist and hypot agree with PyTorch's kernels."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import opwise
from opwise.tracing.decompositions import (attention_as_matmuls, distances_by_differences, hypot_as_root_of_squares,
                                          roll_as_slices)


@pytest.mark.parametrize("trial", range(24))
def test_attention_matches_torch(trial):
    generator = torch.Generator().manual_seed(trial)
    heads, key_heads = (4, 2) if trial % 2 else (4, 4)
    query = torch.randn(2, heads, 5, 8, generator=generator)
    key, value = torch.randn(2, 2, key_heads, 7, 8, generator=generator).unbind(0)
    mask, causal = None, False
    if trial % 4 == 1:
        mask = torch.rand(5, 7, generator=generator) > 0.4
        mask[:, 0] = True  # torch returns zeros for fully masked rows, we attend uniformly: avoid them
    elif trial % 4 == 2:
        mask = torch.randn(2, 1, 5, 7, generator=generator)
    elif trial % 4 == 3:
        causal = True
    scale = 0.3 if trial % 3 == 0 else None
    options = dict(attn_mask=mask, is_causal=causal, scale=scale, enable_gqa=heads != key_heads)
    expected = F.scaled_dot_product_attention(query, key, value, **options)
    assert torch.allclose(attention_as_matmuls(query, key, value, **options), expected, atol=1e-5)


def test_fully_masked_rows_stay_finite():
    query, key, value = torch.randn(3, 1, 1, 4, 8).unbind(0)
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[2] = False
    assert torch.isfinite(attention_as_matmuls(query, key, value, attn_mask=mask)).all()


@pytest.mark.parametrize("strategy", ["export", "fx"])
def test_traced_attention_is_matmul_softmax_matmul(strategy):
    class Attention(torch.nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    inputs = torch.randn(3, 1, 2, 4, 8).unbind(0)
    graph = opwise.trace(Attention(), *inputs, strategy=strategy)
    ops = set(graph.op_counts())
    assert "aten._softmax.default" in ops and "aten.bmm.default" in ops
    assert not ops & {"aten.where.self", "aten.any.dim", "aten.logical_not.default", "aten.eq.Scalar"}
    assert torch.allclose(graph(*inputs), Attention()(*inputs), atol=1e-6)


@pytest.mark.parametrize("shifts, dims", [([1], [0]), ([-2, 5], [1, 2]), ([3], []), ([0], [1]), ([7], [2])])
def test_roll_matches_torch(shifts, dims):
    x = torch.randn(2, 3, 4)
    assert torch.equal(roll_as_slices(x, shifts, dims), torch.roll(x, shifts, dims))


@pytest.mark.parametrize("strategy", ["export", "fx"])
def test_traced_roll_has_no_index_select(strategy):
    class Shift(torch.nn.Module):
        def forward(self, x):
            return torch.roll(x, (1, -1), (1, 2))

    x = torch.randn(1, 4, 4)
    graph = opwise.trace(Shift(), x, strategy=strategy)
    assert set(graph.op_counts()) <= {"aten.slice.Tensor", "aten.cat.default"}
    assert torch.equal(graph(x), Shift()(x))


def test_export_table_is_rebuilt_for_a_composite_op_registered_after_it():
    """The table is kept between traces; a custom composite op registered later must still be decomposed (a
    stale table would keep it whole, changing the graph)."""
    from opwise.tracing.decompositions import export_table

    before = export_table()
    assert before == export_table()
    library = torch.library.Library("opwise_table_test", "DEF")
    library.define("twice(Tensor x) -> Tensor")
    library.impl("twice", lambda x: x * 2, "CompositeImplicitAutograd")
    operator = torch.ops.opwise_table_test.twice.default
    assert operator not in before and operator in export_table()

    class Twice(torch.nn.Module):
        def forward(self, x):
            return operator(x) + 1

    graph = opwise.trace(Twice(), torch.ones(2))
    assert "twice" not in str(graph.module.graph) and "aten.mul" in str(graph.module.graph)


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, math.inf])
@pytest.mark.parametrize("seed", range(3))
def test_distances_by_differences_match_cdist(p, seed):
    """Every p, broadcast batch dims, and rows equal to a prototype (distance 0, exact both ways)."""
    generator = torch.Generator().manual_seed(seed)
    x1, x2 = torch.randn(2, 1, 6, 5, generator=generator), torch.randn(3, 4, 5, generator=generator)
    x1[0, 0, 0] = x2[0, 0]
    expected = torch.cdist(x1, x2, p=p, compute_mode="donot_use_mm_for_euclid_dist")
    torch.testing.assert_close(distances_by_differences(x1, x2, p), expected, rtol=1e-5, atol=1e-5)
    assert distances_by_differences(x1, x2, p)[0, 0, 0, 0] == 0


def test_hypot_as_root_of_squares_matches_hypot():
    x, y = torch.randn(2, 100, generator=torch.Generator().manual_seed(0)) * 10
    x[:3], y[:2] = 0.0, 0.0
    torch.testing.assert_close(hypot_as_root_of_squares(x, y), torch.hypot(x, y))


@pytest.mark.parametrize("strategy", ["export", "fx"])
def test_traced_cdist_and_hypot_are_differences_powers_sums_and_roots(strategy):
    class Radii(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.prototypes = torch.nn.Parameter(torch.randn(3, 4))

        def forward(self, x):
            distances = [torch.cdist(x, self.prototypes, p=p) for p in (1.0, 2.0, 3.0, math.inf)]
            return torch.cat(distances + [torch.hypot(x[:, :2], x[:, 2:])], -1)

    model, x = Radii(), torch.randn(2, 4)
    graph = opwise.trace(model, x, strategy=strategy)
    ops = set(graph.op_counts())
    assert not ops & {"aten._cdist_forward.default", "aten.hypot.default", "aten.cdist.default"}
    assert {"aten.sub.Tensor", "aten.abs.default", "aten.sqrt.default", "aten.amax.default"} <= ops
    torch.testing.assert_close(graph(x), model(x), rtol=1e-5, atol=1e-5)
