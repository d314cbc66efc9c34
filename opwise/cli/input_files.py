"""Input tensors from files (images, `.npy`, `.npz`, `.pt`) for the commands' `--input`.

A file is data, never code: `.pt` files load with `torch.load(weights_only=True)`, arrays without pickles,
and a `.npy` header is checked (numeric dtype, no more data declared than the file holds) before anything
is allocated. Every way a file can be wrong is one InputError naming the file and what to do.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy
import torch

from opwise.errors import InputError
from opwise.tracing.load_errors import describe_load_error

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TENSOR_SUFFIXES = (".npy", ".npz", ".pt", ".pth")
NUMERIC_KINDS = "biuf"  # numpy dtype kinds a tensor can hold: bool, signed and unsigned int, float


def read_tensor_file(path: str | Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES + TENSOR_SUFFIXES) -> torch.Tensor:
    """The tensor a file holds: images as floats in [0, 1] shaped [channels, height, width], arrays as saved.

    `.npz` archives give their first array; `suffixes` are the file types the caller accepts.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "x.npy"; numpy.save(path, numpy.ones((2, 3), "float32"))
    >>> read_tensor_file(path).shape
    torch.Size([2, 3])
    >>> numpy.save(path, numpy.array(["a", "b"]))
    >>> read_tensor_file(path)
    Traceback (most recent call last):
    ...
    opwise.errors.InputError: input file ...x.npy holds <U1 values, not numbers; save a numeric array
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in suffixes:
        raise InputError(f"input file {path}: unsupported type {suffix!r}; use {', '.join(suffixes)}")
    if not file.is_file():
        raise InputError(f"input file {path} does not exist")
    if suffix in IMAGE_SUFFIXES:
        return _read_image(file)
    if suffix == ".npy":
        with file.open("rb") as stream:
            return _read_array(stream, file.stat().st_size, str(file))
    if suffix == ".npz":
        return _read_first_array(file)
    return _read_torch_file(file)


def _read_image(file: Path) -> torch.Tensor:
    import matplotlib.image

    try:
        pixels = matplotlib.image.imread(file)
    except Exception as error:  # noqa: BLE001 - PIL raises many types for empty, truncated or foreign files
        reason = describe_load_error(error)
        raise InputError(f"input file {file} is not a readable image ({reason}); give a complete PNG or JPEG") from None
    image = torch.as_tensor(numpy.asarray(pixels), dtype=torch.float32)
    if image.numel() and image.max() > 1:
        image = image / 255
    return image.permute(2, 0, 1)[:3] if image.dim() == 3 else image[None]


def _read_first_array(file: Path) -> torch.Tensor:
    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError) as error:
        raise InputError(f"input file {file} is not an .npz archive ({describe_load_error(error)})") from None
    with archive:
        members = [info for info in archive.infolist() if info.filename.endswith(".npy")]
        if not members:
            raise InputError(f"input file {file} holds no array; save one with numpy.savez")
        try:
            with archive.open(members[0]) as stream:
                return _read_array(stream, members[0].file_size, f"{file} ({members[0].filename})")
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:  # a damaged member or directory entry
            raise InputError(f"input file {file} is a damaged .npz archive ({describe_load_error(error)})") from None


def _read_array(stream: BinaryIO, size: int, where: str) -> torch.Tensor:
    """A .npy array from `stream` of `size` bytes, its header checked before its data is read."""
    fmt = numpy.lib.format
    try:
        version = fmt.read_magic(stream)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read_header(stream)
    except Exception as error:  # noqa: BLE001 - numpy parses the header as Python literals: many error types
        reason = describe_load_error(error)
        raise InputError(f"input file {where} is not a .npy array ({reason}); save it with numpy.save") from None
    if dtype.hasobject:
        raise InputError(
            f"input file {where} holds Python objects, which load only by unpickling (that can run code) and "
            "opwise never does; save a numeric array"
        )
    if dtype.kind not in NUMERIC_KINDS:
        raise InputError(f"input file {where} holds {dtype} values, not numbers; save a numeric array")
    declared = math.prod(shape) * dtype.itemsize
    if declared > size - stream.tell():
        raise InputError(
            f"input file {where} declares shape {tuple(shape)} ({declared} bytes) but holds {size - stream.tell()} "
            "bytes of data; the file is truncated or corrupt"
        )
    try:
        array = fmt.read_array(_rewound(stream), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise InputError(f"input file {where} is not a readable .npy array ({describe_load_error(error)})") from None
    return torch.as_tensor(numpy.asarray(array, dtype=array.dtype.newbyteorder("=")))


def _rewound(stream: BinaryIO) -> BinaryIO:
    stream.seek(0)
    return stream


def _read_torch_file(file: Path) -> torch.Tensor:
    try:
        value = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - the safe loader's refusals and corrupt files alike
        raise InputError(
            f"input file {file} is not a tensor torch.load(weights_only=True) can read ({describe_load_error(error)}); "
            "opwise never unpickles Python objects: save the tensor with torch.save(tensor, path)"
        ) from None
    if not isinstance(value, torch.Tensor):
        raise InputError(
            f"input file {file} holds a {type(value).__name__}, not a tensor; save it with torch.save(tensor, path)"
        )
    if value.is_complex() or value.is_quantized:
        raise InputError(f"input file {file} holds {value.dtype} values, not real numbers")
    return value
