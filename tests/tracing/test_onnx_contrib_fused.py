"""onnxruntime's contrib fused operators (com.microsoft FusedMatMul, FastGelu, SkipLayerNormalization, ...) and
QLinearSoftmax: hand-built graphs match onnxruntime within 1e-5 (one quantization step for QLinearSoftmax) at batch 1
and 3, a small transformer block of them is bounded soundly and explained, and what is not imported is refused by
name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from opwise.errors import ModelLoadError  # noqa: E402
from opwise.tracing.onnx import load_onnx  # noqa: E402
from tests.bounds.helpers import assert_bounded_and_explained  # noqa: E402
from tests.tracing.test_onnx_import import ops_of, run_onnxruntime, run_opwise  # noqa: E402
from tests.tracing.test_onnx_integer import _inputs, _quantized, _quantizer, _steps  # noqa: E402
from tests.tracing.test_onnx_quantization import _assert_exact, _model as _quantized_model  # noqa: E402

_MS = "com.microsoft"
_RNG = np.random.default_rng(17)


def _weights(*shape) -> np.ndarray:
    return _RNG.standard_normal(shape).astype(np.float32)


def _model(tmp_path, nodes, shape, inits=(), name="model.onnx"):
    """One float input 'x' of `shape` (batch 1), the float output 'y', opsets 17 and com.microsoft 1."""
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(_MS, 1)])
    model.ir_version = 8
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _samples(shape) -> np.ndarray:
    return (np.random.default_rng(3).standard_normal([3] + list(shape[1:])) * 2).astype(np.float32)


def _error(path, x: np.ndarray, expected: np.ndarray | None = None) -> float:
    """max |opwise − reference| over x, imported at batch 1 (one sample at a time) and at batch 3; the reference is
    onnxruntime run one sample at a time unless `expected` is given."""
    if expected is None:
        expected = np.concatenate([run_onnxruntime(path, [x[i : i + 1]]) for i in range(len(x))])
    worst = 0.0
    for batch in (1, len(x)):
        graph = load_onnx(path, batch_size=batch)
        got = np.concatenate([run_opwise(graph, [x[i : i + batch]]) for i in range(0, len(x), batch)])
        assert got.shape == expected.shape and got.dtype == expected.dtype
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


# ----------------------------------------------------------------- FusedMatMul
FUSED_MATMUL_CASES = {  # name: (input shape, {constant: shape}, inputs, attributes, extra nodes)
    "constant B alpha": ([1, 3, 4], {"w": (4, 5)}, ["x", "w"], {"alpha": 0.5}),
    "constant B transB": ([1, 3, 4], {"w": (5, 4)}, ["x", "w"], {"transB": 1}),
    "transA of a 3-D input": ([1, 4, 3], {"w": (4, 5)}, ["x", "w"], {"transA": 1, "alpha": 1.5}),
    "constant B transBatchB": ([1, 2, 3, 4], {"w": (4, 1, 2, 5)}, ["x", "w"], {"transBatchB": 1}),
    "constant B transBatchB transB": ([1, 2, 3, 4], {"w": (5, 1, 2, 4)}, ["x", "w"], {"transBatchB": 1, "transB": 1}),
    "constant A alpha": ([1, 2, 3, 4], {"w": (5, 3)}, ["w", "x"], {"alpha": 2.0}),
    "input-dependent B transB alpha": ([1, 2, 3, 4], {"c": (1, 2, 3, 4)}, ["x", "k"], {"transB": 1, "alpha": 0.125}),
}


def _fused_matmul_model(tmp_path, shape, constants, inputs, attributes):
    inits = {name: _weights(*size) for name, size in constants.items()}
    nodes = [helper.make_node("Mul", ["x", "c"], ["k"])] if "k" in inputs else []
    nodes.append(helper.make_node("FusedMatMul", inputs, ["y"], name="fm", domain=_MS, **attributes))
    return _model(tmp_path, nodes, shape, inits)


@pytest.mark.parametrize("case", sorted(FUSED_MATMUL_CASES))
def test_fused_matmul_matches_onnxruntime(tmp_path, case):
    shape, constants, inputs, attributes = FUSED_MATMUL_CASES[case]
    path = _fused_matmul_model(tmp_path, shape, constants, inputs, attributes)
    assert _error(path, _samples(shape)) <= 1e-5
    if case in ("constant B alpha", "constant B transB"):  # alpha and the transpose folded into the weight
        assert ops_of(load_onnx(path)) == ["aten.linear.default"]


REFUSED_FUSED_MATMUL = {  # name: (input shape, {constant: shape}, inputs, attributes, message)
    "transBatchA": ([1, 2, 3, 4], {"w": (2, 1, 4, 5)}, ["x", "w"], {"transBatchA": 1},
                    r"attributes transBatchA=1, transA=0 move the first axis of the input-dependent A \(4-D\)"),
    "transA of a 2-D input": ([1, 4], {"w": (1, 5)}, ["x", "w"], {"transA": 1},
                              r"attributes transBatchA=0, transA=1 move the first axis of the input-dependent A "
                              r"\(2-D\)"),
    "transBatchB of an input": ([1, 2, 3, 4], {"c": (1, 2, 3, 4)}, ["x", "k"], {"transBatchB": 1, "transB": 1},
                                r"attributes transBatchB=1, transB=1 move the first axis of the input-dependent B"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_FUSED_MATMUL))
def test_fused_matmul_moving_the_batch_axis_of_an_input_is_refused(tmp_path, case):
    shape, constants, inputs, attributes, message = REFUSED_FUSED_MATMUL[case]
    path = _fused_matmul_model(tmp_path, shape, constants, inputs, attributes)
    with pytest.raises(ModelLoadError, match=r"'fm' \(com.microsoft.FusedMatMul, opset 1\): " + message
                       + r".*opwise imports FusedMatMul whose transposes of an input-dependent operand keep its "
                         r"first axis"):
        load_onnx(path)


# ----------------------------------------------------------------- Gelu, BiasGelu, FastGelu, QuickGelu
GELU_CASES = {  # name: (op type, inputs, attributes, expected aten op)
    "Gelu": ("Gelu", ["x"], {}, "aten.gelu.default"),
    "BiasGelu constant bias": ("BiasGelu", ["x", "b"], {}, "aten.gelu.default"),
    "FastGelu": ("FastGelu", ["x"], {}, "aten.gelu.default"),
    "FastGelu bias": ("FastGelu", ["x", "b"], {}, "aten.gelu.default"),
    "QuickGelu": ("QuickGelu", ["x"], {}, "aten.silu.default"),
    "QuickGelu alpha 1": ("QuickGelu", ["x"], {"alpha": 1.0}, "aten.silu.default"),
    "QuickGelu alpha -0.75": ("QuickGelu", ["x"], {"alpha": -0.75}, "aten.silu.default"),
    "QuickGelu alpha 0": ("QuickGelu", ["x"], {"alpha": 0.0}, "aten.mul.Tensor"),
}


@pytest.mark.parametrize("case", sorted(GELU_CASES))
def test_gelu_forms_match_onnxruntime(tmp_path, case):
    op, inputs, attributes, aten_op = GELU_CASES[case]
    nodes = [helper.make_node(op, inputs, ["y"], domain=_MS, **attributes)]
    path = _model(tmp_path, nodes, [1, 3, 8], {"b": _weights(8)})
    assert _error(path, _samples([1, 3, 8])) <= 1e-5
    assert aten_op in ops_of(load_onnx(path))
    if aten_op == "aten.gelu.default":
        gelu = next(n for n in load_onnx(path).call_nodes() if n.target is torch.ops.aten.gelu.default)
        assert gelu.kwargs["approximate"] == ("tanh" if op == "FastGelu" else "none")


# ----------------------------------------------------------------- SkipLayerNormalization and the RMS forms
NORM_CASES = {  # name: (op type, inputs, outputs, attributes)
    "skip constant, beta, bias": ("SkipLayerNormalization", ["x", "s", "g", "beta", "b"], ["y"], {}),
    "skip input-dependent, no beta": ("SkipLayerNormalization", ["x", "k", "g", "", "b"], ["y"], {"epsilon": 1e-5}),
    "skip input-dependent, only gamma": ("SkipLayerNormalization", ["x", "k", "g"], ["y"], {}),
    "sum output": ("SkipLayerNormalization", ["x", "k", "g", "beta", "b"], ["n", "", "", "y"], {}),
    "simplified": ("SkipSimplifiedLayerNormalization", ["x", "k", "g", "b"], ["y"], {"epsilon": 1e-6}),
    "simplified sum output": ("SkipSimplifiedLayerNormalization", ["x", "s", "g"], ["n", "", "", "y"], {}),
    "simplified output and unread statistics": ("SkipSimplifiedLayerNormalization", ["x", "s", "g"],
                                                ["y", "mean", "inv_std", "sum"], {}),
}


def _norm_inits(hidden=8) -> dict:
    return {"s": _weights(1, 3, hidden), "g": _weights(hidden), "beta": _weights(hidden), "b": _weights(hidden),
            "c": _weights(1, 3, hidden)}


@pytest.mark.parametrize("case", sorted(NORM_CASES))
def test_skip_layer_norms_match_onnxruntime(tmp_path, case):
    op, inputs, outputs, attributes = NORM_CASES[case]
    nodes = [helper.make_node("Mul", ["x", "c"], ["k"]),
             helper.make_node(op, inputs, outputs, name="norm", domain=_MS, **attributes)]
    path = _model(tmp_path, nodes, [1, 3, 8], _norm_inits())
    assert _error(path, _samples([1, 3, 8])) <= 1e-5
    ops = ops_of(load_onnx(path))
    if "y" == outputs[0]:
        assert ("aten.rms_norm.default" if "Simplified" in op else "aten.layer_norm.default") in ops
    else:  # the sum is the output: no normalization left in the graph
        assert not {"aten.rms_norm.default", "aten.layer_norm.default"} & set(ops)


def test_skip_layer_norm_output_and_sum_both_read(tmp_path):
    """y = normalized · (input + skip + bias): both outputs of one node feed a later node."""
    nodes = [helper.make_node("Mul", ["x", "c"], ["k"]),
             helper.make_node("SkipLayerNormalization", ["x", "k", "g", "beta", "b"], ["n", "", "", "sum"],
                              domain=_MS),
             helper.make_node("Mul", ["n", "sum"], ["y"])]
    path = _model(tmp_path, nodes, [1, 3, 8], _norm_inits())
    x = _samples([1, 3, 8])
    expected = np.concatenate([run_onnxruntime(path, [x[i : i + 1]]) for i in range(len(x))])
    assert _error(path, x, expected) <= 1e-5 * np.abs(expected).max()  # products of magnitudes up to ~10


@pytest.mark.parametrize("axis,scale_shape", [(-1, (8,)), (1, (3, 8))])
def test_simplified_layer_norm_in_the_default_domain_matches_onnxruntime(tmp_path, axis, scale_shape):
    """onnxruntime registers SimplifiedLayerNormalization in the default domain (not com.microsoft)."""
    nodes = [helper.make_node("SimplifiedLayerNormalization", ["x", "g"], ["y"], axis=axis)]
    path = _model(tmp_path, nodes, [1, 3, 8], {"g": _weights(*scale_shape)})
    assert _error(path, _samples([1, 3, 8])) <= 1e-5
    assert ops_of(load_onnx(path)) == ["aten.rms_norm.default"]


@pytest.mark.parametrize("op,inputs,outputs,reader,index,statistic", [
    ("SkipLayerNormalization", ["x", "s", "g"], ["n", "mean"], "mean", 1, "mean"),
    ("SkipSimplifiedLayerNormalization", ["x", "s", "g"], ["n", "", "inv"], "inv", 2, "inv_std_var"),
    ("SimplifiedLayerNormalization", ["x", "g"], ["n", "inv"], "inv", 1, "inv_std_var"),
])
def test_reading_a_normalization_statistic_is_refused(tmp_path, op, inputs, outputs, reader, index, statistic):
    nodes = [helper.make_node(op, inputs, outputs, name="norm", domain="" if op.startswith("Simplified") else _MS),
             helper.make_node("Add", ["n", reader], ["y"])]
    path = _model(tmp_path, nodes, [1, 3, 8], _norm_inits())
    domain, opset = ("", 17) if op.startswith("Simplified") else ("com.microsoft.", 1)  # each domain's own opset
    message = (rf"'norm' \({domain}{op}, opset {opset}\): its output {index} \({statistic}, a statistic of the "
               r"normalization\) is read by a later node .*compute the statistic with ReduceMean")
    with pytest.raises(ModelLoadError, match=message):
        load_onnx(path)


# ----------------------------------------------------------------- BiasAdd
def test_bias_add_matches_numpy(tmp_path):
    """onnxruntime runs BiasAdd on CUDA only, so the reference is its definition x + bias + skip."""
    inits = {"b": _weights(8), "c": _weights(1, 3, 8)}
    nodes = [helper.make_node("Mul", ["x", "c"], ["k"]),
             helper.make_node("BiasAdd", ["x", "b", "k"], ["y"], domain=_MS)]
    path = _model(tmp_path, nodes, [1, 3, 8], inits)
    x = _samples([1, 3, 8])
    assert _error(path, x, expected=x + inits["b"] + x * inits["c"]) <= 1e-6


# ----------------------------------------------------------------- QLinearSoftmax
@pytest.mark.parametrize("act,axis,opset", [(np.uint8, -1, 13), (np.int8, -1, 13), (np.uint8, 1, 12),
                                            (np.int8, 2, 13)], ids=["uint8", "int8", "uint8 opset 12 axis 1",
                                                                    "int8 axis 2"])
def test_qlinear_softmax_matches_onnxruntime_within_one_step(tmp_path, act, axis, opset):
    """onnxruntime's quantizer writes QLinearSoftmax with the output scale 1/256 (zero point 0, or −128 for int8)."""
    inits, output_type = _quantizer(act)
    inits.update(ys=np.float32(1 / 256), yz=np.asarray(0 if act == np.uint8 else -128, act))
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["q"]),
             helper.make_node("QLinearSoftmax", ["q", "xs", "xz", "ys", "yz"], ["y"], domain=_MS, axis=axis,
                              opset=opset)]
    path = _quantized_model(tmp_path, nodes, [1, 4, 3, 5], inits, output_type, domains=(_MS,))
    assert _steps(path, _inputs([1, 4, 3, 5])) <= 1
    ops = ops_of(load_onnx(path))
    assert "aten._softmax.default" in ops and ops.count("aten._to_copy.default") == 1  # the input stays float32


