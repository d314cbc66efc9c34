"""`opwise verify`: a per-sample table for a saved model and inputs; bad input exits with code 2."""

import torch

from opwise.cli import main
from tests.bounds.helpers import randomize_


def test_table_for_a_saved_model(tmp_path, capsys):
    model = randomize_(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)), 0)
    torch.save(model, tmp_path / "model.pt")
    torch.save(torch.rand(3, 4), tmp_path / "x.pt")
    code = main(["verify", str(tmp_path / "model.pt"), "--input", str(tmp_path / "x.pt"), "--eps", "0.001"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].split()[:3] == ["sample", "target", "status"]
    assert len([line for line in out.splitlines() if line[:1].isdigit()]) == 3
    assert "3 verified" in out


def test_bad_eps_exits_with_code_two(tmp_path, capsys):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    torch.save(model, tmp_path / "model.pt")
    torch.save(torch.rand(1, 4), tmp_path / "x.pt")
    code = main(["verify", str(tmp_path / "model.pt"), "--input", str(tmp_path / "x.pt"), "--eps", "-1"])
    assert code == 2 and "eps" in capsys.readouterr().err


def test_vnnlib_needs_an_onnx_model(tmp_path, capsys):
    assert main(["verify", "model.pt", "property.vnnlib"]) == 2
    assert ".onnx" in capsys.readouterr().err
