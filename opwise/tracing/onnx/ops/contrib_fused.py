"""onnxruntime's contrib (com.microsoft) fused operators, which its transformer optimizer writes, and QLinearSoftmax,
which its QOperator quantizer writes. Each becomes aten ops the bound engine and relevance rules already know:

- FusedMatMul: alpha · op(A) @ op(B) as MatMul imports it (linear.py), alpha folded into a constant operand. transA
  and transB swap the last two axes; transBatchA and transBatchB move the first axis to the second last (an operand
  [d0, d1, …, dk, n] is read as [d1, …, dk, d0, n], then transposed where transA / transB is set too);
- Gelu: `aten.gelu` (exact, erf); BiasGelu: `aten.gelu` of x + bias; FastGelu: `aten.gelu(approximate="tanh")` of x
  (+ bias where given); QuickGelu: x · σ(alpha · x) (alpha 1.702 by default) written silu(alpha · x) / alpha, so
  it is bounded by the silu relaxation;
- SkipLayerNormalization: `aten.layer_norm` (conv.py's LayerNormalization) over the last axis of
  input + skip (+ bias), with gamma and beta; SkipSimplifiedLayerNormalization and SimplifiedLayerNormalization
  (RMSNorm): `aten.rms_norm` of the same sum, or of x from `axis` on. onnxruntime registers
  SimplifiedLayerNormalization in the default ONNX domain (it refuses a com.microsoft one), and so does opwise. The sum input_skip_bias_sum (output 3) is imported; epsilon defaults to onnxruntime's (1e-12 for the
  skip forms, 1e-5 for SimplifiedLayerNormalization);
- BiasAdd: x + bias + skip (onnxruntime runs it on CUDA only; checked against numpy);
- QLinearSoftmax: the dequantized input, `aten._softmax` along `axis` (flattened to 2-D at `axis` where the
  attribute `opset`, the original Softmax's, is below 13), quantized as contrib_quantized.py's QLinear ops.

Refused with ModelLoadError naming the node: FusedMatMul transposes that move the first (batch) axis of an
input-dependent operand (transBatchA / transBatchB on it, or transA / transB of a 2-D one); the mean and inv_std_var
outputs of the normalizations where a node or the graph output reads them; what integer.py refuses for
QLinearSoftmax's quantized values. BiasSoftmax (CUDA only in onnxruntime, with two broadcast layouts) is not imported.

Measured against onnxruntime 1.32 (CPU, x86-64) on the cases of tests/tracing/test_onnx_contrib_fused.py (inputs of
standard deviation 2, imported at batch 1 and 3): the largest absolute difference is 1.9e-6 for FusedMatMul (outputs
up to about 10; onnxruntime sums in another order), 2.6e-7 for Gelu, BiasGelu and FastGelu, 1.4e-6 for QuickGelu
(outputs up to about 6), 4.8e-7 for SkipLayerNormalization and SkipSimplifiedLayerNormalization, 9.5e-7 for
SimplifiedLayerNormalization; the input_skip_bias_sum output is bit-exact. QLinearSoftmax (uint8 and int8, output
scale 1/256, axis −1, 1 and 2, opset 12 and 13) differs on none of its 1,440 quantized outputs. The tests check
1e-5 (relative to the largest output for a product of two outputs) and one quantization step; BiasAdd is checked
against numpy within 1e-6. Files onnxruntime writes itself agree too: a BERT feed-forward block through its
transformer optimizer (BiasGelu, FastGelu, SkipLayerNormalization) and a scaled-score attention through its graph
optimizer (FusedMatMul with an input-dependent, transposed B; QuickGelu) within 1e-5, and a Linear → Softmax →
Linear net through its QOperator quantizer (QGemm, QLinearSoftmax) bit for bit; each is bounded soundly (IBP and
CROWN contain 2,000 sampled outputs) and explained.

QuickGelu with alpha 1 is silu: x · σ(x) at x = 1 is 0.7311:

>>> import tempfile, numpy, onnx, torch
>>> from onnx import TensorProto, helper
>>> from opwise.tracing.onnx import load_onnx
>>> node = helper.make_node("QuickGelu", ["x"], ["y"], domain="com.microsoft", alpha=1.0)
>>> graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
...                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
>>> opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
>>> path = tempfile.mkdtemp() + "/quick_gelu.onnx"
>>> onnx.save(helper.make_model(graph, opset_imports=opsets), path)
>>> load_onnx(path)(torch.tensor([[1.0, 0.0]]))
tensor([[0.7311, 0.0000]])
"""

from __future__ import annotations

import torch
from torch import fx

from opwise.tracing.onnx.ops.conv import layer_norm
from opwise.tracing.onnx.ops.elementwise import binary, scaled_silu, softmax
from opwise.tracing.onnx.ops.integer import dequantized_input, quantized_output
from opwise.tracing.onnx.ops.linear import matmul
from opwise.tracing.onnx.ops.quantization import refusal
from opwise.tracing.onnx.ops.recurrent import output_used
from opwise.tracing.onnx.registry import converter

aten = torch.ops.aten


