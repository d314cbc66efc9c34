"""Comparisons, logical operators and where with a bounded condition (comparison.py), and integer casts (cast.py):
every output at sampled grid points of the box (ties between indices and constants at every turn) lies in the
bounds, a decided comparison is exact, and a count of one-hot matches stays linear in the comparisons."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import opwise
from opwise.bounds import BoundedModel
from opwise.bounds.transfers.comparison import compare
from opwise.bounds.transfers.registry import Interval
from tests.bounds.helpers import METHOD_NAMES, assert_sound, randomize_

METHODS = ("ibp", "crown", "alpha-crown")


def _grid_box(generator, shape, levels=4):
    a = torch.randint(0, levels, shape, generator=generator).float()
    b = torch.randint(0, levels, shape, generator=generator).float()
    return torch.minimum(a, b), torch.maximum(a, b)


def _assert_sound_on_grid(model, lower, upper, generator, samples=3000, methods=METHODS, run=None):
    """Grid points (halves) in the box, where indices tie and comparisons flip; every method's bounds hold them.
    `run` evaluates a batch of points (default: the model on the whole batch)."""
    steps = torch.randint(0, 8, (samples, *lower.shape[1:]), generator=generator).float() / 2
    points = torch.minimum(torch.maximum(steps, lower), upper)
    with torch.no_grad():
        outputs = (run or model)(points).reshape(samples, -1).double()
    bounded = BoundedModel(model, lower)
    results = {}
    for method in methods:
        bounds = bounded.compute_bounds(x_lower=lower, x_upper=upper, method=method)
        assert (outputs >= bounds.lower.double() - 1e-6).all(), (method, (bounds.lower - outputs).max())
        assert (outputs <= bounds.upper.double() + 1e-6).all(), (method, (outputs - bounds.upper).max())
        results[method] = bounds
    return results


class OneHotCount(torch.nn.Module):
    """The carvana tail: the argmax of every row one-hot, compared with a mask, the matches counted; and the other
    comparisons and logical operators on the same index."""

    def __init__(self, classes: int, mask: torch.Tensor):
        super().__init__()
        self.classes = classes
        self.register_buffer("mask", mask)

    def forward(self, x):
        index = x.argmax(2)
        hot = F.one_hot(index, self.classes)
        matches = (hot == self.mask).long().sum((1, 2))
        inside = torch.logical_and(index >= 1, index < self.classes - 1)
        either = torch.logical_or(index == 0, torch.logical_not(index <= 1))
        odd = torch.logical_xor(index > 0, index != 2)
        counts = [matches, inside.long().sum(1), either.long().sum(1), odd.long().sum(1)]
        return torch.stack(counts, 1).float()


class WhereOfIndex(torch.nn.Module):
    """where with a bounded condition: constant branches (linear in the condition) and a bounded branch."""

    def forward(self, x):
        index = x.argmax(2)
        constant = torch.where(index == 1, torch.tensor(3), torch.tensor(-2))
        bounded = torch.where(index > 0, x[:, :, 0], torch.tensor(0.5))
        return torch.cat([constant.float().sum(1, keepdim=True), bounded], 1)


class TwoIndices(torch.nn.Module):
    """Two bounded indices compared with each other (eq.Tensor), through an integer cast (int64 to int32)."""

    def forward(self, x):
        left, right = x[:, :, :3].argmax(2).int(), x[:, :, 3:].argmax(2).int()
        return torch.stack([(left == right).long().sum(1), (left < right).long().sum(1)], 1).float()


@pytest.mark.parametrize("trial", range(8))
def test_one_hot_counts_and_logical_operators_are_sound_with_ties(trial):
    generator = torch.Generator().manual_seed(trial)
    classes, rows = 3, 4
    lower, upper = _grid_box(generator, (1, rows, classes))
    mask = F.one_hot(torch.randint(0, classes, (1, rows), generator=generator), classes)
    _assert_sound_on_grid(OneHotCount(classes, mask), lower, upper, generator)


@pytest.mark.parametrize("trial", range(6))
def test_where_with_a_bounded_condition_is_sound_with_ties(trial):
    generator = torch.Generator().manual_seed(100 + trial)
    lower, upper = _grid_box(generator, (1, 5, 3))
    _assert_sound_on_grid(WhereOfIndex(), lower, upper, generator)


@pytest.mark.parametrize("trial", range(6))
def test_comparisons_of_two_bounded_indices_are_sound_with_ties(trial):
    generator = torch.Generator().manual_seed(200 + trial)
    lower, upper = _grid_box(generator, (1, 4, 6))
    _assert_sound_on_grid(TwoIndices(), lower, upper, generator)


def test_the_count_is_sound_on_a_random_network_with_attacks():
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)

    class Network(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer
            self.register_buffer("mask", torch.tensor([[0, 1, 1, 0, 1, 0]]))

        def forward(self, x):
            index = torch.relu(self.layer(x)).argmax(2)
            return (F.one_hot(index, 2)[..., 1] == self.mask).long().sum(1, keepdim=True).float()

    x = torch.randn(1, 6, 3)
    for eps in (0.01, 0.1, 0.5):
        assert_sound(Network(), x - eps, x + eps, methods=METHODS, samples=3000)


def test_a_decided_count_is_exact_and_linear_in_the_comparisons():
    """Every row's argmax decided: the count is one number; with one row open, CROWN's count spans one."""
    mask = torch.tensor([[[0, 1], [1, 0], [0, 1]]])
    x = torch.tensor([[[0.0, 3.0], [2.0, 0.0], [1.0, 1.5]]])
    model = OneHotCount(2, mask)
    for method in METHODS:
        bounds = BoundedModel(model, x).compute_bounds(x_lower=x - 0.1, x_upper=x + 0.1, method=method)
        assert (bounds.lower[0, 0].item(), bounds.upper[0, 0].item()) == (pytest.approx(6.0), pytest.approx(6.0)), method
        bounds = BoundedModel(model, x).compute_bounds(x_lower=x - 0.4, x_upper=x + 0.4, method=method)
        # row 2 may flip: 2 of its entries
        assert (bounds.lower[0, 0].item(), bounds.upper[0, 0].item()) == (pytest.approx(4.0), pytest.approx(6.0)), method


def test_compare_decides_only_what_every_pair_of_values_decides():
    a = Interval(torch.tensor([0.0, 1.0, 2.0, 1.0]), torch.tensor([1.0, 1.0, 3.0, 2.0]))
    b = Interval(torch.tensor([1.0, 1.0, 0.0, 2.0]), torch.tensor([1.0, 1.0, 1.0, 2.0]))
    for op, check in (("eq", torch.eq), ("ne", torch.ne), ("lt", torch.lt), ("le", torch.le), ("gt", torch.gt),
                      ("ge", torch.ge)):
        true, false = compare(op, a, b)
        grid = torch.linspace(0, 1, 11)[:, None]
        values = check(a.lower + grid * (a.upper - a.lower), b.lower + grid.flip(0) * (b.upper - b.lower))
        assert not (true & ~values).any() and not (false & values).any(), op
        assert not (true & false).any(), op



def _classified(op: str, lower: list[float], upper: list[float]) -> Interval:
    from opwise.bounds.transfers.comparison import Classification

    step = type("Step", (), {"op": op, "shape": None})()
    return Classification().ibp(step, [Interval(torch.tensor(lower), torch.tensor(upper))])


def test_isnan_isinf_and_isfinite_are_decided_by_finite_ends_and_infinite_points():
    """Finite ends: a finite number. A point at ±inf: infinite. An infinite end or a NaN end (how the engine says a
    value is unbounded, and may be NaN): undecided."""
    inf, nan = math.inf, math.nan
    lower, upper = [-2.0, 0.0, -inf, 1.0, inf, -inf, nan], [3.0, 0.0, 1.0, inf, inf, -inf, nan]
    expected = {"aten.isnan.default": ([0, 0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1, 1]),
                "aten.isinf.default": ([0, 0, 0, 0, 1, 1, 0], [0, 0, 1, 1, 1, 1, 1]),
                "aten.isfinite.default": ([1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 1])}
    for op, (low, high) in expected.items():
        result = _classified(op, lower, upper)
        assert result.lower.tolist() == low and result.upper.tolist() == high, op


class _Cleaned(torch.nn.Module):
    """The usual guards: NaN and infinities masked out, a finiteness flag, x == x (isfinite traces to it)."""

    def __init__(self):
        super().__init__()
        self.first, self.last = torch.nn.Linear(3, 4), torch.nn.Linear(16, 2)

    def forward(self, x):
        h = self.first(x)
        parts = [torch.where(torch.isnan(h), torch.zeros_like(h), h), torch.where(torch.isinf(h), 0.0, h) * 2,
                 torch.isfinite(h).float() * h, (h == h).float() + (h != h).float() + (h < h).float() + (h >= h).float()]
        return self.last(torch.cat(parts, 1))


@pytest.mark.parametrize("seed", range(3))
def test_guards_against_nan_and_infinities_are_bounded_soundly(seed):
    torch.manual_seed(seed)
    model, x = _Cleaned().eval(), torch.randn(2, 3)
    results = assert_sound(model, x - 0.5, x + 0.5, methods=METHODS, samples=2000)
    assert all(torch.isfinite(bounds.lower).all() and torch.isfinite(bounds.upper).all() for bounds in results.values())


def test_the_flags_of_finite_bounded_values_are_constants():
    class Flags(torch.nn.Module):
        def forward(self, x):
            h = 3 * x - 1
            flags = [torch.isnan(h), torch.isinf(h), torch.isfinite(h), h == h, h != h]
            return torch.cat([flag.float() for flag in flags], 1)

    x = torch.randn(2, 3)
    expected = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0]).repeat_interleave(3).expand(2, 15)
    for method in METHODS:
        bounds = BoundedModel(Flags(), x).compute_bounds(x_lower=x - 10, x_upper=x + 10, method=method)
        assert torch.equal(bounds.lower, expected) and torch.equal(bounds.upper, expected), method


def test_isnan_of_a_value_that_may_be_nan_is_undecided():
    """asin of an input leaving [−1, 1] is NaN there; its bounds are unbounded, and isnan's interval is [0, 1]."""
    class Guarded(torch.nn.Module):
        def forward(self, x):
            return torch.isnan(torch.asin(x)).float()

    x = torch.zeros(1, 2)
    with pytest.warns(RuntimeWarning, match="asin"):
        bounds = BoundedModel(Guarded(), x).compute_bounds(x_lower=x - 2, x_upper=x + 2, method="ibp")
    assert (bounds.lower == 0).all() and (bounds.upper == 1).all()
    near = BoundedModel(Guarded(), x).compute_bounds(x_lower=x - 0.5, x_upper=x + 0.5, method="crown")
    assert (near.lower == 0).all() and (near.upper == 0).all()


