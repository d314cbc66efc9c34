"""BoundedModel / compute_bounds: soundness of every method on random compositions (sampled and attacked
inputs), exactness on linear models, α-CROWN never looser than CROWN, batches of boxes, bad input."""

import math

import pytest
import torch

import opwise
from opwise.bounds import BoundedModel
from opwise.errors import InputError
from tests.attribution.models import Writes
from tests.bounds.helpers import assert_sound, randomize_


class Residual(torch.nn.Module):
    def __init__(self, width=6):
        super().__init__()
        self.inner = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, width))
        self.head = torch.nn.Linear(width, 3)

    def forward(self, x):
        h = torch.relu(x.repeat(1, 2) + self.inner(x.repeat(1, 2)))
        return self.head(h - h.mean(dim=1, keepdim=True))


class ErfGelu(torch.nn.Module):
    """GELU as ONNX exports it, x·(1 + erf(x/√2))/2, so erf itself is bounded."""

    def forward(self, x):
        return x * (1 + torch.erf(x / 2 ** 0.5)) / 2


class Sign(torch.nn.Module):
    def forward(self, x):
        return torch.sign(x)


class Extremes(torch.nn.Module):
    """Max and min reductions over a trailing, a middle, and two dims at once (ONNX ReduceMax/ReduceMin)."""

    def __init__(self):
        super().__init__()
        self.inner, self.head = torch.nn.Linear(3, 12), torch.nn.Linear(8, 3)

    def forward(self, x):
        h = self.inner(x).reshape(-1, 3, 4)
        return self.head(torch.cat([h.amax(-1), h.amin(1), h.amax((1, 2), keepdim=True).flatten(1)], 1))


class AttentionBlock(torch.nn.Module):
    """Softmax attention (both matrix products between bounded tensors) and layer norm, as in a transformer."""

    def __init__(self, width=4):
        super().__init__()
        self.query, self.key, self.value = (torch.nn.Linear(width, width) for _ in range(3))
        self.norm = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, 3)

    def forward(self, x):
        tokens = x.reshape(x.shape[0], 3, -1)
        weights = torch.softmax(self.query(tokens) @ self.key(tokens).transpose(1, 2), dim=-1)
        return self.head(self.norm(weights @ self.value(tokens) + tokens).mean(1))


def _small_transformer():
    from opwise.models.transformer import DigitsTransformer

    return DigitsTransformer(width=4, heads=1, hidden=4, rows=3)  # one head: forward-crown needs the batch first


def _cnn():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.BatchNorm2d(3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(3, 4, 2, stride=1), torch.nn.LeakyReLU(0.2), torch.nn.AvgPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(4, 3),
    )


def _randomized_cnn(model, seed):
    randomize_(model, seed)
    with torch.no_grad():  # a valid eval-mode batch norm: positive variances
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].running_mean.normal_()
    return model


ARCHITECTURES = {
    # name: (build, input shape, randomize in place, how many random weight draws per run)
    "relu_mlp": (lambda: torch.nn.Sequential(torch.nn.Linear(3, 10), torch.nn.ReLU(), torch.nn.Linear(10, 10), torch.nn.ReLU(),
                                             torch.nn.Linear(10, 3)), (3,), randomize_, 20),
    "mixed_mlp": (lambda: torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.LeakyReLU(0.1), torch.nn.Linear(8, 8),
                                              torch.nn.Hardtanh(-0.5, 1.0), torch.nn.Linear(8, 3)), (3,), randomize_, 20),
    "erf_mlp": (lambda: torch.nn.Sequential(torch.nn.Linear(3, 8), ErfGelu(), torch.nn.Linear(8, 8), torch.nn.Tanh(),
                                            torch.nn.Linear(8, 3)), (3,), randomize_, 10),
    "sign_mlp": (lambda: torch.nn.Sequential(torch.nn.Linear(3, 8), Sign(), torch.nn.Linear(8, 8), torch.nn.ReLU(),
                                             torch.nn.Linear(8, 3)), (3,), randomize_, 10),
    "extremes": (Extremes, (3,), randomize_, 10),
    "cnn": (_cnn, (1, 6, 6), _randomized_cnn, 4),
    "residual": (Residual, (3,), randomize_, 10),
    "writes": (lambda: Writes(bias=True), (3,), randomize_, 10),
    "attention_block": (AttentionBlock, (12,), randomize_, 4),
    "transformer": (_small_transformer, (1, 3, 3), randomize_, 2),
}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_method_is_sound_on_many_random_models(name):
    _check_random_models(name, ARCHITECTURES[name][3])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_method_is_sound_on_ten_times_more_random_models(name):
    _check_random_models(name, 10 * ARCHITECTURES[name][3], first_seed=1000)


