"""opwise.tracing.onnx: every benchmark network and every mapped operator against onnxruntime."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from opwise.errors import ModelLoadError, UnsupportedOperation  # noqa: E402
from opwise.tracing.onnx import load_onnx, supported_op_types  # noqa: E402

ATOL, RTOL = 1e-5, 1e-5


# ----------------------------------------------------------------- helpers
def run_onnxruntime(path: Path, inputs: list[np.ndarray]) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, dict(zip(names, inputs)))[0]


def run_opwise(graph, inputs: list[np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return graph(*[torch.from_numpy(x) for x in inputs]).numpy()


def vnnlib_box(path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The hull of the input constraints `(<= X_i c)` / `(>= X_i c)` of a VNNLIB file (enough to sample in)."""
    lower, upper = np.full(size, np.inf), np.full(size, -np.inf)
    for relation, index, value in re.findall(r"\((<=|>=)\s+X_(\d+)\s+([-+0-9.eE]+)\)", path.read_text()):
        index, value = int(index), float(value)
        if relation == ">=":
            lower[index] = min(lower[index], value)
        else:
            upper[index] = max(upper[index], value)
    assert np.isfinite(lower).all() and np.isfinite(upper).all(), f"{path} does not bound every input"
    return lower, upper


def first_vnnlib(suite: Path, onnx_name: str) -> Path:
    for line in (suite / "instances.csv").read_text().splitlines():
        network, spec, *_ = line.split(",")
        if Path(network.strip()).name == onnx_name:
            return suite / spec.strip()
    raise AssertionError(f"no instance uses {onnx_name}")


def input_shape(path: Path) -> list[int]:
    model = onnx.load(str(path))
    initializers = {init.name for init in model.graph.initializer}
    (value,) = [i for i in model.graph.input if i.name not in initializers]
    return [d.dim_value for d in value.type.tensor_type.shape.dim]


def check_network(path: Path, suite: Path, batch: int, samples: int, seed: int) -> float:
    """Import at batch 1 and at `batch`; compare with onnxruntime (batch 1, one sample at a time)."""
    shape = input_shape(path)
    lower, upper = vnnlib_box(first_vnnlib(suite, path.name), int(np.prod(shape)))
    rng = np.random.default_rng(seed)
    points = (lower + (upper - lower) * rng.random((samples, lower.size))).astype(np.float32)
    points = points.reshape([samples] + shape[1:])
    expected = np.concatenate([run_onnxruntime(path, [p[None]]) for p in points])
    worst = 0.0
    for batch_size in (1, batch):
        graph = load_onnx(path, batch_size=batch_size)
        got = np.concatenate([run_opwise(graph, [points[i : i + batch_size]]) for i in range(0, samples, batch_size)])
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL, err_msg=f"{path.name} at batch {batch_size}")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


# ----------------------------------------------------------------- benchmarks
@pytest.mark.parametrize(
    "suite", ["eran_2021", "dist_shift_2023", "cgan_2023_nonlinear"], ids=lambda s: s.split("_")[0]
)
def test_benchmark_networks_match_onnxruntime(benchmarks_dir, suite):
    for path in sorted((benchmarks_dir / suite / "onnx").glob("*.onnx")):
        check_network(path, benchmarks_dir / suite, batch=4, samples=8, seed=0)


def test_all_acasxu_networks_match_onnxruntime(benchmarks_dir):
    paths = sorted((benchmarks_dir / "acasxu" / "onnx").glob("*.onnx"))
    assert len(paths) == 45
    for seed, path in enumerate(paths):
        check_network(path, benchmarks_dir / "acasxu", batch=5, samples=5, seed=seed)


def test_benchmark_graphs_use_the_aten_ops_engines_know(benchmarks_dir):
    acasxu = load_onnx(benchmarks_dir / "acasxu" / "onnx" / "ACASXU_run2a_1_1_batch_2000.onnx")
    assert acasxu.op_counts() == {"aten.sub.Tensor": 1, "aten.view.default": 1, "aten.linear.default": 7, "aten.relu.default": 6}
    path = benchmarks_dir / "cgan_2023_nonlinear" / "onnx" / "cGAN_imgSz32_nCh_3_nonlinear_activations.onnx"
    graph = load_onnx(path)
    counts = graph.op_counts()
    assert counts["aten.convolution.default"] == 8 and counts["aten.batch_norm.default"] == 7
    assert counts["aten.linear.default"] == 2 and counts["aten.tanh.default"] == 1
    transposed = [n for n in graph.call_nodes() if n.target is torch.ops.aten.convolution.default and n.args[6]]
    assert len(transposed) == 4
    assert all(graph.depends_on_input(n) for n in graph.call_nodes())
    model = onnx.load(str(path))
    initializer = next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == "gen.l1.0.weight")
    weight = next(n for n in graph.nodes if n.op == "get_attr" and graph.info(n).source == "gen.l1.0.weight")
    assert np.array_equal(graph.constant(weight).numpy(), initializer)


# ----------------------------------------------------------------- small graphs, operator by operator
def save_model(tmp_path, nodes, inputs, output_shape, initializers=(), opset=13, name="model.onnx", types=None):
    """An ONNX model with inputs {name: shape} (float unless `types` {name: TensorProto type} says otherwise) and
    one float output 'y'."""
    types = types or {}
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, types.get(n, TensorProto.FLOAT), s) for n, s in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(initializers).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def assert_matches(path, input_shapes, batch_sizes=(None,), seed=0):
    rng = np.random.default_rng(seed)
    for batch_size in batch_sizes:
        shapes = [[batch_size or s[0]] + list(s[1:]) for s in input_shapes]
        inputs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        graph = load_onnx(path, batch_size=batch_size)
        if batch_size in (None, input_shapes[0][0]):
            expected = run_onnxruntime(path, inputs)
        else:
            expected = np.concatenate([run_onnxruntime(path, [x[i : i + 1] for x in inputs]) for i in range(batch_size)])
        np.testing.assert_allclose(run_opwise(graph, inputs), expected, atol=ATOL, rtol=RTOL)
    return graph


