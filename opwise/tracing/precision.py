"""Models in another float precision than float32: what opwise's engines compute in.

Rules and bound transfers mix the model's weights with tensors of their own, so a float64, float16 or bfloat16
model failed deep inside them with a dtype mismatch. What is sound decides each case:

- a Graph whose bounded input is float64 (an ONNX network declared in DOUBLE, nn4sys_2021's) is bounded in float64,
  its own arithmetic (`bound_dtype`): input sets, specifications, attacks and counterexample checks are float64
  too, and no weight is ever rounded to float32 (a rounded weight moves an output, and a property whose threshold
  lies that close to the output could be `verified` for the copy and violated by the network);
- an nn.Module in float64 is used through a float32 copy (the model itself is left as it is), with a warning
  that says so: the copy computes the same function up to float32 rounding, which the bounds treat as they treat
  every float32 operation of a float32 model; bound a traced float64 Graph for float64 bounds;
- float16 / bfloat16: fine for explanations, but every operation of the model itself rounds a thousand times
  more coarsely than float32, which bounds of a float32 copy do not include; `purpose="bounds"` refuses them,
  naming the fix (bound `model.float()`, whose outputs they then cover).
"""

from __future__ import annotations

import copy
import warnings
import weakref

import torch

from opwise.errors import InputError

#: half-precision dtypes: their own rounding is far beyond what float32 bounds allow for
NARROW = (torch.float16, torch.bfloat16)

_COPIES: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, torch.nn.Module]]" = weakref.WeakKeyDictionary()


def model_dtypes(model: torch.nn.Module) -> set[torch.dtype]:
    """The floating dtypes of the model's parameters and buffers."""
    return {t.dtype for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()}


def as_float32(model: torch.nn.Module, purpose: str) -> torch.nn.Module:
    """`model` itself when every floating parameter and buffer is float32, else a float32 copy (kept while the
    model's tensors are unchanged, so repeated calls do not copy again) with a warning; refuses half precision
    when `purpose` is "bounds".

    >>> import torch
    >>> model = torch.nn.Linear(2, 1)
    >>> as_float32(model, "explanations") is model
    True
    >>> import warnings
    >>> with warnings.catch_warnings(record=True):
    ...     copied = as_float32(torch.nn.Linear(2, 1).double(), "explanations")
    >>> copied.weight.dtype
    torch.float32
    """
    dtypes = model_dtypes(model) - {torch.float32}
    if not dtypes:
        return model
    names = ", ".join(sorted(str(dtype).removeprefix("torch.") for dtype in dtypes))
    if purpose == "bounds" and dtypes & set(NARROW):
        raise InputError(
            f"the model computes in {names}: opwise bounds float32 arithmetic, and every {names} operation rounds "
            "far more coarsely, so bounds of it would not hold for its outputs; bound model.float() (and pass float32 "
            "inputs) to get bounds that cover that model")
    state = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in (*model.parameters(), *model.buffers()))
    kept = _COPIES.get(model)
    if kept is None or kept[0] != state:
        warnings.warn(f"the model's parameters are {names}: opwise computes in float32 and uses a float32 copy of "
                      f"it for {purpose} (the model is unchanged)", RuntimeWarning, stacklevel=3)
        try:
            copied = copy.deepcopy(model).float()
        except Exception as error:  # a module holding something deepcopy cannot copy (a lock, a handle)
            raise InputError(f"the model's parameters are {names} and opwise could not copy it to float32 "
                             f"({type(error).__name__}: {error}); call model.float() and pass float32 inputs") from None
        kept = _COPIES[model] = (state, copied)
    return kept[1]


def refuse_narrow_graph(graph, purpose: str) -> None:
    """Refuse a traced or imported Graph whose input-dependent operations compute in float16 or bfloat16 (an
    ONNX file exported in half precision): a Graph cannot be copied to float32 as a module can, and the engines'
    float32 tensors would meet its half-precision ones inside a rule. A cast itself is fine (its rounding is
    bounded, and cast back at once it leaves the rest in float32). Names the first such nodes."""
    narrow = [node for node in graph.call_nodes() if graph.info(node).depends_on_input
              and graph.info(node).dtype in NARROW and graph.info(node).op != "aten._to_copy.default"]
    if narrow:
        names = ", ".join(f"{node.name} ({graph.info(node).op}, {str(graph.info(node).dtype).removeprefix('torch.')})"
                          for node in narrow[:3])
        raise InputError(f"{len(narrow)} input-dependent operations compute in half precision, e.g. {names}: opwise "
                         f"computes {purpose} in float32; export or trace the model in float32")


def bound_dtype(graph) -> torch.dtype:
    """The dtype the bound engine computes a Graph's bounds in: float64 for a graph whose bounded input is float64
    (an ONNX network declared in DOUBLE), float32 otherwise. A float64 network is bounded in its own arithmetic;
    its weights are never rounded to float32, which could move its outputs past a property's threshold and make
    a `verified` wrong.

    >>> import torch
    >>> from opwise.tracing import trace
    >>> bound_dtype(trace(torch.nn.Linear(2, 1).double(), torch.zeros(1, 2, dtype=torch.float64)))
    torch.float64
    """
    dtype = graph.info(graph.explained_inputs[0]).dtype
    return torch.float64 if dtype == torch.float64 else torch.float32


def float32_inputs(inputs: tuple) -> tuple:
    """Floating tensors among `inputs` as float32 (the copy's dtype); everything else as it is."""
    return tuple(x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in inputs)