class _Branches(torch.nn.Module):
    """where with a bounded condition and bounded branches: decided everywhere (a NaN guard, a test no value in the box
    can fail), decided in part (a threshold inside some elements' ranges), broadcast conditions and branches, a
    constant tensor as either branch, both branches bounded, and masked_fill with a bounded mask."""

    def __init__(self):
        super().__init__()
        self.first, self.last = torch.nn.Linear(3, 4), torch.nn.Linear(28, 3)
        self.register_buffer("row", torch.tensor([0.5, -1.0, 2.0, 0.0]))

    def forward(self, x):
        h = self.first(x)
        parts = [torch.where(torch.isnan(h), 0.0, h), torch.where(h > -1e4, h, 7.0), torch.where(h > 0.2, h, -0.5),
                 torch.where(h[:, :1] < 0, h, h[:, 1:2] * 2), torch.where(h.sum(1, keepdim=True) > 0, self.row, h),
                 torch.where(x[:, :1] > x[:, 1:2], h.flip(1), -h), h.masked_fill(h < 0.1, 1.5)]
        return self.last(torch.relu(torch.cat(parts, 1)))


@pytest.mark.parametrize("seed", range(8))
def test_where_with_bounded_branches_is_sound_on_decided_undecided_and_broadcast_conditions(seed):
    generator = torch.Generator().manual_seed(seed)
    model = randomize_(_Branches(), seed)
    x = torch.randn(2, 3, generator=generator)
    radius = (0.02 + torch.rand(2, 3, generator=generator)) * (0.2 if seed % 2 else 1.0)
    results = assert_sound(model, x - radius, x + radius, methods=METHOD_NAMES, samples=2000)
    assert all(torch.isfinite(bounds.lower).all() and torch.isfinite(bounds.upper).all() for bounds in results.values())


