"""Composite operators rewritten for bounding (opwise/bounds/expand.py): the rewrite computes the same
function, and attention blocks with softmax and layer norm are bounded soundly once their primitive
pieces have relaxations (test-local ones here where the relaxation package has none yet)."""

import sys
import types

import pytest
import torch

from opwise.bounds import BoundedModel
from opwise.bounds.expand import expand_for_bounds
from opwise.bounds.relaxations.base import BilinearRelaxation, LinearRelaxation
from opwise.bounds.relaxations.registry import RELAXATIONS
from opwise.tracing import trace
from tests.bounds.helpers import assert_sound, randomize_


class Attention(torch.nn.Module):
    def __init__(self, width=4, tokens=3):
        super().__init__()
        self.query, self.key, self.value = (torch.nn.Linear(width, width) for _ in range(3))
        self.norm = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width * tokens, 2)
        self.key_bias = torch.nn.Parameter(torch.randn(width, width))

    def forward(self, x):
        scores = self.query(x) @ self.key_bias  # one bounded side: affine
        weights = torch.softmax(scores, dim=-1)
        mixed = weights * self.value(x)  # a product of two bounded tensors
        return self.head(self.norm(mixed + x).flatten(1))


class _MonotoneConstantLines:
    """Sound constant lines for a monotone function: [min(f(l), f(u)), max(f(l), f(u))]."""

    def __init__(self, function):
        self.function = function

    def relax(self, lower, upper, alpha=None):
        a, b = self.function(lower), self.function(upper)
        zero = torch.zeros_like(lower)
        return LinearRelaxation(zero, torch.minimum(a, b), zero, torch.maximum(a, b))

    def init_alpha(self, lower, upper):
        return None

    def clamp_alpha(self, alpha, lower, upper):
        return alpha


class _SquareConstantLines(_MonotoneConstantLines):
    """x² on [l, u]: between 0 (or the smaller end) and the larger end."""

    def relax(self, lower, upper, alpha=None):
        low = torch.where((lower < 0) & (upper > 0), torch.zeros_like(lower), torch.minimum(lower**2, upper**2))
        zero = torch.zeros_like(lower)
        return LinearRelaxation(zero, low, zero, torch.maximum(lower**2, upper**2))


def _mccormick(lx, ux, ly, uy, alpha=None):
    """The two McCormick planes per side (the test takes the first of each)."""
    return BilinearRelaxation(ly, lx, -lx * ly, uy, lx, -lx * uy)


@pytest.fixture
def primitive_relaxations(monkeypatch):
    """Relaxations for the pieces softmax and layer norm expand into, where the package lacks them."""
    for key, factory in {
        "aten.exp.default": lambda a, k: _MonotoneConstantLines(torch.exp),
        "aten.reciprocal.default": lambda a, k: _MonotoneConstantLines(torch.reciprocal),
        "aten.rsqrt.default": lambda a, k: _MonotoneConstantLines(torch.rsqrt),
        "aten.pow.Tensor_Scalar": lambda a, k: _SquareConstantLines(torch.square),
    }.items():
        if key not in RELAXATIONS:
            monkeypatch.setitem(RELAXATIONS, key, factory)
    try:
        import opwise.bounds.relaxations.bilinear  # noqa: F401
    except ImportError:
        monkeypatch.setitem(sys.modules, "opwise.bounds.relaxations.bilinear",
                            types.SimpleNamespace(relax_bilinear=_mccormick))


def test_expanded_graph_computes_the_same_function(primitive_relaxations):
    model = Attention().eval()
    x = torch.randn(2, 3, 4)
    expanded = expand_for_bounds(trace(model, x), x)
    ops = {expanded.info(n).op for n in expanded.call_nodes()}
    assert "aten._softmax.default" not in ops and "aten.layer_norm.default" not in ops
    assert torch.allclose(expanded(x), model(x), atol=1e-5)


def test_division_by_a_bounded_tensor_becomes_a_product_with_its_reciprocal(primitive_relaxations):
    class Ratio(torch.nn.Module):
        def forward(self, x):
            return x / (x.sum(dim=1, keepdim=True) + 10)

    x = torch.rand(2, 3)
    expanded = expand_for_bounds(trace(Ratio(), x), x)
    assert "aten.reciprocal.default" in {expanded.info(n).op for n in expanded.call_nodes()}
    assert_sound(Ratio(), x - 0.1, x + 0.1, methods=("ibp", "crown"), samples=2000, attack=False)


