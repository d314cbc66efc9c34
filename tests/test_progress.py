"""Live progress: searches report each round to a callback; `opwise.verify(verbose=True)` draws one line."""

from __future__ import annotations

import io

import torch

import opwise
from opwise.bounds import BoundedModel
from opwise.bounds.spec import Disjunct, Specification
from opwise.bounds.strategies.genbab.search import branch_and_bound
from opwise.bounds.strategies.input_split import input_split_bab
from opwise.progress import LiveLine, describe, eta


def _net() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 1)).eval()


def _hard_spec(model) -> Specification:
    grid = torch.cartesian_prod(torch.linspace(-1, 1, 201), torch.linspace(-1, 1, 201))
    floor = float(model(grid).min().detach())
    return Specification(-torch.ones(1, 2), torch.ones(1, 2), [Disjunct(torch.ones(1, 1), torch.tensor([floor - 1e-4]))])


def test_both_searches_report_every_round():
    model = _net()
    spec = _hard_spec(model)
    reports = []
    result = branch_and_bound(BoundedModel(model, torch.zeros(1, 2)), spec, method="crown", timeout=3,
                              progress=reports.append)
    assert result.stats["rounds"] == len(reports) > 0
    assert all({"open", "visited", "seconds", "left"} <= set(r) and r["search"] == "GenBaB" for r in reports)
    assert [r["visited"] for r in reports] == sorted(r["visited"] for r in reports)
    reports.clear()
    bounds = lambda lo, up, C: BoundedModel(model, lo[:1]).compute_bounds(x_lower=lo, x_upper=up, C=C).lower  # noqa: E731
    result = input_split_bab(bounds, model, spec, timeout=3, progress=reports.append)
    assert result.stats["rounds"] == len(reports) > 0 and reports[-1]["search"] == "input splitting"


def test_verify_draws_nothing_unless_asked(capsys):
    """At eps 0.55 the margin holds (about 0.018 on a grid) but α-CROWN's bound is negative, so GenBaB must run
    rounds: silent by default, one live line with verbose=True that shows the bound passes too."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 3)).eval()
    options = {"timeout": 20, "strategy": "genbab"}
    result = opwise.verify(model, torch.zeros(1, 2), eps=0.55, bab=dict(options))
    assert result.status == "verified" and result.stats["bab"]["rounds"] >= 1
    assert capsys.readouterr().err == ""
    result = opwise.verify(model, torch.zeros(1, 2), eps=0.55, bab=dict(options), verbose=True)
    assert result.status == "verified" and result.stats["bab"]["rounds"] >= 1
    err = capsys.readouterr().err
    assert err.startswith("\rcrown: layer 1/2") and err.endswith("\n")  # the root bound pass, layer by layer,
    assert "\rGenBaB: " in err and "open" in err and err.count("\n") == 1  # then the search, on the same line


def _terminal(written: str) -> str:
    """What a terminal shows after `written`: a carriage return moves back to column 0, characters overwrite."""
    screen: list[str] = []
    column = 0
    for character in written:
        if character == "\r":
            column = 0
        elif character == "\n":
            screen, column = [], 0
        else:
            screen[column : column + 1] = [character]
            column += 1
    return "".join(screen)


def test_a_shorter_report_leaves_nothing_of_the_longer_one_before_it():
    long = {"search": "GenBaB", "open": 123456, "visited": 999999, "lower": -0.123456, "seconds": 100.0, "left": 20.0}
    short = {"search": "GenBaB", "open": 1, "visited": 2, "seconds": 0.5}
    stream = io.StringIO()
    line = LiveLine(stream, interval=0.0)
    line(long)
    line(short)
    assert _terminal(stream.getvalue()).rstrip() == describe(short)


def test_eta():
    assert eta(5, 20, 10.0) == 30.0


def test_robustness_needs_two_outputs():
    import pytest

    from opwise.errors import InputError

    with pytest.raises(InputError, match="at least two outputs"):
        opwise.verify(_net(), torch.zeros(1, 2), eps=0.1)


def test_a_new_phase_is_drawn_at_once_and_a_closed_line_starts_afresh():
    """A fast search finished inside the interval after the bound pass's first report, and its rounds never showed."""
    stream = io.StringIO()
    line = LiveLine(stream, interval=60.0)
    line({"search": "crown", "layer": 1, "layers": 2, "seconds": 0.0})
    line({"search": "crown", "layer": 2, "layers": 2, "seconds": 0.1})  # same phase, inside the interval: skipped
    line({"search": "GenBaB", "open": 3, "visited": 5, "seconds": 0.2})
    line.close()
    line({"search": "GenBaB", "open": 1, "visited": 2, "seconds": 0.1})  # the next sample's line
    line.close()
    assert stream.getvalue().count("\r") == 3 and "layer 2/2" not in stream.getvalue()
    assert stream.getvalue().split("\n")[1].startswith("\rGenBaB: 1 open")
