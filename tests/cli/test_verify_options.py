"""`opwise verify`: every option changes the result or is refused with one line and exit code 2."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from opwise.cli import main

FACTORY = """
import torch
from torch import nn

def net():
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
"""


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def net(tmp_path) -> tuple[str, str]:
    """A small ReLU net, and three inputs to verify around."""
    (tmp_path / "net.py").write_text(FACTORY)
    torch.manual_seed(3)
    torch.save(torch.rand(3, 4), tmp_path / "x.pt")
    return f"{tmp_path / 'net.py'}:net", str(tmp_path / "x.pt")


def results(capsys, tmp_path, *argv) -> list[dict]:
    out = tmp_path / "results.json"
    code, _, err = run(capsys, "verify", *argv, "--out", out)
    assert code == 0, err
    return json.loads(out.read_text())


def margins(records) -> list[float]:
    return [r["margin_lower"] for r in records]


@pytest.mark.parametrize("first, second", [
    (["--eps", "0.001"], ["--eps", "0.003"]),
    (["--norm", "inf"], ["--norm", "2"]),
    (["--norm", "2"], ["--norm", "1"]),
    (["--method", "ibp"], ["--method", "crown"]),
    (["--method", "crown", "--domain", "-1", "1"], ["--domain", "0", "1", "--method", "crown"]),
])
def test_options_change_the_margins(capsys, tmp_path, net, first, second):
    model, inputs = net
    torch.save(torch.zeros(3, 4), inputs)  # on the domain's edge: clipping to [0, 1] halves the ball
    one = results(capsys, tmp_path, model, "--input", inputs, "--eps", "0.005", *first)
    two = results(capsys, tmp_path, model, "--input", inputs, "--eps", "0.005", *second)
    assert all(r["margin_lower"] is not None for r in one + two)
    assert margins(one) != margins(two)


def test_auto_lirpa_method_names_give_the_same_margins(capsys, tmp_path, net):
    model, inputs = net
    assert margins(results(capsys, tmp_path, model, "--input", inputs, "--method", "backward")) == margins(
        results(capsys, tmp_path, model, "--input", inputs, "--method", "crown"))


def test_target_label_and_samples(capsys, tmp_path, net):
    model, inputs = net
    records = results(capsys, tmp_path, model, "--input", inputs, "--label", "2", "--samples", "2")
    assert [r["target"] for r in records] == [2, 2]
    digits = results(capsys, tmp_path, "builtin:cnn", "--method", "ibp", "--samples", "4")
    assert len(digits) == 4


def test_csv_and_counterexample_files(capsys, tmp_path, net):
    model, inputs = net
    out = tmp_path / "r.csv"
    code, text, err = run(capsys, "verify", model, "--input", inputs, "--eps", "0.5", "--method", "ibp", "--out", out)
    assert code == 0, err
    rows = list(csv.DictReader(out.open()))
    assert [row["status"] for row in rows] == ["falsified"] * 3
    from opwise.tracing.loading import load_model

    network = load_model(model).model
    for row in rows:
        counterexample = torch.from_numpy(np.load(row["counterexample"]))
        x = torch.load(inputs)[int(row["sample"])]
        assert (counterexample - x).abs().max() <= 0.5 + 1e-6
        assert int(network(counterexample).argmax()) != int(row["target"])
    assert "results written to" in text


def _hard_input(path: str) -> None:
    """A point where CROWN leaves eps 0.2 unknown but branch-and-bound verifies (found by a seeded search)."""
    torch.manual_seed(3)
    torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Linear(16, 16), torch.nn.Linear(16, 3))  # same draws as net()
    torch.save(torch.rand(1, 4), path)


def test_bab_runs_branch_and_bound_under_the_timeout(capsys, tmp_path, net):
    model, inputs = net
    _hard_input(inputs)
    plain = results(capsys, tmp_path, model, "--input", inputs, "--samples", "1", "--eps", "0.2", "--method", "crown")
    assert plain[0]["status"] == "unknown"
    bab = results(capsys, tmp_path, model, "--input", inputs, "--samples", "1", "--eps", "0.2", "--method", "crown",
                  "--bab", "--timeout", "1")
    assert bab[0]["status"] in ("verified", "timeout")  # branch-and-bound's answer, not the bounds' "unknown"


@pytest.mark.slow
def test_bab_completes_what_the_bounds_leave_unknown(capsys, tmp_path, net):
    model, inputs = net
    _hard_input(inputs)
    bab = results(capsys, tmp_path, model, "--input", inputs, "--samples", "1", "--eps", "0.2", "--method", "crown",
                  "--bab", "--timeout", "60")
    assert bab[0]["status"] == "verified" and bab[0]["margin_lower"] > 0


def test_bab_with_norm_2_splits_neurons_over_the_ball(capsys, tmp_path, net):
    """At L2 radius 0.36 the true margin stays positive (PGD finds +0.006) but CROWN leaves it unknown; --bab
    (refused for --norm 2 before) answers with GenBaB; at 0.5 the attack's counterexample lies in the L2 ball."""
    model, inputs = net
    _hard_input(inputs)
    common = (model, "--input", inputs, "--samples", "1", "--norm", "2", "--method", "crown")
    plain = results(capsys, tmp_path, *common, "--eps", "0.36")
    assert plain[0]["status"] == "unknown"
    bab = results(capsys, tmp_path, *common, "--eps", "0.36", "--bab", "--timeout", "2")
    assert bab[0]["status"] in ("verified", "timeout")  # branch-and-bound's answer, not the bounds' "unknown"
    falsified = results(capsys, tmp_path, *common, "--eps", "0.5", "--bab", "--timeout", "20")
    assert falsified[0]["status"] == "falsified"
    x, counterexample = torch.load(inputs), torch.from_numpy(np.load(falsified[0]["counterexample"]))
    assert float((counterexample.double() - x.double()).norm()) <= 0.5


