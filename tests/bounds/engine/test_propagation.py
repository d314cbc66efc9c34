"""The bound pass (opwise/bounds/engine/propagation.py): CROWN equals a dense backward-substitution reference on
ReLU MLPs, unsupported operators are reported (never treated as identity), and the generic nonlinear
path works with any registered relaxation."""

import math
import warnings

import pytest
import torch

from opwise.bounds import BoundedModel
from opwise.bounds.engine import BoundPropagation
from opwise.bounds.engine import free_input
from opwise.bounds.engine.free_input import FREE_INPUT_LIMIT
from opwise.bounds.engine.propagation import tightened
from opwise.bounds.input_set import InputSet
from opwise.bounds.relaxations.base import LinearRelaxation
from opwise.bounds.relaxations.registry import RELAXATIONS
from opwise.bounds.transfers.patches import Patches, dense
from opwise.errors import UnsupportedOperation
from opwise.tracing import trace
from tests.bounds.helpers import assert_sound, randomize_


def _random_mlp(seed: int, widths=(3, 8, 8, 6, 4)) -> torch.nn.Sequential:
    generator = torch.Generator().manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        linear = torch.nn.Linear(a, b)
        with torch.no_grad():
            linear.weight.copy_(torch.randn(b, a, generator=generator))
            linear.bias.copy_(torch.randn(b, generator=generator))
        layers += [linear, torch.nn.ReLU()] if i < len(widths) - 2 else [linear]
    return torch.nn.Sequential(*layers)


@torch.no_grad()
def _reference_crown(model: torch.nn.Sequential, lower: torch.Tensor, upper: torch.Tensor):
    """Dense CROWN for one sample: layer by layer, each pre-activation bounded by backward substitution
    through the hand-built triangle relaxations of the layers before it, in float64. As in the engine (and
    auto_LiRPA), a layer's reference interval is IBP from the previous layer's final intervals; the neurons it
    shows stable keep it, the others get CROWN's interval intersected with it. The output's bounds are met with
    plain IBP's bound of the same rows (the last layer over the last ReLU's interval from the input box alone)."""
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    weights = [m.weight.double() for m in linears]
    biases = [m.bias.double() for m in linears]
    lower, upper = lower.double(), upper.double()
    ibp_low, ibp_high = lower, upper
    plain_low, plain_high = lower, upper  # plain IBP, from the input box alone
    bounds = []  # (l, u) of every pre-activation

    def substitute(k, C):
        A, constant = C @ weights[k], C @ biases[k]
        for j in range(k - 1, -1, -1):
            l, u = bounds[j]
            unstable = (l < 0) & (u > 0)
            upper_slope = torch.where(unstable, u / (u - l), (l >= 0).double())
            upper_intercept = torch.where(unstable, -l * u / (u - l), torch.zeros_like(l))
            lower_slope = torch.where(unstable, (u > -l).double(), (l >= 0).double())
            positive, negative = A.clamp(min=0), A.clamp(max=0)
            constant = constant + negative @ upper_intercept
            A = positive * lower_slope + negative * upper_slope
            A, constant = A @ weights[j], constant + A @ biases[j]
        return constant + A.clamp(min=0) @ lower + A.clamp(max=0) @ upper

    for k in range(len(weights)):
        center, radius = weights[k] @ ((ibp_low + ibp_high) / 2) + biases[k], weights[k].abs() @ ((ibp_high - ibp_low) / 2)
        ibp_l, ibp_u = center - radius, center + radius
        eye = torch.eye(weights[k].shape[0], dtype=torch.float64)
        l, u = substitute(k, eye), -substitute(k, -eye)
        unstable = (ibp_l < 0) & (ibp_u > 0)
        l = torch.where(unstable, torch.maximum(l, ibp_l), ibp_l)
        u = torch.where(unstable, torch.minimum(u, ibp_u), ibp_u)
        bounds.append((l, u))
        ibp_low, ibp_high = l.clamp(min=0), u.clamp(min=0)
        if k < len(weights) - 1:
            center = weights[k] @ ((plain_low + plain_high) / 2) + biases[k]
            radius = weights[k].abs() @ ((plain_high - plain_low) / 2)
            plain_low, plain_high = (center - radius).clamp(min=0), (center + radius).clamp(min=0)
    eye = torch.eye(weights[-1].shape[0], dtype=torch.float64)
    center = weights[-1] @ ((plain_low + plain_high) / 2) + biases[-1]
    radius = weights[-1].abs() @ ((plain_high - plain_low) / 2)
    last = len(weights) - 1
    return torch.maximum(substitute(last, eye), center - radius), torch.minimum(-substitute(last, -eye), center + radius)


@pytest.mark.parametrize("widths", [(3, 8, 8, 6, 4), (3, 16, 2), (3, 5, 5, 5, 5, 5, 3)])
def test_crown_equals_dense_reference_on_relu_mlps(widths, monkeypatch):
    # CROWN alone: with three inputs, forward mode (tested on its own) settles intervals too, and through the next
    # layers' references (`reference_interval`) it tightens them beyond CROWN's
    monkeypatch.setattr(BoundPropagation, "few_free_forward", lambda self, node: None)
    model = _random_mlp(0, widths)
    bounded = BoundedModel(model, torch.zeros(3, 3))
    for seed in range(25):
        randomize_(model, seed)  # same traced graph, new weights: many models for one trace
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(3, 3, generator=generator)
        lower, upper = x - 0.3 * (1 + seed % 3), x + 0.3 * (1 + seed % 3)
        bounds = bounded.compute_bounds(x_lower=lower, x_upper=upper, method="crown")
        for b in range(3):
            ref_lower, ref_upper = _reference_crown(model, lower[b], upper[b])
            scale = 1e-5 * (1 + ref_lower.abs().max())
            assert torch.allclose(bounds.lower[b].double(), ref_lower, rtol=1e-5, atol=float(scale)), seed
            assert torch.allclose(bounds.upper[b].double(), ref_upper, rtol=1e-5, atol=float(scale)), seed


