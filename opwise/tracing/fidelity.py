"""Does the graph compute what the model computes, on the inputs about to be explained or bounded?

Tracing refuses what it can see (`control_flow`), but a model can still differ from its trace in ways no
tracer sees: Python state changed between calls, randomness outside torch, a value computed with NumPy.
One forward pass of each on the very inputs of a request is cheap next to an explanation or a bound pass,
and an answer about a function the model does not compute is worse than none.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
import torch.utils._pytree as pytree

from opwise.errors import TraceError
from opwise.tracing.graph import Graph
from opwise.tracing.outputs import OutputChoice, index_structure, select_output


class GraphMismatch(TraceError):
    """The traced graph's output differs from the model's on the inputs of a request."""


def check_fidelity(graph: Graph | Callable[..., torch.Tensor], model: Any, *inputs: Any,
                   output: OutputChoice = None, **kwargs: Any) -> None:
    """Raise `GraphMismatch` unless `graph` gives the model's output for `model(*inputs, **kwargs)`.

    Does nothing unless `model` is an `nn.Module` (a Graph or an ONNX import is its own reference). `graph` is
    a Graph (called with its placeholders: the inputs flattened as traced, or positional then keyword
    tensors for a rewritten graph) or a callable taking the positional inputs, such as a bounded model. The model runs in eval mode, as it was traced; values are compared with a tolerance
    for float reordering (1e-4 relative to the output's scale).

    >>> import random, torch, opwise
    >>> class Noise(torch.nn.Module):
    ...     def forward(self, x):
    ...         return x * random.random()
    >>> model = Noise()
    >>> graph = opwise.trace(model, torch.ones(1, 2))
    >>> check_fidelity(graph, model, torch.ones(1, 2))
    Traceback (most recent call last):
    ...
    opwise.tracing.fidelity.GraphMismatch: the traced graph computes another function than the model ...
    """
    if not isinstance(model, torch.nn.Module) or isinstance(model, torch.fx.GraphModule):
        return
    layout = getattr(graph, "layout", None)
    if layout is not None:
        kwargs = {**dict(layout.defaults), **kwargs}
        placeholders = layout.flatten(inputs, kwargs)
    elif isinstance(graph, Graph):
        placeholders = list(inputs) + [v for v in kwargs.values() if isinstance(v, torch.Tensor)]
    else:
        placeholders = list(inputs)
    was_training = model.training
    if was_training:
        model.eval()
    try:
        with torch.no_grad():
            try:
                result = model(*inputs, **kwargs)
            except Exception:  # noqa: BLE001 - the model fails on these inputs: nothing to compare, and the graph's
                return  # own pass (explain's, or a bound's refusal naming the node) says why, better than a traceback
            actual = graph(*placeholders)
    finally:
        if was_training:
            model.train()
    leaves, spec = pytree.tree_flatten(result)
    expected = leaves[select_output(index_structure(spec), output)]
    if not isinstance(expected, torch.Tensor) or not isinstance(actual, torch.Tensor):
        return
    expected, actual = expected.detach().cpu(), actual.detach().cpu().to(expected.dtype)
    if expected.shape == actual.shape and _close(actual, expected):
        return
    difference = (actual - expected).abs().max() if expected.shape == actual.shape else f"shape {tuple(actual.shape)} " \
        f"vs {tuple(expected.shape)}"
    rounding = _rounding(model, inputs, kwargs, output, expected) if expected.shape == actual.shape else None
    if rounding is not None and rounding >= 0.1 * float(difference):
        raise GraphMismatch(
            f"the traced graph's output differs from the model's (largest difference {difference}), but so does the "
            f"model's own output in float64 (largest difference {rounding}): the model amplifies float rounding, "
            "and the graph (which orders some float operations differently, e.g. batch norm folded into a "
            "convolution) cannot be checked against it. Networks with random weights and uncalibrated "
            "normalisation do this, trained ones rarely; explain/bound the traced Graph itself to skip the check"
        )
    raise GraphMismatch(
        f"the traced graph computes another function than the model on these inputs (largest difference "
        f"{difference}): the model's result depends on something the trace fixed (Python state, values "
        "computed outside torch, randomness). Make forward a pure function of its inputs, or explain/bound the "
        "traced Graph itself if that is what you mean"
    )


def _rounding(model: torch.nn.Module, inputs: tuple, kwargs: dict, output: OutputChoice,
              expected: torch.Tensor) -> float | None:
    """How far the model's own float64 output lies from `expected` (its float32 one), or None where that says
    nothing: the model does not repeat its own output (randomness, state), is not float32, or fails in float64."""
    if expected.dtype != torch.float32:
        return None

    def run(module, arguments, keywords):
        with torch.no_grad():
            leaves, spec = pytree.tree_flatten(module(*arguments, **keywords))
        return leaves[select_output(index_structure(spec), output)].detach().cpu()

    def doubled(value):
        return value.double() if isinstance(value, torch.Tensor) and value.is_floating_point() else value

    was_training = model.training
    try:
        model.eval()
        if not torch.equal(run(model, inputs, kwargs), expected):
            return None
        wide = copy.deepcopy(model).double()
        result = run(wide, [doubled(i) for i in inputs], {k: doubled(v) for k, v in kwargs.items()})
    except Exception:  # noqa: BLE001 - a model that cannot run in float64 gives no measure of its rounding
        return None
    finally:
        model.train(was_training)
    if result.shape != expected.shape or not torch.isfinite(result).all():
        return None
    return float((result - expected.double()).abs().max())


def _close(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    if not expected.is_floating_point():
        return torch.equal(actual, expected)
    finite = torch.isfinite(expected)
    if not torch.equal(finite, torch.isfinite(actual)) or \
            not torch.allclose(expected[~finite], actual[~finite], equal_nan=True):  # NaN where the model has NaN
        return False
    scale = 1.0 + (float(expected[finite].abs().max()) if finite.any() else 0.0)
    return bool(((actual[finite] - expected[finite]).abs() <= 1e-4 * scale).all())
