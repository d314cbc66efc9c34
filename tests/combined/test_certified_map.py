"""certified_map: analytic radii where CROWN is exact, never above an attack's radius, batched passes."""

from __future__ import annotations

import math

import pytest
import torch

import opwise
from opwise.combined.certified_map import patch_masks
from opwise.combined.patch_attack import robust_margins
from opwise.errors import InputError
from tests.bounds.helpers import randomize_


def _linear_radius(weight, bias, x, feature, eps_max, domain):
    """By hand: moving x_i alone by δ changes the margin to class j by (w_t,i − w_j,i)·δ; the worst δ has the
    opposite sign and reaches ε, or the domain's edge first."""
    y = weight @ x + bias
    target = int(y.argmax())
    radius = eps_max
    for j in range(len(y)):
        if j == target:
            continue
        slope = float(weight[target, feature] - weight[j, feature])
        margin = float(y[target] - y[j])
        if slope == 0:
            continue
        room = math.inf if domain is None else (float(x[feature]) - domain[0] if slope > 0 else domain[1] - float(x[feature]))
        breaking = margin / abs(slope)
        if breaking < room:
            radius = min(radius, breaking)
    return radius


@pytest.mark.parametrize("domain", [None, (0.0, 1.0)])
def test_linear_model_radius_is_the_analytic_one(domain):
    generator = torch.Generator().manual_seed(4)
    model = torch.nn.Linear(6, 4)
    with torch.no_grad():
        model.weight.copy_(torch.randn(4, 6, generator=generator))
        model.bias.copy_(torch.randn(4, generator=generator) * 0.3)
    x = torch.rand(1, 6, generator=generator)
    steps, eps_max = 12, 4.0
    result = opwise.certified_map(model, x, eps_max=eps_max, steps=steps, domain=domain)
    expected = torch.tensor([_linear_radius(model.weight.detach(), model.bias.detach(), x[0], i, eps_max, domain) for i in range(6)])
    assert (expected < eps_max).sum() >= 4  # the case exercises real radii, not only the cap
    assert (result.radius <= expected + 1e-5).all()
    assert (result.radius >= expected - eps_max / 2**steps - 1e-5).all()


class TwoInputReLU(torch.nn.Module):
    """y0 = 2·relu(x1 + 1) − relu(x2 + 1) + 5·relu(−x1 − 1), y1 = 1.5: on [0, 1]² the first two ReLUs are
    always active and the third always off, so CROWN is exact. At x = (0.5, 0.3) the margin y0 − y1 is 0.2;
    moving x1 alone costs 2 per unit (radius 0.1), x2 alone 1 per unit (radius 0.2), both together 3 per unit
    (radius 0.2 / 3)."""

    def __init__(self):
        super().__init__()
        self.hidden = torch.nn.Linear(2, 3)
        self.out = torch.nn.Linear(3, 2)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
            self.hidden.bias.copy_(torch.tensor([1.0, 1.0, -1.0]))
            self.out.weight.copy_(torch.tensor([[2.0, -1.0, 5.0], [0.0, 0.0, 0.0]]))
            self.out.bias.copy_(torch.tensor([0.0, 1.5]))

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x)))


@pytest.mark.parametrize("method", ["crown", "alpha-crown"])
def test_two_input_relu_net_radius_is_the_hand_derived_one(method):
    x = torch.tensor([[0.5, 0.3]])
    model = TwoInputReLU()
    steps, eps_max = 12, 0.5
    tolerance = eps_max / 2**steps + 1e-5
    single = opwise.certified_map(model, x, eps_max=eps_max, steps=steps, method=method)
    both = opwise.certified_map(model, x, patch=torch.ones(1, 2, dtype=torch.bool), eps_max=eps_max, steps=steps, method=method)
    for got, expected in zip([*single.radius.tolist(), float(both.radius)], [0.1, 0.2, 0.2 / 3]):
        assert expected - tolerance <= got <= expected + 1e-5
    # the attack's radius is an upper bound on the true one, here equal to it
    assert (single.attack_radius >= torch.tensor([0.1, 0.2]) - 1e-4).all()


