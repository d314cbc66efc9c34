"""`opwise certify` and `opwise report`: a map PNG and an HTML page for a factory model; bad input exits with 2."""

import re

import numpy as np

from opwise.cli import main

FACTORY = """
import torch


def make():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(3 * 6 * 6, 4))
    return model.eval(), (torch.rand(1, 1, 6, 6),)
"""


def _factory(tmp_path) -> str:
    (tmp_path / "net.py").write_text(FACTORY)
    return f"{tmp_path / 'net.py'}:make"


def test_certify_writes_a_map_and_prints_its_numbers(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.full((6, 6), 0.5, dtype="float32"))
    out = tmp_path / "map.png"
    code = main(["certify", _factory(tmp_path), "--input", str(tmp_path / "x.npy"), "--patch", "3", "--steps", "3",
                 "--eps-max", "0.4", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and out.stat().st_size > 1000
    assert re.search(r"class \d: 4 patches, \d+ batched bound passes \(crown\)", printed)
    assert re.search(r"certified radius: min \d\.\d{4}", printed) and "Spearman" in printed


def test_certify_by_branch_and_bound(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.full((6, 6), 0.5, dtype="float32"))
    code = main(["certify", _factory(tmp_path), "--input", str(tmp_path / "x.npy"), "--patch", "3", "--steps", "3",
                 "--eps-max", "0.4", "--method", "bab", "--out", str(tmp_path / "map.png")])
    assert code == 0
    assert re.search(r"class \d: 4 patches, \d+ batched bound passes \(bab\)", capsys.readouterr().out)


def test_certify_with_a_missing_input_file_exits_with_2(tmp_path, capsys):
    code = main(["certify", _factory(tmp_path), "--input", str(tmp_path / "missing.npy")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_certify_takes_auto_lirpa_method_names(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.full((6, 6), 0.5, dtype="float32"))
    code = main(["certify", _factory(tmp_path), "--input", str(tmp_path / "x.npy"), "--patch", "3", "--steps", "2",
                 "--eps-max", "0.4", "--method", "IBP", "--out", str(tmp_path / "map.png")])
    assert code == 0 and "batched bound passes (ibp)" in capsys.readouterr().out
    code = main(["certify", _factory(tmp_path), "--input", str(tmp_path / "x.npy"), "--method", "crwn"])
    assert code == 2 and "did you mean 'crown'" in capsys.readouterr().err


def test_certify_refuses_negative_steps(tmp_path, capsys):
    """--steps -3 ran one coarse pass in silence (a bisection tolerance of 8 × eps-max)."""
    code = main(["certify", _factory(tmp_path), "--steps", "-3"])
    assert code == 2 and "at least 0" in capsys.readouterr().err


BARE_FACTORY = """
import torch


def make():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 4)).eval()
"""


def test_a_model_without_example_inputs_takes_the_input_file(tmp_path, capsys):
    """A factory that returns only the model, with --input: certify and report said 'pass --input FILE'."""
    (tmp_path / "bare.py").write_text(BARE_FACTORY)
    np.save(tmp_path / "x.npy", np.full((1, 1, 6, 6), 0.5, dtype="float32"))
    model, x = f"{tmp_path / 'bare.py'}:make", str(tmp_path / "x.npy")
    code = main(["certify", model, "--input", x, "--steps", "2", "--out", str(tmp_path / "map.png")])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "map.png").stat().st_size > 1000
    code = main(["report", model, "--input", x, "--composite", "epsilon", "--eps-max", "0.1", "--out", str(tmp_path / "r.html")])
    assert code == 0, capsys.readouterr().err
    code = main(["certify", model])
    assert code == 2 and "without example inputs; give their shapes, e.g. --input-shape" in capsys.readouterr().err


def test_certify_and_report_take_a_model_file_fixed_at_batch_1(tmp_path, capsys):
    """An ONNX file exported at batch 1 (its Flatten fixed to [1, N]) comes without example inputs: certify and
    report use a seeded random input of its declared shape, or of --input-shape, and say so. Before, both said
    'pass --input FILE'; given one, certify's batched PGD attack ran the file's graph at 64 rows ("shape '[1, 144]'
    is invalid") and report failed on the Graph ("no attribute 'parameters'")."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(3 * 6 * 6, 4)).eval()
    path = str(tmp_path / "net.onnx")
    torch.onnx.export(model, (torch.rand(1, 1, 6, 6),), path, dynamo=False)
    code = main(["certify", path, "--steps", "2", "--out", str(tmp_path / "map.png")])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "random values in [0, 1) of shape (1, 1, 6, 6)" in printed.out and "36 patches" in printed.out
    code = main(["certify", path, "--input-shape", "1,1,6,6", "--patch", "3", "--steps", "2", "--out", str(tmp_path / "m.png")])
    assert code == 0 and "4 patches" in capsys.readouterr().out
    code = main(["certify", path, "--input-shape", "2,1,6,6"])
    assert code == 2 and "give a batch size of 1" in capsys.readouterr().err
    code = main(["report", path, "--input-shape", "1,1,6,6", "--composite", "epsilon", "--eps-max", "0.1",
                 "--out", str(tmp_path / "r.html")])
    assert code == 0, capsys.readouterr().err
    assert "certified" in (tmp_path / "r.html").read_text().lower()
