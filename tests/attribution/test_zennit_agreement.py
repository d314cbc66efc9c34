"""opwise and Zennit agree on the same composite and canonizer (VGG-like and ResNet-like with batch norm)."""

from __future__ import annotations

import warnings

import pytest
import torch

import opwise
from tests.attribution.zennit_setup import import_zennit
from tests.attribution.models import Sum, randomize_batch_norm, resnet_like, vgg_like


def _zennit_relevance(model, x, target, composite_name):
    import_zennit()
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit import composites
    from zennit.rules import Norm

    layer_map = [(Sum, Norm())]
    canonizers = [SequentialMergeBatchNorm()]
    if composite_name == "epsilon-gamma-box":
        composite = composites.EpsilonGammaBox(low=-3.0, high=3.0, layer_map=layer_map, canonizers=canonizers)
    else:
        kind = {"epsilon-plus-flat": "EpsilonPlusFlat", "epsilon-plus": "EpsilonPlus",
                "epsilon-alpha2-beta1": "EpsilonAlpha2Beta1"}[composite_name]
        composite = getattr(composites, kind)(layer_map=layer_map, canonizers=canonizers)
    with Gradient(model=model, composite=composite) as attributor:
        out, relevance = attributor(x, torch.eye(5)[target] * model(x).detach())
    return relevance


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()


@pytest.mark.parametrize("build", [vgg_like, pytest.param(resnet_like, marks=pytest.mark.slow)], ids=["vgg", "resnet"])
def test_agrees_with_zennit(build):
    torch.manual_seed(0)
    model = randomize_batch_norm(build())
    x = torch.randn(4, 3, 16, 16)
    target = torch.tensor([0, 1, 2, 3])
    for composite, options in [("epsilon-plus-flat", {}), ("epsilon-gamma-box", {"low": -3.0, "high": 3.0}),
                               ("epsilon-plus", {}), ("epsilon-alpha2-beta1", {})]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # random weights: biases take much of the relevance
            ours = opwise.explain(model, x, target=target, composite=composite, **options).relevance
        theirs = _zennit_relevance(model, x, target, composite)
        for sample in range(4):
            assert _pearson(ours[sample], theirs[sample]) >= 0.999, (composite, sample)
        torch.testing.assert_close(ours.sum((1, 2, 3)), theirs.sum((1, 2, 3)), rtol=1e-3, atol=1e-6)