def ops_of(graph):
    return [graph.info(n).op for n in graph.call_nodes()]


def weights(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("trans_a,trans_b,alpha,beta", [(0, 0, 1.0, 1.0), (0, 1, 0.5, 2.0), (1, 1, 1.5, 0.0), (1, 0, 1.0, 1.0)])
def test_gemm(tmp_path, trans_a, trans_b, alpha, beta):
    rng = np.random.default_rng(1)
    b = weights(rng, 3, 4) if trans_b else weights(rng, 4, 3)
    node = helper.make_node("Gemm", ["x", "b", "c"], ["y"], transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)
    x_shape = [4, 2] if trans_a else [2, 4]
    path = save_model(tmp_path, [node], {"x": x_shape}, [2, 3], {"b": b, "c": weights(rng, 3)}, opset=11)
    graph = assert_matches(path, [x_shape])
    assert "aten.linear.default" in ops_of(graph)


def test_gemm_with_full_bias_and_input_dependent_b(tmp_path):
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Gemm", ["a", "x", "c"], ["y"], transB=1, alpha=2.0)]
    path = save_model(tmp_path, nodes, {"x": [3, 4]}, [2, 3], {"a": weights(rng, 2, 4), "c": weights(rng, 2, 3)})
    assert ops_of(assert_matches(path, [[3, 4]])) == ["aten.permute.default", "aten.mm.default", "aten.mul.Tensor", "aten.add.Tensor"]


@pytest.mark.parametrize("x_shape,w_shape", [([2, 4], [4, 3]), ([2, 5, 4], [4, 3]), ([2, 3, 4], None), ([4], [4, 3])])
def test_matmul(tmp_path, x_shape, w_shape):
    rng = np.random.default_rng(3)
    if w_shape is None:
        nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]), helper.make_node("MatMul", ["x", "t"], ["y"])]
        path = save_model(tmp_path, nodes, {"x": x_shape}, None)
    else:
        path = save_model(tmp_path, [helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": x_shape}, None, {"w": weights(rng, *w_shape)})
    graph = load_onnx(path)
    x = rng.standard_normal(x_shape).astype(np.float32)
    np.testing.assert_allclose(run_opwise(graph, [x]), run_onnxruntime(path, [x]), atol=ATOL, rtol=RTOL)
    assert ("aten.bmm.default" if w_shape is None else "aten.linear.default") in ops_of(graph)


def test_matmul_add_fuses_into_linear_with_bias_only_when_single_use(tmp_path):
    rng = np.random.default_rng(9)
    inits = {"w": weights(rng, 4, 3), "b": weights(rng, 3)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["b", "m"], ["y"])]
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 4]}, [1, 3], inits, opset=8), [[1, 4]], batch_sizes=(None, 3))
    assert ops_of(graph) == ["aten.linear.default"] and len(next(graph.call_nodes()).args) == 3
    nodes = nodes[:1] + [helper.make_node("Add", ["m", "b"], ["a"]), helper.make_node("Mul", ["a", "m"], ["y"])]
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 4]}, [1, 3], inits, name="twice.onnx"), [[1, 4]])
    assert ops_of(graph) == ["aten.linear.default", "aten.add.Tensor", "aten.mul.Tensor"]


def test_matmul_with_constant_left_side(tmp_path):
    rng = np.random.default_rng(4)
    path = save_model(tmp_path, [helper.make_node("MatMul", ["w", "x"], ["y"])], {"x": [4, 3]}, [2, 3], {"w": weights(rng, 2, 4)})
    assert ops_of(assert_matches(path, [[4, 3]])) == ["aten.mm.default"]


@pytest.mark.parametrize("opset", [8, 9, 11, 13])
def test_flatten_across_opsets(tmp_path, opset):
    node = helper.make_node("Flatten", ["x"], ["y"], axis=2)
    path = save_model(tmp_path, [node], {"x": [1, 2, 3, 4]}, [2, 12], opset=opset)
    assert ops_of(assert_matches(path, [[1, 2, 3, 4]], batch_sizes=(None, 3))) == ["aten.view.default"]


def test_flatten_axis_zero_refuses_another_batch_size(tmp_path):
    path = save_model(tmp_path, [helper.make_node("Flatten", ["x"], ["y"], axis=0)], {"x": [1, 2, 3]}, [1, 6])
    assert_matches(path, [[1, 2, 3]])
    with pytest.raises(ModelLoadError, match="batch_size=3.*Flatten"):
        load_onnx(path, batch_size=3)


def test_reshape_rewrites_the_declared_batch_and_refuses_mixing(tmp_path):
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"])]
    path = save_model(tmp_path, nodes, {"x": [1, 2, 6]}, [1, 3, 4], {"shape": np.array([1, 3, -1], dtype=np.int64)})
    assert_matches(path, [[1, 2, 6]], batch_sizes=(None, 1, 4))
    mixing = save_model(tmp_path, nodes, {"x": [1, 2, 6]}, [12], {"shape": np.array([12], dtype=np.int64)}, name="mix.onnx")
    assert_matches(mixing, [[1, 2, 6]])
    with pytest.raises(ModelLoadError, match="batch_size=2.*Reshape"):
        load_onnx(mixing, batch_size=2)


def test_reshape_with_zero_and_shape_subgraph_folds_to_constants(tmp_path):
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    inits = {"zero": np.array(0, dtype=np.int64), "axes": np.array([0], dtype=np.int64), "minus_one": np.array([-1], dtype=np.int64)}
    path = save_model(tmp_path, nodes, {"x": [1, 3, 4]}, [1, 12], inits)
    graph = assert_matches(path, [[1, 3, 4]], batch_sizes=(None, 5))
    assert ops_of(graph) == ["aten.view.default"]


def test_reshape_opset_1_reads_the_shape_attribute(tmp_path):
    path = save_model(tmp_path, [helper.make_node("Reshape", ["x"], ["y"], shape=[0, -1])], {"x": [1, 2, 3]}, [1, 6], opset=4)
    graph = load_onnx(path, batch_size=2)
    x = torch.randn(2, 2, 3)
    assert torch.equal(graph(x), x.reshape(2, 6))


