"""Control flow known at import time: If with a constant condition, Scan and Loop unrolled over a known length.

Exporters emit If for decisions about shapes: `torch.onnx.export` writes `squeeze(x, dim)` on a value whose
size it cannot prove is 1 (e.g. in `nn.LocalResponseNorm`) as If(Shape(x)[dim] == 1, Squeeze, Identity).
opwise graphs are shape-specialized, so such a condition folds to a constant and the chosen branch is
inlined: its nodes are converted as if they stood in the outer graph (they may read outer values). An If
whose condition depends on the model input is refused: the graph would branch on data.

Recurrent models from tf2onnx or scripted torch loops use Scan or Loop; opwise's engines know no loops, so both
are unrolled at import, each iteration inlining the body with its formal inputs bound (`builder.inline`):
- Scan (opset 9+): per iteration `aten.select` of one slice of each scan input (along `scan_input_axes`, last to
  first where `scan_input_directions` is 1), the body on (states, slices); the outputs are the final states, then
  each scan output's per-iteration values `aten.stack`ed along `scan_output_axes` (in reverse iteration order
  where `scan_output_directions` is 1). The length is the scan axis's size, known from the shapes.
- Loop: unrolled when the trip count M is a constant and the condition is a constant (or omitted) and the body's
  condition output folds to a constant every iteration; the loop ends at M iterations or when that condition is
  false. The iteration number is a constant int64 scalar; scan outputs are stacked along a new axis 0.

Refused with ModelLoadError naming the node: an input-dependent trip count or condition (the graph would loop
on data), no trip count (unbounded), a body whose scan outputs (or Scan states) change shape between iterations
(they cannot be stacked), a Scan of length 0 or a Loop of 0 iterations with scan outputs (their shape is unknown),
Scan opset 8 (its batch axis and sequence_lens form), and, by opwise's batch convention (axis 0 of an
input-dependent value is the batch), a Scan along axis 0 of such a value or a scan output stacked at axis 0 when
importing at another batch size than the declared one (the iterations would run over samples, or the batch axis
would move), and a Scan along axis 0 of a graph input whose leading axis is symbolic (its length is not known:
opwise would set it to the batch size). Typical models scan along axis 1 with batch first; Transposes around a
Scan along axis 0 import at the declared batch size (Transpose itself refuses moving the batch axis otherwise).
"""

from __future__ import annotations

import torch
from torch import fx

from opwise.errors import InputDependentArgument, ModelLoadError
from opwise.tracing.onnx.registry import converter

aten = torch.ops.aten
_MAX_ITERATIONS = 100_000  # unrolling more would make a graph too large to explain or bound


@converter("If", since=1)
def _if(builder, node, condition):
    if isinstance(condition, fx.Node):
        raise InputDependentArgument(
            f"ONNX node '{node.name}' (If, opset {node.opset}) branches on a condition that depends on the model "
            "input; opwise imports If only when the condition is known at import time (e.g. computed from shapes)"
        )
    if condition.numel() != 1:
        raise ModelLoadError(f"ONNX node '{node.name}' (If): its condition has {condition.numel()} elements, not 1")
    branch = node.attr("then_branch") if bool(condition.reshape(-1)[0]) else node.attr("else_branch")
    if branch is None:
        raise ModelLoadError(f"ONNX node '{node.name}' (If) has no then_branch or else_branch attribute")
    results = builder.inline(branch)
    if len(results) != len(node.outputs):
        raise ModelLoadError(f"ONNX node '{node.name}' (If): the chosen branch has {len(results)} output(s), "
                             f"the node {len(node.outputs)}")
    return tuple(results)


def _refusal(node, what: str, hint: str = "", kind: type[ModelLoadError] = ModelLoadError) -> ModelLoadError:
    return kind(f"ONNX node '{node.name}' ({node.op_type}, opset {node.opset}): {what}"
                + (f"; {hint}" if hint else ""))


