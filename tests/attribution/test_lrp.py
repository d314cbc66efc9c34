"""The Captum-shaped `LRP`: attributions, and Captum's convergence delta."""

import torch

import opwise
from opwise.attribution import LRP


def test_convergence_delta_is_relevance_total_minus_explained_output():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3)).eval()
    x = torch.rand(4, 5)
    attributions, delta = LRP(model, composite="epsilon-plus").attribute(x, target=2, return_convergence_delta=True)
    explanation = opwise.explain(model, x, target=2, composite="epsilon-plus")
    torch.testing.assert_close(attributions, explanation.relevance)
    expected = explanation.relevance.sum(1) - model(x)[:, 2].detach()
    torch.testing.assert_close(delta, expected, rtol=1e-5, atol=1e-6)
    assert delta.abs().max() > 0  # biases absorb relevance here: the delta is not trivially zero
    assert torch.equal(LRP(model, composite="epsilon-plus").attribute(x, target=2), attributions)