def _cnn():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(4 * 3 * 3, 5),
    )


def _mlp():
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def _near_boundary(model, candidates: torch.Tensor) -> torch.Tensor:
    """A point a tenth of the way back from a decision boundary (so attacks on a patch can succeed and the
    comparison has teeth): centre the logits over the candidates so several classes win, then bisect the
    segment between two candidates classified differently."""
    with torch.no_grad():
        model[-1].bias.sub_(model(candidates).mean(0))
        classes = model(candidates).argmax(1)
    other = int(torch.nonzero(classes != classes[0])[0])
    a, b = candidates[:1], candidates[other : other + 1]
    for _ in range(30):
        middle = (a + b) / 2
        with torch.no_grad():
            same = bool(model(middle).argmax(1) == classes[0])
        a, b = (middle, b) if same else (a, middle)
    x = a + 0.1 * (candidates[:1] - a)
    assert float(robust_margins(model, x, int(classes[0]))) > 1e-4
    return x


@pytest.mark.parametrize("make, shape, patch", [(_mlp, (1, 8), 4), (_cnn, (1, 1, 7, 7), 2)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_certified_radius_is_never_above_the_attack_radius(make, shape, patch, seed):
    torch.manual_seed(seed)
    model = randomize_(make(), seed).eval()
    with torch.no_grad():
        model[0].weight.mul_(8.0)  # random nets barely react to their inputs: make them sensitive enough to attack
    x = _near_boundary(model, torch.rand(64, *shape[1:], generator=torch.Generator().manual_seed(seed)))
    result = opwise.certified_map(model, x, patch=patch, eps_max=1.0, steps=6, attack_steps=2)
    found = torch.isfinite(result.attack_radius)
    assert found.any()  # the attack broke some patches, so the comparison below has teeth
    assert (result.radius < result.attack_radius).all(), (result.radius, result.attack_radius)
    # every counterexample behind an attack radius is real, inside its patch, at that distance
    for index in torch.nonzero(found).flatten().tolist():
        point = result.counterexamples[index : index + 1]
        assert float(robust_margins(model, point, result.target)) <= 0
        moved = (point - x).abs()[0] > 0
        assert not (moved & ~result.masks[index]).any()
        assert math.isclose(float((point - x).abs().max()), float(result.attack_radius[index]), rel_tol=1e-5)
    # and sampled points within each certified radius keep the prediction
    generator = torch.Generator().manual_seed(seed)
    for index in range(result.masks.shape[0]):
        mask = result.masks[index].to(x.dtype)
        noise = (torch.rand(64, *x.shape[1:], generator=generator) * 2 - 1) * float(result.radius[index]) * mask
        points = (x + noise).clamp(0, 1)
        points[:8] = (x + mask * float(result.radius[index]) * torch.sign(torch.randn(8, *x.shape[1:], generator=generator))).clamp(0, 1)
        assert (robust_margins(model, points, result.target) > 0).all()


def test_passes_do_not_grow_with_the_number_of_patches():
    torch.manual_seed(0)
    model = randomize_(_cnn(), 0).eval()
    x = torch.rand(1, 1, 7, 7, generator=torch.Generator().manual_seed(0))
    steps = 4
    few = opwise.certified_map(model, x, patch=4, steps=steps, attack=False)
    many = opwise.certified_map(model, x, patch=1, steps=steps, attack=False)
    assert few.masks.shape[0] == 4 and many.masks.shape[0] == 49
    # CROWN-IBP bisects from eps_max (1 + steps passes); CROWN grows its step from there (at most steps
    # doublings) and bisects (at most steps halvings)
    limit = 3 * steps + 1
    assert few.passes <= limit and many.passes <= limit


def test_patch_masks_tile_and_cover_every_feature_once():
    masks = patch_masks((3, 5, 4), (2, 3))
    assert masks.shape == (6, 3, 5, 4)
    assert (masks.sum(0) == 1).all()
    assert masks[0, :, :2, :3].all() and not masks[0, :, 2:, :].any()


def test_relevance_correlation_follows_the_ranks():
    x = torch.tensor([[0.8, 0.2]])
    model = TwoInputReLU()
    result = opwise.certified_map(model, x * 0 + torch.tensor([[0.5, 0.3]]), eps_max=0.5, steps=6, attack=False)
    assert result.radius[0] < result.radius[1]
    assert result.relevance_correlation(torch.tensor([[2.0, 1.0]])) == pytest.approx(-1.0)
    assert result.relevance_correlation(torch.tensor([[-1.0, 3.0]])) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="fast"), "unknown method"),
        (dict(eps_max=-1.0), "eps_max"),
        (dict(steps=-3), "steps must be a whole number of at least 0"),
        (dict(steps=2.5), "steps must be"),
        (dict(attack_steps=-1), "attack_steps must be"),
        (dict(batch_size=0), "batch_size must be a whole number of at least 1"),
        (dict(patch=0), "patch must be"),
        (dict(domain=(0.6, 1.0)), "outside its domain"),
        (dict(target=7), "out of range"),
    ],
)
def test_bad_requests_raise_input_errors(kwargs, message):
    with pytest.raises(InputError, match=message):
        opwise.certified_map(TwoInputReLU(), torch.tensor([[0.5, 0.3]]), **kwargs)