class _Guarded(torch.nn.Module):
    def __init__(self, guard: bool):
        super().__init__()
        self.guard = guard
        self.first, self.middle, self.last = torch.nn.Linear(3, 6), torch.nn.Linear(6, 5), torch.nn.Linear(5, 2)

    def forward(self, x):
        h = self.first(x)
        if self.guard:
            h = torch.where(torch.isnan(h), 0, h)
        h = self.middle(torch.relu(h))
        if self.guard:
            h = torch.where(torch.isinf(h) | torch.isnan(h), 0.0, h)
        return self.last(torch.relu(h))


@pytest.mark.parametrize("seed", range(4))
def test_a_nan_guard_over_finite_bounds_leaves_crown_bounds_unchanged(seed):
    """isnan(h) is false on the whole box, so the guard passes CROWN's coefficients to h: the bounds of the model
    without it (they were the hull's constant lines, looser)."""
    guarded = randomize_(_Guarded(True), seed)
    plain = _Guarded(False)
    plain.load_state_dict(guarded.state_dict())
    x = torch.randn(1, 3, generator=torch.Generator().manual_seed(seed))
    for method in ("crown", "crown-ibp", "forward-crown"):
        expected = BoundedModel(plain, x).compute_bounds(x_lower=x - 0.5, x_upper=x + 0.5, method=method)
        bounds = BoundedModel(guarded, x).compute_bounds(x_lower=x - 0.5, x_upper=x + 0.5, method=method)
        torch.testing.assert_close(bounds.lower, expected.lower, rtol=1e-5, atol=1e-5, msg=method)
        torch.testing.assert_close(bounds.upper, expected.upper, rtol=1e-5, atol=1e-5, msg=method)


