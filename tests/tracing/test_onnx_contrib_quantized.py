"""onnxruntime's contrib quantized operators (com.microsoft QGemm, QLinearAdd, ...): hand-built graphs match
onnxruntime within one quantization step, onnxruntime's own QOperator models exactly; they are bounded soundly and
explained; what is not imported is refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from opwise.errors import ModelLoadError  # noqa: E402
from opwise.tracing.onnx import load_onnx  # noqa: E402
from tests.bounds.helpers import assert_bounded_and_explained  # noqa: E402
from tests.tracing.test_onnx_import import ops_of, run_onnxruntime, run_opwise  # noqa: E402
from tests.tracing.test_onnx_integer import _inputs, _quantized, _quantizer, _steps, _weights  # noqa: E402
from tests.tracing.test_onnx_quantization import _assert_exact, _model  # noqa: E402

_MS = "com.microsoft"


def _contrib_model(tmp_path, nodes, shape, inits, output_type, name="model.onnx"):
    return _model(tmp_path, nodes, list(shape), inits, output_type, domains=(_MS,), name=name)


# ----------------------------------------------------------------- QGemm
QGEMM_CASES = {  # name: (activation type, weight type, per column, transB, alpha, bias, quantized output)
    "uint8 per tensor bias": (np.uint8, np.int8, False, 0, 1.0, True, True),
    "int8 per column transB bias": (np.int8, np.int8, True, 1, 1.0, True, True),
    "uint8 weights alpha no bias": (np.uint8, np.uint8, False, 0, 0.5, False, True),
    "float output transB alpha bias": (np.uint8, np.int8, True, 1, 0.75, True, False),
}


def _qgemm_model(tmp_path, case, transA=0, bias=None):
    act, weight_type, per_column, trans_b, alpha, with_bias, quantized = QGEMM_CASES[case]
    rng = np.random.default_rng(8)
    inits, output_type = _quantizer(act)
    inits.update(_weights(rng, weight_type, (5, 6) if trans_b else (6, 5), 5 if per_column else None))
    names = ["q", "xs", "xz", "w", "ws", "wz"]
    if with_bias or bias is not None:
        inits["b"] = rng.integers(-3000, 3000, 5).astype(np.int32) if bias is None else bias
        names.append("b")
    if quantized:
        inits.update(ys=np.float32(0.07), yz=np.asarray(100 if act == np.uint8 else -3, act))
        names += ([] if len(names) == 7 else [""]) + ["ys", "yz"]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["q"]),
             helper.make_node("QGemm", names, ["y"], name="qgemm", domain=_MS, alpha=alpha, transA=transA,
                              transB=trans_b)]
    return _contrib_model(tmp_path, nodes, [1, 6], inits, output_type if quantized else TensorProto.FLOAT)


@pytest.mark.parametrize("case", sorted(QGEMM_CASES))
def test_qgemm_matches_onnxruntime(tmp_path, case):
    path = _qgemm_model(tmp_path, case)
    x = _inputs([1, 6])
    if QGEMM_CASES[case][-1]:
        assert _steps(path, x) <= 1
    else:
        expected = np.concatenate([run_onnxruntime(path, [x[i : i + 1]]) for i in range(len(x))])
        for batch in (1, 3):
            got = run_opwise(load_onnx(path, batch_size=batch), [x[:batch]])
            np.testing.assert_allclose(got, expected[:batch], rtol=1e-5, atol=1e-5)
    assert "aten.linear.default" in ops_of(load_onnx(path))  # the weight and bias folded into constants


# ----------------------------------------------------------------- QLinearAdd, QLinearMul
@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
@pytest.mark.parametrize("act,constant", [(np.uint8, False), (np.int8, True)], ids=["uint8", "int8 constant"])
def test_qlinear_binary_matches_onnxruntime(tmp_path, op, act, constant):
    """Two quantized activations (one quantizer with another scale), or one and a broadcast constant."""
    inits, output_type = _quantizer(act)
    inits.update(bs=np.float32(0.03), bz=np.asarray(3, act), ys=np.float32(0.11 if op == "QLinearAdd" else 0.6),
                 yz=np.asarray(90 if act == np.uint8 else 5, act))
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["q"])]
    if constant:
        inits["r"] = np.random.default_rng(9).integers(-128, 128, (1, 4, 1, 1)).astype(act)
    else:
        nodes.append(helper.make_node("QuantizeLinear", ["x", "bs", "bz"], ["r"]))
    nodes.append(helper.make_node(op, ["q", "xs", "xz", "r", "bs", "bz", "ys", "yz"], ["y"], domain=_MS))
    path = _contrib_model(tmp_path, nodes, [1, 4, 3, 5], inits, output_type)
    assert _steps(path, _inputs([1, 4, 3, 5])) <= 1
    assert ops_of(load_onnx(path)).count("aten._to_copy.default") == 1  # only the output's


# ----------------------------------------------------------------- pools, Concat, activations
UNARY_CASES = {  # name: (op type, attributes)
    "global average pool": ("QLinearGlobalAveragePool", {"channels_last": 0}),
    "average pool pads": ("QLinearAveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}),
    "average pool count pads": ("QLinearAveragePool", {"kernel_shape": [2, 2], "pads": [1, 1, 1, 1],
                                                       "count_include_pad": 1}),
    "sigmoid": ("QLinearSigmoid", {}),
    "leaky relu": ("QLinearLeakyRelu", {"alpha": 0.1}),
}


@pytest.mark.parametrize("case", sorted(UNARY_CASES))
@pytest.mark.parametrize("act", [np.uint8, np.int8], ids=["uint8", "int8"])
def test_qlinear_unary_matches_onnxruntime(tmp_path, case, act):
    op, attributes = UNARY_CASES[case]
    inits, output_type = _quantizer(act)
    inits.update(ys=np.float32(0.004 if op == "QLinearSigmoid" else 0.03),
                 yz=np.asarray(0 if act == np.uint8 else -100, act))
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["q"]),
             helper.make_node(op, ["q", "xs", "xz", "ys", "yz"], ["y"], domain=_MS, **attributes)]
    path = _contrib_model(tmp_path, nodes, [1, 3, 6, 7], inits, output_type)
    assert _steps(path, _inputs([1, 3, 6, 7])) <= 1


def test_qlinear_concat_matches_onnxruntime(tmp_path):
    """Two inputs, one with the output's scale, one with another, concatenated along the channels."""
    inits, output_type = _quantizer(np.uint8)
    inits.update(bs=np.float32(0.02), bz=np.uint8(128), ys=np.float32(0.05), yz=np.uint8(20))
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["q"]),
             helper.make_node("QuantizeLinear", ["x", "bs", "bz"], ["r"]),
             helper.make_node("QLinearConcat", ["ys", "yz", "q", "xs", "xz", "r", "bs", "bz"], ["y"],
                              domain=_MS, axis=1)]
    path = _contrib_model(tmp_path, nodes, [1, 4, 3, 5], inits, output_type)
    assert _steps(path, _inputs([1, 4, 3, 5])) <= 1


