"""Damaged copies of valid files (empty, random, truncated, bytes flipped) through the commands that read them.

Each run must end with exit code 0 (the damage was harmless) or 2 with one stderr line, never 1 ('unexpected
... please report it'). Seeded; --run-slow tries more damage per file.
"""

from __future__ import annotations

import random

import matplotlib.image
import numpy
import pytest
import torch

import opwise
from opwise.cli import main
from tests.security.crafted import onnx_with_external_weight, saved_program


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory):
    """The folder holding one valid file of each kind, and {file name: command lines reading it ({} its path)}."""
    folder = tmp_path_factory.mktemp("valid")
    numpy.random.seed(0)
    saved_program(folder / "model.pt2")
    (folder / "onnx").mkdir()
    numpy.arange(9, dtype=numpy.float32).tofile(folder / "onnx" / "w.bin")
    onnx_with_external_weight(folder / "onnx", "w.bin")
    torch.save(opwise.models.architecture("mlp").state_dict(), folder / "weights.pt")
    numpy.save(folder / "x.npy", numpy.random.rand(1, 1, 8, 8).astype("float32"))
    numpy.savez(folder / "x.npz", numpy.random.rand(1, 1, 8, 8).astype("float32"))
    torch.save(torch.rand(1, 1, 8, 8), folder / "x.pt")
    matplotlib.image.imsave(folder / "x.png", numpy.random.rand(8, 8, 3))
    inputs = [["explain", "--input", "{}", "--out", str(folder / "map.png")]]  # verify reads them the same way
    return folder, {
        "model.pt2": [["trace", "{}"], ["verify", "{}"]],
        "onnx/model.onnx": [["trace", "{}"]],
        "onnx/w.bin": [["trace", str(folder / "onnx" / "model.onnx")]],
        "weights.pt": [["trace", "builtin:mlp@{}"]],
        "x.npy": inputs,
        "x.npz": inputs,
        "x.pt": inputs,
        "x.png": inputs,
    }


def damaged(data: bytes, rng: random.Random, flips: int):
    yield "empty", b""
    yield "random bytes", bytes(rng.getrandbits(8) for _ in range(256))
    for fraction in (0.1, 0.5, 0.9):
        yield f"first {fraction:.0%}", data[: int(len(data) * fraction)]
    for attempt in range(flips):
        copy = bytearray(data)
        for _ in range(8):
            copy[rng.randrange(len(copy))] = rng.getrandbits(8)
        yield f"8 bytes flipped ({attempt})", bytes(copy)


@pytest.fixture
def flips(request):
    return 12 if request.config.getoption("--run-slow") else 2


@pytest.mark.parametrize("name", ["model.pt2", "onnx/model.onnx", "onnx/w.bin", "weights.pt", "x.npy", "x.npz", "x.pt",
                                  "x.png"])
def test_damaged_file_is_one_line_and_exit_2_or_harmless(valid_files, capsys, flips, name):
    folder, commands = valid_files
    path = folder / name
    original = path.read_bytes()
    outcomes = []
    try:
        for what, content in damaged(original, random.Random(name), flips):
            path.write_bytes(content)
            for command in commands[name]:
                code = main([argument.replace("{}", str(path)) for argument in command])
                err = capsys.readouterr().err
                assert code in (0, 2) and err.count("\n") == (code == 2), f"{name}, {what}, {command[0]}: {code} {err}"
                outcomes.append(code)
    finally:
        path.write_bytes(original)
    assert outcomes.count(2) >= 3 * len(commands[name])  # at least the empty, random and 10% copies fail