def test_attention_blocks_are_bounded_soundly(primitive_relaxations):
    model = Attention().eval()
    bounded = BoundedModel(model, torch.zeros(2, 3, 4))
    for seed in range(4):
        randomize_(model, seed)
        x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(seed))
        assert_sound(model, x - 0.05, x + 0.05, samples=5000, seed=seed, attack=seed == 0, bounded=bounded)


class _BilinearAttention(torch.nn.Module):
    """Scores q·kᵀ and mixing p·v are matrix products of two bounded tensors (no softmax, to isolate bmm)."""

    def __init__(self):
        super().__init__()
        self.query, self.key, self.value = (torch.nn.Linear(4, 4) for _ in range(3))

    def forward(self, x):
        scores = torch.bmm(self.query(x), self.key(x).transpose(1, 2))
        return torch.bmm(torch.tanh(scores), self.value(x)).flatten(1)


@pytest.mark.parametrize("seed", range(4))
def test_matrix_products_of_two_bounded_tensors_are_bounded_soundly(seed):
    torch.manual_seed(seed)
    model = _BilinearAttention().eval()
    x = torch.randn(1, 3, 4)
    graph = expand_for_bounds(trace(model, x), x)
    assert "aten.bmm.default" not in {graph.info(n).op for n in graph.call_nodes()}
    assert_sound(model, x - 0.1, x + 0.1)


def test_builtin_transformer_is_bounded_soundly_by_crown():
    from opwise.models import builtin, demo_inputs

    model = builtin("transformer")
    x = demo_inputs("transformer", 1)[0]
    results = assert_sound(model, x - 0.002, x + 0.002, methods=("crown",), samples=2000)
    assert torch.isfinite(results["crown"].lower).all()


@pytest.mark.parametrize("seed, radius", [(0, 0.01), (1, 0.05), (2, 0.3)])
def test_random_small_transformers_are_bounded_soundly(seed, radius):
    """Random nets of the built-in transformer's kind (q·kᵀ and p·v with both sides bounded, softmax, three layer
    norms, GELU): sampled and PGD outputs lie within IBP's and CROWN's bounds, from radii where CROWN is tight to
    one (0.3) where the variance intervals of the last two layer norms reach zero (rsqrt at 1/√eps, the clamp caps
    the normalised value), the regime where the digits transformer's CROWN margins fall to -50 and below at eps 0.01."""
    from opwise.models.transformer import DigitsTransformer

    model = randomize_(DigitsTransformer(width=8, heads=2, hidden=8, classes=3, rows=4).eval(), seed)
    x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    results = assert_sound(model, x - radius, x + radius, methods=("ibp", "crown"), samples=3000, seed=seed)
    assert all(torch.isfinite(bounds.lower).all() and torch.isfinite(bounds.upper).all() for bounds in results.values())


class _MaskedAttentionScores(torch.nn.Module):
    """Softmax over scores where some keys are masked with the dtype's most negative value, as Hugging Face does."""

    def __init__(self):
        super().__init__()
        self.score = torch.nn.Linear(4, 4)
        self.register_buffer("mask", torch.tensor([0.0, 0.0, torch.finfo(torch.float32).min, 0.0]))

    def forward(self, x):
        return torch.softmax(self.score(x) * 30 + self.mask, dim=-1)


def test_softmax_becomes_one_over_a_sum_of_exponentials_of_score_differences_with_the_same_values():
    model = _MaskedAttentionScores().eval()
    x = torch.randn(3, 4)
    expanded = expand_for_bounds(trace(model, x), x)
    ops = [expanded.info(n).op for n in expanded.call_nodes()]
    assert "aten._softmax.default" not in ops and "aten.sub.Tensor" in ops and "aten.reciprocal.default" in ops
    assert torch.allclose(expanded(x), model(x), atol=1e-6)


def test_softmax_bounds_stay_finite_and_within_zero_and_one_on_masked_scores_with_wide_intervals():
    """Regression: exp of a raw score overflowed on wide score intervals and x·0 through centre and radius made
    inf − inf: IBP bounds came out NaN (reported as -inf), and upper bounds went far above 1."""
    model = _MaskedAttentionScores().eval()
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    results = assert_sound(model, x - 2.0, x + 2.0, methods=("ibp",), samples=2000, attack=False)
    bounds = results["ibp"]
    assert torch.isfinite(bounds.lower).all() and torch.isfinite(bounds.upper).all()
    assert (bounds.lower >= 0).all() and (bounds.upper <= 1).all()
    assert (bounds.upper[:, 2] <= 1e-20).all()  # the masked key gets no weight (up to exp(−MAX_EXPONENT))


