"""`--input` files: each broken or foreign file is one line on stderr and exit code 2, never 'unexpected'."""

from __future__ import annotations

import io
import zipfile

import matplotlib.image
import numpy
import pytest
import torch

from opwise.cli import main
from opwise.cli.input_files import read_tensor_file
from opwise.errors import InputError


def one_line_error(capsys, *argv: str) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "unexpected" not in err and "report" not in err
    return err


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "digit.png"
    matplotlib.image.imsave(path, numpy.random.default_rng(0).random((8, 8, 3)))
    return path


def test_valid_files_of_each_kind(tmp_path, png):
    image = read_tensor_file(png)
    assert image.shape == (3, 8, 8) and 0 <= float(image.min()) and float(image.max()) <= 1
    numpy.savez(tmp_path / "x.npz", first=numpy.arange(6, dtype=">f8").reshape(2, 3), second=numpy.zeros(1))
    torch.testing.assert_close(read_tensor_file(tmp_path / "x.npz"), torch.arange(6.0, dtype=torch.float64).view(2, 3))
    torch.save(torch.ones(2, dtype=torch.int64), tmp_path / "x.pt")
    assert read_tensor_file(tmp_path / "x.pt").tolist() == [1, 1]


def test_empty_png(tmp_path, capsys):
    (tmp_path / "empty.png").write_bytes(b"")
    assert "empty.png is not a readable image" in one_line_error(capsys, "explain", "--input", str(tmp_path / "empty.png"))


@pytest.mark.parametrize("keep", [0.5, 0.1])
def test_truncated_png(tmp_path, png, capsys, keep):
    data = png.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: int(len(data) * keep)])
    assert "cut.png is not a readable image" in one_line_error(capsys, "explain", "--input", str(tmp_path / "cut.png"))


def test_npy_of_strings(tmp_path, capsys):
    numpy.save(tmp_path / "words.npy", numpy.array(["one", "two"]))
    err = one_line_error(capsys, "verify", "--input", str(tmp_path / "words.npy"))
    assert "holds <U3 values, not numbers" in err


def test_pt_holding_a_dict(tmp_path, capsys):
    torch.save({"x": torch.ones(1, 1, 8, 8)}, tmp_path / "inputs.pt")
    err = one_line_error(capsys, "explain", "--input", str(tmp_path / "inputs.pt"))
    assert "holds a dict, not a tensor" in err


def test_npy_declaring_more_data_than_it_holds_is_refused_before_allocating(tmp_path, capsys):
    with open(tmp_path / "huge.npy", "wb") as stream:
        numpy.lib.format.write_array_header_1_0(stream, {"descr": "<f4", "fortran_order": False, "shape": (2**20, 2**20)})
    err = one_line_error(capsys, "verify", "--input", str(tmp_path / "huge.npy"))
    assert "declares shape (1048576, 1048576) (4398046511104 bytes) but holds 0 bytes" in err


def test_npz_member_declaring_more_data_than_it_holds(tmp_path):
    member = io.BytesIO()
    numpy.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": (9999999,)})
    with zipfile.ZipFile(tmp_path / "x.npz", "w") as archive:
        archive.writestr("x.npy", member.getvalue() + bytes(16))
    with pytest.raises(InputError, match=r"x.npz \(x.npy\) declares shape \(9999999,\)"):
        read_tensor_file(tmp_path / "x.npz")


@pytest.mark.parametrize("content, message", [(b"", "not a .npy array"), (b"\x93NUMPY\x01\x00garbage", "not a .npy array")])
def test_corrupt_npy(tmp_path, content, message):
    (tmp_path / "bad.npy").write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_tensor_file(tmp_path / "bad.npy")


def test_unsupported_and_missing_files(tmp_path, capsys):
    assert "unsupported type '.txt'" in one_line_error(capsys, "verify", "--input", str(tmp_path / "x.txt"))
    assert "does not exist" in one_line_error(capsys, "verify", "--input", str(tmp_path / "x.npy"))
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    assert "is not an .npz archive" in one_line_error(capsys, "verify", "--input", str(tmp_path / "x.npz"))


def test_explain_of_a_model_without_example_inputs_reads_the_input_file(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, 64])
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "g", [x], [y], [shape])
    onnx.save(helper.make_model(graph), str(tmp_path / "flat.onnx"))
    # without --input: a seeded random input of the declared shape, and the output says so
    assert main(["explain", str(tmp_path / "flat.onnx"), "--out", str(tmp_path / "random.png")]) == 0
    assert "input: random values in [0, 1) of shape (1, 1, 8, 8)" in capsys.readouterr().out
    numpy.save(tmp_path / "x.npy", numpy.arange(64, dtype="float32").reshape(8, 8))
    code = main(["explain", str(tmp_path / "flat.onnx"), "--input", str(tmp_path / "x.npy"), "--out", str(tmp_path / "r.png")])
    assert code == 0 and "prediction: 63" in capsys.readouterr().out