class _Unbounded(torch.nn.Module):
    """Two operators without a bound rule: Bessel's j0 and i0 (cumprod and sort, then logcumsumexp and lgamma, here
    before, are bounded now)."""

    def __init__(self):
        super().__init__()
        self.inner = torch.nn.Linear(3, 3)

    def forward(self, x):
        return torch.special.bessel_j0(self.inner(x)) + torch.special.i0(self.inner(x))


def test_unsupported_operator_names_node_operator_and_module():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), _Unbounded())
    bounded = BoundedModel(model, torch.zeros(1, 3))
    with pytest.raises(UnsupportedOperation) as error:
        bounded.compute_bounds(torch.zeros(1, 3), eps=0.1)
    message = str(error.value)
    assert "special_bessel_j0" in message and "bound" in message and "'1'" in message
    assert "operators without one: aten.i0.default, aten.special_bessel_j0.default" in message  # all of them, at once
    assert "bound the part of the model before it" in message  # what a user can do, before how to add a rule


class _ConstantLines:
    """A test-local relaxation for a monotone increasing function: the constants f(l) and f(u)."""

    function = staticmethod(torch.atan)

    def relax(self, lower, upper, alpha=None):
        zero = torch.zeros_like(lower)
        return LinearRelaxation(zero, self.function(lower), zero, self.function(upper))

    def init_alpha(self, lower, upper):
        return None

    def clamp_alpha(self, alpha, lower, upper):
        return alpha


class _AtanNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(3, 6), torch.nn.Linear(6, 2)

    def forward(self, x):
        return self.b(torch.atan(self.a(x)))


def test_generic_nonlinear_path_with_a_registered_relaxation(monkeypatch):
    model = _AtanNet()
    x = torch.randn(2, 3)
    monkeypatch.delitem(RELAXATIONS, "aten.atan.default")  # as if atan had no relaxation (relaxations/hyperbolic.py)
    with pytest.raises(UnsupportedOperation):
        BoundedModel(model, x).compute_bounds(x, eps=0.2)
    monkeypatch.setitem(RELAXATIONS, "aten.atan.default", lambda args, kwargs: _ConstantLines())
    assert_sound(model, x - 0.2, x + 0.2)


def test_intermediate_bounds_are_computed_once_per_node_and_only_where_needed():
    model = _random_mlp(0)
    graph = trace(model, torch.zeros(1, 3))
    engine = BoundPropagation(graph, InputSet.ball(torch.zeros(1, 3), 0.5))
    calls = []
    original = engine.backward

    def counting(target, A, *args, **kwargs):
        calls.append(target.name)
        return original(target, A, *args, **kwargs)

    engine.backward = counting
    engine.backward(graph.output, torch.eye(4)[:, None, :])
    relu_inputs = [n.args[0] for n in graph.call_nodes() if graph.info(n).op == "aten.relu.default"]
    # the first linear layer's interval is exact by IBP over a box: no backward pass for it
    assert [engine.exact_by_ibp(node) for node in relu_inputs] == [True] + [False] * (len(relu_inputs) - 1)
    assert sorted(set(calls) - {graph.output.name}) == sorted(node.name for node in relu_inputs[1:])
    assert len(calls) == len(set(calls))  # each intermediate node once (the output once)


def test_l2_ball_bounds_are_sound_and_tighter_than_its_box():
    model = _random_mlp(1)
    x = torch.randn(1, 3)
    bounded = BoundedModel(model, x)
    l2 = bounded.compute_bounds(x, eps=0.5, norm=2.0)
    box = bounded.compute_bounds(x, eps=0.5)
    direction = torch.randn(20000, 3)
    radius = torch.rand(20000, 1) ** (1 / 3) * 0.5
    points = x + direction / direction.norm(dim=1, keepdim=True) * radius
    with torch.no_grad():
        y = model(points)
    assert (y >= l2.lower - 1e-5).all() and (y <= l2.upper + 1e-5).all()
    assert (l2.lower >= box.lower - 1e-6).all() and (l2.width.mean() < box.width.mean())
    assert math.isfinite(float(l2.lower.sum()))


def _patch_boxes(x: torch.Tensor, eps: float, rows: int, size: int = 2):
    """`rows` boxes around x, each perturbing its own size×size patch of every channel (the last rows the
    whole input): the samples of a batch then need intermediate bounds on different neurons."""
    masks = torch.zeros(rows, *x.shape[1:], dtype=torch.bool)
    width = x.shape[-1] // size
    for row in range(rows - 1):
        top, left = (row // width) * size, (row % width) * size
        masks[row, :, top : top + size, left : left + size] = True
    masks[-1] = True
    return x - eps * masks, x + eps * masks


def _conv_net(seed: int) -> torch.nn.Module:
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 6, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.ConvTranspose2d(6, 3, 2, stride=2), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10),
        torch.nn.ReLU(), torch.nn.Linear(10, 3)).eval()
    return randomize_(model, seed)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kind", ["conv", "mlp"])