class _Normalized(torch.nn.Module):
    def __init__(self, width=6):
        super().__init__()
        self.inner = torch.nn.Linear(3, width)
        self.norm = torch.nn.LayerNorm(width, elementwise_affine=False)

    def forward(self, x):
        return self.norm(self.inner(x))


def test_layer_norm_bounds_stay_within_the_square_root_of_width_minus_one_where_the_variance_reaches_zero():
    """Regression: with the variance's lower bound at 0, rsqrt's bound was 1/√eps ≈ 316 and the normalised values'
    bounds reached hundreds; every normalised value lies within ±√(n − 1), and IBP's bounds now do too (CROWN's final
    bound takes lines through the clamp's kinks, sound but not always inside the box)."""
    torch.manual_seed(0)
    model = _Normalized().eval()
    x = torch.randn(2, 3)
    results = assert_sound(model, x - 3.0, x + 3.0, methods=("ibp", "crown"), samples=2000, attack=False)
    limit = 5 ** 0.5 * 1.0001
    assert (results["ibp"].lower >= -limit).all() and (results["ibp"].upper <= limit).all()
    assert (results["crown"].lower >= -5 * limit).all() and (results["crown"].upper <= 5 * limit).all()
    with torch.no_grad():  # every feature the same value: variance 0, output 0 (the rewrite keeps that value)
        model.inner.weight.zero_(), model.inner.bias.fill_(0.7)
    graph = trace(model, x)
    assert torch.equal(expand_for_bounds(graph, x)(x), model(x))


def test_crown_bounds_of_softmax_over_masked_keys_are_finite():
    """Regression: a key masked with finfo.min makes score differences of ±3e38, whose exp is inf; the exp lines
    were inf − inf = NaN there and every CROWN bound came out NaN (reported as -inf)."""
    model = _MaskedAttentionScores().eval()
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))
    results = assert_sound(model, x - 0.01, x + 0.01, methods=("crown",), samples=2000, attack=False)
    assert torch.isfinite(results["crown"].lower).all() and torch.isfinite(results["crown"].upper).all()


@pytest.mark.parametrize("seed", range(4))
def test_log_softmax_is_bounded_soundly_and_its_margins_are_the_scores_margins(seed):
    """log_softmax had no bound rule. It is (x − max) − log Σ exp(x − max), the max shared by the row: a margin
    between two log-probabilities equals the margin between the scores, so CROWN bounds it exactly as tightly."""
    scores = randomize_(torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4)), seed)
    model = torch.nn.Sequential(scores, torch.nn.LogSoftmax(-1)).eval()
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(seed))
    graph = expand_for_bounds(trace(model, x))
    probe = torch.randn(5, 3) * 10
    torch.testing.assert_close(graph(probe), model(probe), rtol=0, atol=1e-6)
    assert_sound(model, x - 0.3, x + 0.3, samples=3_000, seed=seed, attack=seed == 0)
    C = torch.tensor([[[1.0, -1.0, 0.0, 0.0], [0.0, 1.0, 0.0, -1.0]]]).expand(2, 2, 4)
    through = BoundedModel(model, x).compute_bounds(x_lower=x - 0.3, x_upper=x + 0.3, method="crown", C=C)
    direct = BoundedModel(scores, x).compute_bounds(x_lower=x - 0.3, x_upper=x + 0.3, method="crown", C=C)
    torch.testing.assert_close(through.lower, direct.lower, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(through.upper, direct.upper, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_prelu_is_bounded_soundly_with_any_slopes_per_channel(seed):
    """PReLU (traced as _prelu_kernel, kept whole) had no bound rule; slopes below 0 and above 1 included."""
    generator = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.PReLU(3), torch.nn.Flatten(),
                                torch.nn.Linear(27, 6), torch.nn.PReLU(6), torch.nn.Linear(6, 2)).eval()
    randomize_(model, seed)
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([-0.5, 0.25, 1.5]))
        model[4].weight.uniform_(-1.5, 2.0, generator=generator)
    x = torch.randn(1, 2, 5, 5, generator=generator)
    assert any(trace(model, x).info(n).op == "aten._prelu_kernel.default" for n in trace(model, x).call_nodes())
    assert_sound(model, x - 0.2, x + 0.2, samples=3_000, seed=seed, attack=seed == 0)


