"""Model specs -> a model and example inputs, for the CLI and scripts.

Specs:

- `builtin:NAME` - a built-in demo model (cnn, mlp, transformer) with bundled digits as inputs;
- `path/to/file.py:factory` - import the file and call `factory()`, which returns a model or
  `(model, example_inputs)`;
- `model.pt2` - a saved `torch.export` program, with its recorded example inputs;
- `model.onnx` - imported by opwise's own ONNX importer into a Graph;
- `ARCHITECTURE@weights.pt` - a builtin or file factory with a state dict loaded over it.

Files are only ever read with `torch.load(..., weights_only=True)`, and `.pt2` archives that would unpickle
an object are refused (opwise.tracing.pt2_files): no code runs from a model file.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, NamedTuple

import torch

from opwise.errors import InputError, ModelLoadError, OpwiseError
from opwise.tracing.graph import Graph, model_device
from opwise.tracing.load_errors import describe_load_error
from opwise.tracing.pt2_files import load_exported_program

WEIGHT_SUFFIXES = (".pt", ".pth")
SPEC_FORMS = "builtin:NAME, path/to/file.py:factory, model.pt2, model.onnx (or .onnx.gz), or one of the first two with @weights.pt"


class LoadedModel(NamedTuple):
    """What `load_model` gives: an `nn.Module` (trace it) or a `Graph` (ONNX), and example inputs or None."""

    model: torch.nn.Module | Graph
    example_inputs: tuple[torch.Tensor, ...] | None


def load_model(spec: str) -> LoadedModel:
    """Load the model a spec names; see the module docstring for the forms.

    >>> import opwise
    >>> loaded = opwise.load_model("builtin:mlp")
    >>> type(loaded.model).__name__, loaded.example_inputs[0].shape
    ('DigitsMLP', torch.Size([1, 1, 8, 8]))
    >>> opwise.load_model("builtin:resnet")
    Traceback (most recent call last):
    ...
    opwise.errors.ModelLoadError: unknown built-in model 'resnet'; built-in models are cnn, mlp, transformer
    """
    architecture, weights = _split_weights(spec)
    if architecture.startswith("builtin:"):
        loaded = _load_builtin(architecture.removeprefix("builtin:"), weights is None)
    elif _factory_parts(architecture) is not None:
        loaded = _load_factory(*_factory_parts(architecture))
    elif weights is not None:
        raise ModelLoadError(
            f"{spec!r}: weights need an architecture from builtin:NAME or file.py:factory, e.g. builtin:cnn@{weights}"
        )
    elif architecture.endswith(".pt2"):
        loaded = _load_exported(Path(architecture))
    elif architecture.endswith((".onnx", ".onnx.gz")):
        loaded = _load_onnx(Path(architecture))
    elif architecture.endswith(WEIGHT_SUFFIXES):
        raise ModelLoadError(
            f"{architecture} holds weights only; name the architecture too, e.g. builtin:cnn@{architecture} "
            f"or file.py:factory@{architecture}"
        )
    elif architecture.endswith(".py"):
        raise ModelLoadError(f"{architecture}: name the factory function to call, e.g. {architecture}:make_model")
    else:
        raise ModelLoadError(f"unknown model spec {spec!r}; use {SPEC_FORMS}")
    if weights is not None:
        _load_weights(loaded.model, Path(weights))
    return loaded


def _split_weights(spec: str) -> tuple[str, str | None]:
    head, separator, tail = spec.rpartition("@")
    if separator and tail.endswith(WEIGHT_SUFFIXES):
        return head, tail
    return spec, None


def _factory_parts(spec: str) -> tuple[Path, str] | None:
    path, separator, factory = spec.rpartition(":")
    if separator and path.endswith(".py") and factory.isidentifier():
        return Path(path), factory
    return None


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise ModelLoadError(f"{what} {path} does not exist (paths are relative to {Path.cwd()})")


def _load_builtin(name: str, trained: bool) -> LoadedModel:
    from opwise import models

    model = models.builtin(name) if trained else models.architecture(name).eval()
    images, _ = models.demo_inputs(name, n=1)
    return LoadedModel(model, (images,))


def _load_factory(path: Path, factory_name: str) -> LoadedModel:
    return _as_loaded(call_factory(path, factory_name, "model file"), f"{path}:{factory_name}()")


def call_factory(path: Path, factory_name: str, what: str = "file") -> Any:
    """Import the Python file `path` and return what its function `factory_name()` returns.

    Failures of the user's code become one `ModelLoadError` naming the file and function; `what` names
    the file in the message ("model file", "tokenizer file").

    >>> call_factory(Path("missing.py"), "make", "tokenizer file")
    Traceback (most recent call last):
    ...
    opwise.errors.ModelLoadError: tokenizer file missing.py does not exist (paths are relative to ...)
    """
    _require_file(path, what)
    module_name = f"opwise_user_model_{abs(hash(path.resolve()))}"
    try:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 - any failure of user code is reported as one load error
        sys.modules.pop(module_name, None)
        raise ModelLoadError(
            f"importing {path} raised {describe_load_error(error)}; fix the file or run it with python to see why"
        ) from error
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        available = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ModelLoadError(f"{path} has no function {factory_name!r}; it defines {', '.join(available) or 'none'}")
    try:
        return factory()
    except OpwiseError:
        raise
    except Exception as error:  # noqa: BLE001 - see above
        raise ModelLoadError(f"{path}:{factory_name}() raised {describe_load_error(error)}") from error


def _as_loaded(result: Any, where: str) -> LoadedModel:
    model, inputs = result if isinstance(result, tuple) and len(result) == 2 else (result, None)
    if not isinstance(model, (torch.nn.Module, Graph)):
        raise ModelLoadError(
            f"{where} returned {type(model).__name__}, not a model; return a torch.nn.Module or (model, example_inputs)"
        )
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    if inputs is not None:
        inputs = tuple(inputs)
        if not all(isinstance(t, torch.Tensor) for t in inputs):
            kinds = ", ".join(type(t).__name__ for t in inputs)
            raise ModelLoadError(f"{where} returned example inputs ({kinds}); they must be tensors")
    return LoadedModel(model, inputs)


def _load_exported(path: Path) -> LoadedModel:
    _require_file(path, "exported program")
    try:
        program = load_exported_program(path)
        module = program.module()
    except OpwiseError:
        raise
    except Exception as error:  # noqa: BLE001 - a corrupt or foreign file is a load error
        raise ModelLoadError(f"{path} is not a loadable torch.export program: {describe_load_error(error)}") from error
    args, _ = program.example_inputs or ((), {})
    inputs = tuple(args) if args and all(isinstance(a, torch.Tensor) for a in args) else None
    # The program is fixed to the mode it was exported in; mark it so tracing does not call its eval(),
    # which unlifted modules refuse.
    torch.nn.Module.train(module, False)
    return LoadedModel(module, inputs)


def _load_onnx(path: Path) -> LoadedModel:
    _require_file(path, "ONNX file")
    try:
        from opwise.tracing.onnx import load_onnx
    except ImportError as error:
        raise ModelLoadError(
            f"cannot import {path}: ONNX support needs the onnx extra (pip install 'opwise[onnx]'); {error}"
        ) from error
    return LoadedModel(load_onnx(path), None)


def _load_weights(model: torch.nn.Module | Graph, path: Path) -> None:
    if not isinstance(model, torch.nn.Module):
        raise ModelLoadError(f"weights {path} can only be loaded into a torch.nn.Module architecture")
    _require_file(path, "weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - pickles with arbitrary objects are refused here
        raise ModelLoadError(
            f"{path} is not a plain state dict loadable with weights_only=True ({describe_load_error(error)}); "
            "save it with torch.save(model.state_dict(), path)"
        ) from error
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path} holds a {type(state).__name__}, not a state dict; save model.state_dict()")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ModelLoadError(f"weights {path} do not fit the architecture: {describe_load_error(error)}") from error


def example_inputs(loaded: LoadedModel, shapes: list[tuple[int, ...]] | None = None) -> tuple[torch.Tensor, ...]:
    """Inputs to trace with: random tensors in [0, 1) of the given shapes, else the loaded examples.

    The model is run once on them, so a wrong shape fails here with an InputError naming it.

    >>> loaded = load_model("builtin:cnn")
    >>> example_inputs(loaded, [(2, 1, 8, 8)])[0].shape
    torch.Size([2, 1, 8, 8])
    >>> example_inputs(loaded, [(1, 3, 32, 32)])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    opwise.errors.InputError: the model does not accept inputs of shape (1, 3, 32, 32): ...
    """
    device = model_device(loaded.model)  # a factory may return its model on a GPU: the inputs go where it is
    if shapes:
        inputs = tuple(torch.rand(*shape, generator=torch.Generator().manual_seed(0)).to(device) for shape in shapes)
    elif loaded.example_inputs is not None:
        inputs = tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in loaded.example_inputs)
    elif isinstance(loaded.model, Graph):
        generator = torch.Generator().manual_seed(0)  # the same inputs every run, as for given shapes
        inputs = tuple(torch.rand(*loaded.model.info(node).shape, generator=generator).to(device)
                       for node in loaded.model.input_nodes)
    else:
        raise InputError("the model came without example inputs; give their shapes, e.g. --input-shape 1,3,32,32")
    described = ", ".join(str(tuple(t.shape)) for t in inputs)
    try:
        with torch.no_grad():
            loaded.model(*inputs)
    except Exception as error:  # noqa: BLE001 - any failure of the forward pass means the inputs do not fit
        expected = ""
        if loaded.example_inputs is not None and shapes:
            shapes_expected = ", ".join(str(tuple(t.shape)) for t in loaded.example_inputs)
            expected = f"; its example inputs have shape {shapes_expected}"
        raise InputError(
            f"the model does not accept inputs of shape {described}: {describe_load_error(error)}{expected}"
        ) from error
    return inputs
