"""`load_onnx(path)`: an ONNX file to the canonical Graph, by opwise's own per-operator converters.

Each ONNX node is converted by the registered converter for its op type at the model's opset
(`registry.py`, forms in `ops/`); values that do not depend on a graph input are computed at import
time, so shape subgraphs (Shape, Gather, ConstantOfShape, Concat, Cast, ...) leave only constants.
The graph is specialized to one batch size: `batch_size` replaces the leading dimension of every input.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy
import torch
from torch import fx
from torch._subclasses.fake_tensor import FakeTensorMode

from opwise.errors import InputDependentArgument, InputError, ModelLoadError, UnsupportedOperation
from opwise.tracing.graph import Graph
from opwise.tracing.onnx import ops  # noqa: F401 - registers the converters
from opwise.tracing.onnx.builder import GraphBuilder
from opwise.tracing.onnx.files import read_onnx_file
from opwise.tracing.onnx.fixed import FixedElements, FixedFolding, refusal_hint
from opwise.tracing.onnx.registry import OnnxNode, lookup
from opwise.tracing.passes import annotate

_DEFAULT_DOMAINS = ("", "ai.onnx")


def load_onnx(path: str | Path, *, batch_size: int | None = None,
              fixed: Mapping[str | int, FixedElements] | None = None, add_batch_axis: bool = False,
              join_outputs: bool = False, first_output: bool = False) -> Graph:
    """Import the ONNX model at `path` as a Graph of ATen operations, every input explained.

    `batch_size` sets the leading dimension of the inputs (default: the declared one, 1 if symbolic).
    Reshapes to constant shapes whose leading entry is the declared batch size are rewritten to the new
    one; an operator that would mix samples at another batch size raises ModelLoadError.
    `add_batch_axis` imports a model whose one input declares no batch axis ([12, 8]) but is read only by
    Reshapes that add one ([-1, 12, 8] or [1, 12, 8]: pensieve's) with the input [batch_size, 12, 8]: such a
    network is one sample per batch row, so searches can bound many boxes in one pass. A model without that
    pattern raises ModelLoadError.

    `fixed` (keyed by input name or position) names input elements that take one known value, as a VNN-LIB
    property with lower == upper fixes them: values computed from those elements only become constants
    (`fixed.py`), so an argument the import needs known (a slice start, indices) may be read from them. The
    graph then equals the model only on inputs that hold those values.

    A model with several outputs is refused (opwise graphs have one) unless `join_outputs`: its outputs are then
    flattened per sample and joined in the file's order, as a VNN-LIB 2 query over them numbers their elements;
    or `first_output`: the first alone, as VNN-COMP's check of a VNN-LIB 1 property reads such a network.

    >>> import tempfile, torch, onnx
    >>> from onnx import helper, TensorProto
    >>> x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    >>> y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    >>> model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    >>> path = tempfile.mkdtemp() + "/relu.onnx"; onnx.save(model, path)
    >>> graph = load_onnx(path, batch_size=2)
    >>> graph(torch.tensor([[-1.0, 0.0, 2.0], [3.0, -4.0, 5.0]]))
    tensor([[0., 0., 2.],
            [3., 0., 5.]])
    >>> [graph.info(n).op for n in graph.call_nodes()]
    ['aten.relu.default']
    """
    return load_onnx_folding(path, batch_size=batch_size, fixed=fixed, add_batch_axis=add_batch_axis,
                             join_outputs=join_outputs, first_output=first_output)[0]


def load_onnx_folding(path: str | Path, *, batch_size: int | None = None,
                      fixed: Mapping[str | int, FixedElements] | None = None,
                      add_batch_axis: bool = False, join_outputs: bool = False,
                      first_output: bool = False) -> tuple[Graph, FixedFolding | None]:
    """`load_onnx`, with the fixed-element analysis it ran (None without `fixed`): what each value depends on,
    the nodes and constants (opwise/tracing/onnx/cases.py evaluates the network again from them)."""
    path = Path(path)
    model = read_onnx_file(path)
    graph_proto = model.graph
    initializers = {init.name: _initializer(init) for init in graph_proto.initializer}
    inputs = [value for value in graph_proto.input if value.name not in initializers]
    outputs = [value.name for value in graph_proto.output][:1 if first_output else None]
    if len(outputs) != 1 and not (join_outputs and outputs and not fixed):
        raise ModelLoadError(
            f"{path} has {len(outputs)} outputs; opwise graphs have one output, "
            "so export the model with the output to explain or verify only (or import it with "
            "load_onnx(path, join_outputs=True): its outputs flattened and joined)"
        )
    shapes = [_input_shape(value, path) for value in inputs]
    if add_batch_axis:
        _require_batch_added(path, graph_proto, inputs, shapes, initializers)
        shapes = [[1, *shape] for shape in shapes]
    _refuse_disagreeing_batches(path, inputs, shapes)
    declared = _declared_batch(shapes)
    batch = batch_size if batch_size is not None else (declared or 1)
    if batch < 1:
        raise InputError(f"batch_size must be at least 1, got {batch}")

    builder = GraphBuilder(batch, declared)
    env: dict[str, Any] = {"": None}
    for name, tensor in initializers.items():
        env[name] = builder.initializer(name, tensor) if isinstance(tensor, torch.Tensor) else tensor
    placed = []
    for value, shape in zip(inputs, shapes):
        dims = [batch if axis == 0 else dim for axis, dim in enumerate(shape)]
        dtype = _dtype(value.type.tensor_type.elem_type, f"{path}: input '{value.name}'")
        _refuse_oversized(path, value.name, dims, dtype)
        example = torch.zeros(dims, dtype=dtype)
        env[value.name] = builder.placeholder(value.name, example)
        placed.append((value.name, dims, dtype))
    folding = FixedFolding.of_inputs(builder, dict(fixed), placed) if fixed else None
    opsets = _opsets(model)
    _convert_nodes(builder, graph_proto, opsets, env, folding, outputs)
    module = fx.GraphModule(builder.root, builder.graph)
    _fake_values(module)
    explained = [True] * len(inputs)
    annotate(module, explained, builder.constant_sources)

    def retrace(*new_inputs: torch.Tensor) -> Graph:
        if not new_inputs or not isinstance(new_inputs[0], torch.Tensor) or new_inputs[0].dim() == 0:
            raise InputError(f"retrace needs the model's {len(inputs)} input tensor(s) with a batch dimension")
        return load_onnx(path, batch_size=int(new_inputs[0].shape[0]), fixed=fixed, add_batch_axis=add_batch_axis,
                         join_outputs=join_outputs, first_output=first_output)

    graph = Graph(module, explained, strategy="onnx", retrace=retrace, input_names=[value.name for value in inputs],
                  opset=opsets[""], rebatch=lambda size: load_onnx(path, batch_size=size, fixed=fixed,
                                                                   add_batch_axis=add_batch_axis,
                                                                   join_outputs=join_outputs,
                                                                   first_output=first_output))
    return graph, folding


def _require_batch_added(path: Path, graph_proto: Any, inputs: list, shapes: list[list[int | None]],
                         initializers: dict[str, Any]) -> None:
    """Refuse `add_batch_axis` unless the model has one input of fixed shape S, read only by Reshapes to a
    constant [-1, *S] or [1, *S] (so the Reshape's leading axis is the batch the import adds)."""
    if len(inputs) != 1 or any(dim is None for dim in shapes[0]):
        raise ModelLoadError(f"{path}: add_batch_axis needs one input of fixed shape")
    name, shape = inputs[0].name, shapes[0]
    constants = {}
    for node_proto in graph_proto.node:
        if node_proto.op_type == "Constant" and node_proto.domain in _DEFAULT_DOMAINS:
            value = next((a for a in node_proto.attribute if a.name == "value"), None)
            if value is not None and node_proto.output:
                constants[node_proto.output[0]] = _tensor(value.t)
    readers = [reader for value, reader in _reads(graph_proto) if value == name]  # an If branch's read: the If
    for node_proto in readers:
        target = None
        if node_proto.op_type == "Reshape" and node_proto.domain in _DEFAULT_DOMAINS and node_proto.input[0] == name:
            attribute = next((a for a in node_proto.attribute if a.name == "shape"), None)
            if attribute is not None:
                target = list(attribute.ints)
            elif len(node_proto.input) > 1:
                value = initializers.get(node_proto.input[1], constants.get(node_proto.input[1]))
                target = value.reshape(-1).tolist() if isinstance(value, torch.Tensor) else None
        if target is None or target[:1] not in ([-1], [1]) or list(target[1:]) != list(shape):
            raise ModelLoadError(f"{path}: add_batch_axis needs the input '{name}' read only by Reshapes that add a "
                                 f"leading axis to its shape {shape}; node '{node_proto.name}' ({node_proto.op_type}) "
                                 "reads it otherwise")
    if not readers or any(output.name == name for output in graph_proto.output):
        raise ModelLoadError(f"{path}: add_batch_axis needs the input '{name}' read by a Reshape")


def _convert_nodes(builder: GraphBuilder, graph_proto: Any, opsets: dict[str, int], env: dict[str, Any],
                   folding: FixedFolding | None = None, output_names: list[str] | None = None) -> None:
    """Convert every node in order (a node that depends on fixed input elements only becomes constants, `folding`),
    then add the output (`output_names`, default the graph's; a constant output becomes a get_attr)."""
    output_names = output_names if output_names is not None else [value.name for value in graph_proto.output]
    if folding is not None:
        folding.output = output_names[0]
    for name, reader in [*_reads(graph_proto), *((name, None) for name in output_names)]:
        builder.use_counts[name] = builder.use_counts.get(name, 0) + 1
        builder.reading_nodes.setdefault(name, []).append(reader)
    builder.inline = lambda subgraph, inputs=(): _inline(builder, subgraph, opsets, env, inputs)
    for index, node_proto in enumerate(graph_proto.node):
        node = _onnx_node(node_proto, index, opsets)
        if folding is not None and folding.fold(node, env):
            continue
        try:
            _convert(builder, node, env)
        except InputDependentArgument as error:
            raise InputDependentArgument(f"{error}; {refusal_hint(folding, node, env)}") from None
    builder.current = None
    results = []
    for output_name in output_names:
        if output_name not in env:
            raise ModelLoadError(f"the ONNX graph output '{output_name}' is computed by no node")
        result = env[output_name]
        if isinstance(result, _Unreadable):
            raise ModelLoadError(f"the ONNX graph output '{output_name}' cannot be imported: {result}")
        results.append(result)
    if len(results) > 1:  # join_outputs: each flattened per sample, then joined in the file's order
        flat = [builder.call(torch.ops.aten.reshape.default, r if isinstance(r, fx.Node) else torch.as_tensor(r),
                             [builder.batch_size, -1]) for r in results]
        result = builder.call(torch.ops.aten.cat.default, flat, 1)
    if not isinstance(result, fx.Node):
        result = builder.constant_node(torch.as_tensor(result))
    builder.graph.output(result)


def _reads(graph_proto: Any) -> list[tuple[str, Any]]:
    """(value name, the reading NodeProto) for every read of the nodes of `graph_proto`, those of its
    subgraphs (If branches) included; a subgraph's outputs count as read by the node that holds the subgraph
    (it returns them)."""
    reads = []
    for node_proto in graph_proto.node:
        reads.extend((name, node_proto) for name in node_proto.input)
        for attribute in node_proto.attribute:
            for subgraph in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                reads.extend(_reads(subgraph) + [(value.name, node_proto) for value in subgraph.output])
    return reads


def _inline(builder: GraphBuilder, subgraph: Any, opsets: dict[str, int], env: dict[str, Any], inputs: Any = ()) -> list[Any]:
    """Convert the nodes of `subgraph` (an If branch, one iteration of a Scan or Loop body) into the graph being
    built; its outputs' values.

    The subgraph reads outer values by name; its own values stay in a scope of their own, where its formal
    inputs are bound to `inputs` (one value each, in order). Subgraphs nested in it read that scope."""
    if len(inputs) != len(subgraph.input):
        raise ModelLoadError(f"the ONNX subgraph '{subgraph.name}' has {len(subgraph.input)} input(s), "
                             f"given {len(inputs)}")
    scope = dict(env)
    for init in subgraph.initializer:
        scope[init.name] = builder.initializer(init.name, _tensor(init))
    for value, bound in zip(subgraph.input, inputs):
        scope[value.name] = bound
    current, outer_inline = builder.current, builder.inline
    builder.inline = lambda nested, values=(): _inline(builder, nested, opsets, scope, values)
    try:
        for index, node_proto in enumerate(subgraph.node):
            _convert(builder, _onnx_node(node_proto, index, opsets), scope)
    finally:
        builder.current, builder.inline = current, outer_inline
    missing = [value.name for value in subgraph.output if value.name not in scope]
    if missing:
        raise ModelLoadError(f"the ONNX subgraph '{subgraph.name}' output(s) {missing} are computed by no node")
    return [scope[value.name] for value in subgraph.output]


def _fake_values(module: fx.GraphModule) -> None:
    """Swap the example values computed while building for FakeTensors, as torch.export leaves them.

    The real values were only needed for shapes; keeping them would hold every activation in memory.
    """
    mode = FakeTensorMode()
    for node in module.graph.nodes:
        value = node.meta.get("val")
        if isinstance(value, torch.Tensor):
            node.meta["val"] = mode.from_tensor(value)


def _opsets(model: Any) -> dict[str, int]:
    """The model's opset per operator domain ("" for the default ONNX domain); a node of a domain the model does not
    declare reads its operators' first version."""
    versions = [entry.version for entry in model.opset_import if entry.domain in _DEFAULT_DOMAINS]
    other = {entry.domain: entry.version for entry in model.opset_import if entry.domain not in _DEFAULT_DOMAINS}
    return {**other, "": max(versions) if versions else 1}


class _Unreadable(str):
    """An initializer of an element type torch cannot hold (float8, int4, ...): refused by the node that reads it,
    which can then say what it is (a QuantizeLinear zero point, say); the text is the refusal's reason."""


def _initializer(proto: Any) -> torch.Tensor | _Unreadable:
    from onnx import helper

    try:
        _dtype(proto.data_type)
    except ModelLoadError:
        try:
            name = helper.tensor_dtype_to_string(proto.data_type).removeprefix("TensorProto.").lower()
        except (KeyError, ValueError):
            name = f"element type {proto.data_type}"
        return _Unreadable(f"tensor '{proto.name}' is {name}, which torch cannot hold, so opwise does not import it")
    return _tensor(proto)


def _tensor(proto: Any) -> torch.Tensor:
    from onnx import numpy_helper

    try:
        return torch.from_numpy(numpy_helper.to_array(proto).copy())
    except (TypeError, ValueError) as error:  # e.g. declared dims that its data does not fill
        raise ModelLoadError(
            f"ONNX tensor '{proto.name}' of shape {tuple(proto.dims)} cannot be read: {' '.join(str(error).split())}"
        ) from None


def _dtype(elem_type: int, what: str = "a value") -> torch.dtype:
    from onnx import helper

    try:
        return torch.from_numpy(numpy.zeros(0, dtype=helper.tensor_dtype_to_np_dtype(elem_type))).dtype
    except (KeyError, TypeError, ValueError):
        raise ModelLoadError(f"{what} has ONNX element type {elem_type}, which is not a tensor of numbers") from None


def _refuse_oversized(path: Path, name: str, dims: list[int], dtype: torch.dtype) -> None:
    """The import builds example values of the declared input shape: refuse one larger than memory before
    allocating it (a file can declare any dimension, e.g. 2**40)."""
    size = math.prod(dims) * dtype.itemsize
    memory = _memory_bytes()
    if size > memory:
        raise ModelLoadError(
            f"{path}: input '{name}' declares shape {tuple(dims)}, {size / 2**30:.0f} GiB of {dtype}, more than this "
            f"machine's {memory / 2**30:.0f} GiB of memory; fix the input's dimensions in the ONNX file"
        )


def _memory_bytes() -> int:
    """Physical memory, or 1 TiB where the platform does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return 2**40


def _input_shape(value: Any, path: Path) -> list[int | None]:
    """Declared dims; a symbolic dim is None (allowed only for the leading, batch, axis)."""
    dims: list[int | None] = []
    for axis, dim in enumerate(value.type.tensor_type.shape.dim):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            dims.append(int(dim.dim_value))
        elif axis == 0:
            dims.append(None)
        else:
            label = dim.dim_param or "unknown"
            raise ModelLoadError(
                f"{path}: input '{value.name}' has a symbolic dimension '{label}' at axis {axis}; opwise graphs "
                "are shape-specialized, so fix that dimension in the ONNX file (e.g. onnx.tools.update_model_dims)"
            )
    return dims


def _refuse_disagreeing_batches(path, inputs, shapes: list[list[int | None]]) -> None:
    """Every input's leading axis is taken as the batch and set to one size: inputs that declare different fixed
    leading sizes (a sequence-first tensor beside a state, say) would be silently reshaped, so they are refused."""
    fixed = {value.name: shape[0] for value, shape in zip(inputs, shapes) if shape and shape[0] is not None}
    if len(set(fixed.values())) > 1:
        sizes = ", ".join(f"'{name}': {size}" for name, size in fixed.items())
        raise ModelLoadError(f"{path}: the inputs declare different leading sizes ({sizes}); opwise takes the "
                             "leading axis of every input as the batch, so export the model with one batch axis "
                             "first on every input (or a symbolic one)")


def _declared_batch(shapes: list[list[int | None]]) -> int | None:
    """The fixed leading dimension the inputs declare, or None when it is symbolic or inputs disagree."""
    leading = {shape[0] for shape in shapes if shape}
    return leading.pop() if len(leading) == 1 else None


def _text(value: bytes, what: str) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise ModelLoadError(f"{what} is not UTF-8 text; the file is damaged") from None


def _onnx_node(proto: Any, index: int, opsets: dict[str, int]) -> OnnxNode:
    from onnx import helper

    texts = [proto.name, proto.op_type, proto.domain, *proto.input, *proto.output, *(a.name for a in proto.attribute)]
    if not all(isinstance(text, str) for text in texts):  # protobuf hands invalid UTF-8 over as bytes
        raise ModelLoadError(f"ONNX node {index} has a name or type that is not UTF-8 text; the file is damaged")
    attributes = {}
    for attribute in proto.attribute:
        value = helper.get_attribute_value(attribute)
        if attribute.type == attribute.TENSOR:
            value = _tensor(value)
        elif isinstance(value, bytes):
            value = _text(value, f"attribute '{attribute.name}' of ONNX node {index}")
        attributes[attribute.name] = value
    default = proto.domain in _DEFAULT_DOMAINS
    domain = "" if default else f"{proto.domain}."
    return OnnxNode(
        name=proto.name or f"{proto.op_type}_{index}",
        op_type=domain + proto.op_type,
        opset=opsets[""] if default else opsets.get(proto.domain, 1),
        inputs=tuple(proto.input),
        outputs=tuple(proto.output),
        attributes=attributes,
    )


def _convert(builder: GraphBuilder, node: OnnxNode, env: dict[str, Any]) -> None:
    function = lookup(node.op_type, node.opset)
    if function is None:
        raise UnsupportedOperation(
            node.name,
            f"ONNX {node.op_type}, opset {node.opset}",
            engine="ONNX import",
            hint="see opwise.tracing.onnx.supported_op_types(); convert the model with a supported operator set "
            "or add a converter with @opwise.tracing.onnx.converter",
        )
    missing = [name for name in node.inputs if name not in env]
    if missing:
        raise ModelLoadError(f"ONNX node '{node.name}' ({node.op_type}) reads undefined value(s) {missing}")
    unreadable = [env[name] for name in node.inputs if isinstance(env[name], _Unreadable)]
    if unreadable:
        raise ModelLoadError(f"ONNX node '{node.name}' ({node.op_type}, opset {node.opset}) reads an initializer it "
                             f"cannot use: {unreadable[0]}")
    builder.current = node
    try:
        results = function(builder, node, *[env[name] for name in node.inputs])
    except (RuntimeError, IndexError, TypeError, ValueError, MemoryError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(
            f"ONNX node '{node.name}' ({node.op_type}, opset {node.opset}) could not be imported: {first}; "
            "check the file with onnx.checker.check_model"
        ) from error
    if not isinstance(results, tuple):
        results = (results,)
    for name, result in zip(node.outputs, results):
        if name:
            env[name] = result