@pytest.mark.parametrize("op", ["Sub", "Div", "Add", "Mul"])
def test_binary_with_broadcast_constants(tmp_path, op):
    rng = np.random.default_rng(5)
    inits = {"row": (np.abs(weights(rng, 1, 3, 1)) + 0.5), "scalar": np.array(0.3081, dtype=np.float32)}
    nodes = [helper.make_node(op, ["x", "row"], ["t"]), helper.make_node(op, ["scalar", "t"], ["y"])]
    path = save_model(tmp_path, nodes, {"x": [1, 3, 4]}, [1, 3, 4], inits)
    graph = assert_matches(path, [[1, 3, 4]], batch_sizes=(None, 2))
    assert ops_of(graph) == [f"aten.{op.lower()}.Tensor"] * 2


def test_scalar_constant_becomes_a_python_scalar(tmp_path):
    nodes = [helper.make_node("Sub", ["x", "mean"], ["t"]), helper.make_node("Div", ["t", "std"], ["y"])]
    inits = {"mean": np.array(0.1307, dtype=np.float32), "std": np.array([0.3081], dtype=np.float32)}
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 4]}, [1, 4], inits), [[1, 4]])
    assert [type(n.args[1]) for n in graph.call_nodes()] == [float, float]


def test_legacy_broadcast_attribute(tmp_path):
    node = helper.make_node("Add", ["x", "b"], ["y"], broadcast=1, axis=1)
    path = save_model(tmp_path, [node], {"x": [2, 3, 4]}, [2, 3, 4], {"b": np.arange(3, dtype=np.float32)}, opset=6)
    graph = load_onnx(path)
    x = torch.randn(2, 3, 4)
    assert torch.allclose(graph(x), x + torch.arange(3.0).view(3, 1))


@pytest.mark.parametrize(
    "attributes",
    [dict(kernel_shape=[3, 3]), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
     dict(kernel_shape=[3, 3], pads=[0, 1, 2, 1], dilations=[2, 1]), dict(kernel_shape=[3, 3], group=2, auto_pad="SAME_UPPER")],
)
def test_conv(tmp_path, attributes):
    rng = np.random.default_rng(6)
    groups = attributes.get("group", 1)
    inits = {"w": weights(rng, 4, 4 // groups, 3, 3), "b": weights(rng, 4)}
    path = save_model(tmp_path, [helper.make_node("Conv", ["x", "w", "b"], ["y"], **attributes)], {"x": [1, 4, 9, 8]}, None, inits)
    assert "aten.convolution.default" in ops_of(assert_matches(path, [[1, 4, 9, 8]], batch_sizes=(None, 3)))


@pytest.mark.parametrize(
    "attributes",
    [dict(strides=[2, 2]), dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]), dict(strides=[2, 1], pads=[0, 1, 1, 0]),
     dict(strides=[2, 2], output_shape=[10, 9])],
)
def test_conv_transpose(tmp_path, attributes):
    rng = np.random.default_rng(7)
    inits = {"w": weights(rng, 3, 2, 3, 3), "b": weights(rng, 2)}
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], **attributes)]
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 3, 5, 4]}, None, inits), [[1, 3, 5, 4]], batch_sizes=(None, 2))
    assert graph.module.graph.find_nodes(op="call_function", target=torch.ops.aten.convolution.default)[0].args[6] is True


@pytest.mark.parametrize("opset", [7, 9, 15])
def test_batch_normalization(tmp_path, opset):
    rng = np.random.default_rng(8)
    inits = {"s": weights(rng, 3), "b": weights(rng, 3), "m": weights(rng, 3), "v": np.abs(weights(rng, 3)) + 0.1}
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=0.8)
    graph = assert_matches(save_model(tmp_path, [node], {"x": [1, 3, 4, 4]}, None, inits, opset=opset), [[1, 3, 4, 4]])
    assert ops_of(graph) == ["aten.batch_norm.default"]
    assert next(graph.call_nodes()).args[5] is False


@pytest.mark.parametrize("op", ["Relu", "Sigmoid", "Tanh", "Exp", "Abs", "Neg", "LeakyRelu", "Erf", "Sin", "Cos", "Softplus",
                                "Atan", "Asinh", "Sinh", "Cosh"])
def test_elementwise_activations(tmp_path, op):
    path = save_model(tmp_path, [helper.make_node(op, ["x"], ["y"])], {"x": [1, 5, 3]}, [1, 5, 3])
    assert len(ops_of(assert_matches(path, [[1, 5, 3]], batch_sizes=(None, 4)))) == 1


@pytest.mark.parametrize("opset,axis", [(11, 1), (11, -1), (13, 1), (13, -1)])
def test_softmax(tmp_path, opset, axis):
    path = save_model(tmp_path, [helper.make_node("Softmax", ["x"], ["y"], axis=axis)], {"x": [2, 3, 4]}, [2, 3, 4], opset=opset)
    assert "aten._softmax.default" in ops_of(assert_matches(path, [[2, 3, 4]]))


def test_transpose_concat_slice_squeeze_unsqueeze(tmp_path):
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Concat", ["t", "c"], ["cat"], axis=2),
        helper.make_node("Slice", ["cat", "starts", "ends", "axes", "steps"], ["s"]),
        helper.make_node("Unsqueeze", ["s", "uaxes"], ["u"]),
        helper.make_node("Squeeze", ["u", "uaxes"], ["y"]),
    ]
    inits = {
        "c": np.ones((1, 4, 2), dtype=np.float32),
        "starts": np.array([1, -1], dtype=np.int64), "ends": np.array([4, -100], dtype=np.int64),
        "axes": np.array([1, 2], dtype=np.int64), "steps": np.array([2, -2], dtype=np.int64),
        "uaxes": np.array([-1], dtype=np.int64),
    }
    path = save_model(tmp_path, nodes, {"x": [1, 3, 4]}, None, inits)
    graph = assert_matches(path, [[1, 3, 4]])
    assert "aten.permute.default" in ops_of(graph) and "aten.cat.default" in ops_of(graph)