def _check_random_models(name: str, draws: int, first_seed: int = 0) -> None:
    build, shape, randomize, _ = ARCHITECTURES[name]
    model = build().eval()
    bounded = BoundedModel(model, torch.zeros(2, *shape))
    for seed in range(first_seed, first_seed + draws):
        randomize(model, seed)
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(2, *shape, generator=generator)
        eps = [0.05, 0.2, 0.6][seed % 3]
        heavy = seed == first_seed  # 10,000 samples and attacks on one, 1,000 samples on the rest
        assert_sound(model, x - eps, x + eps, samples=10_000 if heavy else 1_000, seed=seed, attack=heavy, bounded=bounded)


def test_alpha_crown_is_never_looser_than_crown_per_sample_and_spec():
    build, shape, randomize, _ = ARCHITECTURES["relu_mlp"]
    model = build()
    bounded = BoundedModel(model, torch.zeros(4, *shape))
    improved = 0.0
    for seed in range(15):
        randomize(model, seed)
        x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(seed))
        crown = bounded.compute_bounds(x, eps=0.5, method="crown", target=0)
        alpha = bounded.compute_bounds(x, eps=0.5, method="alpha-crown", target=0)
        assert (alpha.lower >= crown.lower).all() and (alpha.upper <= crown.upper).all()
        improved += float((alpha.lower - crown.lower).sum())
    assert improved > 0


def test_linear_models_get_exact_bounds():
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Linear(5, 3))
    bounded = BoundedModel(model, torch.zeros(3, 4))
    for seed in range(20):
        randomize_(model, seed)
        x = torch.randn(3, 4, generator=torch.Generator().manual_seed(seed))
        W = model[1].weight @ model[0].weight
        center = model(x)
        radius = 0.3 * W.abs().sum(1)
        for method in ("crown", "crown-ibp", "alpha-crown"):
            bounds = bounded.compute_bounds(x, eps=0.3, method=method)
            assert torch.allclose(bounds.lower, center - radius, atol=1e-5)
            assert torch.allclose(bounds.upper, center + radius, atol=1e-5)


def test_a_batch_of_boxes_gives_the_bounds_of_each_box_alone():
    build, shape, randomize, _ = ARCHITECTURES["cnn"]
    model = randomize(build().eval(), 0)
    x = torch.randn(5, *shape)
    bounded = BoundedModel(model, x[:1])
    together = bounded.compute_bounds(x, eps=0.1, target=torch.tensor([0, 1, 2, 0, 1]))
    for i in range(5):
        alone = bounded.compute_bounds(x[i : i + 1], eps=0.1, target=[0, 1, 2, 0, 1][i])
        assert torch.allclose(together.lower[i], alone.lower[0], atol=1e-5)


def test_spec_matrices_and_margins_have_shape_batch_by_specs():
    model = randomize_(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4)), 0)
    x = torch.randn(2, 3)
    assert opwise.compute_bounds(model, x, eps=0.1, target=2).lower.shape == (2, 3)
    assert opwise.compute_bounds(model, x, eps=0.1, C=torch.ones(5, 4)).lower.shape == (2, 5)
    assert opwise.compute_bounds(model, x, eps=0.1).upper.shape == (2, 4)


