"""explain_counterexample: relevance at x and x' conserves as explain does; classes, margins and overlap."""

from __future__ import annotations

import pytest
import torch

import opwise
from opwise.errors import InputError


def _relu_mlp(inputs: int, classes: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(inputs, 12, bias=False), torch.nn.ReLU(), torch.nn.Linear(12, classes, bias=False)
    ).eval()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_relevance_at_both_points_conserves_as_explain_does(seed):
    model = _relu_mlp(6, 4, seed)
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 6, generator=generator)
    x_prime = x + 0.5 * torch.randn(1, 6, generator=generator)
    c = opwise.explain_counterexample(model, x, x_prime, composite="epsilon")
    # bias-free ReLU net under the epsilon rule: input relevance sums to the explained logit
    assert torch.allclose(c.conservation[:, 0], c.conservation[:, 1], atol=1e-4, rtol=1e-3)
    assert c.conservation.shape == (4, 2)
    with torch.no_grad():
        y, y_prime = model(x)[0], model(x_prime)[0]
    assert float(c.relevance_true_x.sum()) == pytest.approx(float(y[c.true_class]), abs=1e-4)
    assert float(c.relevance_adversarial_x_prime.sum()) == pytest.approx(float(y_prime[c.adversarial_class]), abs=1e-4)
    # so the difference map carries exactly the change of the true-class logit
    assert float(c.difference.sum()) == pytest.approx(float(y_prime[c.true_class] - y[c.true_class]), abs=1e-4)
    # and each map equals what explain gives for that point alone
    alone = opwise.explain(model, x_prime, target=c.true_class, composite="epsilon").relevance
    assert torch.allclose(c.relevance_true_x_prime, alone, atol=1e-5)


def test_classes_margins_and_overlap_of_a_linear_counterexample():
    model = torch.nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    x = torch.tensor([[0.5, 0.4, 0.1]])
    x_prime = torch.tensor([[0.5, 1.5, 0.1]])  # only feature 1 moved: class 1 now wins
    c = opwise.explain_counterexample(model, x, x_prime, k=1, composite="epsilon")
    assert (c.true_class, c.adversarial_class) == (0, 1)
    assert c.margin_at_x == pytest.approx(1.0 - 0.4)
    assert c.margin_at_x_prime == pytest.approx(1.0 - 1.5)
    assert torch.equal(c.perturbation, x_prime - x)
    # the true class ignores feature 1, so its relevance does not change: the top change is a tie at 0 ...
    assert float(c.difference.abs().max()) == pytest.approx(0.0, abs=1e-6)
    # ... while the winning class's relevance moved exactly on the perturbed feature
    change = (c.relevance_adversarial_x_prime - c.relevance_adversarial_x)[0]
    assert int(change.abs().argmax()) == 1 and int(c.top_perturbed[0]) == 1


def test_overlap_counts_shared_top_features():
    model = torch.nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))
    x = torch.full((1, 4), 1.0)
    x_prime = torch.tensor([[-3.0, -2.0, 1.0, 1.0]])
    c = opwise.explain_counterexample(model, x, x_prime, k=2, composite="epsilon")
    assert sorted(c.top_changed.tolist()) == [0, 1] and sorted(c.top_perturbed.tolist()) == [0, 1]
    assert c.overlap == 1.0


def test_token_inputs_get_one_value_per_token():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4, 2, bias=False))
    x = torch.randn(1, 3, 4)
    x_prime = x.clone()
    x_prime[0, 2] += 2.0
    c = opwise.explain_counterexample(model, x, x_prime, tokens=["a", "b", "c"], composite="epsilon")
    assert c.relevance_true_x.shape == (1, 3) and c.difference.shape == (1, 3)
    assert c.perturbation.tolist() == [[0.0, 0.0, 2.0]]
    assert int(c.top_perturbed[0]) == 2
    assert float(c.difference[0, :2].abs().max()) == pytest.approx(0.0, abs=1e-6)


def test_bad_inputs_raise_input_errors():
    model = torch.nn.Linear(3, 2)
    with pytest.raises(InputError, match="batch dimension of 1"):
        opwise.explain_counterexample(model, torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(InputError, match="as many values"):
        opwise.explain_counterexample(model, torch.zeros(1, 3), torch.zeros(1, 4))
    with pytest.raises(InputError, match="out of range"):
        opwise.explain_counterexample(model, torch.zeros(1, 3), torch.ones(1, 3), true_class=5)
    with pytest.raises(InputError, match="embedding sequence"):
        opwise.explain_counterexample(model, torch.zeros(1, 3), torch.ones(1, 3), tokens=["a"])


def test_default_composite_tells_the_features_of_a_dense_first_layer_apart():
    """With the flat rule on the first layer (epsilon-plus-flat, the default before) every input of an MLP got
    the same share, so the maps at x and x′ were uniform and showed nothing of the perturbation."""
    model = _relu_mlp(6, 4, 0)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, 6, generator=generator)
    x_prime = x + 0.5 * torch.randn(1, 6, generator=generator)
    c = opwise.explain_counterexample(model, x, x_prime)
    for relevance in (c.relevance_true_x, c.relevance_true_x_prime, c.relevance_adversarial_x_prime):
        assert float(relevance.std()) > 1e-3 * float(relevance.abs().max())
    assert float(c.difference.abs().max()) > 0