def test_opset_11_slice_squeeze_unsqueeze_attributes(tmp_path):
    nodes = [
        helper.make_node("Slice", ["x"], ["s"], starts=[1], ends=[3], axes=[2]),
        helper.make_node("Unsqueeze", ["s"], ["u"], axes=[1]),
        helper.make_node("Squeeze", ["u"], ["y"], axes=[1]),
    ]
    assert_matches(save_model(tmp_path, nodes, {"x": [1, 3, 4]}, None, opset=9), [[1, 3, 4]], batch_sizes=(None, 2))


@pytest.mark.parametrize("opset", [9, 13])
def test_pad(tmp_path, opset):
    if opset < 11:
        node = helper.make_node("Pad", ["x"], ["y"], pads=[0, 0, 1, 2, 0, 0, 2, 1], value=0.5)
        path = save_model(tmp_path, [node], {"x": [1, 2, 3, 3]}, None, opset=opset)
    else:
        inits = {"pads": np.array([0, 0, 1, 2, 0, 0, 2, 1], dtype=np.int64), "v": np.array(0.5, dtype=np.float32)}
        path = save_model(tmp_path, [helper.make_node("Pad", ["x", "pads", "v"], ["y"])], {"x": [1, 2, 3, 3]}, None, inits, opset)
    assert ops_of(assert_matches(path, [[1, 2, 3, 3]], batch_sizes=(None, 2))) == ["aten.constant_pad_nd.default"]


def test_pooling_and_reductions(tmp_path):
    nodes = [
        helper.make_node("MaxPool", ["x"], ["m"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("AveragePool", ["m"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("GlobalAveragePool", ["a"], ["g"]),
        helper.make_node("ReduceSum", ["g", "axes"], ["y"], keepdims=0),
    ]
    path = save_model(tmp_path, nodes, {"x": [1, 3, 8, 8]}, None, {"axes": np.array([2, 3], dtype=np.int64)})
    assert_matches(path, [[1, 3, 8, 8]], batch_sizes=(None, 2))


def test_constant_of_shape_equal_where_cast_fold(tmp_path):
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("ConstantOfShape", ["s"], ["ones"], value=helper.make_tensor("v", TensorProto.INT64, [1], [1])),
        helper.make_node("Equal", ["ones", "one"], ["mask"]),
        helper.make_node("Where", ["mask", "x", "zero"], ["w"]),
        helper.make_node("Cast", ["ones"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["w", "f"], ["y"]),
    ]
    inits = {"one": np.array(1, dtype=np.int64), "zero": np.array(0.0, dtype=np.float32)}
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 3]}, [1, 3], inits), [[1, 3]])
    assert all(graph.depends_on_input(n) for n in graph.call_nodes())


def test_unsupported_operator_names_node_type_and_opset(tmp_path):
    path = save_model(tmp_path, [helper.make_node("Det", ["x"], ["y"], name="the_node")], {"x": [1, 3, 3]}, [1], opset=12)
    with pytest.raises(UnsupportedOperation, match=r"the_node.*Det, opset 12.*supported_op_types"):
        load_onnx(path)
    assert "Gemm" in supported_op_types()
    custom = helper.make_node("Relu", ["x"], ["y"], name="custom", domain="com.example")
    path = save_model(tmp_path, [custom], {"x": [1, 3]}, [1, 3], name="custom.onnx")
    with pytest.raises(UnsupportedOperation, match=r"custom.*com\.example\.Relu, opset 1\b"):  # undeclared: first version
        load_onnx(path)
    model = onnx.load(str(path))
    model.opset_import.append(helper.make_opsetid("com.example", 3))
    onnx.save(model, str(path))
    with pytest.raises(UnsupportedOperation, match=r"com\.example\.Relu, opset 3\b"):  # its domain's opset, not the default's 13
        load_onnx(path)


def test_missing_file_and_retrace(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_onnx(tmp_path / "absent.onnx")
    path = save_model(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], {"x": [1, 3]}, [1, 3])
    graph = load_onnx(path)
    assert graph.strategy == "onnx" and graph.input_names == ["x"]
    assert graph.info(graph.output).shape == (1, 3)
    bigger = graph.retrace(torch.zeros(6, 3))
    assert bigger.info(bigger.output).shape == (6, 3)


def test_symbolic_batch_dimension(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    model = helper.make_model(helper.make_graph([helper.make_node("Tanh", ["x"], ["y"])], "g", [x], [y]))
    onnx.save(model, str(tmp_path / "dynamic.onnx"))
    assert load_onnx(tmp_path / "dynamic.onnx").input_nodes[0].meta["val"].shape == (1, 3)
    graph = load_onnx(tmp_path / "dynamic.onnx", batch_size=7)
    assert graph(torch.zeros(7, 3)).shape == (7, 3)


def test_symbolic_inner_dimension_and_several_outputs_are_refused(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "L"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "L"])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    onnx.save(model, str(tmp_path / "inner.onnx"))
    with pytest.raises(ModelLoadError, match="symbolic dimension 'L' at axis 1"):
        load_onnx(tmp_path / "inner.onnx")
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["z"])]
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y, z])), str(tmp_path / "two.onnx"))
    with pytest.raises(ModelLoadError, match="2 outputs"):
        load_onnx(tmp_path / "two.onnx")


def test_transpose_of_the_batch_axis_refuses_another_batch_size(tmp_path):
    node = helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0])
    path = save_model(tmp_path, [node], {"x": [1, 3]}, [3, 1])
    assert_matches(path, [[1, 3]])
    with pytest.raises(ModelLoadError, match="batch_size=2.*Transpose"):
        load_onnx(path, batch_size=2)


def test_missing_onnx_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)
    with pytest.raises(ModelLoadError, match=r'pip install "opwise\[onnx\]"'):
        load_onnx(tmp_path / "model.onnx")


