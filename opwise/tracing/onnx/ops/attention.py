"""The transformer operators of opset 23 on: Attention and RotaryEmbedding (RMSNormalization is normalization.py's,
Swish elementwise.py's). `torch.onnx.export(..., dynamo=True, opset_version=23)` writes Attention for
`F.scaled_dot_product_attention` and RMSNormalization for `nn.RMSNorm`.

- Attention: softmax(q·kᵀ·scale + bias)·v per head, from matmul, mul, `_softmax` and add, as opwise's own
  decomposition of `scaled_dot_product_attention` (tracing/decompositions.py) writes it. 3-D q, k, v
  ([batch, length, heads·size], `q_num_heads` and `kv_num_heads` given) are viewed as 4-D [batch, heads, length,
  size] and the result viewed back. Grouped-query attention (fewer key/value heads than query heads) repeats each
  key/value head for its group (head h reads key head h // group), an expand and a view. `past_key` / `past_value`
  are concatenated before the new keys and values along the sequence and are the outputs present_key /
  present_value. The bias sums the mask (a boolean `attn_mask` allows where True; a float one is added), the causal
  frontier (`is_causal`: query i reads key j iff j <= i + past length, or + nonpad_kv_seqlen − query length),
  opset 24's `nonpad_kv_seqlen` padding (keys from that count on are masked) and opset 25's sliding window
  (`left_window_size`, `right_window_size`). A mask shorter than the keys is padded with masked keys, as ONNX says.
  Masked positions add the dtype's lowest finite value rather than −inf (so bounds stay finite, as in
  decompositions.py); a query row with every key masked is 0, as ONNX defines it (an `aten.where` with the
  constant row mask). `softcap` caps the scores as softcap · tanh(scores / softcap) before the bias;
  `softmax_precision` casts the scores to that type for the softmax. The fourth output (`qk_matmul_output`)
  is the scaled scores (mode 0), capped (1), with the bias (2, masked positions −inf) or the probabilities (3).
- RotaryEmbedding: x rotated pairwise by the angles of its positions, cos·x₁ − sin·x₂ and sin·x₁ + cos·x₂,
  the pairs being the two halves of the rotated part (or even and odd entries, `interleaved`), the caches
  indexed by `position_ids` (`aten.index`) where given; products with constants, slices and concatenations.

Refused with ModelLoadError naming the node: q, k, v of different ranks or of rank other than 3 or 4, 3-D inputs
without the head counts, head counts that do not divide the hidden sizes, query heads not a multiple of key heads;
a past_key without its past_value; nonpad_kv_seqlen with a past, or input-dependent; an attn_mask that is neither
boolean nor floating point, or longer than the keys; a constant mask with one row per sample at another batch size
than the model declares; a RotaryEmbedding cache whose last axis is not half the rotated size.
"""

from __future__ import annotations

import math

import torch
from torch import fx

from opwise.tracing.onnx.ops.constants import cast_to, onnx_dtype
from opwise.tracing.onnx.ops.linear import matmul
from opwise.tracing.onnx.ops.quantization import refusal
from opwise.tracing.onnx.ops.recurrent import output_used
from opwise.tracing.onnx.registry import converter

aten = torch.ops.aten