# on the MLP, CROWN's radii are within a bisection step (1/64) of the attack's: nothing left to gain there
@pytest.mark.parametrize("make, shape, patch, gains_expected", [(_mlp, (1, 8), 4, False), (_cnn, (1, 1, 7, 7), 2, True)])
def test_branch_and_bound_radius_lies_between_crowns_and_the_attacks(make, shape, patch, gains_expected):
    """method="bab" splits the boxes CROWN cannot prove: its radius is never below CROWN's (it starts where CROWN
    stopped) and never above the attack's (soundness), and on the CNN it certifies more somewhere."""
    gains = 0
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = randomize_(make(), seed).eval()
        with torch.no_grad():
            model[0].weight.mul_(8.0)
        x = _near_boundary(model, torch.rand(64, *shape[1:], generator=torch.Generator().manual_seed(seed)))
        crown = opwise.certified_map(model, x, patch=patch, eps_max=1.0, steps=6, attack=False)
        bab = opwise.certified_map(model, x, patch=patch, eps_max=1.0, steps=6, method="bab", attack_steps=2, max_boxes=8)
        assert bab.method == "bab"
        assert (bab.radius >= crown.radius).all(), (bab.radius, crown.radius)
        assert (bab.radius < bab.attack_radius).all(), (bab.radius, bab.attack_radius)
        gains += int((bab.radius > crown.radius).sum())
    assert gains > 0 or not gains_expected


