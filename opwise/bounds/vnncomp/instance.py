"""VNN-COMP instances: decide one (ONNX + VNN-LIB) within its timeout, in VNN-COMP's words.

The words are VNN-COMP's: `unsat` (the property holds), `sat` (a checked counterexample follows),
`timeout`, `unknown`. The input boxes of the property go to the one orchestrator (bounds/verify.py,
`verify_boxes`): boxes with few free inputs and the same output rows are searched together by input
splitting, every other box by `verify_specification` with a complete search, which chooses the attack, the
bound passes and input splitting or GenBaB; its answer is rendered here (`VerificationResult.vnncomp_status`)
and a `sat` is checked again as the
competition's checker does. The ONNX importer and the bound engine are imported only when an instance runs.

Input elements the property fixes (lower == upper) fold to constants at import (tracing/onnx/fixed.py); a
network that needs an argument read from free elements it only casts to integers (cctsdb_yolo 2023's patch
position) is evaluated cell by cell instead (`_decide_by_cells`, tracing/onnx/cases.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import threading
import time
import types
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from opwise.bounds.bounded_model import BoundedModel
from opwise.bounds.engine.deadline import deadline
from opwise.bounds.function_bounds import FunctionBounds
from opwise.bounds.spec import Disjunct, Specification, contradictory, specifications_to
from opwise.bounds.verify import verify_boxes
from opwise.bounds.vnncomp.joint import load_joint, network_files
from opwise.bounds.vnncomp.products import AppendedColumns, Products
from opwise.bounds.vnncomp.results import InstanceResult
from opwise.bounds.vnncomp.vnnlib import parse_property, violates
from opwise.bounds.vnncomp.vnnlib2 import Query
from opwise.errors import InputDependentArgument, OpwiseError, SpecError, SpecTooLarge, TimeLimitReached
from opwise.progress import Progress
from opwise.tracing.precision import bound_dtype

if TYPE_CHECKING:
    from opwise.tracing.onnx.fixed import FixedElements

Loader = Callable[[str], tuple["BoundedModel | FunctionBounds", tuple[int, ...]]]
"""`load(onnx_path) -> (model, input_shape)`: how verify_instance gets a network (a BoundedModel, or a
FunctionBounds for bounds from elsewhere)."""

#: seconds past its timeout after which verify_instance interrupts whatever runs (a PGD step, a forward pass,
#: an import) when the engine's own deadline checks have not ended it
HARD_STOP_SLACK = 0.25
#: seconds between hard stops after the first, until the block is left: one raised inside a __del__ or weakref
#: callback is ignored by Python (`_hard_stop`)
HARD_STOP_RETRY = 0.05
#: the margin every evaluated point must keep for `unsat` where the network is decided by running it (at integer
#: cells, or once where it is constant): closer than this, float32 rounding could put the competition's check
#: either side; a DOUBLE network, which the check runs in float64, keeps `EVALUATED_MARGIN_FLOAT64`
EVALUATED_MARGIN = 1e-4
EVALUATED_MARGIN_FLOAT64 = 1e-9


def load_with_engine(onnx_path: str, device: str | torch.device | None = None,
                     fixed: FixedElements | None = None) -> tuple[BoundedModel, tuple[int, ...]]:
    """The default Loader: opwise's ONNX importer (at the declared batch size; other batch sizes come from
    `Graph.for_batch`, or chunks where the network cannot be imported at them), bounded on `device`.

    `fixed` (flat, as VNN-LIB numbers X_i) names the input elements the property fixes: what the network
    computes from them alone folds to constants at import (tracing/onnx/fixed.py), so a slice start or gather
    index read from them imports; the network is then only valid on inputs with those values.

    VNN-LIB's X_i number the input tensor as the file declares it, and Y_i the output (the first, where the
    network has several: VNN-COMP's check of a VNN-LIB 1 property reads the first). A leading axis of 1 (or
    a symbolic one) is the batch; a fixed leading axis above 1 ([32, 5]: 32 rows of one sample, which a
    Transpose may mix) is part of the one sample, and so is an output's ([50, 1] from an input [1, 600]
    reshaped to [50, 12]): the network is then bounded as `_WholeInput` on [1, *input], its output flattened,
    one box per pass. An input without a batch axis ([20], [32, 5]) is given one instead (`_Samplewise`: the network
    run per sample by torch.vmap), so every node of the bounded graph has one: GenBaB splits its neurons (a node
    without the batch axis is no split candidate) and searches bound many boxes per pass. Where the network adds
    the batch axis itself (its input [12, 8] read only by a Reshape to [-1, 12, 8]: pensieve's), it is imported
    with that axis (`load_onnx(add_batch_axis=True)`), so searches bound many boxes per pass.
    """
    from opwise.errors import ModelLoadError
    from opwise.tracing.onnx import load_onnx

    folded = {0: fixed} if fixed is not None else None
    graph = load_onnx(onnx_path, fixed=folded, first_output=True)
    declared = tuple(graph.info(graph.explained_inputs[0]).shape)
    output = graph.info(graph.output).shape if isinstance(graph.output, torch.fx.Node) else None
    if declared[:1] != (1,):
        try:
            graph = load_onnx(onnx_path, fixed=folded, add_batch_axis=True, first_output=True)
        except ModelLoadError:
            pass
        else:
            declared = tuple(graph.info(graph.explained_inputs[0]).shape)
            output = graph.info(graph.output).shape if isinstance(graph.output, torch.fx.Node) else None
    if declared[:1] == (1,) and (output is None or tuple(output[:1]) == (1,)):
        return BoundedModel(graph, torch.zeros(declared), device=device), declared
    # an input that declares batch 1 keeps its shape: a map stays a map, whose windows a bound pass carries back
    # (carvana_unet sums its output to a scalar: as [1, 1, C, H, W] every pass was made dense at the input)
    input_shape = declared if declared[:1] == (1,) else (1, *declared)
    whole = _WholeInput(graph, declared)
    if isinstance(graph.output, torch.fx.Node) and not graph.info(graph.output).depends_on_input:
        return _ConstantNetwork(whole, graph, device), input_shape  # the fixed elements fold it to a constant
    example = torch.zeros(input_shape, dtype=bound_dtype(graph))
    if declared[:1] != (1,):
        with contextlib.suppress(OpwiseError):  # an operator vmap cannot batch: bounded as one sample, as below
            return BoundedModel.of_graphs(_Samplewise(graph), example, device=device), input_shape
    return BoundedModel.of_graphs(whole, example, device=device), input_shape


class _Samplewise(torch.nn.Module):
    """A network whose declared input has no batch axis ([n, ...] is one sample), run on each sample of [B, n, ...]
    by torch.vmap, its output flattened to [B, outputs]. Traced, every node has the batch axis the network lacks."""

    def __init__(self, graph):
        super().__init__()
        self.graph = graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.vmap(lambda sample: self.graph(sample).reshape(-1))(x)


class _WholeInput(torch.nn.Module):
    """A network whose declared input [n, ...] (n > 1), or whose output's leading axis, is one sample's: run on
    [1, n, ...] (or on its declared [1, ...]), its output flattened to [1, outputs]. At any other batch the
    reshape fails, and the network is bounded one sample at a time."""

    def __init__(self, graph, declared: tuple[int, ...]):
        super().__init__()
        self.graph, self.declared = graph, declared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape) != self.declared:  # no reshape where none is needed: a traced one would make windows dense
            x = x.reshape(self.declared)
        return self.graph(x).reshape(1, -1)


class _ConstantNetwork:
    """A network whose output the property's fixed elements fold to a constant, bounded as `_WholeInput` (no batch
    axis, or an output that is no [1, m]): nothing to trace or bound, it is run once (`_decide_constant`), or with
    its input appended where the property's rows read the inputs (`_fitted_to_rows`). Tracing its wrapper refused
    the constant output."""

    def __init__(self, network: torch.nn.Module, graph, device: str | torch.device | None):
        self.network, self.graph = network, graph
        self.dtype = bound_dtype(graph)
        self.device = torch.device(device) if device is not None else graph.device

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x.to(self.device, self.dtype)).reshape(1, -1)


def verify_instance(onnx_path: str | Path, vnnlib_path: str | Path, timeout: float, *,
                    load: Loader | None = None, max_split_inputs: int = 16,
                    device: str | torch.device | None = None, progress: Progress | None = None) -> InstanceResult:
    """Decide one VNN-COMP instance within `timeout` seconds (loading and parsing included).

    `vnnlib_path` is a VNN-LIB 1 or 2 property (gzipped or not); `onnx_path` its network, or for a VNN-LIB 2 query
    over several networks their files, `"[('f', 'a.onnx'), ('g', 'b.onnx')]"` or `"f=a.onnx,g=b.onnx"` (a
    network `equal-to` another needs none of its own). A `sat` result of a VNN-LIB 2 query carries its Layout, so
    write_result names the query's tensors.

    `load` (default `load_with_engine` on `device`) gives the network and its input shape. The input boxes
    are decided by `verify_boxes` (input splitting where at most `max_split_inputs` inputs are free, boxes
    that share their output rows in one search; else GenBaB), which `progress` (opwise.progress) follows. A
    property
    with several input boxes (ACAS Xu prop_6) is `sat` when any box has a counterexample and `unsat` only
    when every box is proved. Bound passes check the clock between layers (engine/deadline.py), so the
    answer comes about when the time is up: `timeout` then. A property too large to expand is `unknown`,
    with the reason in `InstanceResult.reason`.

    >>> import tempfile, torch
    >>> text = '(declare-const X_0 Real)(declare-const Y_0 Real)(assert (>= X_0 0))(assert (<= X_0 1))(assert (<= Y_0 -1))'
    >>> with tempfile.NamedTemporaryFile("w", suffix=".vnnlib", delete=False) as f: _ = f.write(text)
    >>> double = FunctionBounds(lambda x: 2 * x.reshape(len(x), -1),               # y = 2x >= 0 on [0, 1]
    ...                         lambda lo, up, C: torch.minimum(C.T * 2 * lo, C.T * 2 * up))
    >>> verify_instance("net.onnx", f.name, 10, load=lambda path: (double, (1, 1))).status
    'unsat'
    """
    start = time.monotonic()
    parsed: list[Query] = []  # the property, once read: a VNN-LIB 2 `sat` is written in its names (Layout)
    try:
        with _hard_stop(timeout + HARD_STOP_SLACK), deadline(timeout):
            result = _verify(onnx_path, vnnlib_path, timeout, start, load, max_split_inputs, device, progress, parsed)
    except TimeLimitReached:
        result = InstanceResult("timeout", time.monotonic() - start, reason="the time limit was reached in a bound pass")
    except _OutOfTime:
        result = InstanceResult("timeout", time.monotonic() - start, reason="the time limit was reached")
    except SpecTooLarge as error:
        result = InstanceResult("unknown", time.monotonic() - start, reason=str(error))
    if parsed:
        result.layout = parsed[0].layout
    return result


def _verify(onnx_path, vnnlib_path, timeout: float, start: float, load: Loader | None, max_split_inputs: int,
            device, progress: Progress | None, parsed: list[Query]) -> InstanceResult:
    """verify_instance's work, run under its deadline: every box through the orchestrator (or the one box cell by
    cell, `_decide_by_cells`). A VNN-LIB 2 query over several networks, or over a network's several inputs or
    outputs, is bounded as one JointNetwork (vnncomp/joint.py)."""
    query = parse_property(vnnlib_path, dtype=torch.float64)
    parsed.append(query)
    boxes, layout = query.specs, query.layout
    onnx_path = str(onnx_path)
    if load is None and layout is not None:
        if not layout.is_plain:
            load = partial(load_joint, layout=layout, device=device)
        else:
            onnx_path = network_files(layout, onnx_path)[layout.networks[0].name]
    cells = load is None and len(boxes) == 1  # the network may be evaluated cell by cell (_decide_by_cells)
    if load is None:  # device and fixed elements only where there are: a replaced loader need not take them
        load = load_with_engine if device is None else partial(load_with_engine, device=device)
        fixed = fixed_elements(boxes)
        load = load if fixed is None else partial(load, fixed=fixed)
    try:
        model, input_shape = load(str(onnx_path))
    except InputDependentArgument as error:
        if not cells:
            raise
        return _decide_by_cells(str(onnx_path), boxes[0], timeout, start, error)
    names = ("inputs X_i", "outputs Y_i") if layout is None else tuple(
        "elements of " + ", ".join(t.name for n in layout.networks for t in getattr(n, kind)) for kind in ("inputs", "outputs"))
    declared = [_shaped(box, input_shape, str(vnnlib_path), names[0]) for box in boxes]
    model, own_outputs = _fitted_to_rows(model, declared[0], input_shape, str(vnnlib_path), names[1], query.products)
    if own_outputs is not None:  # rows read the inputs (and products), which the box bounds
        declared = [_without_contradictions(box, own_outputs, query.products) for box in declared]
    check = partial(_as_the_competition_checks, model, products=query.products, outputs=own_outputs)
    specs = specifications_to(declared, model.device, model.dtype)
    if _constant_output(model):
        return _own_outputs(_decide_constant(model, declared, start, check), own_outputs)
    outcomes, reasons = [], []
    decided = 0
    stats: dict = {"boxes": len(specs)}
    remaining = timeout - (time.monotonic() - start)
    for indices, result in verify_boxes(model, specs, timeout=remaining, max_split_inputs=max_split_inputs,
                                        progress=progress):
        decided += len(indices)
        _add_counts(stats, result.stats)
        status = result.vnncomp_status
        if status == "sat":
            exact = declared[result.stats.get("box", indices[0])]
            confirmed = check(exact, result.counterexample)
            if confirmed is not None:
                return _own_outputs(InstanceResult("sat", time.monotonic() - start, *confirmed, stats), own_outputs)
            stats["unconfirmed_counterexamples"] = stats.get("unconfirmed_counterexamples", 0) + 1
            status = "unknown"
            reasons.append("the counterexample found fails the competition's check (float32 rounding)")
        elif status != "unsat" and result.stats.get("reason"):
            reasons.append(str(result.stats["reason"]))
        outcomes.append(status)
    final = "unsat" if all(s == "unsat" for s in outcomes) and decided == len(specs) else (
        "timeout" if "timeout" in outcomes else "unknown")
    reason = "; ".join(dict.fromkeys(reasons)) if final != "unsat" else ""  # why the search left a box open
    return InstanceResult(final, time.monotonic() - start, stats=stats, reason=reason)


def _fitted_to_rows(model, box: Specification, input_shape: tuple[int, ...], path: str, what: str,
                    products: Products | None = None):
    """(model, None) where the property's rows are over the model's outputs; where they also read the inputs (one
    column per output, then per input element) or products of variables (a column each after those), the model with
    its input and the products appended to its output (AppendedColumns) and its own output count; else a SpecError
    (the property names another number of outputs; a forward pass at the box centre counts the model's)."""
    declared = box.unsafe[0].C.shape[1]
    with torch.no_grad():
        outputs = model((box.x_lower + box.x_upper).to(model.device, model.dtype) / 2).reshape(-1).numel()
    extra = len(products) if products else 0
    if declared == outputs and not extra:
        return model, None
    inputs = math.prod(input_shape)
    if declared == outputs + inputs + extra and isinstance(model, (BoundedModel, _ConstantNetwork)):
        network = model.graph if isinstance(model, BoundedModel) else model.network
        appended = AppendedColumns(network, products, outputs, inputs, dtype=model.dtype)
        example = torch.zeros(input_shape, dtype=model.dtype, device=model.device)
        return BoundedModel.of_graphs(appended, example, device=model.device), outputs
    if extra and not isinstance(model, BoundedModel):
        raise SpecError(path, None, f"has products of variables, which only a network opwise imports can take "
                                    f"(the model given is a {type(model).__name__})")
    named = declared - extra - inputs if extra else declared  # with products, the rows always read the inputs
    raise SpecError(path, None, f"declares {named} {what} but the model has {outputs} outputs (of a network with "
                                f"several, its first output's elements: VNN-COMP's check reads that one)")


def _without_contradictions(box: Specification, outputs: int, products: Products | None) -> Specification:
    """The box's property without the disjuncts no point meets, whatever the network (`spec.contradictory`), with
    the columns its rows read bounded: the inputs by the box, products by interval arithmetic on those (a square by
    0). `Y_0 >= X_0 + 3 and Y_0 <= 1` on X_0 in [0, 1] is no violation; bounding its rows one by one cannot show it.
    Where none is left, one row that never holds (0 <= -1) stands for them."""
    inputs = box.x_lower.numel()
    unbounded = torch.full((outputs,), math.inf, dtype=torch.float64)
    lower = torch.cat([-unbounded, box.x_lower.flatten().double()])
    upper = torch.cat([unbounded, box.x_upper.flatten().double()])
    if products:
        product_lower, product_upper = products.bounds(lower, upper, outputs, inputs)
        lower, upper = torch.cat([lower, product_lower]), torch.cat([upper, product_upper])
    kept = [disjunct for disjunct in box.unsafe if not contradictory(disjunct, lower, upper)]
    if len(kept) == len(box.unsafe):
        return box
    C = box.unsafe[0].C
    return dataclasses.replace(box, unsafe=kept or [Disjunct(C.new_zeros(1, C.shape[1]), C.new_full((1,), -1.0))])


def _own_outputs(result: InstanceResult, outputs: int | None) -> InstanceResult:
    """The result with its output cut to the network's own outputs (where the input was appended to them)."""
    if outputs is not None and result.y is not None:
        result.y = result.y[:outputs]
    return result


def _decide_by_cells(onnx_path: str, box: Specification, timeout: float, start: float,
                     refusal: InputDependentArgument) -> InstanceResult:
    """An instance whose network needs an argument read from free input elements at import: when it reads them
    only through integer casts and the property fixes every other element, the network is evaluated at one point
    per cell of those casts (opwise/tracing/onnx/cases.py), in a shuffled order: `sat` at the first point that
    violates the property (checked again by its own import), `unsat` when no point comes within 1e-4 of it;
    else `refusal` is raised with the reason added."""
    from opwise.tracing.onnx.cases import CasePoints, integer_cells

    lower, upper = box.x_lower.flatten(), box.x_upper.flatten()
    discrete = lower != upper
    points = integer_cells(lower, upper, discrete)
    if points is None:
        raise InputDependentArgument(f"{refusal}; its free input elements take too many integer values to evaluate "
                                     "the network at each") from None
    evaluator = CasePoints.open(onnx_path, points[0], discrete)
    if isinstance(evaluator, str):
        raise InputDependentArgument(f"{refusal}; {evaluator}") from None
    stats = {"cells": len(points), "cells_evaluated": 0}
    closest = math.inf
    for chunk in torch.randperm(len(points), generator=torch.Generator().manual_seed(0)).split(256):
        if time.monotonic() - start > timeout:
            return InstanceResult("timeout", time.monotonic() - start, stats=stats,
                                  reason=f"{stats['cells_evaluated']} of {len(points)} cells evaluated")
        margins = box.margin(evaluator.outputs(points[chunk]).double())
        stats["cells_evaluated"] += len(chunk)
        for index in chunk[margins <= EVALUATED_MARGIN].tolist():
            confirmed = _at_a_point(onnx_path, box, points[index])
            if confirmed is not None:
                return InstanceResult("sat", time.monotonic() - start, *confirmed, stats)
        closest = min(closest, float(margins.min()))
    return _evaluated(closest, start, stats, "a cell")


def _constant_output(model: BoundedModel | FunctionBounds) -> bool:
    """Whether the network's output depends on no free input element: every element it reads is fixed by the
    property and folded at import (a point property), so the graph's output is one constant, which no bound
    pass takes."""
    if isinstance(model, _ConstantNetwork):
        return True
    if not isinstance(model, BoundedModel):
        return False
    output = model.graph.output
    return isinstance(output, torch.fx.Node) and not model.graph.info(output).depends_on_input


def _decide_constant(model: BoundedModel | _ConstantNetwork, declared: list[Specification], start: float,
                     check: Callable) -> InstanceResult:
    """A network constant on the property's boxes, decided by running it once per box: `sat` where its output
    violates a box's property (as the competition checks it), else as `_evaluated` says."""
    closest = math.inf
    stats = {"boxes": len(declared), "constant": True}
    for box in declared:
        centre = (box.x_lower + box.x_upper) / 2
        with torch.no_grad():
            y = model(centre.to(model.device, model.dtype)).detach().cpu().double().reshape(1, -1)
        margin = float(box.to(dtype=torch.float64).margin(y).min())
        confirmed = check(box, centre) if margin <= 0 else None
        if confirmed is not None:
            return InstanceResult("sat", time.monotonic() - start, *confirmed, stats)
        closest = min(closest, margin)
    return _evaluated(closest, start, stats, "the constant output", model.dtype)


def _evaluated(closest: float, start: float, stats: dict, what: str,
               dtype: torch.dtype = torch.float32) -> InstanceResult:
    """The answer where the network was run at every point that matters and none violated the property: `unsat`
    when the closest keeps `EVALUATED_MARGIN` (`EVALUATED_MARGIN_FLOAT64` for a network run in float64), else
    `unknown`."""
    if closest > (EVALUATED_MARGIN_FLOAT64 if dtype == torch.float64 else EVALUATED_MARGIN):
        return InstanceResult("unsat", time.monotonic() - start, stats=stats)
    name = "float64" if dtype == torch.float64 else "float32"
    return InstanceResult("unknown", time.monotonic() - start, stats=stats,
                          reason=f"{what} comes within {closest:.2g} of the property, too close to tell in {name}")


def _at_a_point(onnx_path: str, box: Specification, point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(x, y) when the network imported with every element fixed at `point` violates the property there."""
    from opwise.tracing.onnx import load_onnx
    from opwise.tracing.onnx.fixed import FixedElements

    graph = load_onnx(onnx_path, fixed={0: FixedElements(torch.ones(point.numel(), dtype=torch.bool), point)},
                      first_output=True)
    info = graph.info(graph.explained_inputs[0])
    with torch.no_grad():
        y = graph(point.to(info.dtype).reshape(info.shape)).detach().double().flatten()
    return (point, y) if violates(box, y) else None


def fixed_elements(boxes: list[Specification]) -> FixedElements | None:
    """The input elements every box of a property fixes to one value (lower == upper), flat; None if none.

    Elsewhere the values are the first box's centre (where the importer evaluates what it folds).

    >>> box = Specification(torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 2.0]]), [])
    >>> fixed_elements([Specification(torch.zeros(1, 2), torch.ones(1, 2), [])]) is None
    True
    >>> fixed = fixed_elements([box])
    >>> fixed.mask.tolist(), fixed.values.tolist()
    ([False, True], [0.5, 2.0])
    """
    from opwise.tracing.onnx.fixed import FixedElements

    lower, upper = boxes[0].x_lower.flatten(), boxes[0].x_upper.flatten()
    mask = lower == upper
    for box in boxes[1:]:
        mask &= (box.x_lower.flatten() == lower) & (box.x_upper.flatten() == lower)
    return FixedElements(mask, (lower + upper) / 2) if bool(mask.any()) else None


def _shaped(box: Specification, input_shape: tuple[int, ...], path: str, what: str = "inputs X_i") -> Specification:
    """A box parsed flat ([1, n]) in the network's input shape."""
    if math.prod(input_shape) != box.x_lower.numel():
        raise SpecError(path, None, f"declares {box.x_lower.numel()} {what} but the model input "
                                    f"{tuple(input_shape)} has {math.prod(input_shape)} values")
    return dataclasses.replace(box, x_lower=box.x_lower.reshape(input_shape), x_upper=box.x_upper.reshape(input_shape),
                               input_set=None if box.input_set is None else box.input_set.reshape(input_shape))


