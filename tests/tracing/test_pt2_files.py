"""`.pt2` loading refuses every payload torch.export.load would unpickle, deciding from the same configs."""

from __future__ import annotations

import os
import zipfile

import pytest
import torch

from opwise.errors import ModelLoadError
from opwise.tracing.pt2_files import load_exported_program
from tests.security.crafted import (
    CONSTANTS_CONFIG,
    WithConstant,
    edit_config,
    malicious_pickle,
    malicious_torch_save,
    pickled_constant_program,
    pickled_example_inputs,
    pickled_tensor_constant,
    pickled_weight,
    rewrite_archive,
    saved_program,
)


@pytest.fixture
def program(tmp_path):
    return saved_program(tmp_path / "good.pt2")


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "payload_ran"
    yield path
    assert not path.exists(), "a payload from the file ran"


def test_a_saved_program_with_weights_and_constants_loads(program):
    torch.manual_seed(0)
    reference = WithConstant().eval()
    loaded = load_exported_program(program)
    x = torch.randn(1, 3)
    torch.testing.assert_close(loaded.module()(x), reference(x))
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


@pytest.mark.parametrize("path_name", ["opaque_obj_0/x", "opaque_obj_0/../tensor_9", "opaque_obj_0", "custom_obj_0"])
def test_constants_configured_as_pickled_objects_are_refused(program, tmp_path, marker, path_name):
    hostile = pickled_constant_program(program, tmp_path / "hostile.pt2", marker, path_name)
    with pytest.raises(ModelLoadError, match=f"refused constant 'offset' \\(path_name '{path_name}'\\).*never unpickles"):
        load_exported_program(hostile)


@pytest.mark.parametrize("craft, message", [
    (pickled_tensor_constant, "refused constant 'offset' \\(path_name 'tensor_7'\\).*use_pickle"),
    (pickled_weight, "refused weight 'linear.weight' \\(path_name 'weight_7'\\).*use_pickle"),
    (pickled_example_inputs, "refused the example inputs data/sample_inputs/model.pt.*Python object .*mkdir"),
])
def test_payloads_torch_would_load_with_weights_only_false_are_refused(program, tmp_path, marker, craft, message):
    with pytest.raises(ModelLoadError, match=message):
        load_exported_program(craft(program, tmp_path / "hostile.pt2", marker))


def test_legacy_payloads_are_checked_too(program, tmp_path, marker):
    def edit(files):
        files["data/weights/model.pt"] = malicious_torch_save(marker)

    with pytest.raises(ModelLoadError, match="refused the legacy payload data/weights/model.pt"):
        load_exported_program(rewrite_archive(program, tmp_path / "hostile.pt2", edit))
    legacy = tmp_path / "legacy.pt2"
    with zipfile.ZipFile(legacy, "w") as archive:
        archive.writestr("version", "8.0")
        archive.writestr("serialized_exported_program.json", "{}")
        archive.writestr("serialized_example_inputs.pt", malicious_torch_save(marker))
    with pytest.raises(ModelLoadError, match="refused the legacy payload serialized_example_inputs.pt"):
        load_exported_program(legacy)


def test_compiled_code_is_refused(program, tmp_path):
    def edit(files):
        files["data/aotinductor/model/model.so"] = b"\x7fELF"

    with pytest.raises(ModelLoadError, match="AOTInductor-compiled code"):
        load_exported_program(rewrite_archive(program, tmp_path / "compiled.pt2", edit))


def test_unknown_constant_kind_is_refused(program, tmp_path):
    def edit(files):
        edit_config(files, CONSTANTS_CONFIG, "offset", path_name="mystery_0")

    with pytest.raises(ModelLoadError, match="'mystery_0', which is no kind of constant"):
        load_exported_program(rewrite_archive(program, tmp_path / "odd.pt2", edit))


def test_unreferenced_pickle_files_are_never_read(program, tmp_path, marker):
    def edit(files):
        files["data/constants/opaque_obj_0"] = malicious_pickle(marker)

    loaded = load_exported_program(rewrite_archive(program, tmp_path / "extra.pt2", edit))
    assert loaded.module()(torch.ones(1, 3)).shape == (1, 2)