# ----------------------------------------------------------------- onnxruntime's quantizer
class _LinearMlp(torch.nn.Module):
    """Linear layers: QOperator writes QGemm with int32 biases and per-column weight scales."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8),
                                          torch.nn.ReLU(), torch.nn.Linear(8, 3))

    def forward(self, x):
        return self.layers(x)


class _ResidualNet(torch.nn.Module):
    """Conv → Relu → Conv, added to its input (QLinearAdd), global average pool (QLinearGlobalAveragePool),
    Linear (QGemm)."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(2, 4, 3, padding=1)
        self.first, self.second = torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.second(torch.relu(self.first(x))))
        return self.head(torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


QUANTIZED_MODELS = {"mlp": (_LinearMlp, (1, 6), {"QGemm"}),
                    "residual": (_ResidualNet, (1, 2, 6, 6), {"QLinearAdd", "QLinearGlobalAveragePool", "QGemm"})}


@pytest.mark.parametrize("name", sorted(QUANTIZED_MODELS))
def test_models_quantized_by_onnxruntime_match_it_are_bounded_and_explained(tmp_path, name):
    module, shape, contrib = QUANTIZED_MODELS[name]
    path = _quantized(tmp_path, module, shape, per_channel=True)
    assert {node.op_type for node in onnx.load(str(path)).graph.node} >= contrib
    x = np.random.default_rng(11).standard_normal((3,) + shape[1:]).astype(np.float32) * 2
    _assert_exact(path, x)
    graph = load_onnx(path)
    x = torch.from_numpy(x[:1])
    assert_bounded_and_explained(graph, x, 0.05)


# ----------------------------------------------------------------- refusals
def test_qgemm_transposing_its_input_or_with_a_bias_per_row_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match=r"'qgemm' \(com.microsoft.QGemm, opset 1\): attribute transA=1 "
                                             r"transposes the input-dependent A"):
        load_onnx(_qgemm_model(tmp_path, "uint8 per tensor bias", transA=1))
    with pytest.raises(ModelLoadError, match=r"'qgemm' .*its bias C is int32 of shape \[1, 2, 5\]; opwise imports an "
                                             r"int32 bias per output column \(5\)"):
        load_onnx(_qgemm_model(tmp_path, "uint8 per tensor bias", bias=np.ones((1, 2, 5), np.int32)))
    with pytest.raises(ModelLoadError, match=r"'qgemm' .*its bias C is float32 of shape \[5\]"):
        load_onnx(_qgemm_model(tmp_path, "uint8 per tensor bias", bias=np.ones(5, np.float32)))


def test_channels_last_pools_and_input_dependent_scales_are_refused(tmp_path):
    inits = _quantizer(np.uint8)[0]
    inits.update(ys=np.float32(0.1), yz=np.uint8(0))
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["q"]),
             helper.make_node("QLinearGlobalAveragePool", ["q", "xs", "xz", "ys", "yz"], ["y"], name="nhwc",
                              domain=_MS, channels_last=1)]
    with pytest.raises(ModelLoadError, match=r"'nhwc' \(com.microsoft.QLinearGlobalAveragePool, opset 1\): "
                                             r"attribute channels_last=1; opwise imports the NCHW layout"):
        load_onnx(_contrib_model(tmp_path, nodes, [1, 2, 3, 3], inits, TensorProto.UINT8))
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["q"]),
             helper.make_node("ReduceMax", ["x"], ["s"], keepdims=0),
             helper.make_node("QLinearAdd", ["q", "s", "xz", "q", "xs", "xz", "ys", "yz"], ["y"], name="add",
                              domain=_MS)]
    with pytest.raises(ModelLoadError, match=r"'add' \(com.microsoft.QLinearAdd, opset 1\): its input A scale "
                                             r"depends on the model input"):
        load_onnx(_contrib_model(tmp_path, nodes, [1, 4], inits, TensorProto.UINT8))
