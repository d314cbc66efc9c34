"""Refusing Python control flow on input-dependent tensors, which a tracer would freeze to the example.

`make_fx` runs the model on real tensors: `if x.sum() > 0:` reads one value (an `aten._local_scalar_dense`
node in the trace) and records only the branch the example took. The graph then computes another function
on inputs that take the other branch, and explanations and bounds would be about that other function. A
value read from a tensor that depends on no traced input (a parameter, a shape, a constant) is a fixed
choice and stays allowed.
"""

from __future__ import annotations

import linecache
import sys
from pathlib import Path
from typing import Any

import torch
from torch import fx
from torch.fx.experimental.proxy_tensor import get_proxy_mode
from torch.overrides import TorchFunctionMode

from opwise.errors import TraceError

_SCALAR_READS = (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default)
_LIBRARY_DIRECTORIES = (str(Path(torch.__file__).parent), str(Path(__file__).parent))
_ADVICE = (
    "a graph specializes Python control flow and Python numbers to the example, so it would compute another "
    "function on other inputs. Keep the computation in tensors: torch.where(condition, a, b) for a branch "
    "both sides of which can run, torch.cond for one that must not, and no .item(), float(), int() or bool() "
    "of values computed from the inputs"
)


class DataDependentControlFlow(TraceError):
    """The model reads a Python value (a branch condition, a number) from a tensor computed from its inputs.

    >>> str(DataDependentControlFlow("model.py:7 (`if x.sum() > 0:`)", "Tensor.__bool__")).split(";")[0]
    'model.py:7 (`if x.sum() > 0:`) reads a Python value from an input-dependent tensor (Tensor.__bool__)'
    """

    def __init__(self, where: str, what: str):
        self.where = where
        super().__init__(f"{where} reads a Python value from an input-dependent tensor ({what}); {_ADVICE}")


def _model_frame() -> str:
    """file:line (and code) of the innermost frame outside torch and opwise's tracer: the model's line."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRECTORIES):
        frame = frame.f_back
    if frame is None:
        return "the model"
    code = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
    where = f"{frame.f_code.co_filename}:{frame.f_lineno}"
    return f"{where} (`{code}`)" if code else where


class _Dependence:
    """Which nodes of a graph being traced depend on a placeholder, updated as the tracer appends nodes."""

    def __init__(self, graph: fx.Graph):
        self.graph = graph
        self.dependent: set[fx.Node] = set()
        self.last: fx.Node = graph._root

    def new_scalar_read(self) -> fx.Node | None:
        """The first node appended since the last call that reads a Python value from an input-dependent
        tensor, or None."""
        found = None
        node = self.last.next
        while node is not self.graph._root:
            if node.op == "placeholder" or any(a in self.dependent for a in node.all_input_nodes):
                self.dependent.add(node)
                if found is None and node.target in _SCALAR_READS:
                    found = node
            self.last, node = node, node.next
        return found


class RefuseDataDependentControlFlow(TorchFunctionMode):
    """While `make_fx` traces, raise `DataDependentControlFlow` at the first torch call that read a Python
    value from a tensor depending on a traced input, naming the model's line that made it.

    >>> from torch.fx.experimental.proxy_tensor import make_fx
    >>> def branch(x):
    ...     return x if x.sum() > 0 else -x
    >>> with RefuseDataDependentControlFlow():
    ...     make_fx(branch, _error_on_data_dependent_ops=False)(torch.ones(2))
    Traceback (most recent call last):
    ...
    opwise.tracing.control_flow.DataDependentControlFlow: <doctest ...>:2 (`return x if x.sum() > 0 else -x`) reads a Python value ...
    """

    def __init__(self):
        super().__init__()
        self._dependence: _Dependence | None = None

    def __torch_function__(self, func, types, args=(), kwargs=None) -> Any:
        result = func(*args, **(kwargs or {}))
        mode = get_proxy_mode()
        if mode is None:
            return result
        if self._dependence is None or self._dependence.graph is not mode.tracer.graph:
            self._dependence = _Dependence(mode.tracer.graph)
        if self._dependence.new_scalar_read() is not None:
            name = getattr(func, "__name__", str(func))
            raise DataDependentControlFlow(_model_frame(), name)
        return result


def refuse_input_dependent_reads(module: fx.GraphModule) -> fx.GraphModule:
    """Raise `DataDependentControlFlow` when a traced graph still holds a read of a Python value from an
    input-dependent tensor (one no torch call showed while tracing, so its line is unknown).

    >>> from torch.fx.experimental.proxy_tensor import make_fx
    >>> module = make_fx(lambda x: x * float(x.max()), _error_on_data_dependent_ops=False)(torch.ones(2))
    >>> refuse_input_dependent_reads(module)
    Traceback (most recent call last):
    ...
    opwise.tracing.control_flow.DataDependentControlFlow: node '_local_scalar_dense' of the traced model reads ...
    """
    node = _Dependence(module.graph).new_scalar_read()
    if node is not None:
        raise DataDependentControlFlow(f"node '{node.name}' of the traced model", str(node.target))
    return module
