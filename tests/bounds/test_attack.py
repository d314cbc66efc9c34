import functools
import math

import pytest
import torch

from opwise.bounds.attack import check_counterexample, pgd_attack
from opwise.bounds.input_set import InputSet
from opwise.bounds.spec import Disjunct, Specification, robustness_disjuncts


def _relu_net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def test_attack_finds_violation_that_sampling_confirms_and_reports_only_real_ones():
    found = 0
    for seed in range(20):
        model = _relu_net(seed)
        center = torch.zeros(1, 3)
        target = int(model(center).argmax())
        spec = Specification(center - 0.5, center + 0.5, robustness_disjuncts(3, target))
        result = pgd_attack(model, spec, steps=50, restarts=4)
        samples = spec.x_lower + (spec.x_upper - spec.x_lower) * torch.rand(20000, 3)
        sampled_violation = bool((spec.margin(model(samples)) <= 0).any())
        if result.found:
            found += 1
            violates, margin, _ = check_counterexample(model, spec, result.counterexample)
            assert violates and margin <= 0
            assert spec.contains(result.counterexample)
        # a violation that plain sampling finds must not be missed by the attack
        if sampled_violation:
            assert result.found
    assert found > 0


def test_attack_respects_fixed_inputs_and_disjunct_rows():
    model = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    # unsafe: y0 >= 2 and y1 <= 0.5  (rows: -y0 <= -2, y1 <= 0.5); x0 in [0, 3], x1 fixed at 1
    unsafe = [Disjunct(torch.tensor([[-1.0, 0.0], [0.0, 1.0]]), torch.tensor([-2.0, 0.5]))]
    spec = Specification(torch.tensor([[0.0, 1.0]]), torch.tensor([[3.0, 1.0]]), unsafe)
    result = pgd_attack(model, spec)
    assert not result.found and abs(result.margin - 0.5) < 1e-6


