"""α-CROWN with optimised intermediate bounds (opwise/bounds/strategies/alpha_chain.py) and the final-only variant
(opwise/bounds/strategies/alpha.py): soundness of the final and of every intermediate interval it leaves behind,
never looser than CROWN, tighter than final-only α where intermediate bounds matter."""

import pytest
import torch

from opwise.bounds import BoundedModel
from opwise.bounds.strategies.alpha import AlphaOptions, optimize_alpha
from opwise.bounds.strategies.alpha_chain import optimize_bounds
from opwise.bounds.engine import BoundPropagation
from opwise.bounds.input_set import InputSet
from opwise.bounds.transfers.nonlinear import ELEMENTWISE
from opwise.bounds.transfers.registry import Interval
from tests.bounds.helpers import assert_sound, randomize_, sample_box


def _mlp(activation, width=12, depth=3, inputs=3, outputs=3):
    layers, size = [], inputs
    for _ in range(depth):
        layers += [torch.nn.Linear(size, width), activation()]
        size = width
    return torch.nn.Sequential(*layers, torch.nn.Linear(size, outputs))


def _cnn():
    return torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                               torch.nn.Conv2d(3, 4, 2), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(16, 3))


MODELS = {
    "relu_mlp": (lambda: _mlp(torch.nn.ReLU), (3,)),
    "sigmoid_mlp": (lambda: _mlp(torch.nn.Sigmoid), (3,)),
    "tanh_mlp": (lambda: _mlp(torch.nn.Tanh), (3,)),
    "mixed_mlp": (lambda: torch.nn.Sequential(torch.nn.Linear(3, 10), torch.nn.LeakyReLU(0.1), torch.nn.Linear(10, 10),
                                              torch.nn.GELU(), torch.nn.Linear(10, 10), torch.nn.Hardtanh(-0.5, 1.0),
                                              torch.nn.Linear(10, 3)), (3,)),
    "cnn_maxpool": (_cnn, (1, 6, 6)),
}


def _engine(model, x_lower, x_upper):
    bounded = BoundedModel(model, x_lower)
    return bounded, BoundPropagation(bounded.graph, InputSet(x_lower, x_upper))