def test_gather_split_expand_tile(tmp_path):
    nodes = [
        helper.make_node("Gather", ["x", "index"], ["g"], axis=2),
        helper.make_node("Gather", ["x", "last"], ["scalar_index"], axis=-1),
        helper.make_node("Gather", ["g", "first"], ["h"], axis=-1),
        helper.make_node("Split", ["g", "sizes"], ["a", "b"], axis=1),
        helper.make_node("Expand", ["h", "target"], ["e"]),
        helper.make_node("Tile", ["a", "repeats"], ["t"]),
        helper.make_node("Concat", ["t", "b", "e"], ["c"], axis=1),
        helper.make_node("Gather", ["scalar_index", "last"], ["corner"], axis=1),
        helper.make_node("Unsqueeze", ["corner", "unsqueeze_axes"], ["column"]),
        helper.make_node("Mul", ["c", "column"], ["y"]),
    ]
    inits = {
        "index": np.array([[0, 3], [-1, 1]], dtype=np.int64), "last": np.array(-1, dtype=np.int64),
        "first": np.array([0], dtype=np.int64),
        "sizes": np.array([1, 2], dtype=np.int64), "target": np.array([1, 1, 2, 2], dtype=np.int64),
        "repeats": np.array([1, 2, 1, 1], dtype=np.int64), "unsqueeze_axes": np.array([1, 2, 3], dtype=np.int64),
    }
    path = save_model(tmp_path, nodes, {"x": [1, 3, 4]}, None, inits)
    graph = assert_matches(path, [[1, 3, 4]], batch_sizes=(None, 3))
    assert {"aten.index_select.default", "aten.select.int", "aten.slice.Tensor", "aten.repeat.default"} <= set(ops_of(graph))


def test_expand_adding_leading_axes_refuses_another_batch_size(tmp_path):
    path = save_model(tmp_path, [helper.make_node("Expand", ["x", "shape"], ["y"])], {"x": [1, 3]}, [2, 1, 3],
                      {"shape": np.array([2, 1, 3], dtype=np.int64)})
    assert_matches(path, [[1, 3]])
    with pytest.raises(ModelLoadError, match="batch_size=4.*Expand"):
        load_onnx(path, batch_size=4)


def test_split_opset_11_equal_parts(tmp_path):
    nodes = [helper.make_node("Split", ["x"], ["a", "b"], axis=1), helper.make_node("Sub", ["a", "b"], ["y"])]
    assert_matches(save_model(tmp_path, nodes, {"x": [1, 6]}, [1, 3], opset=11), [[1, 6]], batch_sizes=(None, 2))


def test_gather_with_input_dependent_indices_is_an_embedding(tmp_path):
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    graph_proto = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["y"])], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3])],
        [numpy_helper.from_array(table, "table")],
    )
    onnx.save(helper.make_model(graph_proto), str(tmp_path / "embed.onnx"))
    graph = load_onnx(tmp_path / "embed.onnx")
    assert ops_of(graph) == ["aten.embedding.default"]
    assert torch.equal(graph(torch.tensor([[3, 1]])), torch.from_numpy(table[[[3, 1]]]))


@pytest.mark.parametrize("opset", [6, 11, 13])
def test_clip_pow_max_min_sum_mean(tmp_path, opset):
    if opset < 11:
        clip, inits = helper.make_node("Clip", ["x"], ["c"], min=-0.5, max=0.7), {}
    else:
        clip = helper.make_node("Clip", ["x", "low", "", ], ["c"])
        inits = {"low": np.array(-0.5, dtype=np.float32)}
    inits["two"] = np.array(2.0, dtype=np.float32)
    inits["row"] = np.array([0.1, -0.2, 0.3], dtype=np.float32)
    nodes = [
        clip,
        helper.make_node("Pow", ["c", "two"], ["p"]),
        helper.make_node("Max", ["p", "x", "row"], ["mx"]),
        helper.make_node("Min", ["mx", "row"], ["mn"]),
        helper.make_node("Sum", ["mn", "x", "p"], ["s"]),
        helper.make_node("Mean", ["s", "x"], ["y"]),
    ]
    path = save_model(tmp_path, nodes, {"x": [1, 2, 3]}, [1, 2, 3], inits, opset=max(opset, 8))
    assert_matches(path, [[1, 2, 3]], batch_sizes=(None, 2))


@pytest.mark.parametrize("op", ["Tan", "Asin", "Acos", "Atanh"])
def test_unit_domain_unary(tmp_path, op):
    """Functions defined on (-1, 1) or so, reached through tanh(x) / 2."""
    nodes = [helper.make_node("Tanh", ["x"], ["t"]), helper.make_node("Mul", ["t", "half"], ["h"]), helper.make_node(op, ["h"], ["y"])]
    path = save_model(tmp_path, nodes, {"x": [1, 4]}, [1, 4], {"half": np.array([0.5], dtype=np.float32)})
    assert_matches(path, [[1, 4]], batch_sizes=(None, 3))


@pytest.mark.parametrize("op", ["Sqrt", "Log", "Reciprocal", "Acosh"])
def test_positive_domain_unary(tmp_path, op):
    nodes = [helper.make_node("Abs", ["x"], ["a"]), helper.make_node("Add", ["a", "one"], ["p"]), helper.make_node(op, ["p"], ["y"])]
    path = save_model(tmp_path, nodes, {"x": [1, 4]}, [1, 4], {"one": np.array([1.0], dtype=np.float32)})
    assert_matches(path, [[1, 4]], batch_sizes=(None, 3))


