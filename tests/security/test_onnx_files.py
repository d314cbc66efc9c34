"""Crafted ONNX files through `opwise trace|verify`: data outside the model's folder and absurd dims, exit 2."""

from __future__ import annotations

import os

import pytest

from opwise.cli import main
from tests.security.crafted import EXTERNAL_WEIGHT, onnx_with_external_weight

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


@pytest.fixture
def model_folder(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    EXTERNAL_WEIGHT.tofile(folder / "w.bin")
    (tmp_path / "secret.bin").write_bytes(EXTERNAL_WEIGHT.tobytes())  # readable, so only the location check refuses it
    os.symlink(tmp_path / "secret.bin", folder / "link.bin")
    return folder


def refused(capsys, argv, message):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "unexpected" not in err and message in err, err


@pytest.mark.parametrize("command", ["trace", "verify"])
@pytest.mark.parametrize("location, message", [
    ("../secret.bin", "outside the model's folder"),
    ("ABSOLUTE", "an absolute path"),
    ("link.bin", "outside the model's folder"),
])
def test_external_data_outside_the_folder_is_refused(model_folder, capsys, command, location, message):
    location = str(model_folder.parent / "secret.bin") if location == "ABSOLUTE" else location
    refused(capsys, [command, str(onnx_with_external_weight(model_folder, location))], message)


def test_external_data_inside_the_folder_traces(model_folder, capsys):
    assert main(["trace", str(onnx_with_external_weight(model_folder, "w.bin"))]) == 0
    assert "aten." in capsys.readouterr().out


@pytest.mark.parametrize("command", ["trace", "verify"])
def test_huge_declared_input_dims(tmp_path, capsys, command):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2**40])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2**40])
    path = tmp_path / "huge.onnx"
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])), str(path))
    refused(capsys, [command, str(path)], "declares shape (1, 1099511627776)")
