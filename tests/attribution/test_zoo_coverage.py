"""Every model of the test zoo is explainable with no model-specific code: every input-dependent node has a
relevance rule, and explain() returns finite relevance shaped like the explained input."""

from __future__ import annotations

import pytest
import torch

import opwise
from opwise.rules import coverage
from tests.tracing.test_zoo import NAMES

pytest.importorskip("transformers")

from opwise.models.zoo import zoo_case  # noqa: E402

CONVNETS = ("vgg_bn", "resnet_bn", "resnet", "convnext")


def _largest_output(output: torch.Tensor) -> torch.Tensor:
    """One scalar per sample: the output entry of largest magnitude (a logit, or a token/frame score); the
    first entry can be exactly 0 (e.g. Whisper's tied output projection), which would explain nothing."""
    flat = output.reshape(output.shape[0], -1)
    return flat.gather(1, flat.detach().abs().argmax(1, keepdim=True)).squeeze(1)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", NAMES)
def test_zoo_model_has_full_rule_coverage_and_finite_relevance(name):
    case = zoo_case(name)
    graph = opwise.trace(case.model, *case.args, output=case.output, **case.kwargs)
    report = coverage(graph)
    assert report.fraction == 1.0, str(report)
    inputs = graph.layout.flatten(case.args, case.kwargs)
    composite = "epsilon-plus-flat" if name in CONVNETS else "attn-lrp"
    explanation = opwise.explain(graph, *inputs, composite=composite, target=_largest_output)
    relevance = explanation.relevance if isinstance(explanation.relevance, torch.Tensor) else explanation.relevance[0]
    explained = inputs[0]
    expected = tuple(explained.shape) if explained.is_floating_point() else tuple(explained.shape[:2])
    assert tuple(relevance.shape)[: len(expected)] == expected
    assert torch.isfinite(relevance).all() and relevance.abs().sum() > 0