def _body(node):
    body = node.attr("body")
    if body is None:
        raise _refusal(node, "it has no body attribute")
    return body


def _stack(builder, node, values: list, axis: int, index: int, output: int):
    """Scan output `index`: its per-iteration `values` (one shape) stacked along `axis` (of the result's rank);
    None when no node reads node output `output` (no unused stack is left in the graph)."""
    what = f"scan output {index}"
    shapes = [builder.shape(value) for value in values]
    if any(shape != shapes[0] for shape in shapes):
        raise _refusal(node, f"{what} changes shape between iterations ({shapes[0]}, then "
                       f"{next(shape for shape in shapes if shape != shapes[0])})",
                       "opwise stacks the iterations' values, which needs one shape")
    rank = len(shapes[0]) + 1
    if not -rank <= axis < rank:
        raise _refusal(node, f"{what} is stacked along axis {axis}, out of range for rank {rank}")
    axis %= rank
    name = node.outputs[output] if output < len(node.outputs) else ""
    if not name or builder.use_counts.get(name, 0) == 0:
        return None
    if any(isinstance(value, fx.Node) for value in values):
        builder.require_batch_kept([axis], rank, f"{node.op_type} stacking {what} along axis 0 (moving the "
                                   "batch axis)")
    if len(values) == 1:
        return builder.call(aten.unsqueeze.default, values[0], axis)
    return builder.call(aten.stack.default, list(values), axis)


@converter("Scan", since=8)
def _scan_opset8(builder, node, *inputs):
    raise _refusal(node, "Scan of opset 8 (with a batch axis and sequence_lens) is not imported",
                   "export or convert the model to opset 9 or later (onnx.version_converter), whose Scan opwise "
                   "unrolls")


@converter("Scan", since=9)
def _scan(builder, node, *inputs):
    body = _body(node)
    count = node.attr("num_scan_inputs")
    if count is None or not 1 <= count <= len(inputs):
        raise _refusal(node, f"num_scan_inputs is {count} with {len(inputs)} input(s)")
    states, scanned = list(inputs[: len(inputs) - count]), list(inputs[len(inputs) - count:])
    outputs = len(body.output) - len(states)
    if outputs < 0 or len(body.input) != len(states) + count:
        raise _refusal(node, f"its body has {len(body.input)} input(s) and {len(body.output)} output(s) for "
                       f"{len(states)} state(s) and {count} scan input(s)")
    axes = list(node.attr("scan_input_axes") or [0] * count)
    directions = list(node.attr("scan_input_directions") or [0] * count)
    output_axes = list(node.attr("scan_output_axes") or [0] * outputs)
    output_directions = list(node.attr("scan_output_directions") or [0] * outputs)
    if len(axes) != count or len(directions) != count or len(output_axes) != outputs \
            or len(output_directions) != outputs:
        raise _refusal(node, "its scan_input_axes / directions or scan_output_axes / directions do not give one "
                       "entry per scan input / output")
    if any(value is None for value in inputs):
        raise _refusal(node, "an input is omitted")
    lengths = []
    for index, (value, axis) in enumerate(zip(scanned, axes)):
        shape = builder.shape(value)
        if not -len(shape) <= axis < len(shape):
            raise _refusal(node, f"scan input {index} of shape {shape} has no axis {axis}")
        axis %= len(shape)
        axes[index] = axis
        if isinstance(value, fx.Node) and axis == 0:
            if value.op == "placeholder" and builder.declared_batch is None:
                raise _refusal(node, f"the length is not known at import: scan input {index} is a graph input "
                               "scanned along its leading axis, which the file leaves symbolic (opwise would set it "
                               "to the batch size)", "fix that dimension in the ONNX file or scan along axis 1 "
                               "(batch first)")
            builder.require_batch_kept([0], len(shape), "Scan along axis 0 (the batch axis: iterations would run "
                                       "over samples)")
        lengths.append(shape[axis])
    if len(set(lengths)) != 1:
        raise _refusal(node, f"its scan inputs have different lengths {lengths} along their scan axes")
    length = lengths[0]
    if length < 1:
        raise _refusal(node, "it scans over 0 iterations", "opwise unrolls over 1 or more iterations")
    if length > _MAX_ITERATIONS:
        raise _refusal(node, f"it scans over {length} iterations, more than opwise unrolls ({_MAX_ITERATIONS})")
    per_iteration = [[] for _ in range(outputs)]
    for step in range(length):
        slices = [builder.call(aten.select.int, value, axis, length - 1 - step if direction else step)
                  for value, axis, direction in zip(scanned, axes, directions)]
        results = builder.inline(body, [*states, *slices])
        for index, (old, new) in enumerate(zip(states, results)):
            if builder.shape(old) != builder.shape(new):
                raise _refusal(node, f"state {index} changes shape between iterations ({builder.shape(old)}, then "
                               f"{builder.shape(new)})", "a Scan state keeps one shape")
        states = list(results[: len(states)])
        for values, result in zip(per_iteration, results[len(states):]):
            values.append(result)
    stacked = [_stack(builder, node, values[::-1] if direction else values, axis, index, len(states) + index)
               for index, (values, axis, direction)
               in enumerate(zip(per_iteration, output_axes, output_directions))]
    return (*states, *stacked)


