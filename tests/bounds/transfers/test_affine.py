"""Affine operators (opwise/bounds/transfers/affine.py and product.py with a constant factor): CROWN is
exact on affine functions of a box, IBP is sound; the exact range comes from the autograd Jacobian."""

import pytest
import torch
import torch.nn.functional as F

import opwise
from opwise.bounds import BoundedModel
from opwise.bounds.engine import BoundPropagation
from opwise.bounds.input_set import InputSet
from opwise.bounds.transfers.affine import Affine, BatchNorm
from opwise.bounds.transfers.convolution import Convolution
from opwise.bounds.transfers.registry import Interval

torch.manual_seed(0)
W = torch.randn(6, 4)
CONV = torch.randn(3, 2, 3, 3)
CONV_T = torch.randn(4, 3, 3, 3)  # transposed: [in, out / groups, kH, kW]
INDEX = torch.tensor([0, 2, 2, 5])
RIGHT, LEFT = torch.randn(6, 3), torch.randn(3, 2)

# each maps a [2, 4] input through a linear layer into a shape the op needs, then applies the op
CASES = {
    "view": lambda h: h.view(2, 3, 2),
    "permute": lambda h: h.view(2, 3, 2).permute(0, 2, 1),
    "transpose": lambda h: h.view(2, 3, 2).transpose(1, 2),
    "expand": lambda h: h[:, None, :].expand(2, 3, 6),
    "slice": lambda h: h[:, 1:5:2],
    "select": lambda h: h.view(2, 3, 2)[:, 1],
    "cat_constant": lambda h: torch.cat([h, torch.ones(2, 2)], dim=1),
    "cat_self": lambda h: torch.cat([h, 2 * h], dim=1),
    "stack": lambda h: torch.stack([h, -h], dim=1),
    "split": lambda h: torch.split(h, 2, dim=1)[1] * 3,
    "squeeze_unsqueeze": lambda h: h.unsqueeze(1).unsqueeze(-1).squeeze(-1),
    "flatten": lambda h: h.view(2, 3, 2).flatten(1),
    "pad": lambda h: F.pad(h, (1, 2), value=0.5),
    "index": lambda h: h[:, INDEX],
    "gather": lambda h: h.gather(1, INDEX.expand(2, 4)),
    "sum": lambda h: h.sum(dim=1, keepdim=True),
    "mean": lambda h: h.mean(dim=1),
    "add_sub": lambda h: h - 2 * h.flip(1) + 1.5,
    "rsub": lambda h: 1.0 - h,
    "neg": lambda h: -h,
    "mul_div": lambda h: h * torch.linspace(-2, 2, 6) / 3.0,
    "div_tensor": lambda h: h / torch.linspace(1, 2, 6),
    "matmul_right": lambda h: h @ RIGHT,
    "matmul_left": lambda h: LEFT @ h.view(2, 2, 3),
    "conv_bn_avgpool": lambda h: F.avg_pool2d(
        F.batch_norm(F.conv2d(h.view(2, 1, 2, 3).repeat(1, 2, 2, 2), CONV, padding=1),
                     torch.zeros(3), torch.ones(3) * 2, torch.tensor([1.0, -2.0, 0.5]), torch.ones(3)), 2),
    "conv_transpose_bn": lambda h: F.batch_norm(
        F.conv_transpose2d(h.view(2, 1, 2, 3).repeat(1, 4, 1, 1), CONV_T, torch.arange(6.0), stride=2, padding=1,
                           output_padding=1, groups=2),
        torch.linspace(-1, 1, 6), torch.linspace(0.5, 2, 6), torch.linspace(-2, 2, 6), torch.ones(6)),
    "where_constant_mask": lambda h: torch.where(torch.tensor([True, False] * 3), h, -h),
}


class Case(torch.nn.Module):
    def __init__(self, op):
        super().__init__()
        self.op = op

    def forward(self, x):
        return self.op(F.linear(x, W, torch.arange(6.0)))