@pytest.mark.parametrize("request_kwargs, message", [
    ({"eps": -0.1}, "nonnegative"),
    ({"eps": math.nan}, "nonnegative"),
    ({"eps": 0.1, "domain": (0.0, 0.5)}, "domain"),
    ({"eps": 0.1, "target": 7}, "out of range"),
    ({"eps": 0.1, "method": "magic"}, "unknown method"),
    ({"eps": 0.1, "C": torch.ones(2, 5)}, "C must be"),
])
def test_bad_requests_raise_input_error(request_kwargs, message):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4))
    with pytest.raises(InputError, match=message):
        opwise.compute_bounds(model, torch.full((1, 3), 0.9), **request_kwargs)


def test_shape_mismatch_raises_input_error():
    bounded = BoundedModel(torch.nn.Sequential(torch.nn.Linear(3, 4)), torch.zeros(1, 3))
    with pytest.raises(InputError, match="shape"):
        bounded.compute_bounds(torch.zeros(1, 4), eps=0.1)


def test_a_graph_that_cannot_be_retraced_is_bounded_in_chunks():
    model = randomize_(torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2)), 3)
    x = torch.randn(5, 3)
    graph = opwise.trace(model, x[:2])
    graph._retrace = None  # like an ONNX import: shape-specialized to batch 2 for good
    chunked = BoundedModel(graph, x[:2]).compute_bounds(x, eps=0.2)
    direct = BoundedModel(model, x).compute_bounds(x, eps=0.2)
    assert chunked.lower.shape == (5, 2)
    assert torch.allclose(chunked.lower, direct.lower, atol=1e-5) and torch.allclose(chunked.upper, direct.upper, atol=1e-5)


@pytest.mark.parametrize("activation", [torch.nn.Sigmoid, torch.nn.Tanh, torch.nn.GELU, torch.nn.SiLU, torch.nn.ELU,
                                        torch.nn.SELU, lambda: torch.nn.CELU(0.5), torch.nn.Softplus, torch.nn.Mish,
                                        torch.nn.Hardswish, torch.nn.Hardsigmoid, torch.nn.LogSigmoid,
                                        lambda: torch.nn.Threshold(0.1, -0.5), lambda: torch.nn.Hardshrink(0.3),
                                        lambda: torch.nn.Softshrink(0.3)])
def test_activations_are_sound_once_their_relaxations_exist(activation):
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), activation(), torch.nn.Linear(8, 8), activation(), torch.nn.Linear(8, 3))
    graph = opwise.trace(model, torch.zeros(2, 3))
    if opwise.bounds.coverage(graph).fraction < 1:
        pytest.skip(f"no relaxation registered for {type(model[1]).__name__} yet")
    bounded = BoundedModel(graph, torch.zeros(2, 3))
    for seed in range(10):
        randomize_(model, seed)
        x = torch.randn(2, 3, generator=torch.Generator().manual_seed(seed))
        assert_sound(model, x - 0.5, x + 0.5, samples=2000, seed=seed, attack=seed == 0, bounded=bounded)


def test_nan_bounds_become_unbounded_with_a_warning(monkeypatch):
    """A NaN bound is never passed on as a number: it is reported as ±inf (sound) and the user is warned."""
    from opwise.bounds.engine import BoundPropagation

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    bounded = BoundedModel(model, torch.zeros(1, 3))
    plain = BoundPropagation.backward

    def first_spec_nan(self, node, A, *args, **kwargs):
        bound = plain(self, node, A, *args, **kwargs)
        return bound.index_fill(0, torch.tensor([0]), float("nan")) if node is self.graph.output else bound

    monkeypatch.setattr(BoundPropagation, "backward", first_spec_nan)
    # where only the linear bound is NaN, the IBP bound it is met with stands
    intervals = bounded.compute_bounds(torch.zeros(1, 3), eps=0.1, method="ibp")
    assert bounded.compute_bounds(torch.zeros(1, 3), eps=0.1, method="crown").lower[0, 0] == intervals.lower[0, 0]
    plain_intervals = BoundPropagation.backward_to_intervals
    monkeypatch.setattr(BoundPropagation, "backward_to_intervals",
                        lambda self, node, A: plain_intervals(self, node, A).index_fill(0, torch.tensor([0]), float("nan")))
    with pytest.warns(RuntimeWarning, match="NaN"):
        bounds = bounded.compute_bounds(torch.zeros(1, 3), eps=0.1, method="crown")
    assert bounds.lower[0, 0] == -math.inf and torch.isfinite(bounds.lower[0, 1:]).all()
    assert torch.isfinite(bounds.upper).all()