class _MaxOfTwo(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = torch.nn.Linear(3, 6), torch.nn.Linear(3, 6), torch.nn.Linear(6, 2)

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        return self.head(torch.maximum(a, b) - torch.minimum(a, b.clamp_min(0)) + torch.nn.functional.logsigmoid(a))


class _ClampByTensors(torch.nn.Module):
    """torch.clamp with tensor limits (aten.clamp.Tensor): one from the input, one a constant, one side only."""

    def __init__(self):
        super().__init__()
        self.layer, self.head = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)
        self.register_buffer("high", torch.tensor([0.5, 1.0, -0.2, 0.3]))

    def forward(self, x):
        h = self.layer(x)
        return self.head(torch.clamp(h, min=h.mean(-1, keepdim=True), max=self.high) + torch.clamp(h, max=h[:, :1]))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("module", [_MaxOfTwo, _ClampByTensors])
def test_elementwise_extrema_and_tensor_clamps_are_bounded_soundly(module, seed):
    """minimum/maximum and clamp with tensor limits (found on a user net) had no bound rule; they become ReLUs
    (clamp.Tensor: maximum then minimum; LogSigmoid, once traced with a minimum, is now kept whole)."""
    model = randomize_(module(), seed).eval()
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(seed))
    probe = torch.randn(7, 3)
    torch.testing.assert_close(expand_for_bounds(trace(model, x))(probe), model(probe), rtol=1e-6, atol=1e-6)
    assert_sound(model, x - 0.4, x + 0.4, samples=3_000, seed=seed, attack=seed == 0)


class _Norms(torch.nn.Module):
    """Group norm, F.normalize, vector norms of several orders, var and std, and a cumulative sum."""

    def __init__(self):
        super().__init__()
        self.conv, self.norm = torch.nn.Conv2d(2, 4, 3), torch.nn.GroupNorm(2, 4)
        self.head = torch.nn.Linear(4 * 3 * 3, 3)

    def forward(self, x):
        h = self.conv(x)
        flat = h.flatten(1)
        extras = torch.cat([flat.norm(p=order, dim=-1, keepdim=True) for order in (1, 2, 3, float("inf"))]
                           + [flat.var(-1, keepdim=True), flat.std(-1, keepdim=True)], -1)
        normalised = torch.nn.functional.normalize(flat, dim=-1)[:, :3]
        return self.head(torch.relu(self.norm(h)).flatten(1)) + normalised + extras[:, :3] - extras[:, 3:] \
            + torch.cumsum(flat, -1)[:, -3:]


@pytest.mark.parametrize("seed", range(3))
def test_group_norm_vector_norms_variance_and_cumsum_are_bounded_soundly(seed):
    """Each had no bound rule; group norm is rewritten through getitem of native_group_norm (dropped after)."""
    model = randomize_(_Norms(), seed).eval()
    x = torch.randn(1, 2, 5, 5, generator=torch.Generator().manual_seed(seed))
    expanded = expand_for_bounds(trace(model, x))
    assert not any("group_norm" in expanded.info(n).op for n in expanded.call_nodes())
    for probe in torch.randn(4, 1, 2, 5, 5):  # the trace is at batch 1
        torch.testing.assert_close(expanded(probe), model(probe), rtol=1e-5, atol=1e-5)
    assert_sound(model, x - 0.05, x + 0.05, samples=2_000, seed=seed, attack=seed == 0)