def _node_values(bounded: BoundedModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every call node's value at the points x (through the bounded graph, traced for x's batch size)."""
    interpreter, values = torch.fx.Interpreter(bounded.graph_for(x.shape[0]).module), {}
    original = interpreter.run_node

    def run_node(node):
        value = original(node)
        if node.op == "call_function" and isinstance(value, torch.Tensor):
            values[node.name] = value.detach()
        return value

    interpreter.run_node = run_node
    with torch.no_grad():
        interpreter.run(x)
    return values


@pytest.mark.parametrize("name", sorted(MODELS))
def test_alpha_crown_is_sound_on_random_models_at_sampled_and_attacked_points(name):
    build, shape = MODELS[name]
    model = build().eval()
    bounded = BoundedModel(model, torch.zeros(2, *shape))
    for seed in range(3):
        randomize_(model, seed)
        x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(seed))
        eps = [0.1, 0.4, 1.0][seed]
        assert_sound(model, x - eps, x + eps, methods=("alpha-crown",), samples=10_000 if seed == 0 else 2_000,
                     seed=seed, attack=seed == 0, bounded=bounded)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_intermediate_intervals_left_in_the_engine_contain_every_sampled_value_and_stay_within_crown(name):
    build, shape = MODELS[name]
    model = randomize_(build().eval(), 7)
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(7))
    lower, upper = x - 0.5, x + 0.5
    bounded, engine = _engine(model, lower, upper)
    A = torch.eye(3).reshape(3, 1, 3)
    engine.backward(engine.graph.output, A)
    crown = engine.known_intervals()
    optimize_bounds(engine, engine.graph.output, A, AlphaOptions(iterations=10))
    points = sample_box(lower[0], upper[0], 4_000, torch.Generator().manual_seed(0))
    values = _node_values(bounded, points)
    for node_name, interval in engine.known_intervals().items():
        assert not interval.lower.requires_grad and not interval.upper.requires_grad
        assert (interval.lower >= crown[node_name].lower).all() and (interval.upper <= crown[node_name].upper).all()
        value = values[node_name]
        scale = 1e-5 * (1 + value.abs())
        assert (value >= interval.lower - scale).all(), f"{node_name}: interval lower bound above a sampled value"
        assert (value <= interval.upper + scale).all(), f"{node_name}: interval upper bound below a sampled value"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_alpha_crown_is_never_looser_than_crown_per_sample_and_spec(name):
    build, shape = MODELS[name]
    model = build().eval()
    bounded = BoundedModel(model, torch.zeros(3, *shape))
    for seed in range(3):
        randomize_(model, seed)
        x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(seed))
        crown = bounded.compute_bounds(x, eps=0.3, method="crown", target=0)
        alpha = bounded.compute_bounds(x, eps=0.3, method="alpha-crown", target=0, alpha=AlphaOptions(iterations=8))
        assert (alpha.lower >= crown.lower).all() and (alpha.upper <= crown.upper).all()


def test_intermediate_alpha_beats_final_only_alpha_on_deep_networks():
    # deep, narrow MLPs at a radius where intermediate bounds are loose: optimising them must pay off
    gains = []
    for activation in (torch.nn.ReLU, torch.nn.Sigmoid):
        model = _mlp(activation, width=16, depth=5)
        bounded = BoundedModel(model, torch.zeros(2, 3))
        for seed in range(2):
            randomize_(model, seed)
            x = torch.randn(2, 3, generator=torch.Generator().manual_seed(seed))
            final_only = bounded.compute_bounds(x, eps=0.5, method="alpha-crown", target=0, alpha=AlphaOptions(intermediate=False))
            chain = bounded.compute_bounds(x, eps=0.5, method="alpha-crown", target=0)
            gains.append(float((chain.lower - final_only.lower).sum() + (final_only.upper - chain.upper).sum()))
    assert all(gain > 0 for gain in gains), gains


def test_final_only_option_and_an_empty_budget_give_the_final_only_bound():
    model = randomize_(_mlp(torch.nn.ReLU), 3)
    x = torch.randn(1, 3, generator=torch.Generator().manual_seed(3))
    A = torch.eye(3).reshape(3, 1, 3)
    results = []
    for options in (AlphaOptions(intermediate=False), AlphaOptions(max_intermediate_alpha=0)):
        _, engine = _engine(model, x - 0.5, x + 0.5)
        results.append(optimize_bounds(engine, engine.graph.output, A, options))
    _, engine = _engine(model, x - 0.5, x + 0.5)
    reference = optimize_alpha(engine, engine.graph.output, A, AlphaOptions())
    assert torch.allclose(results[0], reference) and torch.allclose(results[1], reference)


def test_ibp_intermediate_policy_optimises_the_final_alpha_only():
    model = randomize_(_mlp(torch.nn.ReLU), 4)
    x = torch.randn(1, 3, generator=torch.Generator().manual_seed(4))
    bounded = BoundedModel(model, x)
    engine = BoundPropagation(bounded.graph, InputSet(x - 0.5, x + 0.5), intermediate="ibp")
    A = torch.eye(3).reshape(3, 1, 3)
    ibp_crown = engine.backward(engine.graph.output, A)
    assert (optimize_bounds(engine, engine.graph.output, A) >= ibp_crown).all()


def test_piecewise_linear_slopes_get_their_own_learning_rate():
    """ReLU / leaky ReLU / hardtanh α (slopes between the pieces') step at `slope_learning_rate`, tangent points
    and support slopes (sigmoid, GELU) at `learning_rate`; None puts every α at `learning_rate`."""
    from opwise.bounds.strategies.alpha import initial_alphas, parameter_groups

    build, shape = MODELS["mixed_mlp"]
    x = torch.zeros(1, *shape)
    _, engine = _engine(randomize_(build(), 0), x - 1.0, x + 1.0)
    output = engine.graph.output
    engine.prepare(output)
    alphas = initial_alphas(engine, output, 3)
    kinds = {str(node.target): node for node in alphas}
    slope_alphas = [t for name, node in kinds.items() if "relu" in name or "hardtanh" in name
                    for t in (alphas[node].lower, alphas[node].upper) if t is not None]
    groups = parameter_groups(engine, [alphas], AlphaOptions(learning_rate=0.1, slope_learning_rate=0.7))
    assert [group["lr"] for group in groups] == [0.7, 0.1]
    assert {id(t) for t in groups[0]["params"]} == {id(t) for t in slope_alphas} and slope_alphas
    assert any("gelu" in name for name in kinds) and groups[1]["params"]
    single = parameter_groups(engine, [alphas], AlphaOptions(learning_rate=0.1, slope_learning_rate=None))
    assert [group["lr"] for group in single] == [0.1, 0.1]
    assert parameter_groups(engine, [{}], AlphaOptions()) == []


def test_ascent_takes_no_step_when_the_starting_bound_already_proves_every_row():
    from opwise.bounds.strategies.alpha import maximize

    x = torch.zeros(1, requires_grad=True)
    calls = []

    def bound():
        calls.append(1)
        return -(x - 1) ** 2

    best = maximize(bound, [x], AlphaOptions(iterations=5, stop_above=0.5), torch.full((1,), 1.0))
    assert not calls and float(best) == 1.0
    maximize(bound, [x], AlphaOptions(iterations=5, stop_above=2.0), torch.full((1,), 1.0))
    assert calls


def test_a_step_whose_bound_is_nan_keeps_the_best_bound_so_far():
    """α-CROWN on tiny MPNet/DeBERTa/BLOOM/Falcon (eps 0.05) came out NaN, reported as unbounded, where CROWN's own
    bound was finite: one step's NaN replaced the best bound (torch.maximum propagates NaN). It must never be worse
    than the bound it starts from."""
    from opwise.bounds.strategies.alpha import maximize

    x = torch.zeros(2, requires_grad=True)

    def bound():
        return torch.stack([x[0] * float("nan"), 2.0 + x[1]])

    best = maximize(bound, [x], AlphaOptions(iterations=3), torch.tensor([1.0, 1.0]))
    assert float(best[0]) == 1.0 and float(best[1]) >= 2.0


def test_an_overflowing_gradient_does_not_make_the_parameters_nan():
    """A gradient entry that overflows (inf, here sqrt's at 0) became NaN in Adam's step (inf / sqrt(inf)), and every
    later bound was NaN: a tiny MPNet's α-CROWN lost all its steps after the first that way. The entry is not stepped;
    the others still improve the bound."""
    from opwise.bounds.strategies.alpha import maximize

    x = torch.tensor([0.0, 0.0], requires_grad=True)
    best = maximize(lambda: -(x[0] - 1) ** 2 + torch.sqrt(x[1]), [x], AlphaOptions(iterations=20, patience=20), None)
    assert torch.isfinite(x).all() and x[1] == 0
    assert torch.isfinite(best).all() and float(best) > -1.0 + 0.1  # x[0] moved towards 1


class _PostNorm(torch.nn.Module):
    """MPNet's and BERT's order at width 8: layer norm on the inputs, attention, residual and norm, a GELU MLP, one
    more attention; the first 2 outputs of the first token."""

    def __init__(self, width=8):
        super().__init__()
        linear = lambda a, b: torch.nn.Linear(a, b)  # noqa: E731
        self.first, self.second, self.third = (torch.nn.LayerNorm(width) for _ in range(3))
        self.query, self.key, self.value = linear(width, width), linear(width, width), linear(width, width)
        self.up, self.down = linear(width, 2 * width), linear(2 * width, width)

    def _attend(self, h):
        scores = self.query(h) @ self.key(h).transpose(-2, -1)
        return self.second(h + torch.softmax(scores, -1) @ self.value(h))

    def forward(self, x):
        h = self._attend(self.first(x))
        h = self.third(h + self.down(torch.nn.functional.gelu(self.up(h))))
        return self._attend(h).flatten(1)[:, :2]


def _alpha_gradients(monkeypatch, model, x_lower, x_upper, specs, iterations=3):
    """(the bound, the largest |gradient| of any α at each Adam step, None where one is not finite)."""
    from opwise.bounds.strategies import alpha

    largest, drop = [], alpha._drop_overflowed_gradients

    def record(optimizer):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        largest.append(max(float(g.abs().max()) for g in grads) if all(torch.isfinite(g).all() for g in grads) else None)
        drop(optimizer)

    monkeypatch.setattr(alpha, "_drop_overflowed_gradients", record)
    bounded, engine = _engine(model, x_lower, x_upper)
    A = torch.cat([torch.eye(specs), -torch.eye(specs)]).unsqueeze(1)  # lower and upper bounds
    bound = optimize_bounds(engine, engine.graph.output, A, AlphaOptions(iterations=iterations, patience=iterations))
    return bound, largest


def test_a_variance_pinned_at_zero_passes_no_gradient_from_rsqrt_at_eps(monkeypatch):
    """A layer norm's variance is at least 0 by IBP while its raw CROWN lower bound is negative; the straight-through
    gradient passed rsqrt's slope at var + eps (5e17 at 1e-12) to the raw bound: α gradients of 1e11 here, and on a
    tiny MPNet, through its attention's exp lines, float32 overflow in 187 of 582 α tensors at every step."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4, eps=1e-12), torch.nn.Linear(4, 2)).eval()
    with torch.no_grad():
        model[0].bias.zero_()  # every feature 0 at the centre: the variance's interval reaches 0
    x = torch.zeros(1, 3)
    bound, largest = _alpha_gradients(monkeypatch, model, x - 0.1, x + 0.1, 2)
    assert all(g is not None and g < 1e8 for g in largest), largest
    graph = BoundedModel(model, x).graph
    A = torch.cat([torch.eye(2), -torch.eye(2)]).unsqueeze(1)
    assert (bound >= BoundPropagation(graph, InputSet(x - 0.1, x + 0.1)).backward(graph.output, A)).all()


def test_a_post_norm_attention_stack_at_a_large_eps_keeps_every_alpha_gradient_finite(monkeypatch):
    """Inputs at an embedding table's scale (0.02) with eps 0.05, as the MPNet of the report: every variance reaches
    0 and every softmax's exp its cap. The second step's α gradients were not finite (float32 overflow, then
    inf · 0); now none overflows, and the bounds contain every sampled output."""
    torch.manual_seed(0)
    model = _PostNorm().eval()
    x = 0.02 * torch.randn(1, 4, 8)
    bound, largest = _alpha_gradients(monkeypatch, model, x - 0.05, x + 0.05, 2)
    assert len(largest) == 2 and all(g is not None for g in largest), largest
    points = sample_box((x - 0.05)[0], (x + 0.05)[0], 2_000, torch.Generator().manual_seed(0))
    with torch.no_grad():
        outputs = model(points)
    assert (outputs.T >= bound[:2] - 1e-4).all() and (outputs.T <= -bound[2:] + 1e-4).all()


def test_an_intermediate_end_that_ibp_beats_still_steers_its_alphas_on_a_relu_net():
    """On a ReLU net a layer's IBP end often beats its CROWN end; the straight-through gradient must still reach
    the raw end there (ReLU is defined everywhere), or those neurons' α stop moving: cutting it took mnist_fc 256x2
    prop_10_0.05 from 4,100 domains to a timeout. Only where a consumer's function is undefined (rsqrt below 0) is
    the gradient cut."""
    from opwise.bounds.strategies.alpha_chain import _recompute, intermediate_bounds

    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 2)).eval()
    x = torch.zeros(1, 4)
    bounded, engine = _engine(model, x - 1.0, x + 1.0)
    engine.backward(engine.graph.output, torch.ones(1, 1, 2))
    links = [link for link in intermediate_bounds(engine, engine.graph.output, 10**7) if link.alphas]
    assert links
    beaten = 0
    for link in links:
        raw = engine.refine(link.node, link.open, link.selected, link.alphas)
        ibp = engine.interval_ibp(link.node)
        where = (raw.lower.detach() < ibp.lower) & torch.isfinite(raw.lower.detach())
        if not where.any():
            continue
        beaten += 1
        link.best = Interval(torch.maximum(link.best.lower, ibp.lower), link.best.upper)
        interval = _recompute(engine, link)
        parameters = [t for pair in link.alphas.values() for t in (pair.lower, pair.upper) if t is not None]
        gradients = torch.autograd.grad((interval.lower * where).sum(), parameters, allow_unused=True)
        assert any(g is not None and bool(g.abs().sum() > 0) for g in gradients)
    assert beaten > 0  # the case the test is about occurs


def test_undefined_marks_only_where_a_consumers_function_is_not_finite():
    from opwise.bounds.strategies.alpha_chain import _undefined

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2), torch.nn.ReLU()).eval()
    _, engine = _engine(model, torch.zeros(1, 3), torch.ones(1, 3))
    seen = {}
    for node in engine.graph.nodes:
        for user in node.users:
            if user.op == "call_function" and engine.bounded(user) and engine.transfer(user) is ELEMENTWISE:
                seen[str(engine.graph.info(user).op)] = _undefined(engine, node, torch.tensor([-1.0, 0.5]))
    rsqrt = [value for op, value in seen.items() if "rsqrt" in op]
    relu = [value for op, value in seen.items() if "relu" in op]
    assert rsqrt and rsqrt[0].tolist() == [True, False]
    assert relu and relu[0].tolist() == [False, False]