# ----------------------------------------------------------------- FusedMatMul
def _transposed(builder, node, value, side: str):
    """`value` (operand A or B) as FusedMatMul reads it after its transBatch and trans attributes."""
    batch, last = node.attr(f"transBatch{side}", 0), node.attr(f"trans{side}", 0)
    rank = len(builder.shape(value))
    if rank < 2 or not (batch or last):
        return value
    order = list(range(1, rank - 1)) + [0, rank - 1] if batch else list(range(rank))
    if last:
        order[-2], order[-1] = order[-1], order[-2]
    if isinstance(value, fx.Node) and order[0] != 0:
        raise refusal(node, f"attributes transBatch{side}={batch}, trans{side}={last} move the first axis of the "
                            f"input-dependent {side} ({rank}-D), the batch axis; opwise imports FusedMatMul whose "
                            "transposes of an input-dependent operand keep its first axis (transBatch 0, and trans 0 "
                            "on a 2-D one): put such transposes on the constant operand, or export without the fusion")
    return builder.call(aten.permute.default, value, order)


@converter("com.microsoft.FusedMatMul", since=1)
def _fused_matmul(builder, node, a, b):
    a, b = _transposed(builder, node, a, "A"), _transposed(builder, node, b, "B")
    alpha = float(node.attr("alpha", 1.0))
    if alpha != 1.0 and isinstance(b, torch.Tensor):  # into the constant, so the product stays one linear map
        b = builder.inherit_source(builder.call(aten.mul.Tensor, b, alpha), b)
        alpha = 1.0
    elif alpha != 1.0 and isinstance(a, torch.Tensor):
        a = builder.inherit_source(builder.call(aten.mul.Tensor, a, alpha), a)
        alpha = 1.0
    y = matmul(builder, a, b)
    return y if alpha == 1.0 else builder.call(aten.mul.Tensor, y, alpha)


# ----------------------------------------------------------------- Gelu, FastGelu, BiasGelu, QuickGelu
def _add(builder, node, x, *terms):
    """x + each term that is given (None: an omitted optional input), constants broadcast."""
    for term in terms:
        if term is not None:
            x = binary(builder, node, x, term, aten.add.Tensor, commutative=True)
    return x


@converter("com.microsoft.Gelu", since=1)
def _gelu(builder, node, x):
    return builder.call(aten.gelu.default, x, approximate="none")


@converter("com.microsoft.BiasGelu", since=1)
def _bias_gelu(builder, node, x, bias):
    return builder.call(aten.gelu.default, _add(builder, node, x, bias), approximate="none")


@converter("com.microsoft.FastGelu", since=1)
def _fast_gelu(builder, node, x, bias=None):
    return builder.call(aten.gelu.default, _add(builder, node, x, bias), approximate="tanh")


@converter("com.microsoft.QuickGelu", since=1)
def _quick_gelu(builder, node, x):
    """x · σ(alpha·x), alpha 1.702 by default."""
    return scaled_silu(builder, x, float(node.attr("alpha", 1.702)))


# ----------------------------------------------------------------- SkipLayerNormalization and the RMS forms
def _refuse_statistics(builder, node, outputs: dict[int, str], imported: str) -> None:
    for index, name in outputs.items():
        if output_used(builder, node, index):
            raise refusal(node, f"its output {index} ({name}, a statistic of the normalization) is read by a later "
                                f"node or the graph output; opwise imports {imported} only: compute the statistic with "
                                "ReduceMean ops instead")


def _skip_norm(builder, node, x, skip, gamma, beta, bias, rms: bool):
    _refuse_statistics(builder, node, {1: "mean", 2: "inv_std_var"},
                       "the normalized output (0) and the sum input_skip_bias_sum (3)")
    total = _add(builder, node, x, skip, bias)
    if not output_used(builder, node, 0):  # only the sum is read: no normalization left in the graph to bound
        return None, None, None, total
    y = layer_norm(builder, total, gamma, beta, -1, node.attr("epsilon", 1e-12), node.op_type, rms=rms)
    return y, None, None, total


@converter("com.microsoft.SkipLayerNormalization", since=1)
def _skip_layer_norm(builder, node, x, skip, gamma, beta=None, bias=None):
    return _skip_norm(builder, node, x, skip, gamma, beta, bias, rms=False)


@converter("com.microsoft.SkipSimplifiedLayerNormalization", since=1)
def _skip_simplified_layer_norm(builder, node, x, skip, gamma, bias=None):
    return _skip_norm(builder, node, x, skip, gamma, None, bias, rms=True)


@converter("SimplifiedLayerNormalization", since=1)
def _simplified_layer_norm(builder, node, x, scale):
    _refuse_statistics(builder, node, {1: "inv_std_var"}, "the normalized output (0)")
    return layer_norm(builder, x, scale, None, node.attr("axis", -1), node.attr("epsilon", 1e-5), node.op_type,
                      rms=True)


# ----------------------------------------------------------------- BiasAdd, QLinearSoftmax
@converter("com.microsoft.BiasAdd", since=1)
def _bias_add(builder, node, x, bias, skip):
    return _add(builder, node, x, bias, skip)


@converter("com.microsoft.QLinearSoftmax", since=1)
def _qlinear_softmax(builder, node, x, x_scale, x_zero_point, y_scale, y_zero_point):
    x = dequantized_input(builder, node, x, x_scale, x_zero_point, "input")
    y = softmax(builder, node, x, node.attr("axis", -1), aten._softmax.default,
                coerce_2d=node.attr("opset", 13) < 13)
    return quantized_output(builder, node, y, y_scale, y_zero_point)