def _sensitive(make, shape, seed):
    """A random model made sensitive enough to attack, and an input near one of its decision boundaries."""
    torch.manual_seed(seed)
    model = randomize_(make(), seed).eval()
    with torch.no_grad():
        model[0].weight.mul_(8.0)
    return model, _near_boundary(model, torch.rand(64, *shape[1:], generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("make, shape, patch", [(_mlp, (1, 8), 2), (_cnn, (1, 1, 7, 7), 2)])
@pytest.mark.parametrize("method", ["crown", "crown-ibp"])
def test_linear_search_certifies_what_bisection_certifies(make, shape, patch, method):
    """Reading radii off failed probes' linear bounds is a faster search, not a different answer: per patch,
    within the tolerance of plain bisection's radius, in no more passes over both seeds (fewer with CROWN's
    intermediate bounds; CROWN-IBP's loose linear bounds prove little past what they fail at)."""
    steps, eps_max = 7, 1.0
    tolerance = eps_max / 2**steps
    passes = {"linear": 0, "bisect": 0}
    for seed in (0, 1):
        model, x = _sensitive(make, shape, seed)
        found = {}
        for search in passes:
            found[search] = opwise.certified_map(model, x, patch=patch, eps_max=eps_max, steps=steps, method=method,
                                                 attack=False, search=search)
            passes[search] += found[search].passes
        linear, bisect = found["linear"].radius, found["bisect"].radius
        assert ((bisect < eps_max) & (bisect > tolerance)).sum() >= 2  # real radii, not only the cap or zero
        assert (linear - bisect).abs().max() <= tolerance + 1e-6, (linear, bisect)
    assert passes["linear"] < passes["bisect"] if method == "crown" else passes["linear"] <= passes["bisect"], passes


class _Residual(torch.nn.Module):
    """Two paths into one sum (a skip connection): the linear bound gathers coefficients from both."""

    def __init__(self):
        super().__init__()
        self.first = torch.nn.Linear(6, 12)
        self.second = torch.nn.Linear(12, 6)
        self.out = torch.nn.Linear(6, 4)

    def __getitem__(self, index):  # model[0] and model[-1], as for the Sequential models here
        return [self.first, self.second, self.out][index]

    def forward(self, x):
        return self.out(torch.relu(x + self.second(torch.relu(self.first(x)))))


def _tanh_cnn():
    return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.Tanh(), torch.nn.AvgPool2d(2), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 2 * 2, 3))


@pytest.mark.parametrize("make, shape, patch", [(_Residual, (1, 6), 2), (_tanh_cnn, (1, 2, 6, 6), 3), (_mlp, (1, 8), 1)])
@pytest.mark.parametrize("seed", [3, 4, 5, 6])
def test_linear_search_is_sound_on_random_models(make, shape, patch, seed):
    """Radii read off linear bounds are proofs: never at or above the attack's radius, and the corners of every
    certified box (where a linear bound is tightest) keep the prediction."""
    model, x = _sensitive(make, shape, seed)
    result = opwise.certified_map(model, x, patch=patch, eps_max=1.0, steps=8, attack_steps=3)
    assert torch.isfinite(result.attack_radius).any()
    assert (result.radius < result.attack_radius).all(), (result.radius, result.attack_radius)
    generator = torch.Generator().manual_seed(seed)
    for index in range(result.masks.shape[0]):
        mask = result.masks[index].to(x.dtype)
        signs = torch.sign(torch.randn(32, *x.shape[1:], generator=generator))
        corners = (x + mask * float(result.radius[index]) * signs).clamp(0, 1)
        assert (robust_margins(model, corners, result.target) > 0).all(), index


def test_per_feature_takes_the_most_fragile_of_overlapping_patches():
    """Strided, overlapping windows (here 2x2 windows at stride 1 over a 3x3 image): a feature takes the smallest
    value of the windows that contain it, not whichever window came first."""
    windows = torch.zeros(4, 1, 3, 3, dtype=torch.bool)
    for row, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        windows[row, 0, r : r + 2, c : c + 2] = True
    result = opwise.certified_map(TwoInputReLU(), torch.tensor([[0.5, 0.3]]), eps_max=0.5, steps=2, attack=False)
    result.masks = windows
    spread = result.per_feature(torch.tensor([0.4, 0.1, 0.3, math.nan]))
    expected = torch.tensor([[[0.4, 0.1, 0.1], [0.3, 0.1, 0.1], [0.3, 0.3, math.nan]]])
    assert torch.equal(torch.isnan(spread), torch.isnan(expected))
    assert torch.allclose(spread.nan_to_num(-1.0), expected.nan_to_num(-1.0))


def test_unknown_search_is_refused():
    with pytest.raises(InputError, match="search must be 'linear' or 'bisect'"):
        opwise.certified_map(TwoInputReLU(), torch.tensor([[0.5, 0.3]]), search="newton")
