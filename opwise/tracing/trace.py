"""`trace(model, *inputs)`: any PyTorch model to one operation-level Graph."""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from typing import Any, Sequence

import torch
from torch import fx

from opwise.errors import TraceError
from opwise.tracing.control_flow import DataDependentControlFlow
from opwise.tracing.export import export_to_fx
from opwise.tracing.functional import functional_to_fx
from opwise.tracing.graph import Graph
from opwise.tracing.inputs import layout_of
from opwise.tracing.outputs import OutputChoice
from opwise.tracing.passes import (
    annotate,
    fold_constants,
    fold_single_output_ops,
    remove_no_op_nodes,
    rewrite_linear_forms,
)

STRATEGIES = ("auto", "export", "fx")

_FRONT_ENDS = {"export": export_to_fx, "fx": functional_to_fx}


def trace(
    model: torch.nn.Module,
    *inputs: Any,
    strategy: str = "auto",
    output: OutputChoice = None,
    explain: Sequence[str] | None = None,
    **kwargs: Any,
) -> Graph:
    """Trace `model` called as `model(*inputs, **kwargs)` into a Graph of ATen operations.

    Positional tensor inputs are the explained/bounded ones; keyword tensors (masks, position ids) are
    constants unless named in `explain`. `output` picks one output of a structured result (a key such as
    "logits", an index, or a callable); by default `logits` or the first output. `strategy="auto"` tries
    `torch.export` (non-strict) and falls back to `make_fx` ("fx"), which specializes Python control
    flow on shapes and constants to the example and refuses it on values computed from the inputs
    (`DataDependentControlFlow`, naming the model's line). The model is traced in eval mode, its training flag restored afterwards.

    >>> import torch, opwise
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten())
    >>> graph = opwise.trace(model, torch.randn(1, 1, 5, 5))
    >>> graph.info(graph.output).shape
    (1, 18)
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if not isinstance(model, torch.nn.Module):
        raise TraceError(f"expected a torch.nn.Module, got {type(model).__name__}")
    added = _without_cache(model, kwargs)
    kwargs = {**kwargs, **added}
    try:
        layout = dataclasses.replace(layout_of(inputs, kwargs, explain), defaults=tuple(added.items()))
    except ValueError as error:
        raise TraceError(str(error)) from None
    order = ["export", "fx"] if strategy == "auto" else [strategy]
    was_training = model.training
    if was_training:  # only when needed: modules unlifted from torch.export programs refuse eval()
        try:
            model.eval()
        except NotImplementedError:  # such a module (ExportedProgram.module()) keeps the mode it was exported in
            was_training = False
    failures = []
    try:
        for name in order:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    module, sources = _FRONT_ENDS[name](model, layout, inputs, kwargs, output)
                break
            except DataDependentControlFlow:
                raise
            except ValueError as error:
                if "output=" in str(error):
                    raise TraceError(str(error)) from None
                failures.append(f"{name}: {_first_line(error)}")
            except Exception as error:  # noqa: BLE001 - every tracer failure is reported together below
                failures.append(f"{name}: {type(error).__name__}: {_first_line(error)}")
        else:
            raise TraceError(
                "could not trace the model (" + "; ".join(failures) + "). Check that the example inputs run "
                "through model(*inputs), or try strategy='fx' for data-dependent shapes"
            )
    finally:
        if was_training:
            model.train()
    fold_single_output_ops(module)
    remove_no_op_nodes(module)
    rewrite_linear_forms(module)
    fold_constants(module, sources)
    annotate(module, list(layout.explained), sources)
    _require_dependent_output(module, layout.names, layout.explained, name)

    def retrace(*new_inputs: Any, **new_kwargs: Any) -> Graph:
        return trace(model, *new_inputs, strategy=name, output=output, explain=explain, **new_kwargs)

    return Graph(module, list(layout.explained), strategy=name, retrace=retrace, input_names=layout.names, layout=layout)


def _without_cache(model: torch.nn.Module, kwargs: dict) -> dict:
    """{"use_cache": False} for models that take it (Hugging Face's) unless the caller chose, else {}: a graph
    is one forward pass, and the key/value cache it would return is an object torch.export cannot flatten."""
    if "use_cache" in kwargs:
        return {}
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"use_cache": False} if "use_cache" in parameters else {}


def _require_dependent_output(module, names, explained, strategy: str) -> None:
    """A graph whose output is a constant lost the computation (through .numpy(), .item(), floats)."""
    output = next(n for n in reversed(module.graph.nodes) if n.op == "output").args[0]
    if isinstance(output, fx.Node) and output.meta["opwise"].depends_on_input:
        return
    what = type(output.meta.get("val")).__name__ if isinstance(output, fx.Node) else type(output).__name__
    inputs = [n for n, e in zip(names, explained) if e]
    raise TraceError(
        f"the traced output ({what}, via {strategy}) does not depend on the explained inputs {inputs}: computations "
        "through .numpy(), .tolist() or Python numbers cannot be traced; keep the model in torch operations"
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__