def _points_of_ball(input_set: InputSet, count: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform points of a ball ∩ box, by rejection from the box."""
    box = input_set.lower + (input_set.upper - input_set.lower) * torch.rand(count, input_set.lower.shape[1], generator=generator)
    distance = torch.linalg.vector_norm(box.double() - input_set.center.double(), ord=input_set.norm, dim=1)
    return box[distance <= input_set.eps]


@pytest.mark.parametrize("norm", [1.0, 2.0])
def test_ball_attack_finds_what_sampling_the_ball_finds_and_stays_in_the_ball(norm):
    generator = torch.Generator().manual_seed(0)
    found = 0
    for seed in range(12):
        model = _relu_net(seed)
        center = torch.zeros(1, 3)
        target = int(model(center).argmax())
        ball = InputSet.ball(center, 0.8, norm=norm, domain=(-0.5, 0.5) if seed % 2 else None)
        spec = Specification.over(ball, robustness_disjuncts(3, target))
        result = pgd_attack(model, spec, steps=50, restarts=4)
        with torch.no_grad():
            sampled_violation = bool((spec.margin(model(_points_of_ball(ball, 40000, generator))) <= 0).any())
        if result.found:
            found += 1
            violates, margin, _ = check_counterexample(model, spec, result.counterexample)
            assert violates and margin <= 0
            assert ball.contains(result.counterexample)  # in the ball, not only in its bounding box
        if sampled_violation:
            assert result.found
    assert found > 0


@pytest.mark.parametrize("norm, domain", [(2.0, None), (2.0, (0.0, 1.0)), (1.0, None), (1.0, (0.0, 1.0))])
def test_ball_attack_descends_to_the_minimum_of_a_linear_margin(norm, domain):
    """A safe property (the attack does not stop early): the best margin it reports is the true minimum over
    ball ∩ box (w·c + b − ε‖w‖_q for the whole ball; a dense grid of the clipped disk), never below it."""
    weight, bias = torch.tensor([[1.0, 0.5], [-0.3, 0.2]]), torch.tensor([0.4, 0.0])
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(weight)
        model.bias.copy_(bias)
    center = torch.tensor([[0.2, 0.3]])
    ball = InputSet.ball(center, 0.25, norm=norm, domain=domain)
    spec = Specification.over(ball, robustness_disjuncts(2, 0))
    w, b = weight[0] - weight[1], float(bias[0] - bias[1])  # the margin y0 − y1 = w·x + b
    if domain is None:
        dual = 2.0 if norm == 2 else math.inf
        true_min, error = float(w @ center[0]) + b - 0.25 * float(torch.linalg.vector_norm(w, ord=dual)), 1e-6
    else:
        axes = torch.linspace(-0.05, 0.55, 1201, dtype=torch.float64)
        grid = torch.cartesian_prod(axes, axes)
        grid = grid[(torch.linalg.vector_norm(grid - center.double(), ord=norm, dim=1) <= 0.25) & (grid >= 0).all(1)]
        true_min, error = float((grid @ w.double()).min()) + b, 0.6 / 1200 * float(w.abs().sum())
    result = pgd_attack(model, spec)
    assert not result.found and true_min > 0
    assert true_min - error <= result.margin <= true_min + 2e-3


def _counting(function):
    """`function` and a list whose length is how many batches it was called on."""
    calls = []

    def counted(x):
        calls.append(len(x))
        return function(x)

    return counted, calls


def test_attack_stops_once_every_margin_has_stalled():
    # y = x on [0, 1]^2, unsafe y0 >= 2: signed steps reach the vertex (1, .) at once and the margin stays at 1
    model = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    spec = Specification(torch.zeros(1, 2), torch.ones(1, 2), [Disjunct(torch.tensor([[-1.0, 0.0]]), torch.tensor([-2.0]))])
    stalled, calls = _counting(model)
    result = pgd_attack(stalled, spec, steps=100, patience=20, first_steps=0)  # one descent, all starts
    full, all_calls = _counting(model)
    pgd_attack(full, spec, steps=100, patience=None, first_steps=0)
    assert not result.found and abs(result.margin - 1.0) < 1e-6
    assert len(all_calls) == 102 and len(calls) <= 25



def test_attack_steps_from_the_centre_alone_first():
    # y = x on [0, 1]^2, unsafe y0 <= 0.3: one step from the centre reaches it. The centre's start (one per
    # disjunct) goes first, so the 8 restarts' batch is never evaluated; without that first phase it is
    model = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    spec = Specification(torch.zeros(1, 2), torch.ones(1, 2), [Disjunct(torch.tensor([[1.0, 0.0]]), torch.tensor([0.3]))])
    first, calls = _counting(model)
    assert pgd_attack(first, spec).found
    assert max(calls) == 1 and len(calls) <= 4
    together, all_calls = _counting(model)
    assert pgd_attack(together, spec, first_steps=0).found
    assert max(all_calls) == 8


@pytest.mark.parametrize("fall, found, calls_at_most, calls_at_least", [
    (0.0101, True, 102, 99),   # 1 % of its start per step: no stall, the violation comes at the last steps
    (0.0005, False, 25, 0),    # 0.05 % per step (above the stall tolerance): 100 steps would reach only 0.95
])
def test_attack_runs_while_a_falling_margin_can_reach_zero_in_the_steps_left(fall, found, calls_at_most, calls_at_least):
    calls = []

    def falling(x):  # the margin falls by `fall` per step whatever x is
        calls.append(len(x))
        return x.sum(1, keepdim=True) * 0 + (1.0 - fall * len(calls))

    spec = Specification(torch.zeros(1, 2), torch.ones(1, 2), [Disjunct(torch.ones(1, 1), torch.zeros(1))])
    result = pgd_attack(falling, spec, steps=100, restarts=1, patience=20)
    assert result.found == found and calls_at_least <= len(calls) <= calls_at_most


class _Quantized(torch.nn.Module):
    """y0 = round(Σx − 28.4), y1 = 0.5 over 64 inputs: class 0 at x = 0.5 (round(3.6) = 4). Class 1 needs Σx below
    28.9, 3.1 below the centre's: all 64 inputs moved down together (the box allows 6.4), which uniform random
    points reach with odds of about 6.7 standard deviations; round's own gradient is zero everywhere."""

    def forward(self, x):
        return torch.stack([torch.round(x.sum(-1) - 28.4), torch.full(x.shape[:1], 0.5)], dim=-1)


def test_attack_on_a_quantized_model_follows_the_gradient_straight_through_round():
    x = torch.full((1, 64), 0.5)
    spec = Specification.over(InputSet.ball(x, 0.1), robustness_disjuncts(2, 0))
    result = pgd_attack(_Quantized(), spec)
    assert result.found and result.margin <= 0
    assert int(_Quantized()(result.counterexample).argmax()) == 1  # a real one: the plain forward pass agrees
    # the gradient of the model itself is zero: without the straight-through pass there is nothing to follow
    probe = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(_Quantized()(probe)[0, 0], probe)
    assert not gradient.any()


def test_verify_falsifies_a_quantized_model_by_the_straight_through_attack():
    import opwise

    result = opwise.verify(_Quantized(), torch.full((1, 64), 0.5), eps=0.1)
    assert result.status == "falsified" and int(_Quantized()(result.counterexample).argmax()) == 1


class _SignNet(torch.nn.Module):
    """A binarized network on a 2-D input: two hidden layers of sign units, random weights; with `softmax_scale`
    it ends in softmax(scale · logits), which at 100 saturates to exactly 0 and 1 in floats."""

    def __init__(self, seed: int, softmax_scale: float | None = None, width: int = 16):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.first, self.first_bias = torch.randn(width, 2, generator=generator), torch.randn(width, generator=generator)
        self.second, self.second_bias = (torch.randn(width, width, generator=generator),
                                         torch.randn(width, generator=generator))
        self.last = torch.randn(3, width, generator=generator)
        self.softmax_scale = softmax_scale

    def forward(self, x):
        hidden = torch.sign(torch.sign(x @ self.first.T + self.first_bias) @ self.second.T + self.second_bias)
        logits = hidden @ self.last.T
        return logits if self.softmax_scale is None else torch.softmax(self.softmax_scale * logits, dim=-1)


@functools.lru_cache(maxsize=None)
def _small_violations() -> tuple[tuple[int, Specification], ...]:
    """(seed, spec) of the random sign networks among 40 whose violations fill under 5 % of the box: each spec the
    box around 0 of the first half-width (0.05 to 1) where a 201² grid finds a violation of the class at 0 (the
    same with and without the softmax, which keeps the logits' order)."""
    grid = torch.cartesian_prod(torch.linspace(-1, 1, 201), torch.linspace(-1, 1, 201))
    cases = []
    for seed in range(40):
        model = _SignNet(seed)
        centre = torch.zeros(1, 2)
        target = int(model(centre).argmax())
        for half_width in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0):
            spec = Specification(centre - half_width, centre + half_width, robustness_disjuncts(3, target))
            share = float((spec.margin(model(centre + half_width * grid)) <= 0).float().mean())
            if share > 0:
                break
        if 0 < share < 0.05:
            cases.append((seed, spec))
    return tuple(cases)


