"""Crafted `--input` files (pickles in `.pt`, object arrays in `.npy`/`.npz`): refused, exit 2, no code run."""

from __future__ import annotations

import numpy
import pytest

from opwise.cli import main
from tests.security.crafted import MakesDirectory, malicious_torch_save


def malicious_pt(path, marker):
    path.write_bytes(malicious_torch_save(marker))


def pickled_dict_pt(path, marker):
    path.write_bytes(malicious_torch_save(marker, lambda payload: {"x": payload}))


def object_npy(path, marker):
    numpy.save(path, numpy.array([MakesDirectory(marker)], dtype=object), allow_pickle=True)


def object_npz(path, marker):
    numpy.savez(path, x=numpy.array([MakesDirectory(marker)], dtype=object))


CRAFTED = {
    "x.pt": (malicious_pt, "is not a tensor torch.load(weights_only=True) can read (it needs the Python object"),
    "dict.pt": (pickled_dict_pt, "is not a tensor torch.load(weights_only=True) can read (it needs the Python object"),
    "x.npy": (object_npy, "holds Python objects, which load only by unpickling"),
    "x.npz": (object_npz, "holds Python objects, which load only by unpickling"),
}


@pytest.mark.parametrize("command", ["explain", "verify"])
@pytest.mark.parametrize("name", CRAFTED)
def test_crafted_input_file_is_refused(tmp_path, capsys, marker, command, name):
    craft, message = CRAFTED[name]
    craft(tmp_path / name, marker)
    code = main([command, "--input", str(tmp_path / name)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "unexpected" not in err and message in err, err
