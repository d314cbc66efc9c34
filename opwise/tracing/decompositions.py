"""Which composite operators stay whole in the traced graph.

Rules and relaxations need the meaning of these (a linear layer's weight, a layer norm's scale, the
softmax as one function); everything else decomposes to the core ATen set.
"""

from __future__ import annotations

import torch

aten = torch.ops.aten

KEPT_WHOLE = (
    aten.linear.default,
    aten.layer_norm.default,
    aten.native_layer_norm.default,
    aten.gelu.default,
    aten._softmax.default,
    aten._log_softmax.default,
    aten.silu.default,
    aten.hardtanh.default,
    aten.leaky_relu.default,
    aten.softplus.default,
    aten.elu.default,
    aten.mish.default,
    aten.hardswish.default,
    aten.hardsigmoid.default,
    aten.convolution.default,
    aten._native_batch_norm_legit_no_training.default,
    aten.max_pool2d_with_indices.default,
    aten.avg_pool2d.default,
    aten.adaptive_avg_pool2d.default,
    aten._adaptive_avg_pool2d.default,
    aten.embedding.default,
    aten.rms_norm.default,
)


def _drop_kept(table) -> None:
    for op in KEPT_WHOLE:
        if op in table:
            del table[op]


def export_table():
    """The table for `ExportedProgram.run_decompositions`."""
    table = torch.export.default_decompositions()
    _drop_kept(table)
    return table


def make_fx_table() -> dict:
    """The same choice for `make_fx`, the fallback tracer."""
    from torch._decomp import core_aten_decompositions

    table = dict(core_aten_decompositions())
    _drop_kept(table)
    return table
