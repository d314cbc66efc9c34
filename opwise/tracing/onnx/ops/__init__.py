"""Converters, one module per ONNX operator family; importing this package registers them all."""

from opwise.tracing.onnx.ops import (attention, constants, contrib_fused, contrib_quantized, control, conv, einsum,
                                     elementwise, indexing, integer, linear, normalization, quantization, recurrent,
                                     reduce, resize, shape)

__all__ = ["attention", "constants", "contrib_fused", "contrib_quantized", "control", "conv", "einsum", "elementwise",
           "indexing", "integer", "linear", "normalization", "quantization", "recurrent", "reduce", "resize", "shape"]
