"""`opwise trace`: the table and summary, model specs and shapes, one-line errors with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from opwise.cli import main

ROOT = Path(__file__).resolve().parents[2]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_default_is_the_builtin_cnn(capsys):
    code, out, err = run(capsys, "trace")
    assert code == 0 and err == ""
    header, rule, *rows, summary, rule_coverage, bound_coverage = out.strip().splitlines()
    assert header.split() == ["node", "op", "shape", "input-dependent", "rule", "bound", "module"]
    ops = [row.split()[1] for row in rows]
    assert ops[0] == "aten.convolution.default" and ops[-1] == "aten.linear.default"
    assert "aten.batch_norm.default" in ops and "aten.max_pool2d.default" in ops
    assert summary.endswith("inputs arg0 1x1x8x8 -> output 1x10; traced with export")
    assert rule_coverage.startswith("relevance rules cover 11/11") and bound_coverage.startswith("bound transfers cover 100%")


@pytest.mark.parametrize("name", ["mlp", "transformer"])
def test_other_builtins_with_input_shape(capsys, name):
    code, out, _ = run(capsys, "trace", f"builtin:{name}", "--input-shape", "3,1,8,8")
    assert code == 0
    assert "inputs arg0 3x1x8x8 -> output 3x10" in out


def test_factory_file_needs_and_takes_an_input_shape(capsys, tmp_path):
    path = tmp_path / "net.py"
    path.write_text(textwrap.dedent("""
        import torch
        def make():
            return torch.nn.Sequential(torch.nn.Linear(5, 2), torch.nn.Sigmoid())
    """))
    code, _, err = run(capsys, "trace", f"{path}:make")
    assert code == 2 and "--input-shape" in err
    code, out, _ = run(capsys, "trace", f"{path}:make", "--input-shape", "2x5")
    assert code == 0 and "aten.sigmoid.default" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["trace", "builtin:resnet"], "unknown built-in model 'resnet'"),
        (["trace", "nowhere.py:make"], "model file nowhere.py does not exist"),
        (["trace", "--input-shape", "1,3,32,32"], "does not accept inputs of shape (1, 3, 32, 32)"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("opwise trace: error: ") and message in err


def test_user_code_failures_are_one_line(capsys, tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("import torch\ndef make():\n    raise KeyError('no such layer')\n")
    code, _, err = run(capsys, "trace", f"{path}:make")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "make() raised KeyError" in err


def test_debug_shows_the_traceback(capsys):
    code, _, err = run(capsys, "--debug", "trace", "builtin:resnet")
    assert code == 2 and "Traceback (most recent call last)" in err


def test_bad_shape_argument_is_a_usage_error(capsys):
    assert main(["trace", "--input-shape", "1,a"]) == 2  # main returns the code argparse exits with
    error = capsys.readouterr().err
    assert "write it like 1,3,32,32" in error and error.count("\n") == 1


def test_python_dash_m_opwise(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "opwise", "trace", "builtin:resnet"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "opwise trace: error: unknown built-in model 'resnet'; built-in models are cnn, mlp, transformer"
    ]


DATA_DEPENDENT = """
import torch

class Branching(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(3, 3)

    def forward(self, x):
        y = self.layer(x)
        return torch.relu(y) if y.sum() > 0 else torch.sigmoid(y)

class ParameterBranching(Branching):
    def forward(self, x):
        y = self.layer(x)
        return torch.relu(y) if self.layer.bias.sum() > -10 else torch.sigmoid(y)

class ThroughNumpy(torch.nn.Module):
    def forward(self, x):
        return torch.from_numpy(x.numpy() * 2)

def branching():
    return Branching(), torch.randn(2, 3)

def parameter_branching():
    return ParameterBranching(), torch.randn(2, 3)

def through_numpy():
    return ThroughNumpy(), torch.randn(4, 3)
"""


def test_fallback_tracer_runs_quietly(capsys, tmp_path):
    path = tmp_path / "branching.py"
    path.write_text(DATA_DEPENDENT)
    code, out, err = run(capsys, "trace", f"{path}:parameter_branching")
    assert code == 0 and err == ""
    assert "traced with fx" in out.strip().splitlines()[-3]


def test_a_branch_on_the_input_is_one_line_naming_it(capsys, tmp_path):
    """Regression (issue 15): the example's branch was traced and stood in for the model."""
    path = tmp_path / "branching.py"
    path.write_text(DATA_DEPENDENT)
    code, out, err = run(capsys, "trace", f"{path}:branching")
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert "branching.py:11 (`return torch.relu(y) if y.sum() > 0 else torch.sigmoid(y)`)" in line


def test_model_no_tracer_accepts_is_one_line(capsys, tmp_path):
    path = tmp_path / "numpy_model.py"
    path.write_text(DATA_DEPENDENT)
    code, out, err = run(capsys, "trace", f"{path}:through_numpy")
    assert code == 2 and out == ""
    assert err.startswith("opwise trace: error: the traced output") and ".numpy()" in err
    assert len(err.strip().splitlines()) == 1
