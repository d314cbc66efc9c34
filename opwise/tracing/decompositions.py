"""Which composite operators stay whole in the traced graph.

Rules and relaxations need the meaning of these (a linear layer's weight, a layer norm's scale, the
softmax as one function); everything else decomposes to the core ATen set. Scaled dot-product attention
gets our own decomposition (`attention_as_matmuls`) so engines see matmul, add and `_softmax` only; pairwise
distances (`torch.cdist`) and `torch.hypot` become the differences, powers, sums and roots both engines already
bound and explain (`distances_by_differences`, `hypot_as_root_of_squares`).
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

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
    aten._prelu_kernel.default,
    aten.softplus.default,
    aten.elu.default,
    aten.celu.default,
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
    aten.threshold.default,
    aten.hardshrink.default,
    aten.softshrink.default,
    aten.log_sigmoid_forward.default,
    aten.upsample_bicubic2d.vec,
)


def attention_as_matmuls(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """`scaled_dot_product_attention` as `softmax(q k^T * scale + mask) v`, for inference (no dropout).

    PyTorch's own decomposition ends in `_safe_softmax`, which adds a comparison, `any` and `where` on
    the input-dependent path to zero fully masked rows. Here boolean and causal masks become an additive
    mask of the dtype's lowest finite value instead of -inf, so no row turns into NaN and the path is
    matmul -> add -> `_softmax` -> matmul. A fully masked query row then attends uniformly instead of
    returning zeros; only padded positions differ.

    >>> q, k, v = torch.randn(3, 1, 2, 5, 4).unbind(0)
    >>> mask = torch.rand(5, 5) > 0.3
    >>> _ = mask.fill_diagonal_(True)  # every row keeps at least one key
    >>> expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    >>> torch.allclose(attention_as_matmuls(q, k, v, attn_mask=mask), expected, atol=1e-6)
    True
    """
    query_length, key_length = query.shape[-2], key.shape[-2]
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        groups = query.shape[-3] // key.shape[-3]
        key = key.repeat_interleave(groups, dim=-3)
        value = value.repeat_interleave(groups, dim=-3)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = torch.matmul(query * scale, key.transpose(-2, -1))
    lowest = torch.finfo(scores.dtype).min
    if is_causal:
        causal = torch.ones(query_length, key_length, dtype=torch.bool, device=query.device).tril()
        if attn_mask is None:
            attn_mask = causal
        elif attn_mask.dtype == torch.bool:
            attn_mask = attn_mask.logical_and(causal)
        else:
            attn_mask = attn_mask.masked_fill(causal.logical_not(), lowest)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros_like(attn_mask, dtype=scores.dtype).masked_fill(attn_mask.logical_not(), lowest)
        scores = scores + attn_mask
    return torch.matmul(torch.softmax(scores, dim=-1), value)


def roll_as_slices(x: torch.Tensor, shifts: list[int], dims: list[int] = ()) -> torch.Tensor:
    """`torch.roll` as slices and a concatenation (Swin's cyclic window shift), instead of the default
    `index_select` with a computed index: both engines already handle slice and cat.

    >>> x = torch.arange(12).view(3, 4)
    >>> torch.equal(roll_as_slices(x, [1, -2], [0, 1]), torch.roll(x, (1, -2), (0, 1)))
    True
    """
    if not dims:
        return roll_as_slices(x.flatten(), shifts, [0]).view(x.shape)
    for shift, dim in zip(shifts, dims):
        size = x.shape[dim]
        shift = shift % size
        if shift:
            x = torch.cat([x.narrow(dim, size - shift, shift), x.narrow(dim, 0, size - shift)], dim=dim)
    return x


def distances_by_differences(x1: torch.Tensor, x2: torch.Tensor, p: float, compute_mode: int | None = None) -> torch.Tensor:
    """`torch.cdist` (`aten._cdist_forward`) from the differences of every pair of rows: ‖x1_i − x2_j‖_p as
    √Σd² (p = 2), Σ|d| (1), max |d| (inf), the count of nonzero d (0), (Σ|d|^p)^(1/p) otherwise. Prototype, RBF and
    kNN heads then reach the engines as sub, abs, pow, sum, amax and sqrt; each difference is bounded on its own
    interval, so a prototype's coordinates cancel exactly under CROWN. √ of a sum of squares starts at 0, where
    sqrt's relaxation is defined (its interval image of squares never goes below 0). `compute_mode` only picks
    torch's kernel; one [..., P, R, M] tensor of differences is made.

    >>> x1, x2 = torch.randn(2, 3, 4), torch.randn(5, 4)
    >>> all(torch.allclose(distances_by_differences(x1, x2, p), torch.cdist(x1, x2, p=p, compute_mode="donot_use_mm_for_euclid_dist"), atol=1e-5)
    ...     for p in (0.0, 0.5, 1.0, 2.0, 3.0, math.inf))
    True
    """
    differences = x1.unsqueeze(-2) - x2.unsqueeze(-3)
    if p == 0:
        return (differences != 0).to(differences.dtype).sum(-1)
    if p == 2:
        return torch.sqrt(torch.pow(differences, 2).sum(-1))
    magnitudes = torch.abs(differences)
    if p == 1:
        return magnitudes.sum(-1)
    if p == math.inf:
        return magnitudes.amax(-1)
    return torch.pow(torch.pow(magnitudes, p).sum(-1), 1.0 / p)


def hypot_as_root_of_squares(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """`torch.hypot(x, y)` as √(x² + y²): squares, a sum and a root, which both engines handle (a radius from two
    coordinates). Equal to hypot up to rounding while x² + y² stays finite (|x|, |y| below about 1.8e19 in float32).

    >>> x, y = torch.randn(2, 10)
    >>> torch.allclose(hypot_as_root_of_squares(x, y), torch.hypot(x, y))
    True
    """
    return torch.sqrt(torch.pow(x, 2) + torch.pow(y, 2))


@contextlib.contextmanager
def autograd_decompositions_lifted() -> Iterator[None]:
    """Keep KEPT_WHOLE ops whole while a model is exported and decomposed: a few (hardshrink, softshrink) carry a
    Python decomposition on the Autograd key, which fires whenever an input requires grad (a parameter upstream),
    whatever the table says. It is lifted for the duration and put back after (torch falls back to the op's own
    autograd kernel meanwhile).

    >>> with autograd_decompositions_lifted():
    ...     torch._C.DispatchKey.Autograd in aten.hardshrink.default.py_kernels
    False
    >>> torch._C.DispatchKey.Autograd in aten.hardshrink.default.py_kernels
    True
    """
    key = torch._C.DispatchKey.Autograd
    lifted = {op: op.py_kernels.pop(key) for op in KEPT_WHOLE if key in op.py_kernels}
    for op in lifted:
        op._dispatch_cache.clear()
    try:
        yield
    finally:
        for op, kernel in lifted.items():
            op.py_kernels[key] = kernel
            op._dispatch_cache.clear()


def _drop_kept(table) -> None:
    for op in KEPT_WHOLE:
        if op in table:
            del table[op]
    table[aten.scaled_dot_product_attention.default] = attention_as_matmuls
    table[aten.roll.default] = roll_as_slices
    table[aten._cdist_forward.default] = distances_by_differences
    table[aten.hypot.default] = hypot_as_root_of_squares


#: the last table built, with the registry sizes it was built for (`registry_key`)
_EXPORT_TABLE: tuple[tuple[int, int], dict] | None = None


def registry_key() -> tuple[int, int]:
    """What the default table is built from: the registered operators (a custom composite op joins the
    table) and torch's decompositions."""
    return len(torch._C._dispatch_get_all_op_names()), len(torch._decomp.decomposition_table)


def export_table() -> dict:
    """The table for `ExportedProgram.run_decompositions` (a copy: the caller may change it).

    Building it lists every composite operator torch has registered, a tenth of the time tracing a CIFAR
    conv net takes; it is built once and again only when an operator or a decomposition has been
    registered since.

    >>> table = export_table()
    >>> torch.ops.aten.linear.default in table, torch.ops.aten.conv2d.default in table, table is export_table()
    (False, True, False)
    """
    global _EXPORT_TABLE
    key = registry_key()
    if _EXPORT_TABLE is None or _EXPORT_TABLE[0] != key:
        table = torch.export.default_decompositions()
        _drop_kept(table)
        _EXPORT_TABLE = (key, dict(table))
    return dict(_EXPORT_TABLE[1])


def make_fx_table() -> dict:
    """The same choice for `make_fx`, the fallback tracer."""
    from torch._decomp import core_aten_decompositions

    table = dict(core_aten_decompositions())
    _drop_kept(table)
    return table