def _add_counts(stats: dict, box: dict) -> None:
    """Add one box's counts to the instance's: the search's numbers (GenBaB's domains visited as `domains`),
    and `proved_at_root` for a box the whole-box bound passes proved."""
    search = box.get("bab")
    if search is None:
        if box.get("margin", -math.inf) > 0:
            stats["proved_at_root"] = stats.get("proved_at_root", 0) + 1
        return
    for key, value in search.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "box":  # an index, not a count
            key = "domains" if key == "domains_visited" else key
            stats[key] = stats.get(key, 0) + value


class _OutOfTime(BaseException):
    """Raised by `_hard_stop`'s alarm; a BaseException so no `except Exception` on the way swallows it."""


@contextlib.contextmanager
def _hard_stop(seconds: float):
    """Interrupt the block after `seconds` with _OutOfTime (SIGALRM: Python raises it between bytecodes, so a
    long phase outside the bound engine — loading, a PGD step, a batch of forward passes — ends within one
    torch operation). Only in the main thread and where no one else handles SIGALRM; elsewhere the engine's
    cooperative deadline is what ends a run. Python ignores an exception raised inside a `__del__` or a weakref
    callback (a garbage collection during a bound pass runs them), so the handler raises again every
    `HARD_STOP_RETRY` seconds until the block is left; leaving stops the timer (again if an alarm interrupts that)
    before it restores the default handler. It also waits while a module is being imported: an exception there
    leaves the module half initialised for the rest of the process (torch and onnx import submodules lazily, so
    the first instance of a process stopped early made every later one raise AttributeError). Leaving, it closes
    any torch.vmap level the stop left open."""
    if (not math.isfinite(seconds) or threading.current_thread() is not threading.main_thread()
            or not hasattr(signal, "setitimer") or signal.getsignal(signal.SIGALRM) is not signal.SIG_DFL):
        yield
        return
    leaving = []
    outer = _imports(sys._getframe())  # imports already under way around the block (a script run as an import)
    transforms = torch._C._functorch.get_dynamic_layer_stack_depth()  # torch.vmap levels open around the block

    def stop(signum, frame):
        if not leaving:
            signal.setitimer(signal.ITIMER_REAL, HARD_STOP_RETRY)
        if _imports(frame) <= outer:  # not inside an import the block itself started
            raise _OutOfTime()

    signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield
    finally:
        leaving.append(True)
        while True:
            try:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, signal.SIG_DFL)
                break
            except _OutOfTime:  # the alarm fired while the block was left: it is left anyway
                continue
        # a stop that lands in torch.vmap's own exit (networks without a batch axis are bounded through it) skips
        # closing its level: every later operation of the process then ran as if vmapped ("vmap: called random
        # operation while in randomness error mode" in the next instance's nn.Linear)
        if torch._C._functorch.get_dynamic_layer_stack_depth() > transforms:
            torch._C._functorch.pop_dynamic_layer_stack_and_undo_to_depth(transforms)