def test_a_layer_norm_after_huge_intervals_keeps_eps_in_its_variance():
    """IBP through a layer norm whose input intervals reach 1e10: var + eps must stay >= eps (computed through
    centre and radius, 0 + 1e-5 rounded to 0 and rsqrt refused its input). Every method is sound there."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.LayerNorm(6), torch.nn.Linear(6, 2)).eval()
    with torch.no_grad():
        model[0].weight.mul_(1e10)
    x = torch.randn(1, 4, generator=torch.Generator().manual_seed(0))
    assert_sound(model, x - 1.0, x + 1.0, samples=2_000, attack=False)


def test_the_builtin_transformer_is_bounded_soundly_by_every_method():
    """The small ViT-like transformer (attention folds its heads into the batch dimension), one sample: every
    method gives sound bounds. Over a batch of two, forward mode gives each sample its own bounds: the nodes that
    fold the batch are copies (views, broadcasts), whose intervals are their sources' (before copies took their
    sources' intervals, forward mode concretized them and refused)."""
    model, inputs = opwise.load_model("builtin:transformer")
    x = inputs[0]
    assert_sound(model, x - 0.001, x + 0.001, samples=1_000, attack=False)
    pair = torch.cat([x, x.flip(-1)])
    together = BoundedModel(model, pair).compute_bounds(pair, eps=0.001, method="forward-crown")
    for i in range(2):
        alone = BoundedModel(model, pair[i:i + 1]).compute_bounds(pair[i:i + 1], eps=0.001, method="forward-crown")
        assert torch.allclose(together.lower[i:i + 1], alone.lower, atol=1e-3)
        assert torch.allclose(together.upper[i:i + 1], alone.upper, atol=1e-3)