def _as_overloads(module: torch.fx.GraphModule) -> bool:
    """where.self with a folded scalar branch rewritten to where.ScalarOther / ScalarSelf / masked_fill.Scalar, as
    other front-ends write them."""
    aten = torch.ops.aten
    masked = False
    for node in list(module.graph.nodes):
        if node.target is not aten.where.self:
            continue
        condition, a, b = node.args
        constants = [isinstance(v, torch.fx.Node) and v.op == "get_attr" for v in (a, b)]
        if constants == [False, True]:
            node.target, node.args = aten.where.ScalarOther, (condition, a, float(getattr(module, b.target)))
        elif constants == [True, False]:
            value = float(getattr(module, a.target))
            node.target, node.args = (aten.where.ScalarSelf, (condition, value, b)) if masked else (
                aten.masked_fill.Scalar, (b, condition, value))
            masked = True
    return masked


def test_where_and_masked_fill_overloads_with_scalars_bound_as_where_self():
    class Scalars(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first = torch.nn.Linear(3, 4)

        def forward(self, x):
            h = self.first(x)
            return torch.cat([torch.where(h > 0.1, h, -0.5), torch.where(h < 0.3, 2.0, h), torch.where(h > 0.5, -1.0, h)], 1)

    model, x = randomize_(Scalars(), 3), torch.randn(2, 3)
    graph = opwise.trace(model, x)
    rewritten = graph.rewrite(_as_overloads)
    ops = {rewritten.info(node).op for node in rewritten.call_nodes()}
    assert {"aten.where.ScalarOther", "aten.where.ScalarSelf", "aten.masked_fill.Scalar"} <= ops
    results = assert_sound(rewritten, x - 0.4, x + 0.4, methods=METHOD_NAMES, samples=2000, attack=False,
                           bounded=BoundedModel(rewritten, x))
    for method, bounds in results.items():
        expected = BoundedModel(graph, x).compute_bounds(x_lower=x - 0.4, x_upper=x + 0.4, method=method)
        torch.testing.assert_close(bounds.lower, expected.lower, msg=method)
        torch.testing.assert_close(bounds.upper, expected.upper, msg=method)


class _Flags(torch.nn.Module):
    """Masks combined with |, &, ^, ~ (aten.bitwise_*, with a tensor and with a Python bool) or with logical_*, read as
    numbers and as where's condition."""

    def __init__(self, bitwise: bool):
        super().__init__()
        self.bitwise = bitwise
        self.first, self.last = torch.nn.Linear(3, 4), torch.nn.Linear(24, 2)

    def forward(self, x):
        h = self.first(x)
        positive, bad, small = h > 0, torch.isnan(h) | torch.isinf(h) if self.bitwise else torch.logical_or(
            torch.isnan(h), torch.isinf(h)), h < 0.5
        if self.bitwise:
            flags = [positive & ~bad, positive ^ small, ~positive, small | True, positive & small]
        else:
            flags = [torch.logical_and(positive, torch.logical_not(bad)), torch.logical_xor(positive, small),
                     torch.logical_not(positive), torch.logical_or(small, torch.tensor(True)),
                     torch.logical_and(positive, small)]
        guarded = torch.where(bad, 0.0, h)
        return self.last(torch.cat([flag.float() for flag in flags] + [torch.where(flags[-1], guarded, -h)], 1))


@pytest.mark.parametrize("seed", range(4))
def test_boolean_bitwise_operators_are_bounded_as_the_logical_ones(seed):
    bitwise = randomize_(_Flags(True), seed)
    logical = _Flags(False)
    logical.load_state_dict(bitwise.state_dict())
    graph = opwise.trace(bitwise, torch.zeros(1, 3))
    assert {"aten.bitwise_or.Tensor", "aten.bitwise_and.Tensor", "aten.bitwise_xor.Tensor",
            "aten.bitwise_not.default"} <= {graph.info(node).op for node in graph.call_nodes()}
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(seed))
    radius = 0.05 if seed % 2 else 0.6
    results = assert_sound(bitwise, x - radius, x + radius, methods=METHOD_NAMES, samples=2000)
    for method, bounds in results.items():
        expected = opwise.compute_bounds(logical, x_lower=x - radius, x_upper=x + radius, method=method)
        torch.testing.assert_close(bounds.lower, expected.lower, msg=method)
        torch.testing.assert_close(bounds.upper, expected.upper, msg=method)


