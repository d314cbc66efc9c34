"""remainder and fmod by a constant divisor (modulo.py): sampled values inside the interval and between the lines,
exact lines within one period, and the refusals of a divisor that depends on the input or is zero."""

from __future__ import annotations

import pytest
import torch

from opwise.bounds import BoundedModel
from opwise.bounds.transfers.modulo import modulo_lines
from opwise.errors import UnsupportedOperation
from tests.bounds.helpers import METHOD_NAMES, assert_sound, randomize_


@pytest.mark.parametrize("floored", [True, False])
def test_lines_and_interval_hold_sampled_values(floored):
    function = torch.remainder if floored else torch.fmod
    generator = torch.Generator().manual_seed(1)
    for trial in range(300):
        sign = torch.where(torch.rand(8, generator=generator) < 0.5, -1, 1)
        divisor = (torch.rand(8, generator=generator) * 3 + 0.1) * sign
        centre, radius = torch.randn(8, generator=generator) * 4, torch.rand(8, generator=generator) ** 3 * 4
        lower, upper = centre - radius, centre + radius
        interval, lines = modulo_lines(lower, upper, divisor, floored)
        t = torch.rand(2000, 8, generator=generator)
        t[:200] = t[:200].round()
        x = torch.minimum(torch.maximum(lower + (upper - lower) * t, lower), upper)  # no rounding past an end
        y = function(x, divisor)
        assert (y >= interval.lower).all() and (y <= interval.upper).all(), trial
        slack = 1e-5 * (1 + x.abs())
        assert (y >= lines.lower_slope * x + lines.lower_intercept - slack).all(), trial
        assert (y <= lines.upper_slope * x + lines.upper_intercept + slack).all(), trial


@pytest.mark.parametrize("floored", [True, False])
def test_integers_end_one_short_of_the_divisor(floored):
    function = torch.remainder if floored else torch.fmod
    lower, upper = torch.tensor([-7.0, 2.0, -3.0]), torch.tensor([9.0, 11.0, 5.0])
    divisor = torch.tensor([3.0, -4.0, 5.0])
    interval, _ = modulo_lines(lower, upper, divisor, floored, integral=True)
    integers = torch.stack([torch.arange(-7, 12)] * 3, 1)
    values, inside = function(integers, divisor.long()), (integers >= lower) & (integers <= upper)
    assert torch.equal(interval.lower, torch.where(inside, values, 99).amin(0).float())
    assert torch.equal(interval.upper, torch.where(inside, values, -99).amax(0).float())


def test_one_period_gives_the_exact_line():
    lower, upper = torch.tensor([2.25, -1.75, 0.5, -2.75]), torch.tensor([3.75, -0.25, 1.5, -0.25])
    divisor = torch.tensor([2.0, 2.0, -2.0, 3.0])
    for floored in (True, False):
        function = torch.remainder if floored else torch.fmod
        interval, lines = modulo_lines(lower, upper, divisor, floored)
        assert torch.equal(lines.lower_slope, torch.ones(4)) and torch.equal(lines.upper_slope, torch.ones(4))
        assert torch.equal(lines.lower_intercept, lines.upper_intercept)
        assert torch.equal(interval.lower, function(lower, divisor))
        assert torch.equal(interval.upper, function(upper, divisor))
        x = torch.linspace(0, 1, 11)[:, None] * (upper - lower) + lower
        assert torch.allclose(lines.lower_slope * x + lines.lower_intercept, function(x, divisor), atol=1e-6)


def test_fmod_across_zero_within_one_period_is_the_identity():
    interval, lines = modulo_lines(torch.tensor([-0.5]), torch.tensor([0.75]), torch.tensor(-1.0), False)
    assert (interval.lower.item(), interval.upper.item()) == (-0.5, 0.75)
    assert (lines.lower_slope.item(), lines.lower_intercept.item()) == (1.0, 0.0)


def test_across_a_period_the_range_with_constant_lines():
    lower, upper = torch.tensor([1.5, -2.5, 1.5, -4.0]), torch.tensor([2.5, -1.5, 2.5, 0.5])
    interval, lines = modulo_lines(lower, upper, torch.tensor([2.0, 2.0, -2.0, 3.0]), True)
    assert interval.lower.tolist() == [0.0, 0.0, -2.0, 0.0] and interval.upper.tolist() == [2.0, 2.0, 0.0, 3.0]
    assert torch.equal(lines.lower_slope, torch.zeros(4))
    interval, _ = modulo_lines(lower, upper, torch.tensor([2.0, 2.0, -2.0, 3.0]), False)
    assert interval.lower.tolist() == [0.0, -2.0, 0.0, -3.0] and interval.upper.tolist() == [2.0, 0.0, 2.0, 0.5]


def test_infinite_bounds_give_the_range():
    interval, lines = modulo_lines(torch.tensor([-float("inf"), 0.0]), torch.tensor([1.0, float("inf")]),
                                   torch.tensor(2.0), False)
    assert interval.lower.tolist() == [-2.0, 0.0] and interval.upper.tolist() == [1.0, 2.0]
    assert all(torch.isfinite(part).all() for part in (lines.lower_intercept, lines.upper_intercept))


