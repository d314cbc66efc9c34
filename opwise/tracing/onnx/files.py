"""Reading an ONNX file and its external data, which must lie inside the model's folder.

A tensor's external data is a file named by the model (`location`): an absolute path or one that
leaves the folder (`../secret.bin`, a symbolic link out of it) would let a downloaded model read any
file on the machine into its weights. onnx checks this only from version 1.16 on, and opwise accepts
older ones, so the locations are checked here before any external file is opened.
"""

from __future__ import annotations

import gzip
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from opwise.errors import ModelLoadError


def read_onnx_file(path: str | Path, load_external_data: bool = True) -> Any:
    """The ModelProto at `path` with its external data loaded, refusing data files outside its folder. A gzip
    file (`net.onnx.gz`) is read through gzip, and so is `net.onnx` where only `net.onnx.gz` exists. Without
    `load_external_data`, weights kept in external files stay unread (the graph and its shapes only).

    >>> import tempfile, numpy, onnx
    >>> from onnx import helper, numpy_helper, TensorProto
    >>> folder = Path(tempfile.mkdtemp())
    >>> w = numpy_helper.from_array(numpy.ones((2, 2), "float32"), "w")
    >>> x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    >>> graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [x], [w])
    >>> onnx.save(helper.make_model(graph), folder / "m.onnx", save_as_external_data=True, location="m.data",
    ...           size_threshold=0)
    >>> numpy_helper.to_array(read_onnx_file(folder / "m.onnx").graph.initializer[0]).sum()
    np.float32(4.0)
    """
    try:
        import onnx
        from onnx import external_data_helper
    except ImportError:
        raise ModelLoadError('reading ONNX files needs the onnx package: pip install "opwise[onnx]"') from None
    path = Path(path)
    compressed = path.with_name(path.name + ".gz")
    if not path.exists() and compressed.is_file():  # VNN-COMP's repositories ship net.onnx as net.onnx.gz
        path = compressed
    if not path.is_file():
        raise ModelLoadError(f"ONNX file not found: {path}")
    _check_not_a_placeholder(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as file:
                model = onnx.load_model_from_string(file.read())
        else:
            model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # noqa: BLE001 - the onnx package raises several unrelated types
        raise ModelLoadError(f"could not parse ONNX file {path}: {error}") from None
    if not model.graph.node and not model.graph.output:  # an empty protobuf parses: say what the file lacks
        raise ModelLoadError(f"ONNX file {path} holds no graph ({path.stat().st_size} bytes): a truncated or "
                             "unfinished download? fetch the file again")
    if not load_external_data:  # the graph and shapes only (a large model's weights stay on disk)
        return model
    folder = path.parent
    external = [t for t in external_data_helper._get_all_tensors(model) if external_data_helper.uses_external_data(t)]
    for tensor in external:
        _check_location(path, tensor.name, {entry.key: entry.value for entry in tensor.external_data}.get("location", ""))
    try:
        external_data_helper.load_external_data_for_model(model, str(folder))
    except Exception as error:  # noqa: BLE001 - missing, short or unreadable data files
        raise ModelLoadError(f"could not read the external data of ONNX file {path}: {error}") from None
    return model


#: what a Git LFS pointer file starts with (benchmark repositories keep their large networks in LFS)
LFS_POINTER = b"version https://git-lfs"


def _check_not_a_placeholder(path: Path) -> None:
    """An empty file or a Git LFS pointer stands where the network should be: say so, not a protobuf error."""
    with path.open("rb") as file:
        head = file.read(len(LFS_POINTER))
    if not head:
        raise ModelLoadError(f"ONNX file {path} is empty (0 bytes): a truncated or unfinished download? fetch the "
                             "file again")
    if head == LFS_POINTER:
        raise ModelLoadError(f"{path} is a Git LFS pointer, not the network: fetch it with 'git lfs pull' in its "
                             "repository")


def _check_location(path: Path, tensor: str, location: str) -> None:
    folder = path.parent.resolve()
    where = f"{path}: tensor '{tensor}' keeps its data in {location!r}"
    if not location:
        raise ModelLoadError(f"{where}, which names no file")
    if PurePosixPath(location).is_absolute() or PureWindowsPath(location).is_absolute() or PureWindowsPath(location).drive:
        raise ModelLoadError(f"{where}, an absolute path; opwise reads external data only from files inside the "
                             f"model's folder {folder}")
    if not (folder / location).resolve().is_relative_to(folder):  # resolve() follows '..' and symbolic links
        raise ModelLoadError(f"{where}, outside the model's folder {folder}; opwise reads external data only from "
                             "files inside that folder: move the data next to the model")