def _exact(model, lower, upper):
    """min/max of an affine function on a box, per sample, from its Jacobian and its value at 0."""
    lows, highs = [], []
    for b in range(lower.shape[0]):
        single = lambda v: model(torch.cat([lower[:b], v[None], lower[b + 1:]]))[b].flatten()  # noqa: E731
        J = torch.autograd.functional.jacobian(single, lower[b])
        center = single((lower[b] + upper[b]) / 2)
        radius = (upper[b] - lower[b]) / 2
        spread = J.abs() @ radius
        lows.append(center - spread)
        highs.append(center + spread)
    return torch.stack(lows), torch.stack(highs)


def assert_exact_and_ibp_sound(model, seed: int, name: str, methods=("crown",)) -> None:
    """`methods` give the exact range of an affine `model` on a random [2, 4] box; IBP contains it."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, generator=generator)
    lower, upper = x - 0.5, x + torch.rand(2, 4, generator=generator)
    exact_lower, exact_upper = _exact(model, lower, upper)
    bounded = BoundedModel(model, x)
    for method in methods:
        bounds = bounded.compute_bounds(x_lower=lower, x_upper=upper, method=method)
        assert torch.allclose(bounds.lower, exact_lower, atol=1e-4), (name, method)
        assert torch.allclose(bounds.upper, exact_upper, atol=1e-4), (name, method)
    ibp = bounded.compute_bounds(x_lower=lower, x_upper=upper, method="ibp")
    assert (ibp.lower <= exact_lower + 1e-4).all() and (ibp.upper >= exact_upper - 1e-4).all(), name


@pytest.mark.parametrize("name", sorted(CASES))
def test_crown_is_exact_and_ibp_sound_on_affine_ops(name):
    assert_exact_and_ibp_sound(Case(CASES[name]), 3, name)


DIRECT = {
    "conv2d strided, dilated": torch.nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, bias=True),
    "conv2d grouped": torch.nn.Conv2d(4, 6, (3, 2), padding=(1, 0), groups=2),
    "conv2d strided": torch.nn.Conv2d(4, 3, 4, stride=3, padding=1),
    "conv_transpose strided": torch.nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1),
    "conv_transpose output padding, grouped": torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
    "conv_transpose dilated": torch.nn.ConvTranspose2d(4, 2, 3, stride=3, padding=2, dilation=2, bias=False),
    "batch norm": torch.nn.BatchNorm2d(4),
}


@pytest.mark.parametrize("name", sorted(DIRECT))
def test_direct_backward_equals_the_generic_vjp(name):
    """The hand-written backward of (transposed) convolutions and batch norm gives the vjp's coefficients and
    terms, for dense coefficients and for one-hot rows (the gathered kernel slices of intermediate bounds)."""
    torch.manual_seed(1)
    layer = DIRECT[name].eval()
    if isinstance(layer, torch.nn.BatchNorm2d):
        layer.running_mean.normal_(), layer.running_var.uniform_(0.5, 2), layer.weight.data.normal_(), layer.bias.data.normal_()
    x = torch.randn(2, 4, 7, 9)
    bounded = BoundedModel(torch.nn.Sequential(layer), x)
    engine = BoundPropagation(bounded.graph, InputSet.ball(x, 0.1))
    (node,) = [n for n in bounded.graph.nodes if bounded.graph.info(n).op in ("aten.convolution.default", "aten.batch_norm.default")]
    step = engine.step(node)
    transfer = engine.transfer(node)
    assert isinstance(transfer, (BatchNorm, Convolution))
    shape = layer(x).shape
    dense = torch.randn(5, *shape)
    one_hot = torch.zeros(2 * shape[1:].numel(), *shape)  # every neuron of sample 1 (and zero rows for sample 0)
    one_hot.view(one_hot.shape[0], 2, -1)[:, 1].copy_(torch.cat([torch.eye(shape[1:].numel()), -3 * torch.eye(shape[1:].numel())]))
    for A in (dense, one_hot):
        (direct,), direct_terms = transfer.backward(step, A)
        (generic,), generic_terms = Affine.backward(transfer, step, A)
        assert torch.allclose(direct, generic, atol=1e-5)
        specs = A.shape[0]
        per_sample = [torch.zeros(specs, 2) if t is None else t.reshape(specs, 2, -1).sum(-1) for t in (direct_terms, generic_terms)]
        assert torch.allclose(*per_sample, atol=1e-4)


class _TimesConstant(torch.nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


@pytest.mark.parametrize("factor, lower, upper", [
    (torch.tensor([0.0, 2.0]), [0.0, -2.0], [0.0, 6.0]),
    (0.0, [0.0, 0.0], [0.0, 0.0]),
    (-1.0, [-float("inf"), -3.0], [float("inf"), 1.0]),
])
def test_ibp_of_x_times_a_constant_over_infinite_ends(factor, lower, upper):
    """x·c takes the ends' products; a zero factor gives 0 however wide x is (0·inf would be NaN)."""
    bounded = BoundedModel(_TimesConstant(factor), torch.zeros(1, 2))
    engine = BoundPropagation(bounded.graph, InputSet(torch.zeros(1, 2), torch.ones(1, 2)))
    (node,) = [n for n in bounded.graph.nodes if bounded.graph.info(n).op.startswith("aten.mul")]
    inf = float("inf")
    x = Interval(torch.tensor([[-inf, -1.0]]), torch.tensor([[inf, 3.0]]))
    image = engine.transfer(node).ibp(engine.step(node), [x])
    assert image.lower.tolist() == [lower] and image.upper.tolist() == [upper]


