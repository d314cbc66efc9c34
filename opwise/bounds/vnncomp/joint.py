"""One model for a VNN-LIB 2 query over several networks, or a network with several inputs or outputs.

The query's Specifications range over one joint input vector (vnnlib2.Layout: each declared input element's
coordinate, shared where the query equates elements); `JointNetwork` gathers each network's inputs from it,
runs the networks and joins their flattened outputs in declaration order. Bound passes, attacks and searches
then treat the query as one network: two copies of the same network on the same input are bounded together,
which is what an equivalence or monotonicity property over them needs.
"""

from __future__ import annotations

import math

import torch

from opwise.bounds.bounded_model import BoundedModel
from opwise.bounds.vnncomp.networks import parse_networks
from opwise.bounds.vnncomp.vnnlib2 import Layout
from opwise.errors import InputError, SpecError


class JointNetwork(torch.nn.Module):
    """Networks (opwise Graphs) over one joint input [batch, n]: network k's j-th input is the joint input at
    `coordinates` reshaped to that input's shape (inputs in the graph's order); the output is every network's
    output (several joined at import, `load_onnx(join_outputs=True)`), flattened and joined.

    `batched` says the networks take any leading batch size (their inputs declare batch 1); else the joint
    input must be one sample and each network runs at its declared shape. Each network gets its inputs in its own
    dtype (`dtypes`; a DOUBLE network float64), and the output is in the widest of them.

    >>> import torch, opwise
    >>> double = opwise.trace(torch.nn.Linear(2, 1, bias=False), torch.zeros(1, 2))
    >>> joint = JointNetwork([double, double], [[torch.tensor([0, 1])], [torch.tensor([0, 2])]],
    ...                      [[(1, 2)], [(1, 2)]], batched=True)
    >>> joint(torch.tensor([[1.0, 2.0, 3.0]])).shape
    torch.Size([1, 2])
    """

    def __init__(self, graphs: list, coordinates: list[list[torch.Tensor]], shapes: list[list[tuple[int, ...]]],
                 batched: bool, dtypes: list[torch.dtype] | None = None):
        super().__init__()
        self.graphs, self.shapes, self.batched = graphs, shapes, batched
        self.dtypes = dtypes or [torch.float32] * len(graphs)
        self.dtype = torch.float64 if torch.float64 in self.dtypes else torch.float32
        self.gathers: list[list[tuple[int, int] | str]] = []
        for k, network in enumerate(coordinates):
            gathers: list[tuple[int, int] | str] = []
            for j, index in enumerate(network):
                start = int(index[0]) if len(index) else 0
                if torch.equal(index, torch.arange(start, start + len(index))):
                    gathers.append((start, len(index)))  # a contiguous run: a slice, which bound passes carry cheaply
                else:
                    name = f"index_{k}_{j}"
                    self.register_buffer(name, index.clone(), persistent=False)
                    gathers.append(name)
            self.gathers.append(gathers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        outputs = []
        for graph, gathers, shapes, dtype in zip(self.graphs, self.gathers, self.shapes, self.dtypes):
            inputs = []
            for gather, shape in zip(gathers, shapes):
                part = x.narrow(1, *gather) if isinstance(gather, tuple) else x.index_select(1, getattr(self, gather))
                part = part if part.dtype == dtype else part.to(dtype)
                inputs.append(part.reshape(batch, *shape[1:]) if self.batched else part.reshape(shape))
            output = graph(*inputs).reshape(batch, -1)
            outputs.append(output if output.dtype == self.dtype else output.to(self.dtype))
        return torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]


def network_files(layout: Layout, field: str) -> dict[str, str]:
    """The ONNX file of each declared network, from the instance's network field: one unnamed path serves the one
    network not declared `equal-to` another; named paths go by name; an `equal-to` network without its own path
    takes the one of the network it equals.

    >>> from opwise.bounds.vnncomp.vnnlib2 import Network, Declared
    >>> t = (Declared("X", "real", (1,)),)
    >>> layout = Layout((Network("f", t, t), Network("g", t, t, equal_to="f")), (), 1, 2)
    >>> network_files(layout, "a.onnx")
    {'f': 'a.onnx', 'g': 'a.onnx'}
    """
    pairs = parse_networks(field)
    declared = {network.name for network in layout.networks}
    given: dict[str, str] = {}
    if len(pairs) == 1 and pairs[0][0] is None:
        own = [n.name for n in layout.networks if n.equal_to is None]
        if len(own) != 1:
            raise InputError(f"the query declares {len(own)} networks of their own ({', '.join(own)}): name a file for "
                             "each, as [('NAME', 'PATH'), ...] or NAME=PATH,NAME=PATH")
        given[own[0]] = pairs[0][1]
    else:
        for name, path in pairs:
            if name not in declared:
                raise InputError(f"a file is given for network {name}, which the query does not declare "
                                 f"(it declares {', '.join(sorted(declared))})")
            given[name] = path
    files: dict[str, str] = {}
    for network in layout.networks:
        if network.name in given:
            files[network.name] = given[network.name]
        elif network.equal_to is not None and network.equal_to in files:
            files[network.name] = files[network.equal_to]
        else:
            raise InputError(f"no ONNX file is given for network {network.name}")
    return files


