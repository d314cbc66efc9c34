"""Reading `torch.export` `.pt2` files without running code from them.

`torch.export.load` unpickles some payloads: constants whose config `path_name` starts with
`opaque_obj_` (plain `pickle.loads`) or `custom_obj_` (TorchScript's pickler), weights and tensor
constants whose config says `use_pickle`, and example inputs or legacy archives that fail the safe
`weights_only` loader (it then retries without it); archives with AOTInductor files load compiled code.
Unpickling can call any Python function. So before torch reads the archive, this module reads the same
configs with torch's own archive reader, decides as torch would, and refuses every payload that would
be unpickled; torch then loads from the same bytes with `torch.load` forced to `weights_only`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import zipfile
from pathlib import Path
from typing import Any, Iterator

import torch

from opwise.errors import ModelLoadError
from opwise.tracing.load_errors import describe_load_error

FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"  # makes every torch.load weights_only, even when asked not to
# torch.export.load falls back to this older zip layout; it reads these members with torch.load.
LEGACY_PICKLED_MEMBERS = (
    "serialized_state_dict.pt",
    "serialized_constants.pt",
    "serialized_example_inputs.pt",
    "serialized_state_dict.json",
    "serialized_constants.json",
)
NEVER_UNPICKLED = "opwise never unpickles Python objects from a model file (unpickling can run any code)"


def load_exported_program(path: Path) -> torch.export.ExportedProgram:
    """`torch.export.load(path)`, refusing (ModelLoadError) any archive that would unpickle a Python object.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "linear.pt2"
    >>> torch.export.save(torch.export.export(torch.nn.Linear(3, 2), (torch.ones(1, 3),)), path)
    >>> load_exported_program(path).example_inputs[0][0].shape
    torch.Size([1, 3])
    """
    data = Path(path).read_bytes()  # checked and loaded from the same bytes: the file cannot change in between
    _refuse_pickled_payloads(path, data)
    with _torch_load_weights_only(), _quiet_export_log():
        return torch.export.load(io.BytesIO(data))


def _refuse_pickled_payloads(path: Path, data: bytes) -> None:
    """Raise ModelLoadError naming the first payload of the archive `data` that torch would unpickle."""
    from torch.export.pt2_archive._package import PT2ArchiveReader

    try:
        reader = PT2ArchiveReader(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - not a current archive: torch.export.load then tries the legacy layout
        reader = None
    if reader is not None:
        _check_archive(path, reader)
    _check_legacy_archive(path, data)


def _check_archive(path: Path, reader: Any) -> None:
    """The decisions of torch.export.pt2_archive._package.load_pt2, model by model."""
    from torch.export.pt2_archive import constants as c

    names = set(reader.get_file_names())
    compiled = sorted(name for name in names if name.startswith(c.AOTINDUCTOR_DIR))
    if compiled:
        raise ModelLoadError(
            f"{path} holds AOTInductor-compiled code ({compiled[0]}), which opwise never loads; "
            "save the program with torch.export.save"
        )
    prefix, suffix = c.MODELS_FILENAME_FORMAT.split("{}")
    for name in sorted(names):
        if name.startswith(c.MODELS_DIR):
            _check_model(path, reader, names, name[len(prefix) : -len(suffix)])


def _check_model(path: Path, reader: Any, names: set[str], model: str) -> None:
    """One model's weights, constants and example inputs, read the way _load_state_dict, _load_constants and
    the deserializer read them (a legacy `{model}.pt` payload replaces the config when present)."""
    from torch.export.pt2_archive import constants as c
    from torch.export.pt2_archive._package import _load_payload_config

    for directory, config_format in ((c.WEIGHTS_DIR, c.WEIGHTS_CONFIG_FILENAME_FORMAT),
                                     (c.CONSTANTS_DIR, c.CONSTANTS_CONFIG_FILENAME_FORMAT)):
        legacy, config = f"{directory}{model}.pt", config_format.format(model)
        if legacy in names:
            _require_weights_only(path, reader.read_bytes(legacy), f"the legacy payload {legacy}")
        elif config in names:
            is_constant = directory == c.CONSTANTS_DIR
            for fqn, meta in _load_payload_config(reader, config).config.items():
                _check_payload(path, f"{'constant' if is_constant else 'weight'} {fqn!r}", meta, is_constant)
    sample_inputs = c.SAMPLE_INPUTS_FILENAME_FORMAT.format(model)
    if sample_inputs in names:
        _require_weights_only(path, reader.read_bytes(sample_inputs), f"the example inputs {sample_inputs}")


def _check_payload(path: Path, what: str, meta: Any, is_constant: bool) -> None:
    """Weights unpickle when `use_pickle`; constants also by their path_name's prefix (custom/opaque objects)."""
    from torch.export.pt2_archive import constants as c

    if is_constant and meta.path_name.startswith((c.CUSTOM_OBJ_FILENAME_PREFIX, c.OPAQUE_OBJ_FILENAME_PREFIX)):
        _refuse(path, what, meta.path_name, "torch unpickles constants named so")
    if is_constant and not meta.path_name.startswith(c.TENSOR_CONSTANT_FILENAME_PREFIX):
        raise ModelLoadError(
            f"{path}: {what} has path_name {meta.path_name!r}, which is no kind of constant torch.export saves"
        )
    if meta.use_pickle:
        _refuse(path, what, meta.path_name, "its config asks for use_pickle")


def _check_legacy_archive(path: Path, data: bytes) -> None:
    """The members torch.export.load's fallback for pre-2.8 archives reads with torch.load."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        return  # torch's fallback opens the file the same way, and fails
    with archive:
        if "version" not in archive.namelist():
            return
        for item in archive.infolist():
            if item.filename in LEGACY_PICKLED_MEMBERS:
                _require_weights_only(path, archive.read(item), f"the legacy payload {item.filename}")


def _require_weights_only(path: Path, payload: bytes, what: str) -> None:
    """torch would retry a payload that fails the weights_only loader with full unpickling: refuse it instead."""
    if not payload:
        return
    try:
        torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - whatever the safe loader refuses, opwise refuses
        raise ModelLoadError(
            f"{path}: refused {what}: torch.load(weights_only=True) does not load it ({describe_load_error(error)}); "
            f"{NEVER_UNPICKLED}; export with tensor example inputs"
        ) from None


def _refuse(path: Path, what: str, path_name: str, why: str) -> None:
    raise ModelLoadError(
        f"{path}: refused {what} (path_name {path_name!r}): {why}, and {NEVER_UNPICKLED}; "
        "export a model whose weights and constants are plain tensors"
    )


@contextlib.contextmanager
def _torch_load_weights_only() -> Iterator[None]:
    """Every torch.load inside is weights_only, a second guard behind the checks above."""
    previous = os.environ.get(FORCE_WEIGHTS_ONLY)
    os.environ[FORCE_WEIGHTS_ONLY] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[FORCE_WEIGHTS_ONLY]
        else:
            os.environ[FORCE_WEIGHTS_ONLY] = previous


@contextlib.contextmanager
def _quiet_export_log() -> Iterator[None]:
    """torch.export.load logs a traceback before trying the legacy layout; the caller reports failures itself."""
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
