"""Builders of hostile input files for the security tests: each payload would create a marker path if run."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Callable

import numpy
import torch

EXTERNAL_WEIGHT = numpy.arange(9, dtype=numpy.float32).reshape(3, 3)


class MakesDirectory:
    """Unpickling this calls os.mkdir(path): a test asserts the path is still absent afterwards."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def malicious_pickle(marker: Path) -> bytes:
    return pickle.dumps(MakesDirectory(marker))


def malicious_torch_save(marker: Path, wrap: Callable = lambda payload: payload) -> bytes:
    """A torch.save archive whose pickle holds the payload (optionally wrapped, e.g. in the (args, kwargs) of
    example inputs)."""
    buffer = io.BytesIO()
    torch.save(wrap(MakesDirectory(marker)), buffer)
    return buffer.getvalue()


class WithConstant(torch.nn.Module):
    """A weight and a tensor constant (a non-persistent buffer): both kinds of payload config."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)
        self.register_buffer("offset", torch.tensor([1.0, -1.0]), persistent=False)

    def forward(self, x):
        return self.linear(x) + self.offset


def saved_program(path: Path) -> Path:
    torch.manual_seed(0)
    torch.export.save(torch.export.export(WithConstant().eval(), (torch.ones(1, 3),)), path)
    return path


def rewrite_archive(source: Path, target: Path, edit: Callable[[dict[str, bytes]], None]) -> Path:
    """Copy a .pt2 (a zip under one root folder) with `edit` applied to {name below the root: bytes}."""
    with zipfile.ZipFile(source) as original:
        root = original.namelist()[0].split("/")[0]
        files = {name.split("/", 1)[1]: original.read(name) for name in original.namelist()}
    edit(files)
    with zipfile.ZipFile(target, "w") as copy:
        for name, data in files.items():
            copy.writestr(f"{root}/{name}", data)
    return target


def edit_config(files: dict[str, bytes], config: str, entry: str, **changes) -> None:
    """Change fields of one entry of a payload config (data/constants/model_constants_config.json, ...)."""
    parsed = json.loads(files[config])
    parsed["config"][entry].update(changes)
    files[config] = json.dumps(parsed).encode()


CONSTANTS_CONFIG = "data/constants/model_constants_config.json"
WEIGHTS_CONFIG = "data/weights/model_weights_config.json"
SAMPLE_INPUTS = "data/sample_inputs/model.pt"


def pickled_constant_program(source: Path, target: Path, marker: Path, path_name: str = "opaque_obj_0/x") -> Path:
    """The issue's attack: the constant's config names a pickled object; its bytes call os.mkdir(marker)."""

    def edit(files):
        edit_config(files, CONSTANTS_CONFIG, "offset", path_name=path_name, use_pickle=True, tensor_meta=None)
        files[f"data/constants/{path_name}"] = malicious_pickle(marker)

    return rewrite_archive(source, target, edit)


def pickled_weight(program: Path, target: Path, marker: Path) -> Path:
    """The weight's config asks for use_pickle; torch would torch.load it with weights_only=False."""

    def edit(files):
        edit_config(files, WEIGHTS_CONFIG, "linear.weight", path_name="weight_7", use_pickle=True)
        files["data/weights/weight_7"] = malicious_torch_save(marker)

    return rewrite_archive(program, target, edit)


def pickled_tensor_constant(program: Path, target: Path, marker: Path) -> Path:
    """A tensor constant whose config asks for use_pickle."""

    def edit(files):
        edit_config(files, CONSTANTS_CONFIG, "offset", path_name="tensor_7", use_pickle=True)
        files["data/constants/tensor_7"] = malicious_torch_save(marker)

    return rewrite_archive(program, target, edit)


def pickled_example_inputs(program: Path, target: Path, marker: Path) -> Path:
    """Example inputs holding an object: torch retries them with weights_only=False."""
    return rewrite_archive(
        program, target, lambda files: files.update({SAMPLE_INPUTS: malicious_torch_save(marker, lambda p: ((p,), {}))})
    )


def python_call_program(program: Path, target: Path, marker: Path) -> Path:
    """A graph node calling a Python function reachable from torch (torch.os.mkdir) instead of an operator."""

    def edit(files):
        exported = json.loads(files["models/model.json"])
        graph = exported["graph_module"]["graph"]
        graph["tensor_values"]["made"] = next(iter(graph["tensor_values"].values()))
        graph["nodes"].insert(0, {
            "target": "torch.os.mkdir", "name": "made", "metadata": {}, "is_hop_single_tensor_return": None,
            "inputs": [{"name": "path", "arg": {"as_string": str(marker)}, "kind": 1}],
            "outputs": [{"as_tensor": {"name": "made"}}],
        })
        files["models/model.json"] = json.dumps(exported).encode()

    return rewrite_archive(program, target, edit)


def onnx_with_external_weight(folder: Path, location: str, name: str = "model.onnx") -> Path:
    """An ONNX model x @ w (3x3) whose w is read from the external data file `location`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(EXTERNAL_WEIGHT, "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, "offset": "0", "length": str(EXTERNAL_WEIGHT.nbytes)}.items():
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [weight])
    path = folder / name
    onnx.save(helper.make_model(graph), str(path))
    return path