# ----------------------------------------------------------------- Attention
@converter("Attention", since=23)
def _attention(builder, node, q, k, v, attn_mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None):
    """(Y, present_key, present_value, qk_matmul_output); see the module docstring."""
    ranks = [len(builder.shape(value)) for value in (q, k, v)]
    if len(set(ranks)) != 1 or ranks[0] not in (3, 4):
        raise refusal(node, f"q, k and v have ranks {ranks}; opwise imports Attention of q, k and v all 3-D or all "
                            "4-D")
    flat = ranks[0] == 3
    if flat:
        q, k, v = _heads_apart(builder, node, q, k, v)
    else:
        _check_head_attributes(builder, node, q, k)
    if (past_key is None) != (past_value is None):
        raise refusal(node, "it has only one of past_key and past_value; ONNX requires both or neither")
    past = 0 if past_key is None else builder.shape(past_key)[2]
    if past_key is not None:
        k = builder.call(aten.cat.default, [past_key, k], 2)
        v = builder.call(aten.cat.default, [past_value, v], 2)
    present_key, present_value = k, v
    query_heads, key_heads = builder.shape(q)[1], builder.shape(k)[1]
    if query_heads % key_heads or builder.shape(v)[1] != key_heads:
        raise refusal(node, f"it has {query_heads} query heads, {key_heads} key heads and {builder.shape(v)[1]} value "
                            "heads; ONNX requires as many value heads as key heads, and query heads a multiple of them")
    if query_heads != key_heads:
        k, v = (_repeat_heads(builder, value, query_heads // key_heads) for value in (k, v))

    scale = node.attr("scale")
    scale = 1.0 / math.sqrt(builder.shape(q)[-1]) if scale is None else float(scale)
    keys_transposed = builder.call(aten.permute.default, k, [0, 1, 3, 2])
    scores = matmul(builder, builder.call(aten.mul.Tensor, q, scale), keys_transposed)
    raw_scores = scores
    softcap = float(node.attr("softcap", 0.0))
    if softcap > 0:
        scores = builder.call(aten.mul.Tensor, builder.call(aten.tanh.default, builder.call(aten.div.Tensor, scores,
                                                                                             softcap)), softcap)
    bias = _bias(builder, node, q, attn_mask, past, nonpad_kv_seqlen, builder.shape(scores)[-1])
    probabilities = _softmax_guarded(builder, node, scores, bias, builder.example(q).dtype)
    y = matmul(builder, probabilities, v)
    if flat:
        batch, heads, length, size = builder.shape(y)
        y = builder.view(builder.call(aten.permute.default, y, [0, 2, 1, 3]), [batch, length, heads * size])
    qk = None
    if output_used(builder, node, 3):
        mode = int(node.attr("qk_matmul_output_mode", 0))
        if mode not in (0, 1, 2, 3):
            raise refusal(node, f"qk_matmul_output_mode={mode}; ONNX defines modes 0 to 3")
        if mode == 2 and bias is not None:
            qk = builder.call(aten.add.Tensor, scores, bias)
        else:
            qk = [raw_scores, scores, scores, probabilities][mode]
    return y, present_key, present_value, qk


def _heads_apart(builder, node, q, k, v):
    """3-D q, k, v [batch, length, heads·size] as 4-D [batch, heads, length, size]."""
    query_heads, key_heads = node.attr("q_num_heads"), node.attr("kv_num_heads")
    if not query_heads or not key_heads:
        raise refusal(node, "its q, k and v are 3-D but q_num_heads or kv_num_heads is not given; ONNX requires both "
                            "for 3-D inputs")
    result = []
    for value, heads, what in ((q, query_heads, "q"), (k, key_heads, "k"), (v, key_heads, "v")):
        batch, length, hidden = builder.shape(value)
        if hidden % heads:
            raise refusal(node, f"the hidden size {hidden} of {what} is not a multiple of its {heads} heads")
        split = builder.view(value, [batch, length, heads, hidden // heads])
        result.append(builder.call(aten.permute.default, split, [0, 2, 1, 3]))
    return result


def _check_head_attributes(builder, node, q, k) -> None:
    """4-D inputs carry their head counts; head attributes that say otherwise are refused."""
    for name, value in (("q_num_heads", q), ("kv_num_heads", k)):
        given = node.attr(name)
        if given is not None and int(given) != builder.shape(value)[1]:
            raise refusal(node, f"{name}={given} but its 4-D input has {builder.shape(value)[1]} heads; export the "
                                f"model without {name} for 4-D inputs")


def _repeat_heads(builder, value, group: int):
    """[batch, heads, length, size] with each head repeated `group` times in place (h0, h0, h1, h1, ...)."""
    batch, heads, length, size = builder.shape(value)
    wide = builder.expand(builder.call(aten.unsqueeze.default, value, 2), [batch, heads, group, length, size])
    return builder.view(wide, [batch, heads * group, length, size])


def _bias(builder, node, q, attn_mask, past: int, nonpad_kv_seqlen, keys: int):
    """The additive bias of the scores, −inf where masked (None where nothing is masked or added)."""
    dtype = builder.example(q).dtype
    batch, _, queries, _ = builder.shape(q)
    negative = torch.tensor(float("-inf"), dtype=dtype)
    zero = torch.zeros((), dtype=dtype)
    parts = []
    if attn_mask is not None:
        parts.append(_mask_bias(builder, node, attn_mask, keys, zero, negative))
    offset = torch.tensor(past).reshape(1, 1)
    if nonpad_kv_seqlen is not None:
        if past:
            raise refusal(node, "it has both nonpad_kv_seqlen and past_key; ONNX allows one of them")
        if isinstance(nonpad_kv_seqlen, fx.Node):
            raise refusal(node, "its nonpad_kv_seqlen depends on the model input; opwise imports a constant one")
        lengths = nonpad_kv_seqlen.reshape(-1).to(torch.int64)
        if lengths.numel() != batch:
            raise refusal(node, f"its nonpad_kv_seqlen has {lengths.numel()} entries, one per sample, for a batch of "
                                f"{batch}; import it with batch_size={lengths.numel()}")
        parts.append(torch.where(torch.arange(keys) < lengths.reshape(-1, 1, 1, 1), zero, negative))
        offset = (lengths - queries).reshape(-1, 1, 1, 1)
    # query i at absolute position i + offset, key j: difference = i + offset − j
    difference = torch.arange(queries).reshape(-1, 1) + offset - torch.arange(keys)
    allowed = torch.ones_like(difference, dtype=torch.bool)
    if node.attr("is_causal", 0):
        allowed &= difference >= 0
    left, right = int(node.attr("left_window_size", -1)), int(node.attr("right_window_size", -1))
    if left >= 0:
        allowed &= difference <= left
    if right >= 0:
        allowed &= -difference <= right
    if not allowed.all():
        parts.append(torch.where(allowed, zero, negative))
    bias = None
    for part in parts:
        bias = part if bias is None else builder.call(aten.add.Tensor, bias, part)
    if isinstance(bias, torch.Tensor) and bias.dim() == 4 and bias.shape[0] != 1 and builder.rebatched:
        raise builder.batch_error("its mask has one row per sample")
    return bias


def _mask_bias(builder, node, attn_mask, keys: int, zero, negative):
    """`attn_mask` as an additive bias over `keys` keys: a boolean mask allows where True."""
    shape, dtype = builder.shape(attn_mask), builder.example(attn_mask).dtype
    if dtype == torch.bool:
        attn_mask = builder.call(aten.where.self, attn_mask, zero, negative)
    elif not dtype.is_floating_point:
        raise refusal(node, f"its attn_mask is {dtype}; ONNX's is boolean or of the type of q")
    if len(shape) > 4 or not shape or shape[-1] > keys:
        raise refusal(node, f"its attn_mask has shape {shape}, which does not broadcast to [batch, heads, queries, "
                            f"{keys} keys]")
    if shape[-1] < keys:  # the keys the mask does not cover are masked
        attn_mask = builder.call(aten.constant_pad_nd.default, attn_mask, [0, keys - shape[-1]], float("-inf"))
    return cast_to(builder, attn_mask, zero.dtype)


def _softmax_guarded(builder, node, scores, bias, dtype: torch.dtype):
    """The softmax of scores + bias along the keys, masked keys adding the lowest finite value, fully masked rows 0."""
    finite = scores
    if bias is not None:
        finite = builder.call(aten.add.Tensor, scores, builder.call(aten.clamp_min.default, bias,
                                                                    torch.finfo(dtype).min))
    precision = node.attr("softmax_precision")
    if precision is not None:
        finite = cast_to(builder, finite, onnx_dtype(int(precision)))
    probabilities = cast_to(builder, builder.call(aten._softmax.default, finite, -1, False), dtype)
    if bias is not None:
        dead = builder.call(aten.eq.Scalar, builder.call(aten.amax.default, bias, [-1], True), float("-inf"))
        if isinstance(dead, fx.Node) or dead.any():
            probabilities = builder.call(aten.where.self, dead, torch.zeros((), dtype=dtype), probabilities)
    return probabilities


# ----------------------------------------------------------------- RotaryEmbedding
@converter("RotaryEmbedding", since=23)
def _rotary_embedding(builder, node, x, cos_cache, sin_cache, position_ids=None):
    """x with its first `rotary_embedding_dim` entries per head rotated pairwise by its position's angles."""
    shape = builder.shape(x)
    if len(shape) == 3:
        heads = node.attr("num_heads")
        if not heads or shape[2] % int(heads):
            raise refusal(node, f"its input is 3-D of hidden size {shape[2]} but num_heads is {heads}; ONNX requires "
                                "num_heads dividing the hidden size for 3-D inputs")
        split = builder.view(x, [shape[0], shape[1], int(heads), shape[2] // int(heads)])
        return builder.view(_rotated(builder, node, split, cos_cache, sin_cache, position_ids, head_axis=2), shape)
    if len(shape) != 4:
        raise refusal(node, f"its input has shape {shape}; ONNX's is 3-D or 4-D")
    return _rotated(builder, node, x, cos_cache, sin_cache, position_ids, head_axis=1)


def _rotated(builder, node, x, cos_cache, sin_cache, position_ids, head_axis: int):
    """The rotation of a 4-D x whose heads lie along `head_axis` (1: [batch, heads, length, size]; 2: [batch, length,
    heads, size]); the caches, [batch, length, rotated / 2] once indexed, broadcast over the heads."""
    size = builder.shape(x)[-1]
    rotated = int(node.attr("rotary_embedding_dim", 0)) or size
    if position_ids is not None:
        cos_cache = builder.call(aten.index.Tensor, cos_cache, [position_ids])
        sin_cache = builder.call(aten.index.Tensor, sin_cache, [position_ids])
    for cache, what in ((cos_cache, "cos_cache"), (sin_cache, "sin_cache")):
        cache_shape = builder.shape(cache)
        if len(cache_shape) != 3 or cache_shape[-1] * 2 != rotated or rotated > size:
            raise refusal(node, f"its {what} is {cache_shape} once indexed, for {rotated} rotated entries of heads of "
                                f"size {size}; ONNX requires [batch, length, {rotated // 2}]")
        if isinstance(cache, torch.Tensor) and cache.shape[0] != 1 and builder.rebatched:
            raise builder.batch_error(f"its {what} has one row per sample")
    cos, sin = (builder.call(aten.unsqueeze.default, cache, head_axis) for cache in (cos_cache, sin_cache))
    part = x if rotated == size else builder.call(aten.slice.Tensor, x, -1, 0, rotated)
    if node.attr("interleaved", 0):
        first, second = (builder.call(aten.slice.Tensor, part, -1, start, rotated, 2) for start in (0, 1))
    else:
        half = rotated // 2
        first, second = (builder.call(aten.slice.Tensor, part, -1, start, start + half) for start in (0, half))
    real = builder.call(aten.sub.Tensor, builder.call(aten.mul.Tensor, first, cos), builder.call(aten.mul.Tensor,
                                                                                                  second, sin))
    imaginary = builder.call(aten.add.Tensor, builder.call(aten.mul.Tensor, first, sin),
                             builder.call(aten.mul.Tensor, second, cos))
    if node.attr("interleaved", 0):
        pairs = builder.call(aten.stack.default, [real, imaginary], -1)
        result = builder.view(pairs, builder.shape(part))
    else:
        result = builder.call(aten.cat.default, [real, imaginary], -1)
    if rotated == size:
        return result
    return builder.call(aten.cat.default, [result, builder.call(aten.slice.Tensor, x, -1, rotated, size)], -1)