class _ChannelsLastThenGroupNorm(torch.nn.Module):
    """PoolFormer's pattern: a layer norm over channels-last, permuted back (a map that is not contiguous), then
    group norm of that map and a residual."""

    def __init__(self):
        super().__init__()
        self.conv, self.layer_norm, self.group_norm = torch.nn.Conv2d(2, 4, 3), torch.nn.LayerNorm(4), torch.nn.GroupNorm(1, 4)
        self.head = torch.nn.Linear(36, 2)

    def forward(self, x):
        h = self.layer_norm(self.conv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.head((h + self.group_norm(h)).flatten(1))


def test_group_norm_of_a_non_contiguous_map_is_bounded():
    """Group norm's rewrite viewed its input as [batch, groups, rest]: on a map whose layout is not contiguous the
    rewritten graph and every bound pass failed in `view` (timm's PoolFormer)."""
    model = randomize_(_ChannelsLastThenGroupNorm(), 0).eval()
    x = torch.randn(1, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(expand_for_bounds(trace(model, x))(x), model(x), rtol=1e-5, atol=1e-5)
    assert_sound(model, x - 0.05, x + 0.05, methods=("ibp", "crown"), samples=500, attack=False)


@pytest.mark.parametrize("affine", [False, True])
def test_instance_norm_is_bounded_soundly(affine):
    """Instance norm traces as batch norm with the batch's own statistics (no bound rule before)."""
    model = randomize_(torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.InstanceNorm2d(3, affine=affine),
                                           torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(27, 2)), 0).eval()
    x = torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(expand_for_bounds(trace(model, x))(x), model(x), rtol=1e-5, atol=1e-5)
    assert_sound(model, x - 0.05, x + 0.05, samples=2_000, attack=True)


@pytest.mark.parametrize("affine", [False, True])
def test_rms_norm_is_bounded_soundly(affine):
    """RMSNorm (aten.rms_norm, kept whole) had no bound rule."""
    model = randomize_(torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.RMSNorm(6, elementwise_affine=affine),
                                           torch.nn.Linear(6, 2)), 0).eval()
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(expand_for_bounds(trace(model, x))(x), model(x), rtol=1e-5, atol=1e-5)
    assert_sound(model, x - 0.3, x + 0.3, samples=3_000, attack=True)


class _MaskedAttentionLayers(torch.nn.Module):
    """Two attention layers whose last keys are masked with finfo.min, added to the scores as Hugging Face does."""

    def __init__(self, width=8, tokens=5, masked=2):
        super().__init__()
        self.layers = torch.nn.ModuleList(
            torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(3)) for _ in range(2))
        self.head = torch.nn.Linear(width * tokens, 2)
        mask = torch.zeros(tokens)
        mask[tokens - masked:] = torch.finfo(torch.float32).min
        self.register_buffer("mask", mask)

    def forward(self, x):
        for query, key, value in self.layers:
            scores = query(x) @ key(x).transpose(1, 2) + self.mask
            x = x + torch.softmax(scores, -1) @ value(x)
        return self.head(x.flatten(1))


@pytest.mark.parametrize("eps", [1e-4, 1e-2])
def test_crown_bounds_of_attention_layers_with_an_additive_finfo_min_mask_are_finite_and_sound(eps):
    """Regression (BERT with an attention mask): two masked scores have a point interval (finfo.min absorbs them), so
    their difference is the point 0, where exp's tangent of slope 1 sent coefficients back to both; their finfo.min
    parts cancel only in exact arithmetic, and coefficient × finfo.min overflowed to −inf: every bound was −inf."""
    torch.manual_seed(0)
    model = _MaskedAttentionLayers().eval()
    x = torch.randn(1, 5, 8)
    results = assert_sound(model, x - eps, x + eps, methods=("crown",), samples=2000, attack=False)
    bounds = results["crown"]
    assert torch.isfinite(bounds.lower).all() and torch.isfinite(bounds.upper).all()
    assert float((bounds.upper - bounds.lower).max()) < 1000 * eps