@pytest.mark.slow
def test_bab_with_norm_2_completes_what_the_bounds_leave_unknown(capsys, tmp_path, net):
    model, inputs = net
    _hard_input(inputs)
    bab = results(capsys, tmp_path, model, "--input", inputs, "--samples", "1", "--norm", "2", "--method", "crown",
                  "--eps", "0.36", "--bab", "--timeout", "60")
    assert bab[0]["status"] == "verified" and bab[0]["margin_lower"] > 0


def test_quiet_prints_nothing_but_writes(capsys, tmp_path, net):
    model, inputs = net
    out = tmp_path / "q.json"
    code, text, err = run(capsys, "verify", model, "--input", inputs, "--method", "ibp", "--quiet", "--out", out)
    assert code == 0 and text == "" and len(json.loads(out.read_text())) == 3


@pytest.mark.parametrize("argv, message", [
    (["--samples", "-3"], "at least 1"),
    (["--samples", "0"], "at least 1"),
    (["--samples", "9"], "only 3 input(s)"),
    (["--domain", "nan", "1"], "finite"),
    (["--domain", "1", "0"], "LOW must be below HIGH"),
    (["--timeout", "0"], "above zero"),
    (["--timeout", "-5"], "above zero"),
    (["--timeout", "nan"], "finite"),
    (["--eps", "inf"], "finite"),
    (["--method", "crwn"], "did you mean 'crown'"),
    (["--norm", "3"], "invalid choice"),
    (["--target", "7"], "out of range"),
    (["--out", "OUT"], "is a directory"),
    (["--out", "OUT/missing/r.json"], "does not exist"),
    (["--out", "OUT/r.txt"], ".json or .csv"),
    (["--device", "cuda:99"], "--device"),
    (["--input-shape", "1,4"], "not both"),
])
def test_bad_options_are_one_line_and_exit_2(capsys, tmp_path, net, argv, message):
    model, inputs = net
    argv = [a.replace("OUT", str(tmp_path)) for a in argv]
    code, out, err = run(capsys, "verify", model, "--input", inputs, *argv)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert out == ""  # refused before any work


def test_vnnlib_refuses_robustness_options_and_checks_the_output_first(capsys, tmp_path):
    (tmp_path / "p.vnnlib").write_text("(declare-const X_0 Real)\n")
    (tmp_path / "n.onnx").write_bytes(b"")
    code, _, err = run(capsys, "verify", tmp_path / "n.onnx", tmp_path / "p.vnnlib", "--method", "ibp", "--eps", "0.5")
    assert code == 2 and "--eps, --method do not apply with a VNN-LIB property" in err
    code, _, err = run(capsys, "verify", tmp_path / "n.onnx", tmp_path / "p.vnnlib", "--out", tmp_path)
    assert code == 2 and "is a directory" in err
    code, _, err = run(capsys, "verify", tmp_path / "n.onnx", tmp_path / "missing.vnnlib")
    assert code == 2 and "does not exist" in err


def test_vnnlib_instance_with_out_and_timeout(sources, capsys, tmp_path):
    lines = [f"(declare-const X_{i} Real)" for i in range(64)] + [f"(declare-const Y_{i} Real)" for i in range(4)]
    lines += [f"(assert (>= X_{i} 0.5))\n(assert (<= X_{i} 0.5))" for i in range(64)]
    lines += ["(assert (>= Y_0 1000.0))"]  # unreachable on a point: unsat
    (tmp_path / "p.vnnlib").write_text("\n".join(lines) + "\n")
    out = tmp_path / "result.txt"
    code, text, err = run(capsys, "verify", sources / "net.onnx", tmp_path / "p.vnnlib", "--timeout", "30", "--out", out)
    assert code == 0, err
    assert text.startswith("unsat") and out.read_text().strip() == "unsat"
    assert not math.isnan(float(text.split("(")[1].split()[0]))


def test_a_deeply_nested_vnnlib_is_one_line_and_exit_2(sources, capsys, tmp_path):
    lines = [f"(declare-const X_{i} Real)" for i in range(64)] + [f"(declare-const Y_{i} Real)" for i in range(4)]
    lines += ["(assert " + "(and " * 5000 + "(>= Y_0 Y_1)" + ")" * 5000 + ")"]
    (tmp_path / "deep.vnnlib").write_text("\n".join(lines) + "\n")
    code, _, err = run(capsys, "verify", sources / "net.onnx", tmp_path / "deep.vnnlib", "--timeout", "5")
    assert code == 2 and "nested deeper than" in err and err.count("\n") == 1


def test_a_live_line_on_a_terminal_unless_quiet(capsys, tmp_path, net, monkeypatch):
    """On a terminal the bound passes draw one live line (α-CROWN's steps); --quiet and a non-terminal stderr
    get none."""
    import sys

    model, inputs = net
    argv = ("verify", model, "--input", inputs, "--samples", "1", "--method", "alpha-crown", "--eps", "0.001")
    code, _, err = run(capsys, *argv)
    assert code == 0 and err == ""  # stderr is not a terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, text, err = run(capsys, *argv)
    assert code == 0 and err.startswith("\ralpha-crown: ") and err.endswith("\n") and "\r" not in text
    code, _, err = run(capsys, *argv, "--quiet")
    assert code == 0 and err == ""