def _imports(frame: types.FrameType | None) -> int:
    """How many imports the code at `frame` runs inside (importlib's `_load_unlocked` frames on the stack)."""
    count = 0
    while frame is not None:
        code = frame.f_code
        count += code.co_filename.startswith("<frozen importlib._bootstrap") and code.co_name == "_load_unlocked"
        frame = frame.f_back
    return count


def _as_the_competition_checks(model: BoundedModel | FunctionBounds, declared: Specification, x: torch.Tensor, *,
                               products: Products | None = None,
                               outputs: int | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(x, y) of a counterexample the competition's checker accepts, or None: x in float64 clipped into the
    box as declared (the float32 rounding of a bound can lie just outside it; projected onto the relations between
    inputs where the property states some), the network run on x's
    rounding to its dtype (float32, or float64 for a DOUBLE network), the output constraints evaluated in float64
    (strict ones strictly, `violates`). Products of variables (after the model's own `outputs` and its inputs) are
    computed again from the outputs and the rounded inputs, in float64 and in the network's dtype, and must violate
    the property in both: the competition's check multiplies values of the ONNX file's type."""
    point = torch.max(torch.min(x.detach().cpu().double(), declared.x_upper), declared.x_lower)
    if declared.input_set is not None:  # relations between inputs: the nearest point that meets them exactly
        point = declared.region.project(point.reshape(declared.x_lower.shape))
    with torch.no_grad():
        y = model(point.to(model.device, model.dtype)).detach().cpu()
    if not products:
        return (point.flatten(), y.flatten()) if violates(declared, y.double()) else None
    own = y.reshape(1, -1)[:, :outputs]
    rounded = point.to(model.dtype).reshape(1, -1)
    for dtype in (torch.float64, model.dtype):
        columns = torch.cat([own, rounded, products.values(own.to(dtype), rounded.to(dtype), outputs, rounded.shape[1])],
                            dim=1)
        if not violates(declared, columns.double()):
            return None
    return point.flatten(), y.flatten()