class _BilinearAndCumprod(torch.nn.Module):
    """nn.Bilinear on two bounded branches and on one branch twice (aten._trilinear), and a cumulative product."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(3, 4), torch.nn.Linear(3, 2)
        self.cross, self.square = torch.nn.Bilinear(4, 2, 3), torch.nn.Bilinear(4, 4, 3, bias=False)

    def forward(self, x):
        a, b = torch.tanh(self.a(x)), self.b(x)
        return self.cross(a, b) + self.square(a, a) + torch.cumprod(b + 1, -1)[:, -1:]


@pytest.mark.parametrize("seed", range(3))
def test_bilinear_layers_and_cumulative_products_are_bounded_soundly(seed):
    """_trilinear and cumprod had no bound rule; they become products (constant factor first) and a chain of
    products of two bounded slices."""
    model = randomize_(_BilinearAndCumprod(), seed).eval()
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(seed))
    expanded = expand_for_bounds(trace(model, x))
    ops = {expanded.info(n).op for n in expanded.call_nodes()}
    assert "aten._trilinear.default" not in ops and "aten.cumprod.default" not in ops
    for probe in torch.randn(4, 2, 3):  # the trace is at batch 2 (nn.Bilinear views its inputs by batch)
        torch.testing.assert_close(expanded(probe), model(probe), rtol=1e-5, atol=1e-5)
    assert_sound(model, x - 0.3, x + 0.3, samples=3_000, seed=seed, attack=seed == 0)


def test_cumulative_product_along_an_inner_axis_is_exact_on_points_and_sound():
    class Inner(torch.nn.Module):
        def forward(self, x):
            return torch.cumprod(x.view(-1, 3, 2), 1).flatten(1)

    x = torch.rand(1, 6) + 0.5
    bounds = assert_sound(Inner(), x - 0.2, x + 0.2, methods=("ibp", "crown"), samples=2_000)
    assert (bounds["crown"].upper - bounds["crown"].lower).max() < 10
    point = BoundedModel(Inner(), x).compute_bounds(x_lower=x, x_upper=x, method="crown")
    torch.testing.assert_close(point.lower, Inner()(x)) and torch.testing.assert_close(point.upper, Inner()(x))


class _Thresholds(torch.nn.Module):
    """Binarization and thresholds: where(h op c, a, b) for every comparison, constants and computed branches."""
    def __init__(self):
        super().__init__()
        self.first, self.last = torch.nn.Linear(3, 6), torch.nn.Linear(13, 2)
        self.register_buffer("row", torch.tensor([0.5, -1.0, 2.0, 0.0, 1.5, -0.25]))
    def forward(self, x):
        h = self.first(x)
        one, minus = torch.ones_like(h), -torch.ones_like(h)
        parts = [torch.where(h > 0, one, minus), torch.where(h >= 0.25, self.row, h),
                 torch.where(h < self.row, h, -h), torch.where(h <= -0.1, 2 * one, 3 * one),
                 torch.where(h == 0, one, minus), torch.where(h != 0, h, one),
                 torch.where(x[:, :1] > x[:, 1:2], x[:, :1], x[:, 1:2])]  # a maximum of two inputs
        return self.last(torch.cat([p.sum(1, keepdim=True) if p.shape[1] == 6 else p for p in parts]
                                   + [torch.where(h > x[:, 2:3], h, 0.5 * h)], 1))


def test_where_of_a_comparison_is_bounded_soundly_and_computes_the_model():
    """Where(Greater(x, 0), 1, -1) (a binarized layer) and other input-dependent conditions had no bound rule
    ("aten.gt.Scalar has no bound rule"); now a step from sign and relu. Seeded: the rewritten graph computes the
    model's values exactly, also where a comparison's two sides are equal (sign's value 0 there), and every
    method's bounds hold the sampled and attacked outputs, on boxes whose corner makes h exactly 0."""
    torch.manual_seed(0)
    model = _Thresholds().eval()
    with torch.no_grad():
        model.first.bias[:3] = 0.0
    graph = trace(model, torch.zeros(1, 3))
    expanded = expand_for_bounds(graph)
    ops = {expanded.info(n).op for n in expanded.call_nodes()}
    assert not {op.split(".")[1] for op in ops} & {"where", "gt", "ge", "lt", "le", "eq", "ne"}, ops
    boundary = torch.zeros(1, 3)  # h_0..2 = 0 exactly: every comparison with 0 at its boundary
    x = torch.cat([torch.randn(200, 3), boundary, torch.tensor([[0.7, 0.7, 0.7]])])
    with torch.no_grad():
        assert torch.equal(expanded(x), graph(x))
    for lower, upper in ((torch.full((1, 3), -0.5), torch.full((1, 3), 0.5)), (boundary, boundary + 0.3),
                         (boundary - 0.2, boundary)):
        bounds = assert_sound(graph, lower, upper, methods=("ibp", "crown", "alpha-crown"), seed=1)
        with torch.no_grad():
            for b in bounds.values():
                corner = graph(lower if lower is boundary else upper)
                assert torch.isfinite(b.lower).all() and (b.lower <= corner + 1e-5).all() and (corner <= b.upper + 1e-5).all()


def test_a_comparison_cast_to_floats_is_bounded_soundly_and_computes_the_model():
    """`Cast(Greater(h, 0), float) * 2 - 1` (the other binarized-layer export) and a comparison cast to float64 and
    back: `aten._to_copy` of a bool had no bound rule; now the same exact step. Seeded, boundaries included."""
    class Cast(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(3, 5), torch.nn.Linear(10, 2)
        def forward(self, x):
            h = self.a(x)
            return self.b(torch.cat([(h > 0).float() * 2 - 1, (h <= 0.3).to(torch.float64).float()], 1))
    torch.manual_seed(0)
    model = Cast().eval()
    with torch.no_grad():
        model.a.bias[:2] = 0.0  # h_0 and h_1 are exactly 0 at x = 0
    graph = trace(model, torch.zeros(1, 3))
    expanded = expand_for_bounds(graph)
    assert not {expanded.info(n).op.split(".")[1] for n in expanded.call_nodes()} & {"gt", "le"}
    x = torch.cat([torch.randn(200, 3), torch.zeros(1, 3)])
    with torch.no_grad():
        assert torch.equal(expanded(x), graph(x))
    for lower, upper in ((torch.full((1, 3), -0.5), torch.full((1, 3), 0.5)), (torch.zeros(1, 3), torch.full((1, 3), 0.2))):
        assert_sound(graph, lower, upper, methods=("ibp", "crown", "alpha-crown"), seed=2)


class _RunningLogSums(torch.nn.Module):
    """logcumsumexp along the features and along an inner axis of a view."""

    def __init__(self):
        super().__init__()
        self.first, self.last = torch.nn.Linear(3, 6), torch.nn.Linear(12, 2)

    def forward(self, x):
        h = self.first(x)
        return self.last(torch.cat([torch.logcumsumexp(h, 1), torch.logcumsumexp(h.view(-1, 3, 2), 1).flatten(1)], 1))


def test_logcumsumexp_becomes_a_chain_of_softplus_steps_with_the_same_values():
    """No exp of a raw value: differences of 1000 and more, where exp overflows, keep the model's values."""
    class Running(torch.nn.Module):
        def forward(self, x):
            return torch.logcumsumexp(x, 1)

    x = torch.tensor([[0.0, 100.0, -100.0, 3.0, 1000.0, -1000.0, 1000.0]])
    expanded = expand_for_bounds(trace(Running(), x))
    ops = {expanded.info(n).op for n in expanded.call_nodes()}
    assert "aten.logcumsumexp.default" not in ops and "aten.softplus.default" in ops
    for probe in [x, torch.randn(4, 7) * 30]:
        torch.testing.assert_close(expanded(probe), Running()(probe), rtol=1e-6, atol=1e-5)
    point = BoundedModel(Running(), x).compute_bounds(x_lower=x, x_upper=x, method="crown")
    torch.testing.assert_close(point.lower, Running()(x)) and torch.testing.assert_close(point.upper, Running()(x))


@pytest.mark.parametrize("seed", range(4))
def test_logcumsumexp_is_bounded_soundly(seed):
    model = randomize_(_RunningLogSums(), seed).eval()
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(seed))
    eps = [0.01, 0.3, 3.0, 30.0][seed]
    results = assert_sound(model, x - eps, x + eps, methods=("ibp", "crown", "alpha-crown"), samples=3_000, seed=seed,
                           attack=seed == 0)
    assert all(torch.isfinite(bounds.lower).all() and torch.isfinite(bounds.upper).all() for bounds in results.values())


@pytest.mark.parametrize("seed", range(3))
def test_nan_to_num_over_finite_bounds_keeps_the_bounds_of_the_model_without_it(seed):
    """nan_to_num traces to where(h == ±inf, ±finfo.max, ...): a comparison with an infinite constant stays one (as a
    step, h − inf made every CROWN bound NaN), decided false on finite bounds, so CROWN passes through it."""
    class Network(torch.nn.Module):
        def __init__(self, guard: bool):
            super().__init__()
            self.guard, self.first, self.last = guard, torch.nn.Linear(3, 5), torch.nn.Linear(5, 2)

        def forward(self, x):
            h = self.first(x)
            return self.last(torch.relu(torch.nan_to_num(h) if self.guard else h))

    guarded, plain = randomize_(Network(True), seed), Network(False)
    plain.load_state_dict(guarded.state_dict())
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(seed))
    results = assert_sound(guarded, x - 0.4, x + 0.4, methods=("ibp", "crown", "forward-crown", "alpha-crown"),
                           samples=1000)
    for method in ("crown", "forward-crown"):
        expected = BoundedModel(plain, x).compute_bounds(x_lower=x - 0.4, x_upper=x + 0.4, method=method)
        torch.testing.assert_close(results[method].lower, expected.lower, msg=method)
        torch.testing.assert_close(results[method].upper, expected.upper, msg=method)
