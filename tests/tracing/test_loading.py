"""Model specs: builtins, factory files, exported programs, ONNX, state dicts; and every bad input."""

from __future__ import annotations

import os
import textwrap

import pytest
import torch

import opwise
from opwise.tracing.loading import example_inputs, load_model
from tests.security.crafted import (SAMPLE_INPUTS, malicious_torch_save, pickled_constant_program, rewrite_archive,
                                    saved_program)

FACTORY_FILE = """
import torch

def make_model():
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))

def make_with_inputs():
    return make_model(), torch.ones(5, 3)

def make_cnn():
    import opwise
    return opwise.models.architecture("cnn")

def broken():
    raise RuntimeError("factory failed on purpose")

def not_a_model():
    return 42

NOT_CALLABLE = 1
"""


@pytest.fixture
def factory_file(tmp_path):
    path = tmp_path / "user_models.py"
    path.write_text(textwrap.dedent(FACTORY_FILE))
    return path


def test_builtin_spec_gives_trained_model_and_demo_digit():
    loaded = load_model("builtin:cnn")
    reference = opwise.models.builtin("cnn")
    assert isinstance(loaded, opwise.LoadedModel)
    assert torch.equal(loaded.example_inputs[0], opwise.models.demo_inputs("cnn")[0])
    with torch.no_grad():
        assert torch.equal(loaded.model(*loaded.example_inputs), reference(*loaded.example_inputs))


def test_factory_spec_with_and_without_example_inputs(factory_file):
    plain = load_model(f"{factory_file}:make_model")
    assert isinstance(plain.model, torch.nn.Sequential) and plain.example_inputs is None
    with_inputs = load_model(f"{factory_file}:make_with_inputs")
    assert with_inputs.example_inputs[0].shape == (5, 3)


def test_state_dict_over_builtin_and_factory(factory_file, tmp_path):
    torch.manual_seed(1)
    trained = opwise.models.architecture("cnn")
    weights = tmp_path / "cnn_weights.pt"
    torch.save(trained.state_dict(), weights)
    images = opwise.models.demo_inputs("cnn", n=3)[0]
    with torch.no_grad():
        expected = trained.eval()(images)
        for spec in (f"builtin:cnn@{weights}", f"{factory_file}:make_cnn@{weights}"):
            model = load_model(spec).model.eval()
            assert torch.allclose(model(images), expected), spec


def test_exported_program_with_its_example_inputs(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh())
    path = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(4, 3),)), path)
    loaded = load_model(str(path))
    assert loaded.example_inputs[0].shape == (4, 3)
    graph = opwise.trace(loaded.model, *loaded.example_inputs)
    x = torch.randn(4, 3)
    assert torch.allclose(graph(x), model(x), atol=1e-6)


def test_onnx_file_becomes_a_graph(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("opwise.tracing.onnx", reason="the ONNX importer is not in this checkout yet")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    proto = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    path = tmp_path / "relu.onnx"
    onnx.save(proto, path)
    loaded = load_model(str(path))
    assert isinstance(loaded.model, opwise.Graph)
    assert example_inputs(loaded)[0].shape == (1, 3)


def test_exported_programs_with_pickled_objects_are_refused(tmp_path, capsys):
    good = saved_program(tmp_path / "good.pt2")
    marker = tmp_path / "payload_ran"
    opaque = pickled_constant_program(good, tmp_path / "opaque.pt2", marker)
    with pytest.raises(opwise.ModelLoadError, match="refused constant 'offset'.*never unpickles"):
        load_model(str(opaque))
    hostile_inputs = rewrite_archive(
        good, tmp_path / "inputs.pt2",
        lambda files: files.update({SAMPLE_INPUTS: malicious_torch_save(marker, lambda p: ((p,), {}))}),
    )
    with pytest.raises(opwise.ModelLoadError, match="refused the example inputs"):
        load_model(str(hostile_inputs))
    assert not marker.exists()
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


@pytest.mark.parametrize(
    "spec, message",
    [
        ("builtin:resnet", "unknown built-in model 'resnet'; built-in models are cnn, mlp, transformer"),
        ("resnet50", "unknown model spec 'resnet50'; use builtin:NAME"),
        ("missing.py:make_model", "model file missing.py does not exist"),
        ("missing.pt2", "exported program missing.pt2 does not exist"),
        ("builtin:cnn@missing.pt", "weights file missing.pt does not exist"),
        ("weights.pt", "holds weights only; name the architecture too"),
        ("model.py", "name the factory function to call"),
    ],
)
def test_bad_specs_say_what_failed_and_what_to_try(spec, message):
    with pytest.raises(opwise.ModelLoadError, match=message.replace("(", r"\(")):
        load_model(spec)


@pytest.mark.parametrize(
    "factory, message",
    [
        ("broken", r"broken\(\) raised RuntimeError: factory failed on purpose"),
        ("not_a_model", r"not_a_model\(\) returned int, not a model"),
        ("absent", "has no function 'absent'; it defines broken, make_cnn"),
        ("NOT_CALLABLE", "has no function 'NOT_CALLABLE'"),
    ],
)
def test_bad_factories(factory_file, factory, message):
    with pytest.raises(opwise.ModelLoadError, match=message):
        load_model(f"{factory_file}:{factory}")


def test_file_that_fails_to_import(tmp_path):
    path = tmp_path / "syntax.py"
    path.write_text("def make_model(:\n")
    with pytest.raises(opwise.ModelLoadError, match="importing .*syntax.py raised SyntaxError"):
        load_model(f"{path}:make_model")


def test_arbitrary_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, path)  # a whole module: needs full unpickling
    with pytest.raises(opwise.ModelLoadError, match="weights_only=True"):
        load_model(f"builtin:mlp@{path}")


def test_weights_of_another_architecture(tmp_path):
    path = tmp_path / "mlp.pt"
    torch.save(opwise.models.architecture("mlp").state_dict(), path)
    with pytest.raises(opwise.ModelLoadError, match="do not fit the architecture"):
        load_model(f"builtin:cnn@{path}")


def test_wrong_input_shape_names_it_and_the_expected_one():
    loaded = load_model("builtin:cnn")
    with pytest.raises(opwise.InputError, match=r"\(1, 3, 32, 32\).*example inputs have shape \(1, 1, 8, 8\)"):
        example_inputs(loaded, [(1, 3, 32, 32)])


def test_factory_without_inputs_asks_for_a_shape(factory_file):
    loaded = load_model(f"{factory_file}:make_model")
    with pytest.raises(opwise.InputError, match="--input-shape"):
        example_inputs(loaded)
    assert example_inputs(loaded, [(2, 3)])[0].shape == (2, 3)


def test_weights_with_other_keys_name_the_missing_and_unexpected_ones(tmp_path):
    path = tmp_path / "renamed.pt"
    torch.save({"fc1.weight": torch.ones(1)}, path)
    message = r'Missing key\(s\) in state_dict: "layers.1.weight".*Unexpected key\(s\) in state_dict: "fc1.weight"'
    with pytest.raises(opwise.ModelLoadError, match=message):
        load_model(f"builtin:mlp@{path}")