@pytest.mark.parametrize("softmax_scale", [None, 100.0])
def test_attack_on_sign_networks_follows_the_gradient_straight_through_sign_and_a_saturated_softmax(softmax_scale):
    # sign's gradient is zero (and a saturated softmax's): an attack that follows it moves only by its random
    # starts, which found 6 of these 20 small violations; through sign's surrogate (then softmax's), 14
    cases = _small_violations()
    assert len(cases) == 20
    probe = torch.zeros(1, 2, requires_grad=True)
    (gradient,) = torch.autograd.grad(_SignNet(0, softmax_scale)(probe)[0, 0], probe)
    assert not gradient.any()
    found = 0
    for seed, spec in cases:
        model = _SignNet(seed, softmax_scale)
        result = pgd_attack(model, spec)
        if result.found:
            found += 1
            violates, margin, _ = check_counterexample(model, spec, result.counterexample)  # the exact forward pass
            assert violates and margin <= 0 and result.margin <= 0 and spec.contains(result.counterexample)
    assert found >= 12


def test_verify_falsifies_a_binarized_network_whose_softmax_saturates():
    # the bound graph writes softmax as 1 / (1 + Σ exp(clamp_max(x_j − x_i, 50))): the clamp, and exp's underflow,
    # leave no gradient where the class is certain; the attack passes the clamp straight through there
    import opwise

    model = _SignNet(30, softmax_scale=100.0)
    x = torch.zeros(1, 2)
    result = opwise.verify(model, x, eps=0.1, timeout=20)
    assert result.status == "falsified"
    assert int(model(result.counterexample).argmax()) != int(model(x).argmax())


def test_an_input_of_one_scalar_per_start_is_attacked():
    """A network whose declared input has no batch axis ([1], as nn4sys's) gets starts of shape [starts]: the
    check for vanished gradients failed on them with an IndexError."""
    spec = Specification(torch.tensor([0.0]), torch.tensor([1.0]), [Disjunct(torch.tensor([[-1.0]]), torch.tensor([-0.81]))])
    found = pgd_attack(lambda x: (x * x).reshape(len(x), 1), spec, restarts=4, steps=20)  # unsafe: x >= 0.9
    assert found.found and float(found.counterexample.reshape(-1)[0]) >= 0.9 - 1e-6
