"""Composites choose rules by module name, module type, first layer and operator."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import opwise
from opwise.rules import Composite, Epsilon, Flat, Gamma, ZPlus, first_layers, get_composite


def _model():
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.Flatten(), nn.Linear(8, 3)).eval()


def _by_module(graph, chosen):
    return {graph.info(n).module_path: chosen[n.name] for n in graph.call_nodes() if n.name in chosen}


def test_epsilon_plus_flat_assignment():
    model = _model()
    graph = opwise.trace(model, torch.randn(1, 1, 6, 6))
    chosen = _by_module(graph, get_composite("epsilon-plus-flat").assign(graph, model))
    assert isinstance(chosen["0"], Flat) and isinstance(chosen["2"], ZPlus) and isinstance(chosen["4"], Epsilon)
    assert len(first_layers(graph)) == 1


def test_user_composite_by_type_name_and_operator():
    model = _model()
    graph = opwise.trace(model, torch.randn(1, 1, 6, 6))
    composite = Composite(
        by_operator={"aten.convolution": Gamma(0.5)},
        by_module_type={nn.Linear: Epsilon(epsilon=0.1)},
        by_module_name={"0": ZPlus()},
    )
    chosen = _by_module(graph, composite.assign(graph, model))
    assert isinstance(chosen["0"], ZPlus) and chosen["2"].gamma == 0.5 and chosen["4"].epsilon == 0.1
    assert opwise.explain(model, torch.randn(2, 1, 6, 6), composite=composite).relevance.shape == (2, 1, 6, 6)


def test_unknown_composite():
    with pytest.raises(opwise.InputError, match="epsilon-plus-flat"):
        get_composite("zennit")


def test_parameters_a_composite_does_not_take_are_named():
    with pytest.raises(opwise.InputError, match=r"'epsilon' takes no parameter stabilizer; it takes epsilon"):
        get_composite("epsilon", stabilizer=1e-9)
    with pytest.raises(opwise.InputError, match=r"Composite object carries its own"):
        get_composite(get_composite("epsilon"), epsilon=1e-9)
    rules = get_composite("epsilon-plus", stabilizer=1e-9).by_operator.values()
    assert [r.stabilizer for r in rules if isinstance(r, ZPlus)] == [1e-9]


@pytest.mark.parametrize("typed, name", [
    ("epsilon_plus_flat", "epsilon-plus-flat"), ("EpsilonPlusFlat", "epsilon-plus-flat"),
    ("epsilon_gamma_box", "epsilon-gamma-box"), ("EpsilonAlpha2Beta1", "epsilon-alpha2-beta1"),
    ("AttnLRP", "attn-lrp"), ("cp_lrp", "cp-lrp"), ("Epsilon", "epsilon"),
])
def test_zennit_names_are_aliases(typed, name):
    from opwise.rules.composites import COMPOSITES

    mine, theirs = get_composite(typed), COMPOSITES[name]()
    assert repr((mine.first, mine.by_operator, mine.by_module_type)) == repr((theirs.first, theirs.by_operator, theirs.by_module_type))


def test_typo_and_empty_name_are_refused_with_a_suggestion():
    with pytest.raises(opwise.InputError, match="did you mean 'epsilon-plus-flat'"):
        get_composite("epsilon-plus-flt")
    with pytest.raises(opwise.InputError, match="empty"):
        get_composite("")
