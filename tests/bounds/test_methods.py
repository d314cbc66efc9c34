"""Bounding-method names: auto_LiRPA's spellings map to ours; typos get a suggestion."""

import pytest
import torch

import opwise
from opwise.bounds.methods import method_name


@pytest.mark.parametrize("typed, name", [
    ("CROWN", "crown"), ("IBP", "ibp"), ("backward", "crown"), ("CROWN-IBP", "crown-ibp"),
    ("IBP+backward", "crown-ibp"), ("alpha-CROWN", "alpha-crown"), ("CROWN-Optimized", "alpha-crown"),
    ("forward", "forward-crown"), ("forward+backward", "forward-crown"), ("alpha_crown", "alpha-crown"),
])
def test_auto_lirpa_names(typed, name):
    assert method_name(typed) == name


def test_compute_bounds_takes_the_aliases():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    x = torch.rand(1, 3)
    ours = opwise.compute_bounds(model, x, eps=0.1, method="crown")
    theirs = opwise.compute_bounds(model, x, eps=0.1, method="backward")
    assert torch.equal(ours.lower, theirs.lower) and torch.equal(ours.upper, theirs.upper)


def test_typo_suggests_and_auto_only_when_allowed():
    with pytest.raises(opwise.InputError, match="did you mean 'crown'"):
        method_name("crwn")
    with pytest.raises(opwise.InputError):
        method_name("auto")
    assert method_name("AUTO", extra=("auto",)) == "auto"


def test_every_entry_point_takes_the_aliases():
    """BoundedModel and certified_map refused auto_LiRPA's names that compute_bounds and `opwise verify` took
    (the names were resolved in the callers, not where methods are checked)."""
    from opwise.bounds import BoundedModel

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).eval()
    x = torch.rand(1, 2)
    bounded = BoundedModel(model, x)
    ours = bounded.compute_bounds(x, eps=0.1, method="crown")
    theirs = bounded.compute_bounds(x, eps=0.1, method="backward")
    assert theirs.method == "crown" and torch.equal(ours.lower, theirs.lower)
    mapped = opwise.certified_map(model, x, method="CROWN-IBP", eps_max=0.2, steps=2, attack=False)
    assert mapped.method == "crown-ibp"
    with pytest.raises(opwise.InputError, match="did you mean 'crown'"):
        bounded.compute_bounds(x, eps=0.1, method="crwn")