# ----------------------------------------------------------------- a transformer block, bounded and explained
def test_fused_block_matches_onnxruntime_is_bounded_soundly_and_explained(tmp_path):
    """FusedMatMul (alpha) → FastGelu (bias) → FusedMatMul (transB) → SkipLayerNormalization with the input as
    skip: the feed-forward half of a BERT layer as onnxruntime's optimizer writes it."""
    inits = {"w1": _weights(6, 8) * 0.5, "b1": _weights(8) * 0.1, "w2": _weights(6, 8) * 0.5, "b2": _weights(6) * 0.1,
             "g": 1 + _weights(6) * 0.1, "beta": _weights(6) * 0.1}
    nodes = [helper.make_node("FusedMatMul", ["x", "w1"], ["h"], domain=_MS, alpha=0.5),
             helper.make_node("FastGelu", ["h", "b1"], ["a"], domain=_MS),
             helper.make_node("FusedMatMul", ["a", "w2"], ["o"], domain=_MS, transB=1),
             helper.make_node("SkipLayerNormalization", ["o", "x", "g", "beta", "b2"], ["y"], domain=_MS,
                              epsilon=1e-5)]
    path = _model(tmp_path, nodes, [1, 3, 6], inits)
    assert _error(path, _samples([1, 3, 6])) <= 1e-5
    graph = load_onnx(path)
    assert {"aten.linear.default", "aten.gelu.default", "aten.layer_norm.default"} <= set(ops_of(graph))
    x = torch.from_numpy(_samples([1, 3, 6])[:1])
    assert_bounded_and_explained(graph, x, 0.05)


