"""Crafted model files (`.pt2`, `ARCH@weights.pt`) through `opwise trace|explain|verify`: refused, exit 2, no code run."""

from __future__ import annotations

import pytest

from opwise.cli import main
from tests.security.crafted import (
    malicious_torch_save,
    pickled_constant_program,
    pickled_example_inputs,
    pickled_tensor_constant,
    pickled_weight,
    python_call_program,
    saved_program,
)

COMMANDS = ["trace", "explain", "verify"]


def refused(capsys, argv: list[str], message: str) -> None:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "unexpected" not in err and message in err, err


HOSTILE_PROGRAMS = {
    "opaque path_name with a subfolder": (lambda p, t, m: pickled_constant_program(p, t, m, "opaque_obj_0/x"),
                                          "refused constant 'offset' (path_name 'opaque_obj_0/x')"),
    "opaque path_name leaving its folder": (lambda p, t, m: pickled_constant_program(p, t, m, "opaque_obj_0/../tensor_9"),
                                            "refused constant 'offset' (path_name 'opaque_obj_0/../tensor_9')"),
    "custom object": (lambda p, t, m: pickled_constant_program(p, t, m, "custom_obj_0"), "refused constant 'offset'"),
    "pickled weight": (pickled_weight, "refused weight 'linear.weight'"),
    "pickled tensor constant": (pickled_tensor_constant, "refused constant 'offset'"),
    "pickled example inputs": (pickled_example_inputs, "refused the example inputs"),
    "graph calling a Python function": (python_call_program, "Operator '<built-in function mkdir>' is not an allowed"),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", HOSTILE_PROGRAMS)
def test_crafted_pt2_is_refused(tmp_path, capsys, marker, command, kind):
    craft, message = HOSTILE_PROGRAMS[kind]
    hostile = craft(saved_program(tmp_path / "good.pt2"), tmp_path / "hostile.pt2", marker)
    refused(capsys, [command, str(hostile)], message)


@pytest.mark.parametrize("command", COMMANDS)
def test_weights_file_with_a_malicious_pickle_is_refused(tmp_path, capsys, marker, command):
    weights = tmp_path / "weights.pt"
    weights.write_bytes(malicious_torch_save(marker))
    refused(capsys, [command, f"builtin:mlp@{weights}"],
            "is not a plain state dict loadable with weights_only=True (it needs the Python object")