class _Wrapped(torch.nn.Module):
    """Linear -> remainder or fmod by a scalar or a buffer (mixed signs, broadcast) -> Linear."""

    def __init__(self, floored, divisor):
        super().__init__()
        self.first, self.second, self.floored = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2), floored
        self.divisor = divisor
        if isinstance(divisor, torch.Tensor):
            self.register_buffer("d", divisor)

    def forward(self, x):
        d = self.d if isinstance(self.divisor, torch.Tensor) else self.divisor
        h = self.first(x)
        r = h % d if self.floored else torch.fmod(h, d)
        return self.second(r) + h.sum(1, keepdim=True)


@pytest.mark.parametrize("floored", [True, False])
@pytest.mark.parametrize("divisor", [0.7, -1.3, "tensor"])
def test_models_are_bounded_soundly(floored, divisor):
    divisor = torch.tensor([0.5, -2.0, 1.5, 3.0]) if divisor == "tensor" else divisor
    model = _Wrapped(floored, divisor)
    for seed in range(6):
        randomize_(model, seed)
        x = torch.randn(2, 3, generator=torch.Generator().manual_seed(seed))
        eps = [0.01, 0.2, 2.0][seed % 3]
        methods = METHOD_NAMES if seed < 3 else ("ibp", "crown")
        results = assert_sound(model, x - eps, x + eps, methods=methods, samples=2000, seed=seed, attack=seed == 1,
                               bounded=BoundedModel(model, x))
        crown, ibp = results["crown"], results["ibp"]
        assert (crown.upper - crown.lower <= ibp.upper - ibp.lower + 1e-5).all()


def test_one_period_is_bounded_exactly_end_to_end():
    class Shifted(torch.nn.Module):
        def forward(self, x):
            return torch.remainder(x, 4.0) - torch.fmod(x, -4.0)  # both x − 4 on [4, 8): the difference is 0

    x = torch.tensor([[5.0, 6.0]])
    bounds = BoundedModel(Shifted(), x).compute_bounds(x_lower=x - 0.5, x_upper=x + 0.5, method="crown")
    assert torch.allclose(bounds.lower, torch.zeros(1, 2), atol=1e-6)
    assert torch.allclose(bounds.upper, torch.zeros(1, 2), atol=1e-6)


def test_integer_remainder_after_a_cast_is_bounded_soundly():
    class Digits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 3)

        def forward(self, x):
            digits = (self.linear(x) * 10).to(torch.int64).remainder(3).float()
            return digits + torch.fmod(x.sum(1, keepdim=True).long(), 2)

    model = Digits()
    for seed in range(4):
        randomize_(model, seed)
        x = torch.randn(1, 2, generator=torch.Generator().manual_seed(seed))
        assert_sound(model, x - 0.3, x + 0.3, methods=("ibp", "crown"), samples=2000, seed=seed, attack=False)


@pytest.mark.parametrize("forward", [lambda x: x % x, lambda x: torch.remainder(torch.ones(3), x),
                                     lambda x: torch.fmod(x, x.detach() + 1), lambda x: 2.0 % x])
def test_an_input_dependent_divisor_is_refused_naming_the_node(forward):
    class Model(torch.nn.Module):
        def forward(self, x):
            return forward(x)

    x = torch.rand(1, 3) + 1
    with pytest.raises(UnsupportedOperation, match=r"node '(remainder|fmod)\w*'.*divisor depends on the bounded input"):
        BoundedModel(Model(), x).compute_bounds(x_lower=x - 0.1, x_upper=x + 0.1, method="crown")


@pytest.mark.parametrize("divisor", [0.0, torch.tensor([1.0, 0.0, 2.0]), float("inf")])
def test_a_zero_or_infinite_divisor_is_refused(divisor):
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            if isinstance(divisor, torch.Tensor):
                self.register_buffer("d", divisor)

        def forward(self, x):
            return torch.fmod(x, self.d if isinstance(divisor, torch.Tensor) else divisor)

    model = Model()
    x = torch.rand(1, 3) + 1
    with pytest.raises(UnsupportedOperation, match="node 'fmod.*divisor is zero or not finite"):
        BoundedModel(model, x).compute_bounds(x_lower=x - 0.1, x_upper=x + 0.1, method="ibp")


def test_branch_and_bound_splits_neither_a_remainder_nor_an_index():
    """Both are steps no split at one point makes exact: GenBaB's candidates are the ReLU's input alone."""
    from opwise.bounds.strategies.genbab.branching import split_nodes
    from opwise.tracing import trace

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 4)

        def forward(self, x):
            h = self.linear(x)
            return torch.relu(h) + torch.fmod(h, 0.5) + h.argmax(1, keepdim=True).float()

    assert [node.nonlinear for node in split_nodes(trace(Model(), torch.zeros(1, 3)))] == ["relu"]
