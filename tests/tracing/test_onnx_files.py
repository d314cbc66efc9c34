"""ONNX external data is read only from files inside the model's folder."""

from __future__ import annotations

import os

import pytest
import torch

onnx = pytest.importorskip("onnx")

from opwise.errors import ModelLoadError  # noqa: E402
from opwise.tracing.onnx import load_onnx  # noqa: E402
from opwise.tracing.onnx.files import read_onnx_file  # noqa: E402
from tests.security.crafted import EXTERNAL_WEIGHT, onnx_with_external_weight  # noqa: E402


@pytest.fixture
def folders(tmp_path):
    model_folder = tmp_path / "model"
    (model_folder / "data").mkdir(parents=True)
    EXTERNAL_WEIGHT.tofile(model_folder / "data" / "w.bin")
    (tmp_path / "secret.bin").write_bytes(b"private bytes of another file")
    return model_folder, tmp_path / "secret.bin"


@pytest.mark.parametrize("location", ["data/w.bin", "data/../data/w.bin"])
def test_external_data_inside_the_folder_loads(folders, location):
    model_folder, _ = folders
    graph = load_onnx(onnx_with_external_weight(model_folder, location))
    torch.testing.assert_close(graph(torch.ones(1, 3)), torch.ones(1, 3) @ torch.from_numpy(EXTERNAL_WEIGHT))


def test_relative_location_outside_the_folder_is_refused(folders):
    model_folder, _ = folders
    with pytest.raises(ModelLoadError, match=r"tensor 'w' keeps its data in '../secret.bin', outside the model's folder"):
        read_onnx_file(onnx_with_external_weight(model_folder, "../secret.bin"))


def test_absolute_location_is_refused(folders):
    model_folder, secret = folders
    with pytest.raises(ModelLoadError, match="an absolute path; opwise reads external data only from files inside"):
        read_onnx_file(onnx_with_external_weight(model_folder, str(secret)))


def test_symbolic_link_out_of_the_folder_is_refused(folders):
    model_folder, secret = folders
    os.symlink(secret, model_folder / "data" / "link.bin")
    with pytest.raises(ModelLoadError, match="'data/link.bin', outside the model's folder"):
        read_onnx_file(onnx_with_external_weight(model_folder, "data/link.bin"))


def test_missing_or_short_external_data_is_a_load_error(folders):
    model_folder, _ = folders
    with pytest.raises(ModelLoadError, match="could not read the external data"):
        read_onnx_file(onnx_with_external_weight(model_folder, "data/absent.bin"))
    (model_folder / "data" / "short.bin").write_bytes(b"1234")
    with pytest.raises(ModelLoadError, match="could not read the external data"):
        read_onnx_file(onnx_with_external_weight(model_folder, "data/short.bin"))


@pytest.mark.parametrize("content, words", [
    (b"", "is empty"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab12\nsize 3400000\n", "Git LFS pointer"),
    (b"\x08\x07", "holds no graph"),  # a valid protobuf with only the IR version: what a cut-off download can be
])
def test_placeholder_files_say_what_they_are(tmp_path, content, words):
    """Benchmark repositories keep networks in Git LFS; a clone without it, or a cut-off download, leaves a file
    that is no network: the error says which, not 'has 0 outputs' or a protobuf message."""
    path = tmp_path / "net.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=words):
        load_onnx(path)