# ----------------------------------------------------------------- files written by onnxruntime itself
class _FeedForward(torch.nn.Module):
    """Two BERT feed-forward halves (exact and tanh GELU), each added to its input and layer-normalized: the
    transformer optimizer fuses them into BiasGelu, FastGelu and SkipLayerNormalization."""

    def __init__(self):
        super().__init__()
        self.norm = torch.nn.LayerNorm(8)
        self.up, self.down, self.first = torch.nn.Linear(8, 16), torch.nn.Linear(16, 8), torch.nn.LayerNorm(8)
        self.up2, self.down2, self.second = torch.nn.Linear(8, 16), torch.nn.Linear(16, 8), torch.nn.LayerNorm(8)

    def forward(self, x):
        x = self.norm(x)
        x = self.first(x + self.down(torch.nn.functional.gelu(self.up(x))))
        return self.second(x + self.down2(torch.nn.functional.gelu(self.up2(x), approximate="tanh")))


class _Attention(torch.nn.Module):
    """Scaled scores q·kᵀ·0.35 (onnxruntime's graph optimizer fuses the transpose and the scale into FusedMatMul)
    and an output projection under x·σ(1.702·x) (fused into QuickGelu)."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.o = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)

    def forward(self, x):
        scores = torch.matmul(self.q(x), self.k(x).transpose(-1, -2)) * 0.35
        h = self.o(torch.matmul(torch.softmax(scores, -1), x))
        return h * torch.sigmoid(1.702 * h)


def _exported(tmp_path, module, shape):
    torch.manual_seed(0)
    path = tmp_path / "float.onnx"
    torch.onnx.export(module().eval(), torch.randn(shape), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}})
    return path


def _by_transformer_optimizer(tmp_path, module, shape):
    optimizer = pytest.importorskip("onnxruntime.transformers.optimizer")
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.enable_attention = False
    path = tmp_path / "optimized.onnx"
    optimizer.optimize_model(str(_exported(tmp_path, module, shape)), model_type="bert", num_heads=0, hidden_size=0,
                             optimization_options=options, opt_level=0).save_model_to_file(str(path))
    return path


def _by_graph_optimizer(tmp_path, module, shape):
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    onnxruntime.InferenceSession(str(_exported(tmp_path, module, shape)), options, providers=["CPUExecutionProvider"])
    return tmp_path / "optimized.onnx"


OPTIMIZED_MODELS = {
    "transformer optimizer": (_by_transformer_optimizer, _FeedForward, {"BiasGelu", "FastGelu",
                                                                        "SkipLayerNormalization"}),
    "graph optimizer": (_by_graph_optimizer, _Attention, {"FusedMatMul", "QuickGelu"}),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZED_MODELS))
def test_models_optimized_by_onnxruntime_match_it_are_bounded_and_explained(tmp_path, name):
    optimize, module, contrib = OPTIMIZED_MODELS[name]
    path = optimize(tmp_path, module, (1, 4, 8))
    assert {node.op_type for node in onnx.load(str(path)).graph.node} >= contrib
    assert _error(path, _samples([1, 4, 8])) <= 1e-5
    graph = load_onnx(path)
    x = torch.from_numpy(_samples([1, 4, 8])[:1])
    assert_bounded_and_explained(graph, x, 0.02)


class _SoftmaxMlp(torch.nn.Module):
    """Linear → Softmax → Linear: onnxruntime's QOperator quantizer writes QGemm, QLinearSoftmax, QGemm."""

    def __init__(self):
        super().__init__()
        self.first, self.second = torch.nn.Linear(6, 8), torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.second(torch.softmax(self.first(x) * 3, -1))


def test_softmax_quantized_by_onnxruntime_matches_it_exactly_is_bounded_and_explained(tmp_path):
    path = _quantized(tmp_path, _SoftmaxMlp, (1, 6), per_channel=True)
    assert "QLinearSoftmax" in {node.op_type for node in onnx.load(str(path)).graph.node}
    x = np.random.default_rng(11).standard_normal((3, 6)).astype(np.float32) * 2
    _assert_exact(path, x)
    graph = load_onnx(path)
    x = torch.from_numpy(x[:1])
    assert_bounded_and_explained(graph, x, 0.05)