@converter("Loop", since=1)
def _loop(builder, node, trip_count=None, condition=None, *carried):
    body = _body(node)
    carried = list(carried)
    if isinstance(trip_count, fx.Node):
        raise _refusal(node, "its trip count M depends on the model input",
                       "opwise unrolls a Loop at import, which needs a constant trip count", InputDependentArgument)
    if isinstance(condition, fx.Node):
        raise _refusal(node, "its condition depends on the model input",
                       "opwise unrolls a Loop at import, which needs a condition known at import time",
                       InputDependentArgument)
    if trip_count is None:
        raise _refusal(node, "it has no trip count M (it runs until its condition is false)",
                       "opwise unrolls a Loop only over a constant trip count")
    if trip_count.numel() != 1 or (condition is not None and condition.numel() != 1):
        raise _refusal(node, "its trip count or condition has more than one element")
    if any(value is None for value in carried):
        raise _refusal(node, "a loop-carried input is omitted")
    outputs = len(body.output) - 1 - len(carried)
    if outputs < 0 or len(body.input) != 2 + len(carried):
        raise _refusal(node, f"its body has {len(body.input)} input(s) and {len(body.output)} output(s) for "
                       f"{len(carried)} loop-carried value(s)")
    iterations = int(trip_count.reshape(-1)[0])
    going = True if condition is None else bool(condition.reshape(-1)[0])
    per_iteration = [[] for _ in range(outputs)]
    step = 0
    while going and step < iterations:
        if step >= _MAX_ITERATIONS:
            raise _refusal(node, f"it runs more than {_MAX_ITERATIONS} iterations, more than opwise unrolls")
        number = torch.tensor(step, dtype=torch.int64)
        results = builder.inline(body, [number, torch.tensor(going), *carried])
        next_condition = results[0]
        if isinstance(next_condition, fx.Node):
            raise _refusal(node, f"its body's condition output depends on the model input (iteration {step})",
                           "opwise unrolls a Loop at import, which needs the condition known at import time")
        if next_condition is None or next_condition.numel() != 1:
            raise _refusal(node, "its body's condition output is not one value")
        going = bool(next_condition.reshape(-1)[0])
        carried = list(results[1: 1 + len(carried)])
        for values, result in zip(per_iteration, results[1 + len(carried):]):
            values.append(result)
        step += 1
    if outputs and step == 0:
        raise _refusal(node, "it runs 0 iterations and has scan outputs (their shape is unknown)")
    stacked = [_stack(builder, node, values, 0, index, len(carried) + index)
               for index, values in enumerate(per_iteration)]
    return (*carried, *stacked)
