"""`opwise verify`: a per-sample table for a model from a factory file and inputs; bad input exits with code 2."""

import torch

from opwise.cli import main

FACTORY = """
import torch


def make():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
"""


def _factory(tmp_path) -> str:
    (tmp_path / "net.py").write_text(FACTORY)
    return f"{tmp_path / 'net.py'}:make"


def test_table_for_a_model_from_a_factory_file(tmp_path, capsys):
    torch.save(torch.rand(3, 4), tmp_path / "x.pt")
    code = main(["verify", _factory(tmp_path), "--input", str(tmp_path / "x.pt"), "--eps", "0.001"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].split()[:3] == ["sample", "target", "status"]
    assert len([line for line in out.splitlines() if line[:1].isdigit()]) == 3
    assert "3 verified" in out


def test_bad_eps_exits_with_code_two(tmp_path, capsys):
    torch.save(torch.rand(1, 4), tmp_path / "x.pt")
    code = main(["verify", _factory(tmp_path), "--input", str(tmp_path / "x.pt"), "--eps", "-1"])
    assert code == 2 and "eps" in capsys.readouterr().err


def test_vnnlib_needs_an_onnx_model(tmp_path, capsys):
    assert main(["verify", "model.pt", "property.vnnlib"]) == 2
    assert ".onnx" in capsys.readouterr().err


def test_explain_writes_one_picture_per_counterexample(tmp_path, capsys):
    torch.save(torch.rand(2, 4), tmp_path / "x.pt")
    out = tmp_path / "pictures"
    code = main(["verify", _factory(tmp_path), "--input", str(tmp_path / "x.pt"), "--eps", "5", "--explain", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "2 falsified" in printed
    assert sorted(p.name for p in out.iterdir()) == ["sample_0.png", "sample_1.png"]


def test_a_program_exported_for_batch_one_verifies_and_explains_its_counterexamples(tmp_path, capsys):
    """Verification runs batches (attack restarts, bound chunks), and the CLI refused a .pt2 exported without a
    dynamic batch; the engine re-traces it per batch size, so it verifies, and its counterexample is explained
    one point at a time."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    x = torch.rand(2, 4)
    torch.export.save(torch.export.export(model, (x[:1],)), tmp_path / "net.pt2")
    torch.save(x, tmp_path / "x.pt")
    code = main(["verify", str(tmp_path / "net.pt2"), "--input", str(tmp_path / "x.pt"), "--eps", "0.001"])
    assert code == 0 and "2 verified" in capsys.readouterr().out
    code = main(["verify", str(tmp_path / "net.pt2"), "--input", str(tmp_path / "x.pt"), "--eps", "1.0",
                 "--explain", str(tmp_path / "pictures")])
    assert code == 0 and "2 falsified" in capsys.readouterr().out
    assert sorted(path.name for path in (tmp_path / "pictures").iterdir()) == ["sample_0.png", "sample_1.png"]