def load_joint(field: str, layout: Layout, device: str | torch.device | None = None,
               ) -> tuple[BoundedModel, tuple[int, ...]]:
    """A Loader for a query that `layout` describes: every network imported once (at its declared batch), the
    JointNetwork over them bounded on `device`; the input shape is [1, joint inputs].

    >>> import tempfile, onnx
    >>> from onnx import helper, TensorProto
    >>> x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2]) for n in "xy")
    >>> path = tempfile.mkdtemp() + "/relu.onnx"
    >>> onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])), path)
    >>> from opwise.bounds.vnncomp.vnnlib2 import parse_query
    >>> layout = parse_query("q", '''(vnnlib-version <2.0>)
    ...   (declare-network f (declare-input X real [1,2]) (declare-output Y real [1,2]))
    ...   (declare-network g (equal-to f) (declare-input Z real [1,2]) (declare-output W real [1,2]))
    ...   (assert (and (<= X[0,0] 1) (>= X[0,0] -1) (<= X[0,1] 1) (>= X[0,1] -1) (== Z[0,0] X[0,1]) (== Z[0,1] X[0,0])))
    ...   (assert (<= Y[0,0] 0))''').layout
    >>> model, shape = load_joint(path, layout)
    >>> shape, model(torch.tensor([[-1.0, 2.0]])).tolist()   # g reads f's input swapped
    ((1, 2), [[0.0, 2.0, 2.0, 0.0]])
    """
    from opwise.tracing.onnx import load_onnx
    from opwise.tracing.precision import bound_dtype

    files = network_files(layout, field)
    imported: dict[str, object] = {}
    graphs, coordinates, shapes = [], [], []
    position = iter(layout.coordinates)
    batched = True
    for network in layout.networks:
        path = files[network.name]
        if path not in imported:
            imported[path] = load_onnx(path, join_outputs=len(network.outputs) > 1)
        graph = imported[path]
        placeholders = graph.explained_inputs
        if len(placeholders) != len(network.inputs):
            raise SpecError(path, None, f"network {network.name} is declared with {len(network.inputs)} inputs, but the "
                                        f"ONNX file has {len(placeholders)}")
        declared = dict(zip(_matched(graph, network.inputs, placeholders),
                            zip(network.inputs, [next(position) for _ in network.inputs])))
        network_shapes, network_coordinates = [], []
        for node in placeholders:  # the graph takes its inputs in its own order
            tensor, index = declared[node]
            shape = tuple(graph.info(node).shape)
            if math.prod(shape) != tensor.size:
                raise SpecError(path, None, f"{tensor.name} is declared with {tensor.size} elements {list(tensor.shape)}, "
                                            f"but the network's input {node.name} has {math.prod(shape)} {list(shape)}")
            batched = batched and shape[:1] == (1,)
            network_shapes.append(shape)
            network_coordinates.append(index)
        graphs.append(graph)
        coordinates.append(network_coordinates)
        shapes.append(network_shapes)
    joint = JointNetwork(graphs, coordinates, shapes, batched, [bound_dtype(graph) for graph in graphs])
    bounded = BoundedModel.of_graphs(joint, torch.zeros(1, layout.inputs, dtype=joint.dtype), device=device)
    _remember_chain(bounded, graphs, coordinates, layout.inputs)
    return bounded, (1, layout.inputs)


def _remember_chain(bounded: BoundedModel, graphs: list, coordinates: list[list[torch.Tensor]], inputs: int) -> None:
    """Where every network is an affine-ReLU chain of one depth (ACAS Xu and its pruned or perturbed copies), the
    joint network is one too: recorded for the bounded graph, input splitting bounds it by batched matrix
    products (relu_chain.py) instead of the graph engine's passes (about 50 times the domains per second)."""
    from opwise.bounds.strategies.relu_chain import ReluChain

    if any(len(network) != 1 for network in coordinates):
        return
    chains = [ReluChain.of_graph(graph, dtype=bounded.dtype) for graph in graphs]
    if any(chain is None for chain in chains):
        return
    joint = ReluChain.parallel(chains, [network[0] for network in coordinates], inputs)
    if joint is not None:
        joint.remember(bounded.graph)


def _matched(graph, tensors, placeholders) -> list:
    """The graph input for each declared tensor: by its ONNX name where every tensor gives one the graph has,
    else in order."""
    names = dict(zip(graph.input_names, placeholders))
    if all(t.onnx_name is not None and t.onnx_name in names for t in tensors):
        return [names[t.onnx_name] for t in tensors]
    return list(placeholders)