@pytest.mark.parametrize("opset", [13, 18])
def test_reductions_across_opsets(tmp_path, opset):
    nodes, inits = [], {}
    for i, op in enumerate(["ReduceMean", "ReduceMax", "ReduceMin"]):
        if opset >= 18:
            nodes.append(helper.make_node(op, ["x", "axes"], [f"r{i}"], keepdims=1))
            inits["axes"] = np.array([-1], dtype=np.int64)
        else:
            nodes.append(helper.make_node(op, ["x"], [f"r{i}"], axes=[-1], keepdims=1))
    nodes += [helper.make_node("Add", ["r0", "r1"], ["s"]), helper.make_node("Sub", ["s", "r2"], ["y"])]
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 3, 5]}, None, inits, opset=opset), [[1, 3, 5]], batch_sizes=(None, 2))
    assert {"aten.mean.dim", "aten.amax.default", "aten.amin.default"} <= set(ops_of(graph))


def test_log_softmax_gelu_elu_layer_norm_dropout_identity(tmp_path):
    rng = np.random.default_rng(10)
    nodes = [
        helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["n"], epsilon=1e-3),
        helper.make_node("Gelu", ["n"], ["g"], approximate="tanh"),
        helper.make_node("Elu", ["g"], ["e"], alpha=0.5),
        helper.make_node("Dropout", ["e"], ["d"]),
        helper.make_node("Identity", ["d"], ["i"]),
        helper.make_node("LogSoftmax", ["i"], ["y"], axis=-1),
    ]
    inits = {"scale": weights(rng, 6), "bias": weights(rng, 6)}
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 4, 6]}, None, inits, opset=20), [[1, 4, 6]], batch_sizes=(None, 2))
    assert ops_of(graph) == ["aten.layer_norm.default", "aten.gelu.default", "aten.elu.default", "aten._log_softmax.default"]


def test_padded_max_pool_and_global_max_pool(tmp_path):
    nodes = [
        helper.make_node("MaxPool", ["x"], ["m"], kernel_shape=[3, 3], pads=[1, 0, 2, 1], strides=[2, 2], ceil_mode=1),
        helper.make_node("GlobalMaxPool", ["m"], ["y"]),
    ]
    assert_matches(save_model(tmp_path, nodes, {"x": [1, 2, 7, 6]}, None), [[1, 2, 7, 6]], batch_sizes=(None, 2))


def test_constant_nodes_range_size_and_cast_of_an_input(tmp_path):
    nodes = [
        helper.make_node("Constant", [], ["start"], value_int=0),
        helper.make_node("Size", ["x"], ["n"]),
        helper.make_node("Constant", [], ["step"], value_int=1),
        helper.make_node("Range", ["start", "n", "step"], ["r"]),
        helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
        helper.make_node("Constant", [], ["shape"], value_ints=[1, 4]),
        helper.make_node("Reshape", ["rf", "shape"], ["rs"]),
        helper.make_node("Cast", ["x"], ["xd"], to=TensorProto.DOUBLE),
        helper.make_node("Cast", ["xd"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["xf", "rs"], ["y"]),
    ]
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 4]}, [1, 4], opset=13), [[1, 4]])
    assert ops_of(graph) == ["aten._to_copy.default", "aten._to_copy.default", "aten.mul.Tensor"]


def test_huge_declared_input_is_refused_before_allocating(tmp_path):
    path = save_model(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], {"x": [1, 2**40]}, [1, 2**40])
    with pytest.raises(ModelLoadError, match=r"input 'x' declares shape \(1, 1099511627776\), 4096 GiB .* memory"):
        load_onnx(path)


def test_initializer_whose_data_does_not_fill_its_dims(tmp_path):
    w = helper.make_tensor("w", TensorProto.FLOAT, [3], vals=np.zeros(3, np.float32).tobytes(), raw=True)
    w.dims[:] = [2**20, 2**20]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    path = tmp_path / "short.onnx"
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y], [w])), path)
    with pytest.raises(ModelLoadError, match=r"ONNX tensor 'w' of shape \(1048576, 1048576\) cannot be read"):
        load_onnx(path)


def test_input_of_strings_is_refused(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.STRING, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.STRING, [1, 3])
    path = tmp_path / "strings.onnx"
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])), path)
    with pytest.raises(ModelLoadError, match="input 'x' has ONNX element type 8, which is not a tensor of numbers"):
        load_onnx(path)


def test_names_that_are_not_utf8_text_are_a_load_error(tmp_path):
    path = save_model(tmp_path, [helper.make_node("Relu", ["x"], ["y"], name="n")], {"x": [1, 3]}, [1, 3])
    data = path.read_bytes()
    assert data.count(b"Relu") == 1
    path.write_bytes(data.replace(b"Relu", b"Rel\xff"))
    with pytest.raises(ModelLoadError, match="ONNX node 0 has a name or type that is not UTF-8 text"):
        load_onnx(path)


def test_hard_activations_selu_celu_mish_and_prelu(tmp_path):
    """Each matches onnxruntime (HardSigmoid with ONNX's own alpha/beta, not torch's 1/6) and is bounded."""
    rng = np.random.default_rng(11)
    nodes = [
        helper.make_node("HardSigmoid", ["x"], ["a"], alpha=0.3, beta=0.4),
        helper.make_node("HardSwish", ["x"], ["b"]),
        helper.make_node("Selu", ["x"], ["c"]),
        helper.make_node("Celu", ["x"], ["d"], alpha=0.7),
        helper.make_node("Mish", ["x"], ["e"]),
        helper.make_node("PRelu", ["x", "slope"], ["f"]),
        helper.make_node("Sum", ["a", "b", "c", "d", "e", "f"], ["y"]),
    ]
    inits = {"slope": weights(rng, 1, 6)}
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 6]}, None, inits, opset=18), [[1, 6]], batch_sizes=(None, 2))
    from opwise.bounds import BoundedModel
    from tests.bounds.helpers import assert_sound

    x = torch.randn(1, 6, generator=torch.Generator().manual_seed(0)) * 3
    assert_sound(graph, x - 1.0, x + 1.0, samples=2_000, attack=False, bounded=BoundedModel(graph, x))