def test_bitwise_operators_on_integers_are_refused_with_the_reason():
    class Bits(torch.nn.Module):
        def forward(self, x):
            return (x.argmax(1, keepdim=True) | 1).float()

    with pytest.raises(opwise.UnsupportedOperation, match="bits of integers"):
        opwise.compute_bounds(Bits(), torch.zeros(1, 3), eps=0.1, method="ibp")


class _Reduced(torch.nn.Module):
    """any and all of bounded masks (all traces to not(any(not))), as numbers and as a broadcast where condition."""

    def __init__(self):
        super().__init__()
        self.first = torch.nn.Linear(3, 4)

    def forward(self, x):
        h = self.first(x)
        bad = torch.isnan(h).any(1, keepdim=True)
        flags = [(h > 0).any(1, keepdim=True), (h > -0.3).all(1, keepdim=True), bad, (h < 0.5).any()[None, None]]
        return torch.cat([flag.float().expand(h.shape[0], 1) for flag in flags] + [torch.where(bad, 0.0, h)], 1)


@pytest.mark.parametrize("seed", range(4))
def test_any_and_all_of_bounded_masks_are_sound_and_a_decided_guard_is_exact(seed):
    model = randomize_(_Reduced(), seed)
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(seed))
    radius = 0.05 if seed % 2 else 0.8
    results = assert_sound(model, x - radius, x + radius, methods=METHOD_NAMES, samples=2000)
    first = BoundedModel(model.first, x).compute_bounds(x_lower=x - radius, x_upper=x + radius, method="crown")
    assert (results["crown"].lower[:, 2] == 0).all() and (results["crown"].upper[:, 2] == 0).all()
    torch.testing.assert_close(results["crown"].lower[:, 4:], first.lower)
    torch.testing.assert_close(results["crown"].upper[:, 4:], first.upper)


def test_a_value_compared_with_itself_is_undecided_where_it_may_be_nan():
    """x == x (what isfinite traces to) was decided true for any interval that is not NaN, also [−inf, inf]: asin of
    an input leaving [−1, 1] is NaN there, and its == with itself false. Unbounded ends decide nothing, as isnan's."""
    class SelfCompared(torch.nn.Module):
        def forward(self, x):
            h = torch.asin(x)
            return torch.cat([(h == h).float(), (h != h).float()], 1)

    x = torch.zeros(1, 2)
    assert SelfCompared()(x + 2).tolist() == [[0.0, 0.0, 1.0, 1.0]]  # the NaN the bounds must allow
    with pytest.warns(RuntimeWarning, match="asin"):
        bounds = BoundedModel(SelfCompared(), x).compute_bounds(x_lower=x - 2, x_upper=x + 2, method="ibp")
    assert (bounds.lower == 0).all() and (bounds.upper == 1).all()
    near = BoundedModel(SelfCompared(), x).compute_bounds(x_lower=x - 0.5, x_upper=x + 0.5, method="ibp")
    assert near.lower.tolist() == [[1.0, 1.0, 0.0, 0.0]] and near.upper.tolist() == [[1.0, 1.0, 0.0, 0.0]]