def test_batched_bounds_equal_each_sample_bounded_alone(kind, seed, monkeypatch):
    """Each sample of a batch gets intermediate bounds on the neurons its own relaxations need (regression: a batch
    bounded the union of every sample's unstable neurons in every sample): the bounds of a batch are the bounds of
    each sample bounded alone, and sound. Forward mode is off: whether it runs depends on the free inputs of the
    whole batch (a sample alone has fewer), and its intervals reach the later layers' references."""
    monkeypatch.setattr(BoundPropagation, "few_free_forward", lambda self, node: None)
    generator = torch.Generator().manual_seed(seed)
    if kind == "conv":
        model, x = _conv_net(seed), torch.rand(1, 2, 8, 8, generator=generator)
        lower, upper = _patch_boxes(x, 0.3, rows=9)
    else:
        model, x = _random_mlp(seed, (6, 12, 12, 8, 3)), torch.randn(1, 6, generator=generator)
        masks = torch.eye(6, dtype=torch.bool)[torch.tensor([0, 1, 2, 3, 4, 5, 0])]
        masks[-1] = True
        lower, upper = x - masks.float(), x + masks.float()
    batch = assert_sound(model, lower, upper, methods=("crown", "crown-ibp"), samples=2_000, seed=seed)["crown"]
    single = BoundedModel(model, lower[:1])
    for row in range(lower.shape[0]):
        alone = single.compute_bounds(x_lower=lower[row : row + 1], x_upper=upper[row : row + 1], method="crown")
        torch.testing.assert_close(batch.lower[row : row + 1], alone.lower, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(batch.upper[row : row + 1], alone.upper, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["conv", "mlp"])
def test_a_batch_carries_as_many_intermediate_specs_as_its_neediest_sample(kind):
    """The cost of a batch's intermediate bounds follows the sample with the most unstable neurons, not the union
    over the batch (regression: a 256-patch certified map cost more per row than single passes)."""
    generator = torch.Generator().manual_seed(0)
    if kind == "conv":
        model, x = _conv_net(0), torch.rand(1, 2, 8, 8, generator=generator)
        lower, upper = _patch_boxes(x, 0.3, rows=16)
        lower, upper = lower[:-1], upper[:-1]
    else:
        model, x = _random_mlp(0, (6, 12, 12, 8, 3)), torch.randn(1, 6, generator=generator)
        masks = torch.eye(6, dtype=torch.bool)
        lower, upper = x - masks.float(), x + masks.float()
    graph = trace(model, lower)
    engine = BoundPropagation(graph, InputSet(lower, upper))
    specs: dict[str, int] = {}
    original = engine.backward

    def counting(target, A, *args, **kwargs):
        specs[target.name] = specs.get(target.name, 0) + (A.values if isinstance(A, Patches) else A).shape[0]
        return original(target, A, *args, **kwargs)

    engine.backward = counting
    engine.backward(graph.output, torch.eye(3)[:, None, :].expand(3, lower.shape[0], 3))
    refined = [name for name in specs if name != graph.output.name]
    assert refined
    wider = 0
    for name in refined:
        node = graph.node(name)
        ibp = engine.reference_interval(node)  # every refined node feeds a ReLU: its unstable neurons need bounds
        forward = engine.few_free_forward(node)  # few free inputs: what forward mode leaves unstable
        if forward is not None:
            interval = forward.concretize(engine.input_set)
            ibp = type(ibp)(*tightened(ibp.lower, ibp.upper, interval.lower, interval.upper))
        needed = ((ibp.lower < 0) & (ibp.upper > 0)).reshape(lower.shape[0], -1)
        assert specs[name] == 2 * int(needed.sum(1).max())
        wider += int(needed.any(0).sum()) > int(needed.sum(1).max())
    assert wider  # somewhere the union is wider than the neediest sample: the case this is about


def test_bounds_that_rounding_pulls_apart_are_joined_and_reported():
    """(x + 1e30) − 1e30 is 0 in float32 but x in exact arithmetic: interval arithmetic and CROWN's linear bound
    of the difference do not overlap. Their intersection used to be an inverted interval (lower above upper),
    which turns every relaxation after it NaN; now the engine keeps their hull and warns, naming the node."""
    import warnings

    class Absorbing(torch.nn.Module):
        def forward(self, x):
            return torch.tanh((x + 1e30) - 1e30) + x

    # more free inputs than forward mode takes on (it rounds as the model does and would settle the node without CROWN)
    x = torch.full((1, FREE_INPUT_LIMIT + 1), 0.75)
    graph = trace(Absorbing(), x)
    engine = BoundPropagation(graph, InputSet(x - 0.25, x + 0.25), "crown")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for node in graph.nodes:
            if node.op == "call_function" and graph.info(node).depends_on_input:
                interval = engine.interval(node)
                assert bool((interval.lower <= interval.upper).all()), node.name
                assert bool(torch.isfinite(interval.lower).all() and torch.isfinite(interval.upper).all()), node.name
    messages = [str(w.message) for w in caught]
    assert any("do not overlap" in m and "aten.sub.Tensor" in m for m in messages), messages
    difference = next(n for n in graph.nodes if n.op == "call_function" and graph.info(n).op == "aten.sub.Tensor")
    joined = engine.interval(difference)
    assert float(joined.lower.min()) <= 0.0 and float(joined.upper.max()) >= 1.0 - 1e-6  # float's 0 and exact x ≤ 1


def test_bounds_of_near_point_boxes_do_not_warn_of_rounding():
    """Boxes that perturb one 4×4 patch of a digit (the other inputs fixed, as certified maps bound them) through
    the builtin CNN: linear and interval bounds of the fixed neurons meet only up to an ulp, which is no reason to
    warn (`opwise certify builtin:cnn --patch 4` warned at every ReLU before)."""
    import warnings

    import opwise

    model, inputs = opwise.load_model("builtin:cnn")
    x = (inputs[0] if isinstance(inputs, (tuple, list)) else inputs)[:1]
    lower, upper = x.repeat(4, 1, 1, 1), x.repeat(4, 1, 1, 1)
    for row in range(4):
        top, left = 4 * (row // 2), 4 * (row % 2)
        lower[row, :, top:top + 4, left:left + 4] = (lower[row, :, top:top + 4, left:left + 4] - 0.1).clamp(min=0)
        upper[row, :, top:top + 4, left:left + 4] = (upper[row, :, top:top + 4, left:left + 4] + 0.1).clamp(max=1)
    bounded = BoundedModel(model, x)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*do not overlap.*")
        bounds = bounded.compute_bounds(x_lower=lower, x_upper=upper, method="crown")
    samples = lower + (upper - lower) * torch.rand(100, *lower.shape)
    with torch.no_grad():
        outputs = torch.stack([model(s) for s in samples])
    assert bool((outputs >= bounds.lower - 1e-5).all() and (outputs <= bounds.upper + 1e-5).all())


class _ScoresAndMixing(torch.nn.Module):
    """q·kᵀ and p·v between bounded tensors: expand.py rewrites both into products of broadcast copies."""

    def __init__(self):
        super().__init__()
        self.query, self.key, self.value = (torch.nn.Linear(4, 4) for _ in range(3))

    def forward(self, x):
        scores = torch.bmm(torch.relu(self.query(x)), self.key(x).transpose(1, 2))
        return torch.bmm(torch.tanh(scores), self.value(x)).flatten(1)


def _assert_copies_take_no_pass(bounded: BoundedModel, x: torch.Tensor, prefix: str, monkeypatch) -> None:
    """CROWN over x ± 0.1 refines no node named `prefix`..., gives the same bounds as when copies are refined
    like any node, and those nodes are then refined (the case occurs)."""
    refined = []
    original = BoundPropagation.refine
    monkeypatch.setattr(BoundPropagation, "refine", lambda self, node, *a, **k: refined.append(node.name) or original(self, node, *a, **k))
    fast = bounded.compute_bounds(x_lower=x - 0.1, x_upper=x + 0.1, method="crown")
    assert refined and not any(name.startswith(prefix) for name in refined)
    monkeypatch.setattr(BoundPropagation, "copies_input", lambda self, node: False)
    before = len(refined)
    slow = bounded.compute_bounds(x_lower=x - 0.1, x_upper=x + 0.1, method="crown")
    assert any(name.startswith(prefix) for name in refined[before:])
    assert torch.allclose(fast.lower, slow.lower, atol=1e-5) and torch.allclose(fast.upper, slow.upper, atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_copies_get_their_sources_crown_interval_without_a_pass_of_their_own(seed, monkeypatch):
    """A broadcast copy (expand) of a bounded tensor was bounded with one spec per copied element (17 times the
    specs of its source on vit_2023's ibp_3_3_8); its interval is its source's, copied: the same bounds."""
    torch.manual_seed(seed)
    model = _ScoresAndMixing().eval()
    x = torch.randn(1, 3, 4)
    bounded = BoundedModel(model, x)
    # the copied tanh is bounded by CROWN here, as the copies are below (its image is compared in its own test)
    monkeypatch.setattr(BoundPropagation, "image_of_input", lambda self, node: False)
    _assert_copies_take_no_pass(bounded, x, "expand", monkeypatch)
    assert_sound(model, x - 0.1, x + 0.1, methods=("crown", "alpha-crown"), samples=2000, bounded=bounded)


class _Fire(torch.nn.Module):
    """SqueezeNet's fire module: two ReLU branches concatenated, then max pooling, which needs the join's interval."""

    def __init__(self):
        super().__init__()
        self.squeeze, self.one, self.three = torch.nn.Conv2d(2, 4, 1), torch.nn.Conv2d(4, 3, 1), torch.nn.Conv2d(4, 3, 3, padding=1)
        self.head = torch.nn.Linear(6 * 3 * 3, 3)

    def forward(self, x):
        h = torch.relu(self.squeeze(x))
        h = torch.cat([torch.relu(self.one(h)), torch.relu(self.three(h))], 1)
        return self.head(torch.nn.functional.max_pool2d(h, 2).flatten(1))


@pytest.mark.parametrize("seed", range(3))
def test_a_concatenation_gets_its_inputs_intervals_without_a_pass_of_its_own(seed, monkeypatch):
    """A concatenation before a pooling was bounded again with one spec per element; each element is a copy of an
    input's, whose interval is known: the same bounds without the pass."""
    torch.manual_seed(seed)
    model = _Fire().eval()
    x = torch.randn(1, 2, 6, 6)
    bounded = BoundedModel(model, x)
    _assert_copies_take_no_pass(bounded, x, "cat", monkeypatch)
    monkeypatch.undo()
    assert_sound(model, x - 0.1, x + 0.1, methods=("crown", "alpha-crown"), samples=2000, bounded=bounded)


class _PooledAndGated(torch.nn.Module):
    """ReLU outputs that max pooling reads (after an exact first convolution and after a second one), and a SiLU
    output that a product reads: elementwise nodes whose own intervals their consumers need."""

    def __init__(self):
        super().__init__()
        self.first, self.second = torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1)
        self.gate, self.value, self.head = torch.nn.Linear(16, 8), torch.nn.Linear(16, 8), torch.nn.Linear(8, 3)

    def forward(self, x):
        h = torch.nn.functional.max_pool2d(torch.relu(self.first(x)), 2)
        h = torch.nn.functional.max_pool2d(torch.relu(self.second(h)), 2).flatten(1)
        return self.head(torch.nn.functional.silu(self.gate(h)) * self.value(h))


def _positions_refined(bounded: BoundedModel, x: torch.Tensor, monkeypatch) -> tuple[dict[str, int], object]:
    """The positions each node's refinement bounds in one CROWN pass over x ± 0.1, and the bounds."""
    positions: dict[str, int] = {}
    original = BoundPropagation.refine

    def counting(self, node, base, selected, *args, **kwargs):
        count = int(selected.sum()) if selected.dtype == torch.bool else selected.numel()
        positions[node.name] = positions.get(node.name, 0) + count
        return original(self, node, base, selected, *args, **kwargs)

    monkeypatch.setattr(BoundPropagation, "refine", counting)
    bounds = bounded.compute_bounds(x_lower=x - 0.1, x_upper=x + 0.1, method="crown")
    monkeypatch.setattr(BoundPropagation, "refine", original)
    return positions, bounds


@pytest.mark.parametrize("seed", range(3))
def test_an_elementwise_node_is_bounded_only_where_no_pass_bounded_its_input(seed, monkeypatch):
    """y = f(x) whose consumer needs y's interval (max pooling, a product) was bounded by a pass at every position
    the consumer needs. Where a pass bounded x, f's line is drawn on x's interval and a pass of y bounds x no tighter,
    so y's pass changes nothing there: only the other positions (a stable ReLU's, which IBP settled) get one. The
    same bounds; no pass at all after an exact first convolution; fewer positions after the second; sound."""
    torch.manual_seed(seed)
    model = _PooledAndGated().eval()
    x = torch.randn(1, 2, 8, 8)  # 128 free inputs: more than forward mode over few inputs takes on
    bounded = BoundedModel(model, x)
    relus = [n.name for n in bounded.graph.call_nodes() if bounded.graph.info(n).op == "aten.relu.default"]
    silu = next(n.name for n in bounded.graph.call_nodes() if bounded.graph.info(n).op == "aten.silu.default")
    fast_positions, fast = _positions_refined(bounded, x, monkeypatch)
    monkeypatch.setattr(BoundPropagation, "unsettled_input", lambda self, node, groups, interval: None)
    slow_positions, slow = _positions_refined(bounded, x, monkeypatch)
    assert torch.allclose(fast.lower, slow.lower, atol=1e-5) and torch.allclose(fast.upper, slow.upper, atol=1e-5)
    assert fast_positions.get(relus[0], 0) == 0 < slow_positions[relus[0]]  # its input is exact: nothing left
    assert fast_positions.get(relus[1], 0) < slow_positions[relus[1]]
    assert fast_positions.get(silu, 0) == 0 < slow_positions[silu]  # the gate's linear layer was bounded where SiLU needs
    assert sum(fast_positions.values()) < sum(slow_positions.values())
    monkeypatch.undo()
    assert_sound(model, x - 0.1, x + 0.1, methods=("crown", "alpha-crown"), samples=2000, bounded=bounded)


class _SkipFromInput(torch.nn.Module):
    """An image net whose output also reads the input itself (a skip connection) and whose first layers are
    affine functions of the input (normalisation, convolution): passes reach the input on two paths."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.inner = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.Tanh(),
                                         torch.nn.Flatten(), torch.nn.Linear(64, 8), torch.nn.ReLU())
        self.head = torch.nn.Linear(8 + 2 * 8 * 8, 3)

    def forward(self, x):
        hidden = self.inner(self.conv((x - 0.5) / 0.3))
        return self.head(torch.cat([hidden, x.flatten(1)], 1))


def _one_patch_boxes(x: torch.Tensor, eps: float, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` boxes around x [1, C, H, W], box i freeing one 2x2 patch (and only on the side the domain
    [0, 1] leaves room for)."""
    masks = torch.zeros(count, *x.shape[1:])
    for index in range(count):
        top, left = 2 * (index // (x.shape[3] // 2)), 2 * (index % (x.shape[3] // 2))
        masks[index, :, top : top + 2, left : left + 2] = 1.0
    return (x - eps * masks).clamp(0, 1), (x + eps * masks).clamp(0, 1)


@pytest.mark.parametrize("seed", range(3))
def test_passes_over_mostly_fixed_boxes_end_at_the_first_layers_with_the_same_bounds(seed, monkeypatch):
    """On boxes that free a few input elements each, a pass stops at the nodes that are affine functions of the
    input (`FREE_INPUT_LIMIT`): same bounds as carrying the coefficients to the input, sound, and input
    coefficients that reproduce the bound (zero on the fixed elements)."""
    from opwise.bounds.engine import free_input

    model = randomize_(_SkipFromInput().eval(), seed)
    x = torch.rand(1, 2, 8, 8, generator=torch.Generator().manual_seed(seed))
    lower, upper = _one_patch_boxes(x, 0.15, 6)
    graph = BoundedModel(model, lower).graph
    A = torch.randn(5, 6, 3, generator=torch.Generator().manual_seed(seed))

    def pass_(limit: int):
        monkeypatch.setattr(free_input, "FREE_INPUT_LIMIT", limit)
        engine = BoundPropagation(graph, InputSet(lower, upper))
        return engine, engine.bound(graph.output, A)

    engine, short = pass_(64)
    prefix = engine._free_prefix()
    assert sum(exact is not None for exact in prefix.values()) >= 3, "no pass stopped at the first layers"
    _, full = pass_(0)
    torch.testing.assert_close(short.lower, full.lower, rtol=1e-5, atol=1e-5)
    coefficient = dense(short.input_coefficient).reshape(5, 6, -1)
    fixed = (upper <= lower).reshape(1, 6, -1).expand_as(coefficient)
    assert bool((coefficient[fixed] == 0).all())
    corner = torch.where(coefficient >= 0, lower.reshape(1, 6, -1), upper.reshape(1, 6, -1))
    torch.testing.assert_close((coefficient * corner).sum(-1) + short.bias, short.lower, rtol=1e-5, atol=1e-5)
    assert_sound(model, lower, upper, methods=("crown", "alpha-crown"), samples=1_000, seed=seed)


@pytest.mark.parametrize("seed", range(3))
def test_intervals_of_a_larger_box_narrow_a_smaller_ones_pass_soundly_with_fewer_specs(seed, monkeypatch):
    """`outer`: intervals that a pass over a larger box settled hold over a smaller box around the same point;
    they narrow interval propagation there, so CROWN bounds fewer neurons, and the bound is never looser."""
    monkeypatch.setattr(free_input, "FREE_INPUT_LIMIT", 0)  # forward mode over the 4 inputs would narrow them alike
    model = randomize_(torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU(),
                                           torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval(), seed)
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(seed))
    graph = BoundedModel(model, x).graph
    A = torch.randn(3, 2, 3, generator=torch.Generator().manual_seed(seed))
    large = BoundPropagation(graph, InputSet(x - 0.3, x + 0.3))
    large.bound(graph.output, A)
    specs = {}

    def pass_(outer):
        engine = BoundPropagation(graph, InputSet(x - 0.2, x + 0.2), outer=outer)
        counted = []
        original = engine.refine
        engine.refine = lambda node, base, selected, alphas=None, **kwargs: counted.append(int(selected.sum() if selected.dtype == torch.bool else selected.numel())) or original(node, base, selected, alphas, **kwargs)
        result = engine.bound(graph.output, A)
        specs[outer is not None] = sum(counted)
        return result.lower

    narrowed, plain = pass_(large.known_intervals()), pass_(None)
    assert bool((narrowed >= plain - 1e-5).all())
    assert specs[True] < specs[False]
    points = x.unsqueeze(1) + 0.2 * (2 * torch.rand(2, 4000, 4, generator=torch.Generator().manual_seed(seed)) - 1)
    values = torch.einsum("sbo,bno->sbn", A, model(points).detach())
    assert bool((values >= narrowed.unsqueeze(-1) - 1e-5).all())


@pytest.mark.parametrize("seed", range(3))
def test_a_monotone_function_of_a_crown_bounded_input_takes_its_image(seed, monkeypatch):
    """tanh of the scores feeds a product, so its interval is needed: the image of the scores' CROWN interval
    (no spec of its own) is sound and at least as tight as CROWN through tanh's lines."""
    torch.manual_seed(seed)
    model = _ScoresAndMixing().eval()
    x = torch.randn(1, 3, 4)
    bounded = BoundedModel(model, x)
    refined = []
    original = BoundPropagation.refine
    monkeypatch.setattr(BoundPropagation, "refine", lambda self, node, *a, **k: refined.append(node.name) or original(self, node, *a, **k))
    image = bounded.compute_bounds(x_lower=x - 0.2, x_upper=x + 0.2, method="crown")
    assert not any(name.startswith("tanh") for name in refined)
    monkeypatch.setattr(BoundPropagation, "image_of_input", lambda self, node: False)
    before = len(refined)
    lines = bounded.compute_bounds(x_lower=x - 0.2, x_upper=x + 0.2, method="crown")
    assert any(name.startswith("tanh") for name in refined[before:])
    assert bool((image.lower >= lines.lower - 1e-5).all() and (image.upper <= lines.upper + 1e-5).all())
    monkeypatch.undo()
    assert_sound(model, x - 0.2, x + 0.2, methods=("crown",), samples=2000, bounded=bounded)


class _Attention(torch.nn.Module):
    """One softmax attention block over 6 tokens of 4 features: softmax's score differences (expand.py) are 6
    times as many as the scores, the one node every path into them passes through."""

    def __init__(self):
        super().__init__()
        self.query, self.key, self.value = (torch.nn.Linear(4, 4) for _ in range(3))
        self.out = torch.nn.Linear(24, 3)

    def forward(self, x):
        h = torch.relu(x)
        weights = torch.softmax(torch.bmm(self.query(h), self.key(h).transpose(1, 2)), dim=-1)
        return self.out(torch.bmm(weights, self.value(h)).flatten(1))


@pytest.mark.parametrize("through", ["forward", "backward"])
@pytest.mark.parametrize("seed", range(2))
def test_bounds_through_a_cut_are_sound_and_no_tighter_than_crown(seed, through, monkeypatch):
    """With a cut (engine `cut_for`) the score differences are bounded from the scores' linear bounds, carried
    forward through the differences or met by the differences' specs carried back to the scores: the bounds hold
    at sampled and attacked points, and are no tighter than CROWN's, which picks every line per spec."""
    from opwise.bounds.engine import cut as cut_module

    torch.manual_seed(seed)
    model = _Attention().eval()
    x = torch.randn(1, 6, 4)
    lower, upper = x - 0.05, x + 0.05
    bounded = BoundedModel(model, x)
    crown = bounded.compute_bounds(x_lower=lower, x_upper=upper, method="crown")
    monkeypatch.setattr(cut_module, "CUT_MIN_POSITIONS", 16)
    monkeypatch.setattr(cut_module, "CUT_RATIO", 4)
    if through == "backward":
        monkeypatch.setattr(BoundPropagation, "forward_from_cut", lambda self, node, cut, groups: None)
    cuts, found = [], BoundPropagation.cut_for
    monkeypatch.setattr(BoundPropagation, "cut_for", lambda self, *a: cuts.append(found(self, *a)) or cuts[-1])
    results = assert_sound(model, lower, upper, methods=("crown",), samples=3000, bounded=bounded)
    assert any(cut is not None for cut in cuts)
    assert bool((results["crown"].lower <= crown.lower + 1e-5).all() and (results["crown"].upper >= crown.upper - 1e-5).all())


def test_a_stop_that_is_not_a_cut_is_refused():
    """Carried back to a node that some other path goes around, the coefficients would drop that path's terms."""
    from opwise.errors import OpwiseError

    model = _Attention().eval()
    x = torch.randn(1, 6, 4)
    graph = BoundedModel(model, x).graph
    engine = BoundPropagation(graph, InputSet(x - 0.1, x + 0.1))
    query = next(node for node in graph.call_nodes() if graph.info(node).module_path == "query")
    with pytest.raises(OpwiseError, match="not a cut"):
        engine._walk(graph.output, torch.eye(3).reshape(3, 1, 3), 1, stop=query)


class _ShiftedWindowAttention(torch.nn.Module):
    """Swin-like: shifted windows folded into the first axis with the samples, heads, softmax over window tokens."""

    def __init__(self, dim=8, window=2, heads=2):
        super().__init__()
        self.window, self.heads = window, heads
        self.embed, self.qkv = torch.nn.Conv2d(1, dim, 2, 2), torch.nn.Linear(dim, 3 * dim)
        self.head = torch.nn.Linear(dim, 3)

    def forward(self, x):
        x = self.embed(x).permute(0, 2, 3, 1)
        batch, height, width, dim = x.shape
        w = self.window
        shifted = torch.roll(x, (-1, -1), (1, 2))
        windows = shifted.view(batch, height // w, w, width // w, w, dim).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, dim)
        q, k, v = self.qkv(windows).reshape(windows.shape[0], w * w, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        mixed = (torch.softmax(q @ k.transpose(-2, -1), -1) @ v).transpose(1, 2).reshape(batch, -1, dim)
        return self.head(mixed.mean(1))


def test_refining_a_four_dimensional_node_whose_first_axis_folds_windows_with_a_single_sample():
    """The windows of a batch of 1 make a [windows, heads, tokens, tokens] node: one group, the batch's size, so
    it was refined as if its first axis were the batch ([C, H, W] windows of the rest) and CROWN stopped with
    'IndexError: index 2 is out of bounds for dimension 1 with size 2'."""
    from tests.bounds.helpers import assert_sound

    torch.manual_seed(1)
    model = _ShiftedWindowAttention().eval()
    x = torch.rand(1, 1, 8, 8)
    assert_sound(model, x - 0.01, x + 0.01, methods=("crown",), samples=500, attack=False)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("patch", [2, 5])
def test_passes_over_boxes_that_free_one_patch_carry_windows_with_the_same_bounds(seed, patch, monkeypatch):
    """On boxes that each free one patch of an image, the nodes before a layer that mixes the whole map are points
    outside a window around the patch: a pass carries only that window (`free_windows`), the points' share going
    into the bias exactly. Same bounds as the dense pass, sound, and input coefficients that reproduce the bound;
    with few free elements (patch 2: the pass also ends at the first layers) and more (patch 5: it reaches the
    input with windows)."""
    from opwise.bounds.engine import free_input

    model = randomize_(torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 6, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(6, 6, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(6 * 4 * 4, 10),
        torch.nn.ReLU(), torch.nn.Linear(10, 3)).eval(), seed)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    masks = torch.zeros(5, 3, 16, 16)
    for index, (top, left) in enumerate([(0, 0), (3, 7), (11, 11), (6, 0), (14 - patch, 2)]):
        masks[index, :, top : top + patch, left : left + patch] = 1.0
    lower, upper = (x - 0.2 * masks).clamp(0, 1), (x + 0.2 * masks).clamp(0, 1)
    graph = BoundedModel(model, lower).graph
    A = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(seed))
    windowed = []
    original = free_input.free_windows

    def counted(*args, **kwargs):
        found = original(*args, **{**kwargs, "min_elements": 0})
        windowed.append(found is not None)
        return found

    monkeypatch.setattr(free_input, "free_windows", counted)
    short = BoundPropagation(graph, InputSet(lower, upper)).bound(graph.output, A)
    assert any(windowed), "no pass carried windows"
    monkeypatch.setattr(BoundPropagation, "_frees_little", lambda self: False)
    full = BoundPropagation(graph, InputSet(lower, upper)).bound(graph.output, A)
    torch.testing.assert_close(short.lower, full.lower, rtol=1e-5, atol=1e-5)
    coefficient = dense(short.input_coefficient).reshape(4, 5, -1)
    corner = torch.where(coefficient >= 0, lower.reshape(1, 5, -1), upper.reshape(1, 5, -1))
    torch.testing.assert_close((coefficient * corner).sum(-1) + short.bias, short.lower, rtol=1e-5, atol=1e-5)
    monkeypatch.undo()
    monkeypatch.setattr(free_input, "free_windows", counted)
    assert_sound(model, lower, upper, methods=("crown",), samples=2_000, seed=seed)


def test_only_the_pass_asked_for_records_and_intermediate_passes_keep_windows(monkeypatch):
    """Recorded coefficients are made dense (a window per spec becomes the whole map): the intermediate passes of a
    conv net recorded them too and dropped them, 8 of 39 s of a GenBaB search on oval21's base net. Now the pass
    the caller asks for records (the same coefficients and bound as before) and the intermediate ones make
    nothing dense."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(3, 4, 3, padding=1),
                                torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2))
    x = torch.rand(2, 1, 6, 6)
    graph = trace(model, x)
    relus = [n for n in graph.call_nodes() if graph.info(n).op == "aten.relu.default"]
    plain = BoundPropagation(graph, InputSet(x - 0.05, x + 0.05), "crown")
    engine = BoundPropagation(graph, InputSet(x - 0.05, x + 0.05), "crown", record=relus)
    made_dense = []
    original = Patches.to_dense
    monkeypatch.setattr(Patches, "to_dense", lambda self: made_dense.append(self.values.shape) or original(self))
    A = torch.eye(2)[:, None, :].expand(2, 2, 2)
    engine.interval(graph.output.args[0])  # every intermediate node, windows all the way
    assert made_dense == []
    result = engine.bound(graph.output, A)
    assert set(result.recorded) == set(relus)
    torch.testing.assert_close(result.lower, plain.bound(graph.output, A).lower)
    # one coefficient per spec, sample and element of each recorded node
    for node in relus:
        assert result.recorded[node].shape == (2, 2, *graph.info(node).shape[1:])
    assert engine.bound(graph.output, A, record=False).recorded == {}


def test_an_index_and_a_remainder_take_their_inputs_image_as_their_interval():
    """`constant_lines` (argmax: whichever policy bounds its input) and `exact_image` (remainder: over a CROWN-bounded
    input, as a monotone relaxation) skip the backward passes that could not tighten them."""

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 4)

        def forward(self, x):
            h = self.linear(x)
            return torch.remainder(h, 0.5) + torch.argmax(h).float()  # flattened: a 0-d node

    graph = trace(Model(), torch.zeros(1, 3))
    kinds = {str(node.target).split(".")[1]: node for node in graph.call_nodes()}
    for policy, remainder_image in (("crown", True), ("forward", False)):
        engine = BoundPropagation(graph, InputSet.ball(torch.zeros(1, 3), 0.3), intermediate=policy)
        assert engine.image_of_input(kinds["argmax"]) and engine.image_of_input(kinds["remainder"]) == remainder_image
        assert engine.interval(kinds["argmax"]).lower.shape == ()
    model, lower, upper = Model(), torch.full((1, 3), -0.3), torch.full((1, 3), 0.3)
    per_sample = lambda z: torch.cat([model(z[i:i + 1]) for i in range(z.shape[0])])  # noqa: E731  (argmax of all)
    assert_sound(per_sample, lower, upper, samples=300, attack=False, bounded=BoundedModel(model, lower))


class _IndexOnly(torch.nn.Module):
    """An output that reads the input only through an index (argmax) and a comparison: constant lines."""

    def __init__(self):
        super().__init__()
        self.scores = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))

    def forward(self, x):
        return (self.scores(x).argmax(1, keepdim=True) == 2).float() + (self.scores(x)[:, :1] > 0).float()


def test_a_pass_ends_at_constant_lines_and_alpha_has_nothing_to_step(monkeypatch):
    """Behind an index or a comparison a pass carries only zeros: it stops there (carvana_unet's count of matching
    pixels sent 1,457 zero rows back through three wide convolutions: 51 s), its bound is the constants' bias, and
    α-CROWN over the intermediate bounds, whose gradient cannot reach such an output, stops instead of failing
    ("element 0 of tensors does not require grad")."""
    from opwise.bounds.strategies.alpha import AlphaOptions
    from opwise.bounds.strategies.alpha_chain import optimize_bounds
    from opwise.bounds.transfers.affine import Linear

    torch.manual_seed(0)
    model = _IndexOnly().eval()
    x = torch.randn(2, 3)
    lower, upper = x - 0.5, x + 0.5
    assert_sound(model, lower, upper, methods=("ibp", "crown", "alpha-crown"), samples=2000)
    graph = trace(model, x)
    engine = BoundPropagation(graph, InputSet(lower, upper), "crown")
    engine.prepare(graph.output)
    calls, backward = [], Linear.backward
    monkeypatch.setattr(Linear, "backward", lambda self, step, A: calls.append(A.shape) or backward(self, step, A))
    A = torch.ones(1, 2, 1)
    crown = engine.backward(graph.output, A)
    assert calls == []
    assert bool((optimize_bounds(engine, graph.output, A, AlphaOptions(intermediate=True, iterations=5)) >= crown).all())


def test_a_cut_is_never_an_affine_function_of_the_input():
    """A node with many positions to refine goes through a cut only where one saves relaxations: never at a slice of
    the input (carvana_unet: its 160,709 conv neurons met the slice's lines densely, 113 s of a pass)."""
    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 32, 3, padding=1))

    class Sliced(torch.nn.Module):
        def forward(self, x):
            return torch.relu(body(x[:, :3]))

    x = torch.rand(1, 4, 8, 8)
    graph = trace(Sliced().eval(), x)
    engine = BoundPropagation(graph, InputSet(x - 0.1, x + 0.1), "crown")
    convolutions = [n for n in graph.call_nodes() if "convolution" in graph.info(n).op]
    engine.prepare(convolutions[-1])
    assert engine.cut_for(convolutions[-1], 2048, 1) is None


def test_a_softmax_denominator_starts_from_its_differences_intervals():
    """Softmax's denominator 1 + Σ exp(x_j − x_i) is met with its image of the differences' (CROWN) intervals, term
    by term: from plain IBP the exps start at 0 and CROWN's tangent lines over a wide difference reach below that
    (a 2-class segmentation net decided 31 of 1,457 pixels' classes where its differences decide 1,215). Sound, and
    the class is decided wherever the difference's interval decides it."""
    torch.manual_seed(3)
    body = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU(),
                               torch.nn.Linear(16, 2))

    class Classes(torch.nn.Module):
        def forward(self, x):
            return torch.softmax(body(x) * 20.0, dim=1)  # wide differences, far from 0

    model = Classes().eval()
    x = torch.randn(8, 4)
    lower, upper = x - 0.1, x + 0.1
    bounds = assert_sound(model, lower, upper, methods=("crown",), samples=2000)["crown"]
    bounded = BoundedModel(model, x)
    engine = BoundPropagation(bounded.graph, InputSet(lower, upper), "crown")
    engine.prepare(bounded.graph.output)
    difference = next(n for n in bounded.graph.call_nodes() if bounded.graph.info(n).op == "aten.sub.Tensor")
    gap = engine.interval(difference)  # [8, 2, 2]: x_j − x_i
    decided = (gap.upper[:, 0, 1] < 0) | (gap.lower[:, 0, 1] > 0)
    assert int(decided.sum()) >= 5
    # a decided class has softmax above 1/2 surely: the other's upper bound below 1/2
    winner = torch.where(gap.upper[:, 0, 1] < 0, 0, 1)
    loser_upper = bounds.upper.gather(1, (1 - winner)[:, None])[:, 0]
    assert bool((loser_upper[decided] < 0.5).all())


class _Cancelling(torch.nn.Module):
    """Two rows of 1.5e38 · (x1 + x2), subtracted: the model's value is 0.5 exactly, but interval arithmetic
    overflows to [−inf, inf] at the difference and to NaN (inf − inf) one layer later."""

    def __init__(self):
        super().__init__()
        self.first, self.second, self.third = torch.nn.Linear(2, 2, bias=False), torch.nn.Linear(2, 1, bias=False), torch.nn.Linear(1, 1)
        with torch.no_grad():
            self.first.weight.fill_(1.5e38)
            self.second.weight.copy_(torch.tensor([[1.0, -1.0]]))
            self.third.weight.fill_(1.0)
            self.third.bias.fill_(0.5)

    def forward(self, x):
        return torch.relu(self.third(self.second(self.first(x)))) + x[:, 1:]


def test_interval_arithmetic_that_overflows_to_nan_leaves_crown_bounds_finite():
    """A NaN end of an IBP interval (inf − inf where interval arithmetic overflowed: random RegNets at eps 1e-3) is
    no number, not an end: it spread through every interval met with it, and all bounds came out NaN (then −inf/inf).
    Here CROWN sees the difference cancel exactly, and the bounds are the exact range [−0.5, 1.5]."""
    x = torch.zeros(1, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "bounds came out NaN" warning
        bounds = BoundedModel(_Cancelling(), x).compute_bounds(x_lower=x - 1, x_upper=x + 1, method="crown")
    torch.testing.assert_close(bounds.lower, torch.tensor([[-0.5]]))
    torch.testing.assert_close(bounds.upper, torch.tensor([[1.5]]))
