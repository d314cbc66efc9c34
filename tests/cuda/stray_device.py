"""Finding CUDA device bugs on a machine without a GPU.

On a GPU, a tensor that opwise makes without `device=` lands on the CPU, and the first operation that combines it
with the model's (CUDA) tensors fails: "Expected all tensors to be on the same device". On the CPU the same code
runs, so the CPU test suite cannot see it. `StrayDevice` makes it visible there: while it is active, every tensor
that a factory (`torch.zeros`, `arange`, `tensor`, `from_numpy`, ...) called from opwise's own code makes without
a device, and every `.cpu()` copy, is tagged as living elsewhere (`StrayTensor`), and an operation that combines
a tagged tensor of one or more dimensions with an untagged one raises `MixedDevices`, naming the line of the
operation and the line that made the tensor. To opwise's code, a tagged tensor reports its device as `meta` (the CPU
of a GPU run, while the model's tensors report `cpu`, the GPU of such a run): moving a tensor to a model tensor's device (`.to(device)`,
`.to(other)`, `.cuda()`, `.type_as`) untags it, moving or making one on a tagged tensor's device tags it.

Only operations that opwise's code asks for are checked (a test may combine what opwise returned, e.g. results
copied to the CPU, with its own tensors). What CUDA allows passes here too: 0-dim tensors (CUDA accepts CPU scalars; an untagged 0-dim tensor may be either), indexing with a CPU index,
`copy_` across devices, `.item()` / `.tolist()` / `.numpy()`. Tensors that opwise's model builders make (the ONNX
importer, the demo models) are the model's own and are not tagged.

Use: `with StrayDevice(): ...` around a run, or `pytest --stray-device` to run every test inside one.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

import opwise

PACKAGE = os.path.dirname(opwise.__file__) + os.sep
#: opwise code that builds the user's model (its tensors are the model's, wherever it lives)
MODEL_BUILDERS = tuple(os.path.join(PACKAGE, *part) + os.sep for part in (("tracing", "onnx"), ("models",)))
FACTORIES = {torch.zeros, torch.ones, torch.full, torch.empty, torch.arange, torch.eye, torch.linspace, torch.logspace,
             torch.rand, torch.randn, torch.randint, torch.randperm, torch.tensor, torch.as_tensor, torch.from_numpy,
             torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like, torch.rand_like, torch.randn_like}
DEVICE_GETTER = torch.Tensor.device.__get__
LIKE = {torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like, torch.rand_like, torch.randn_like}
MOVES = {torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.type_as}
ALLOWED = {torch.Tensor.__getitem__, torch.Tensor.__setitem__, torch.Tensor.copy_, torch.Tensor.item, torch.Tensor.tolist,
           torch.Tensor.numpy, torch.Tensor.__repr__, torch.Tensor.__format__, torch.Tensor.size, torch.Tensor.dim}


class StrayTensor(torch.Tensor):
    """A tensor made without a device (it would be on the CPU while the model is on a GPU)."""

    origin: str


class MixedDevices(RuntimeError):
    """An operation combined a tensor made without a device with the model's tensors."""


def _where(depth: int) -> str:
    frame = sys._getframe(depth + 1)
    return f"{frame.f_code.co_filename.replace(PACKAGE, 'opwise/')}:{frame.f_lineno}"


TORCH = os.path.dirname(torch.__file__) + os.sep


def _called_from_package(depth: int) -> bool:
    """Whether the code that asked for this operation is opwise's: the first frame above it that is neither torch's
    own nor code torch.fx generated (a traced graph's forward). Operations a test (a user) runs on what opwise
    returned are the user's business: results may come back on the CPU."""
    frame = sys._getframe(depth + 1)
    while frame is not None and (frame.f_code.co_filename.startswith(TORCH) or frame.f_code.co_filename.startswith("<")):
        frame = frame.f_back
    return frame is not None and frame.f_code.co_filename.startswith(PACKAGE)


def _is_package_code(filename: str) -> bool:
    return filename.startswith(PACKAGE) and not filename.startswith(MODEL_BUILDERS)


def _names_a_device(func: Any, args: tuple, kwargs: dict) -> bool:
    if func in (torch.Tensor.cuda, torch.Tensor.type_as):
        return True
    return kwargs.get("device") is not None or any(isinstance(a, (torch.device, str, torch.Tensor)) for a in args[1:])


def _is_stray_device(value: Any) -> bool:
    return isinstance(value, StrayTensor) or (isinstance(value, (torch.device, str)) and torch.device(value).type == "meta")


def _on_cpu(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The call with the stray device (meta) replaced by the CPU, where the data really is."""
    swap = lambda v: "cpu" if isinstance(v, (torch.device, str)) and _is_stray_device(v) else v  # noqa: E731
    return tuple(swap(a) for a in args), {k: swap(v) for k, v in kwargs.items()}


def _tag(tensor: torch.Tensor, origin: str) -> StrayTensor:
    stray = tensor.as_subclass(StrayTensor)
    stray.origin = origin
    return stray


class StrayDevice(TorchFunctionMode):
    """While active, opwise's device-less tensors are tagged and mixing them with the model's raises MixedDevices.

    >>> with StrayDevice():
    ...     torch.zeros(3) + torch.ones(3)   # made by the caller, not by opwise: nothing is tagged
    tensor([1., 1., 1.])
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        stray = [t for t in tensors if type(t) is StrayTensor and t.dim() > 0]
        if stray and func not in ALLOWED and func not in MOVES \
                and any(type(t) is not StrayTensor and t.dim() > 0 for t in tensors) \
                and _called_from_package(1):
            name = getattr(func, "__name__", str(func))
            raise MixedDevices(f"{name} at {_where(1)} combines the model's tensors with one made without a device at "
                               f"{getattr(stray[0], 'origin', '?')}")
        if func == DEVICE_GETTER and type(args[0]) is StrayTensor and _called_from_package(1):
            return torch.device("meta")
        if func in MOVES or func in FACTORIES:
            device = kwargs.get("device", args[1] if func in MOVES and len(args) > 1 else None)
            if device is not None and _is_stray_device(device):
                args, kwargs = _on_cpu(args, kwargs)
                if isinstance(device, StrayTensor):
                    args = (args[0], *[a.as_subclass(torch.Tensor) if a is device else a for a in args[1:]])
                out = func(*args, **kwargs)
                return _tag(out.as_subclass(torch.Tensor), f"{_where(1)} (made on a stray tensor's device)")
        out = func(*args, **kwargs)
        if not isinstance(out, torch.Tensor):
            return out
        if func is torch.Tensor.cpu and out.dim() > 0 and _is_package_code(sys._getframe(1).f_code.co_filename):
            return _tag(out, f"{_where(1)} (.cpu())")
        if (func in MOVES and _names_a_device(func, args, kwargs)) or (func in FACTORIES and kwargs.get("device") is not None):
            return out.as_subclass(torch.Tensor) if type(out) is StrayTensor else out
        if func in FACTORIES and func not in LIKE and out.dim() > 0 and _is_package_code(sys._getframe(1).f_code.co_filename):
            if not (func in (torch.tensor, torch.as_tensor) and args and isinstance(args[0], torch.Tensor)):
                return _tag(out, _where(1))
        if type(out) is StrayTensor and not hasattr(out, "origin"):
            out.origin = getattr(stray[0], "origin", "?") if stray else "?"
        return out