@pytest.mark.parametrize("bias, lambd", [(0.0, 0.5), (0.3, 0.3), (0.2, 0.6), (-0.4, 0.5), (0.25, 0.0)])
def test_shrink_and_thresholded_relu_match_onnxruntime_and_are_bounded(tmp_path, bias, lambd):
    """Shrink becomes hardshrink (bias 0), softshrink (bias = lambd) or their mix, ThresholdedRelu torch's
    threshold with value 0: both match onnxruntime and CROWN/IBP contain sampled outputs."""
    nodes = [
        helper.make_node("Shrink", ["x"], ["a"], bias=bias, lambd=lambd),
        helper.make_node("ThresholdedRelu", ["x"], ["b"], alpha=0.4),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 6]}, [1, 6], opset=13), [[1, 6]], batch_sizes=(None, 3))
    assert "aten.threshold.default" in ops_of(graph)
    from opwise.bounds import BoundedModel
    from tests.bounds.helpers import assert_sound

    x = torch.linspace(-1.5, 1.5, 6)[None]
    assert_sound(graph, x - 0.4, x + 0.4, methods=("ibp", "crown"), samples=4_000, bounded=BoundedModel(graph, x))


@pytest.mark.parametrize("opset, largest", [(10, 1), (11, 1), (11, 0)])
def test_top_k_matches_onnxruntime_and_its_values_are_bounded(tmp_path, opset, largest):
    attributes = {"axis": 1} if opset < 11 else {"axis": 1, "largest": largest}
    nodes = [helper.make_node("TopK", ["x", "k"], ["values", "indices"], **attributes),
             helper.make_node("Relu", ["values"], ["y"])]
    inits = {"k": np.array([2], dtype=np.int64)}
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 5]}, [1, 2], inits, opset=opset), [[1, 5]],
                           batch_sizes=(None, 3))
    assert "aten.topk.default" in ops_of(graph)
    from opwise.bounds import BoundedModel
    from tests.bounds.helpers import assert_sound

    x = torch.randn(1, 5, generator=torch.Generator().manual_seed(opset))
    assert_sound(graph, x - 0.5, x + 0.5, methods=("ibp", "crown"), samples=2_000, bounded=BoundedModel(graph, x))


RESIZE_CASES = {
    "nearest_opset10": (10, {"mode": "nearest"}, "scales", [1, 1, 2, 3]),
    "nearest_floor": (13, {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
                      "scales", [1, 1, 2, 2]),
    "nearest_exact": (13, {"mode": "nearest", "coordinate_transformation_mode": "half_pixel",
                           "nearest_mode": "round_prefer_ceil"}, "sizes", [1, 2, 7, 9]),
    "linear_half_pixel": (13, {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}, "scales", [1, 1, 2, 1.5]),
    "linear_align_corners": (13, {"mode": "linear", "coordinate_transformation_mode": "align_corners"}, "sizes",
                             [1, 2, 8, 5]),
    "cubic_pytorch_half_pixel": (13, {"mode": "cubic", "coordinate_transformation_mode": "pytorch_half_pixel",
                                      "cubic_coeff_a": -0.75}, "scales", [1, 1, 2, 2]),
    "cubic_align_corners": (13, {"mode": "cubic", "coordinate_transformation_mode": "align_corners",
                                 "cubic_coeff_a": -0.75}, "sizes", [1, 2, 9, 7]),
}


@pytest.mark.parametrize("case", sorted(RESIZE_CASES))
def test_resize_matches_onnxruntime_and_is_bounded(tmp_path, case):
    """Resize had no importer (U-Nets and FPNs exported from torch use it): each mode torch computes matches
    onnxruntime and is bounded soundly (bicubic's negative weights included)."""
    opset, attributes, given, values = RESIZE_CASES[case]
    if opset == 10:
        inputs, inits = ["x", "scales"], {"scales": np.array(values, dtype=np.float32)}
    else:
        inputs = ["x", "", "scales"] if given == "scales" else ["x", "", "", "sizes"]
        inits = {given: np.array(values, dtype=np.float32 if given == "scales" else np.int64)}
    nodes = [helper.make_node("Resize", inputs, ["y"], **attributes)]
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 2, 4, 5]}, None, inits, opset=opset), [[1, 2, 4, 5]])
    assert len(ops_of(graph)) == 1 and "upsample" in ops_of(graph)[0]
    from opwise.bounds import BoundedModel
    from tests.bounds.helpers import assert_sound

    x = torch.randn(1, 2, 4, 5, generator=torch.Generator().manual_seed(0))
    assert_sound(graph, x - 0.3, x + 0.3, methods=("ibp", "crown"), samples=500, attack=False, bounded=BoundedModel(graph, x))


def test_resize_modes_torch_does_not_compute_are_refused_naming_the_attribute(tmp_path):
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic", cubic_coeff_a=-0.5)]
    inits = {"scales": np.array([1, 1, 2, 2], dtype=np.float32)}
    with pytest.raises(ModelLoadError, match="cubic_coeff_a -0.5"):
        load_onnx(save_model(tmp_path, nodes, {"x": [1, 2, 4, 5]}, None, inits, opset=13))
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear", coordinate_transformation_mode="asymmetric")]
    with pytest.raises(ModelLoadError, match="linear with asymmetric coordinates"):
        load_onnx(save_model(tmp_path, nodes, {"x": [1, 2, 4, 5]}, None, inits, opset=13, name="b.onnx"))


def test_inputs_with_different_fixed_leading_sizes_are_refused(tmp_path):
    """Every input's leading axis becomes the batch, set to one size: a [5, 3] and a [1, 3] input were both made
    [1, 3] without a word (the first losing four rows); such a model is refused, naming the inputs."""
    nodes = [helper.make_node("ReduceSum", ["a"], ["s"], axes=[0], keepdims=1), helper.make_node("Add", ["s", "b"], ["y"])]
    path = save_model(tmp_path, nodes, {"a": [5, 3], "b": [1, 3]}, None, opset=12)
    with pytest.raises(ModelLoadError, match=r"different leading sizes \('a': 5, 'b': 1\)"):
        load_onnx(path)