def test_forward_mode_refuses_a_batch_folded_into_a_node_it_must_concretize():
    """A linear layer applied to a batch-folding reshape: forward mode would have to tell the samples apart there,
    and refuses clearly instead of mixing them up."""
    class Folded(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.head = torch.nn.Linear(4, 4), torch.nn.Linear(2, 2)

        def forward(self, x):
            folded = torch.relu(self.head(self.inner(x).reshape(-1, 2)))
            return folded.reshape(x.shape[0], 4)

    x = torch.randn(2, 4)
    with pytest.raises(opwise.errors.OpwiseError, match="batch dimension first"):
        BoundedModel(Folded(), x).compute_bounds(x, eps=0.01, method="forward-crown")


def test_a_model_that_mixes_samples_is_refused_at_batch_sizes_above_one():
    """layer(x) + x.flip(0): sample 1's output depends on sample 0's input, so per-sample bounds would be wrong
    (found by the fuzz harness); one sample at a time is fine."""

    class Flip(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(3, 3)

        def forward(self, x):
            return self.layer(x) + x.flip(0)

    model, x = Flip().eval(), torch.rand(2, 3)
    with pytest.raises(InputError, match="mixes samples"):
        BoundedModel(model, x).compute_bounds(x, eps=0.1, method="ibp")
    single = BoundedModel(model, x[:1]).compute_bounds(x[:1], eps=0.1, method="crown")
    samples = x[:1] + 0.1 * (2 * torch.rand(1000, 3) - 1)
    outputs = torch.stack([model(s[None])[0] for s in samples])
    assert (outputs >= single.lower - 1e-5).all() and (outputs <= single.upper + 1e-5).all()


@pytest.mark.parametrize("batch", [2, 3, 5, 8])
@pytest.mark.parametrize("mixing", ["into first", "among later", "sum"])
def test_every_direction_of_mixing_samples_is_refused(batch, mixing):
    """The check once changed only sample 0 and watched the others: a later sample's input feeding sample 0's
    output (as an ONNX ScatterND writing input rows into a constant can) gave wrong bounds with no error; so did
    two later samples swapped. Every pair of samples is now tested in both directions."""

    class Mix(torch.nn.Module):
        def forward(self, x):
            if mixing == "into first":
                return torch.cat([x[-1:], x[1:]]) * 2
            if mixing == "among later":
                order = list(range(x.shape[0]))
                order[-1], order[-2] = order[-2], order[-1]
                return x[order] + 1 if x.shape[0] > 2 else x.flip(0)
            return x + x.sum(0, keepdim=True)

    x = torch.rand(batch, 3)
    with pytest.raises(InputError, match="mixes samples"):
        BoundedModel(Mix(), x).compute_bounds(x, eps=0.1, method="ibp")


def test_a_model_that_keeps_samples_apart_passes_the_check_at_every_batch_size():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).eval()
    for batch in (2, 3, 7, 16):
        x = torch.rand(batch, 3)
        bounds = BoundedModel(model, x).compute_bounds(x, eps=0.1, method="ibp")
        assert bounds.lower.shape == (batch, 2)


def test_progress_hears_of_every_intermediate_bound_and_alpha_step_and_changes_no_bound(capsys):
    from opwise.bounds.strategies.alpha import AlphaOptions

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[m for _ in range(4) for m in (torch.nn.Linear(8, 8), torch.nn.ReLU())],
                                torch.nn.Linear(8, 3)).eval()
    x = torch.zeros(1, 8)
    reports = []
    watched, plain = BoundedModel(model, x, progress=reports.append), BoundedModel(model, x)
    request = dict(eps=0.3, target=0, bound_upper=False, alpha=AlphaOptions(iterations=6, patience=10))
    bounds = watched.compute_bounds(x, method="alpha-crown", **request)
    assert torch.equal(bounds.lower, plain.compute_bounds(x, method="alpha-crown", **request).lower)
    assert capsys.readouterr() == ("", "")  # a callback is told; nothing is printed
    assert all(r["search"] == "alpha-crown" for r in reports)
    layers = [r for r in reports if "layer" in r]
    steps = [r for r in reports if "iteration" in r]
    assert len(layers) + len(steps) == len(reports)
    # the four ReLUs' inputs are the intermediate bounds, one report each, in order
    assert [(r["layer"], r["layers"]) for r in layers] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [(r["iteration"], r["iterations"]) for r in steps] == [(k, 6) for k in range(1, 7)]
    lowers = [r["lower"] for r in steps]
    assert lowers == sorted(lowers) and lowers[-1] == pytest.approx(float(bounds.lower.min()))
    for group in (layers, steps):
        seconds = [r["seconds"] for r in group]
        assert seconds == sorted(seconds) and seconds[0] >= 0

    reports.clear()
    watched.compute_bounds(x, method="crown", eps=0.3, target=0)
    assert [r["layer"] for r in reports] == [1, 2, 3, 4] and all(r["search"] == "crown" for r in reports)
    reports.clear()
    watched.compute_bounds(x, method="alpha-crown", eps=0.3, target=0, alpha=AlphaOptions(iterations=2))
    assert reports and not any("lower" in r for r in reports)  # upper bounds ride along negated: no "lower bound"
    reports.clear()
    watched.compute_bounds(x, method="ibp", eps=0.3, target=0)
    assert reports == []  # nothing long to report


@pytest.mark.parametrize("method", ["crown", "crown-ibp", "alpha-crown"])
def test_linear_bounds_are_never_looser_than_interval_bounds(method):
    """Over a wide box a layer norm's clamped value is bounded better by intervals than by lines, and the CROWN
    bounds of ViTs, Swin, ConvNeXt and PoolFormer came out up to twice as wide as IBP's; the final bound is now
    met with IBP's bound of the same specifications."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 3)).eval()
    x = torch.randn(1, 4)
    intervals = opwise.compute_bounds(model, x, eps=2.0, method="ibp")
    bounds = assert_sound(model, x - 2.0, x + 2.0, methods=(method,), samples=2_000, attack=False)[method]
    assert (bounds.lower >= intervals.lower - 1e-6).all() and (bounds.upper <= intervals.upper + 1e-6).all()
    margins = opwise.compute_bounds(model, x, eps=2.0, method=method, target=0)
    assert (margins.lower >= opwise.compute_bounds(model, x, eps=2.0, method="ibp", target=0).lower - 1e-6).all()