class _Resize(torch.nn.Module):
    def __init__(self, mode):
        super().__init__()
        self.mode = mode
        self.down, self.out = torch.nn.Conv2d(2, 3, 3, stride=2), torch.nn.Conv2d(3, 2, 3)

    def forward(self, x):
        resized = F.interpolate(torch.relu(self.down(x)), scale_factor=2, mode=self.mode)
        return self.out(resized).flatten(1)


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "nearest-exact", "bicubic"])
def test_resizing_is_bounded_soundly(mode):
    """Upsampling (U-Nets, FPNs) had no bound rule: nearest and linear modes are monotone linear maps, bicubic a
    signed one (kept whole)."""
    from tests.bounds.helpers import assert_sound, randomize_

    model = randomize_(_Resize(mode), 0).eval()
    x = torch.randn(1, 2, 9, 9, generator=torch.Generator().manual_seed(0))
    assert_sound(model, x - 0.1, x + 0.1, samples=2_000, attack=False)


@pytest.mark.parametrize("arguments", [dict(scale_factor=2), dict(scale_factor=1.5, align_corners=True),
                                       dict(size=(5, 11)), dict(size=(3, 2))])
def test_bicubic_ibp_is_the_exact_range_of_the_signed_linear_map(arguments):
    """Bicubic weights can be negative (bicubic was decomposed into 50 gathers and products before): IBP's radius is
    |J|·r with J the dense Jacobian, the exact range of a linear map over a box, and CROWN is exact too."""

    class Resize(torch.nn.Module):
        def forward(self, x):
            return F.interpolate(x, mode="bicubic", **arguments).flatten(1)

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 4, 6, generator=generator)
    radius = torch.rand(2, 2, 4, 6, generator=generator)
    bounded = BoundedModel(Resize(), x)
    ops = [bounded.graph.info(n).op for n in bounded.graph.call_nodes()]
    assert ops[0] == "aten.upsample_bicubic2d.vec" and len(ops) <= 2
    jacobian = torch.autograd.functional.jacobian(lambda v: Resize()(v[None])[0], x[0, :1])  # one channel
    jacobian = jacobian.reshape(-1, 4 * 6)
    assert (jacobian < 0).any()
    expected = (jacobian.abs() @ radius[:, :, :, :].reshape(2, 2, -1, 1)).reshape(2, -1)
    centre = Resize()(x)
    for method in ("ibp", "crown"):
        bounds = bounded.compute_bounds(x_lower=x - radius, x_upper=x + radius, method=method)
        torch.testing.assert_close(bounds.upper - centre, expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(centre - bounds.lower, expected, rtol=1e-4, atol=1e-5)


class _Bag(torch.nn.Module):
    """nn.EmbeddingBag (sum) over fixed token ids, the per-sample weights as the input."""

    def __init__(self):
        super().__init__()
        self.bag, self.head = torch.nn.EmbeddingBag(12, 4, mode="sum"), torch.nn.Linear(4, 2)
        self.register_buffer("ids", torch.tensor([[1, 4, 7, 9], [2, 2, 5, 11], [0, 3, 3, 8]]))

    def forward(self, weights):
        ids = self.ids.repeat(weights.shape[0] // 3, 1)  # a batch of several boxes' points: the ids cycle with them
        return self.head(torch.tanh(self.bag(ids, per_sample_weights=weights)))


def test_embedding_bag_is_bounded_through_its_per_sample_weights():
    """aten._embedding_bag had no bound rule; it is linear in the per-sample weights (signed table entries)."""
    from tests.bounds.helpers import assert_sound

    torch.manual_seed(0)
    model, x = _Bag().eval(), torch.rand(3, 4)
    assert_sound(model, x - 0.2, x + 0.2, methods=("ibp", "crown", "alpha-crown"), samples=3_000)
    # the bag alone is a linear map: IBP and CROWN give its exact range, Σ_i |E[id_i]| · r_i around the centre

    class BagOnly(torch.nn.Module):
        def forward(self, weights):
            return model.bag(model.ids, per_sample_weights=weights)

    expected = (model.bag.weight.detach().abs()[model.ids] * 0.2).sum(1)
    for method in ("ibp", "crown"):
        bounds = BoundedModel(BagOnly(), x).compute_bounds(x_lower=x - 0.2, x_upper=x + 0.2, method=method)
        torch.testing.assert_close((bounds.upper - bounds.lower) / 2, expected, rtol=1e-5, atol=1e-6)


class _Picks(torch.nn.Module):
    """Slices (steps, negative ends, past the end), selects (negative index and dim) and sums with broadcasting,
    scalar factors, rsub and a constant operand: every form the direct backward passes of Slice, Select and AddSubtract
    read from the node."""

    def __init__(self):
        super().__init__()
        self.first, self.last = torch.nn.Linear(3, 24), torch.nn.Linear(13, 2)

    def forward(self, x):
        h = torch.tanh(self.first(x)).reshape(-1, 4, 6)
        a = h[:, 1:, ::2]  # [B, 3, 3]
        b = h[:, -2, -4:]  # [B, 4]
        c = h.select(-1, -1)[:, :100]  # [B, 4]
        d = torch.sub(a, h[:, :1, :3], alpha=0.5) + 0.25  # broadcast over the middle axis, a constant
        # [1, B, 4] + [B, 4]: the second operand gets a leading axis (as the sums of an unrolled ONNX GRU)
        e = torch.add(b.unsqueeze(0), c, alpha=-2.0).reshape(-1, 4) - torch.ones(4)
        return self.last(torch.cat([d.flatten(1)[:, :10], torch.rsub(e, 1.5)], dim=1))


@pytest.mark.parametrize("method", ["crown", "alpha-crown"])
def test_direct_backward_of_slices_selects_and_sums_is_the_vjps(method, monkeypatch):
    """The direct backward passes give the generic vjp's bounds (the same operators through `Affine`)."""
    from opwise.bounds.transfers import affine
    from opwise.bounds.transfers.registry import TRANSFERS

    torch.manual_seed(0)
    model, x = _Picks().eval(), torch.randn(2, 3)
    direct = opwise.compute_bounds(model, x, eps=0.3, method=method)
    for key in ("aten.slice", "aten.select", "aten.add.Tensor", "aten.sub.Tensor", "aten.add.Scalar",
                "aten.sub.Scalar", "aten.rsub"):
        generic = affine.SignedAffine if key.startswith(("aten.add", "aten.sub", "aten.rsub")) else affine.Affine
        monkeypatch.setitem(TRANSFERS, key, generic())
    through_vjp = opwise.compute_bounds(model, x, eps=0.3, method=method)
    assert torch.allclose(direct.lower, through_vjp.lower, atol=1e-5)
    assert torch.allclose(direct.upper, through_vjp.upper, atol=1e-5)
    from tests.bounds.helpers import assert_sound

    assert_sound(model, x - 0.3, x + 0.3, methods=(method,), samples=2000)
