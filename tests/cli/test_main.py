"""`opwise` itself: --version, one-line argument errors, --quiet, --device, warnings as one line."""

from __future__ import annotations

import warnings

import pytest
import torch

import opwise
from opwise.cli import main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"opwise {opwise.__version__}"


@pytest.mark.parametrize("argv", [["nonsense"], ["trace", "--no-such-option"], ["verify", "--eps"]])
def test_argument_errors_are_one_line(capsys, argv):
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "error:" in error and "usage" not in error


@pytest.mark.parametrize("command", ["trace", "explain", "verify"])
def test_cuda_is_refused_where_there_is_none(capsys, command, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main([command, "--device", "cuda", *(["--out", str(tmp_path / "r.png")] if command == "explain" else [])]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_runs_explain_and_verify(capsys, tmp_path):
    assert main(["explain", "--device", "cuda", "--out", str(tmp_path / "r.png"), "--save", str(tmp_path / "r.npy")]) == 0
    assert main(["verify", "--device", "cuda", "--method", "crown", "--samples", "2"]) == 0
    assert main(["trace", "--device", "cuda"]) == 0


def test_quiet_trace(capsys):
    assert main(["trace", "--quiet"]) == 0
    assert capsys.readouterr().out == ""


def test_opwise_warnings_are_one_line_each_and_others_are_dropped(capsys, monkeypatch):
    from opwise.cli import trace as command

    def noisy(args):
        warnings.warn("from somewhere else", UserWarning)  # attributed to this test file: dropped
        command.warn_for_test()
        return 0

    def warn_for_test():
        warnings.warn("relevance is odd\nover two lines", UserWarning, stacklevel=1)

    monkeypatch.setattr(command, "warn_for_test", warn_for_test, raising=False)
    monkeypatch.setattr(command, "run", noisy)
    warn_for_test.__code__ = warn_for_test.__code__.replace(co_filename=command.__file__)
    assert main(["trace"]) == 0
    assert capsys.readouterr().err == "opwise trace: warning: relevance is odd over two lines\n"
    assert main(["trace", "--quiet"]) == 0  # quiet silences the command's printing, not what may be off
    assert capsys.readouterr().err == "opwise trace: warning: relevance is odd over two lines\n"


def test_an_impossible_allocation_is_one_line_and_exit_2(capsys, tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    shape = [1, 1000000, 1000000]  # 4 TB of float32: no machine allocates it
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "huge",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "huge.onnx")
    assert main(["trace", str(tmp_path / "huge.onnx")]) == 2
    error = capsys.readouterr().err
    assert "GiB of memory" in error and error.count("\n") == 1