@pytest.mark.parametrize("constant_shape", [[], [1]])
def test_max_and_min_with_a_one_element_constant_import_and_bound(tmp_path, constant_shape):
    """ReLU6 written as Min(Max(x, 0), 6) and a variadic Max of two inputs and a constant: the one-element
    constant became a Python number for `aten.maximum`, which takes tensors only (ModelLoadError "Expected a value
    of type 'Tensor' for argument 'other'"); now `aten.clamp_min`/`clamp_max`, bounded soundly. Greater of two
    inputs keeps its tensor form (the scalar form was chosen for any operand that is not a constant tensor)."""
    from opwise.bounds import BoundedModel
    from tests.bounds.helpers import assert_sound

    inits = {"zero": np.zeros(constant_shape, np.float32), "six": np.full(constant_shape, 6.0, np.float32),
             "k": np.full(constant_shape, 0.3, np.float32), "W": np.linspace(-3, 3, 12, dtype=np.float32).reshape(4, 3)}
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Max", ["h", "zero"], ["r"]),
             helper.make_node("Min", ["r", "six"], ["r6"]), helper.make_node("Neg", ["h"], ["n"]),
             helper.make_node("Max", ["r6", "n", "k"], ["y"])]
    path = save_model(tmp_path, nodes, {"x": [1, 4]}, [1, 3], inits)
    graph = assert_matches(path, [[1, 4]], batch_sizes=(None, 3))
    ops = {graph.info(n).op for n in graph.call_nodes()}
    assert {"aten.clamp_min.default", "aten.clamp_max.default"} <= ops
    x = torch.full((1, 4), 0.5)
    assert_sound(graph, x - 1.0, x + 1.0, methods=("ibp", "crown"), bounded=BoundedModel(graph, x))

    compare = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Neg", ["h"], ["n"]),
               helper.make_node("Greater", ["h", "n"], ["g"]), helper.make_node("Where", ["g", "h", "n"], ["y"])]
    assert_matches(save_model(tmp_path, compare, {"x": [1, 4]}, [1, 3], {"W": inits["W"]}, name="gt.onnx"), [[1, 4]])


def _batch_adding_model(tmp_path, target, name="adds.onnx"):
    """Input [3, 4] with no batch axis, read by a Reshape to `target` ([-1, 3, 4]: pensieve's), then per-sample
    layers: Split of the rows, Flatten, Gemm, Relu, a Pow over a ReduceSum (a normalisation) and a Sub."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Reshape", ["x", "target"], ["r"]),
        helper.make_node("Split", ["r", "halves"], ["a", "b"], axis=1),
        helper.make_node("Flatten", ["a"], ["fa"], axis=1),
        helper.make_node("Flatten", ["b"], ["fb"], axis=1),
        helper.make_node("Concat", ["fb", "fa"], ["c"], axis=1),
        helper.make_node("Gemm", ["c", "W", "bias"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["p"]),
        helper.make_node("Pow", ["p", "three"], ["q"]),
        helper.make_node("ReduceSum", ["q", "axes"], ["s"], keepdims=1),
        helper.make_node("Add", ["s", "one"], ["s1"]),
        helper.make_node("Div", ["q", "s1"], ["y"]),
    ]
    inits = {"target": np.array(target, dtype=np.int64), "halves": np.array([1, 2], dtype=np.int64),
             "W": weights(rng, 5, 12), "bias": weights(rng, 5), "three": np.array(3.0, dtype=np.float32),
             "axes": np.array([1], dtype=np.int64), "one": np.array(1.0, dtype=np.float32)}
    return save_model(tmp_path, nodes, {"x": [3, 4]}, [1, 5], inits, name=name)


@pytest.mark.parametrize("target", [[-1, 3, 4], [1, 3, 4]])
def test_add_batch_axis_imports_a_network_that_adds_its_own_batch_axis(tmp_path, target):
    """pensieve_big_parallel declares its input [12, 8] and reshapes it to [-1, 12, 8] first: at the declared shape
    the import could not take another batch size, so searches bounded one box per pass. With add_batch_axis the
    input is [batch, 3, 4] and every sample matches onnxruntime on its own."""
    path = _batch_adding_model(tmp_path, target)
    assert load_onnx(path).info(load_onnx(path).explained_inputs[0]).shape == (3, 4)
    graph = load_onnx(path, add_batch_axis=True)
    assert tuple(graph.info(graph.explained_inputs[0]).shape) == (1, 3, 4)
    x = np.random.default_rng(1).standard_normal((6, 3, 4)).astype(np.float32)
    expected = np.concatenate([run_onnxruntime(path, [sample]) for sample in x])
    for batched in (graph.for_batch(6), load_onnx(path, batch_size=6, add_batch_axis=True)):
        np.testing.assert_allclose(run_opwise(batched, [x]), expected, atol=ATOL, rtol=RTOL)


def test_add_batch_axis_is_refused_where_the_input_is_read_otherwise(tmp_path):
    path = save_model(tmp_path, [helper.make_node("Flatten", ["x"], ["y"], axis=0)], {"x": [3, 4]}, [1, 12])
    with pytest.raises(ModelLoadError, match="add_batch_axis.*Flatten"):
        load_onnx(path, add_batch_axis=True)
    mixing = _batch_adding_model(tmp_path, [-1, 4, 3], name="other.onnx")  # not [*, 3, 4]: the rows are re-cut
    with pytest.raises(ModelLoadError, match="add_batch_axis"):
        load_onnx(mixing, add_batch_axis=True)
    nodes = [helper.make_node("Reshape", ["x", "target"], ["r"]), helper.make_node("Flatten", ["r"], ["f"], axis=1),
             helper.make_node("Flatten", ["x"], ["g"], axis=0), helper.make_node("Add", ["f", "g"], ["y"])]
    also_read = save_model(tmp_path, nodes, {"x": [3, 4]}, [1, 12], {"target": np.array([-1, 3, 4], dtype=np.int64)},
                           name="also.onnx")  # one reader adds the axis, another reads the input whole
    with pytest.raises(ModelLoadError, match="add_batch_axis.*Flatten"):
        load_onnx(also_read, add_batch_axis=True)
