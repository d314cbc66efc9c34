"""The transformer operators of opsets 23 and 24 (opwise/tracing/onnx/ops/attention.py, and RMSNormalization and
Swish beside them): hand-built graphs match onnxruntime over their attribute combinations (also at another batch size
where nothing ties the graph to one), what is not imported is refused naming the node, and an opset-23 block of
RMSNormalization, RotaryEmbedding and Attention, as torch's exporter writes for nn.RMSNorm and
scaled_dot_product_attention, is bounded soundly (IBP and CROWN) and explained."""

from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
import onnx.reference  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import opwise  # noqa: E402
from opwise.errors import ModelLoadError  # noqa: E402
from opwise.tracing.onnx import load_onnx  # noqa: E402
from tests.bounds.helpers import assert_bounded_and_explained  # noqa: E402
from tests.tracing.test_onnx_import import ops_of  # noqa: E402

ATOL = RTOL = 1e-5


def _model(tmp_path, nodes, inputs: dict, inits=(), opset=23, types=None, name="model.onnx"):
    """Inputs {name: shape} (float unless `types` says otherwise), initializers {name: array}, one output 'y'."""
    types = types or {}
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, types.get(n, TensorProto.FLOAT), s) for n, s in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _feeds(inputs: dict, batch: int | None, seed=0, types=None) -> dict:
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, shape in inputs.items():
        shape = [batch or shape[0], *shape[1:]]
        if (types or {}).get(name) == TensorProto.BOOL:
            feeds[name] = rng.random(shape) > 0.3
        else:
            feeds[name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _matches(path, inputs: dict, batch_sizes=(None,), types=None, reference=False):
    """opwise's import of `path` computes onnxruntime's output (onnx's reference evaluator's with `reference`, for
    what onnxruntime does not run) at each batch size (None: the declared one)."""
    if reference:
        run = onnx.reference.ReferenceEvaluator(str(path)).run
    else:
        run = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run
    for batch in batch_sizes:
        feeds = _feeds(inputs, batch, types=types)
        expected = run(["y"], feeds)[0] if batch in (None, next(iter(inputs.values()))[0]) else \
            np.concatenate([run(["y"], {k: v[i : i + 1] for k, v in feeds.items()})[0] for i in range(batch)])
        graph = load_onnx(path, batch_size=batch)
        with torch.no_grad():
            got = graph(*[torch.from_numpy(feeds[name]) for name in inputs]).numpy()
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)
    return graph


def _refused(path, *words):
    with pytest.raises(ModelLoadError) as error:
        load_onnx(path)
    for word in ("'n'", *words):
        assert word in str(error.value), str(error.value)


# ----------------------------------------------------------------- Attention
def _causal_mask(queries, keys, dtype=bool):
    allowed = np.tril(np.ones((queries, keys), dtype=bool))
    return allowed if dtype is bool else np.where(allowed, 0.0, -np.inf).astype(np.float32)


ATTENTION_CASES = {
    # name: (q, k, v shapes, attributes, constant attn_mask or None)
    "4d": ([1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], {}, None),
    "4d_cross": ([1, 2, 3, 4], [1, 2, 5, 4], [1, 2, 5, 6], {}, None),
    "4d_causal": ([1, 2, 4, 4], [1, 2, 4, 4], [1, 2, 4, 4], {"is_causal": 1}, None),
    "4d_causal_cross": ([1, 2, 3, 4], [1, 2, 5, 4], [1, 2, 5, 4], {"is_causal": 1}, None),
    "4d_scale": ([1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], {"scale": 0.3}, None),
    "4d_softcap": ([1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], {"softcap": 1.5, "scale": 2.0}, None),
    "4d_gqa": ([1, 4, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], {}, None),
    "4d_mqa_causal": ([1, 4, 3, 4], [1, 1, 3, 4], [1, 1, 3, 2], {"is_causal": 1}, None),
    "4d_bool_mask": ([1, 2, 3, 4], [1, 2, 5, 4], [1, 2, 5, 4], {}, np.random.default_rng(1).random((3, 5)) > 0.4),
    "4d_bool_mask_per_head": ([1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], {},
                              np.random.default_rng(2).random((2, 3, 3)) > 0.4),
    "4d_float_mask": ([1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], {},
                      np.random.default_rng(3).standard_normal((1, 1, 3, 3)).astype(np.float32)),
    "4d_float_mask_row": ([1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], {},
                          np.random.default_rng(4).standard_normal((3,)).astype(np.float32)),
    "4d_float_inf_mask_causal": ([1, 2, 4, 4], [1, 2, 4, 4], [1, 2, 4, 4], {"is_causal": 1},
                                 np.tile(np.array([0.0, -np.inf, 0.5, 0.0], np.float32), (4, 1))),
    "4d_bool_mask_causal": ([1, 2, 4, 4], [1, 2, 4, 4], [1, 2, 4, 4], {"is_causal": 1},
                            np.random.default_rng(5).random((4, 4)) > 0.2),
    "4d_short_mask": ([1, 2, 3, 4], [1, 2, 5, 4], [1, 2, 5, 4], {}, np.ones((3, 4), dtype=bool)),
    "4d_masked_row": ([1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], {},
                      np.array([[True, False, True], [False, False, False], [True, True, True]])),
    "3d": ([1, 3, 8], [1, 3, 8], [1, 3, 8], {"q_num_heads": 2, "kv_num_heads": 2}, None),
    "3d_gqa_causal": ([1, 4, 8], [1, 4, 4], [1, 4, 6], {"q_num_heads": 4, "kv_num_heads": 2, "is_causal": 1}, None),
    "3d_cross_mask": ([1, 3, 8], [1, 5, 8], [1, 5, 8], {"q_num_heads": 2, "kv_num_heads": 2},
                      np.random.default_rng(6).random((1, 2, 3, 5)) > 0.3),
}


@pytest.mark.parametrize("case", sorted(ATTENTION_CASES))
def test_attention_matches_onnxruntime(tmp_path, case):
    q, k, v, attributes, mask = ATTENTION_CASES[case]
    inits = {} if mask is None else {"m": mask}
    nodes = [helper.make_node("Attention", ["q", "k", "v"] + list(inits), ["y"], name="n", **attributes)]
    path = _model(tmp_path, nodes, {"q": q, "k": k, "v": v}, inits)
    # onnxruntime refuses masks that ONNX allows: 1-D, broadcast along the queries, shorter than the keys
    reference = mask is not None and (mask.ndim == 1 or mask.shape[-2] != q[2] or mask.shape[-1] < k[2])
    graph = _matches(path, {"q": q, "k": k, "v": v}, batch_sizes=(None, 3), reference=reference)
    assert "aten._softmax.default" in ops_of(graph) and "aten.bmm.default" in ops_of(graph)


@pytest.mark.parametrize("opset", [23, 24])
@pytest.mark.parametrize("output", ["y", "present_key", "present_value"])
@pytest.mark.parametrize("flat", [False, True], ids=["4d", "3d"])
def test_attention_with_a_past_and_its_present_outputs(tmp_path, opset, output, flat):
    """past_key / past_value come before the new keys; present_key / present_value are the concatenations, and the
    causal frontier moves by the past's length."""
    shapes = {"q": [1, 2, 8], "k": [1, 2, 4], "v": [1, 2, 4]} if flat else \
        {"q": [1, 4, 2, 2], "k": [1, 2, 2, 2], "v": [1, 2, 2, 2]}
    shapes |= {"pk": [1, 2, 3, 2], "pv": [1, 2, 3, 2]}
    attributes = {"q_num_heads": 4, "kv_num_heads": 2} if flat else {}
    # onnxruntime runs a past only with both present outputs named
    outputs = {"y": ["y", "pk1", "pv1"], "present_key": ["o", "y", "pv1"], "present_value": ["o", "pk1", "y"]}[output]
    nodes = [helper.make_node("Attention", ["q", "k", "v", "", "pk", "pv"], outputs, name="n", is_causal=1,
                              **attributes)]
    _matches(_model(tmp_path, nodes, shapes, opset=opset), shapes, batch_sizes=(None, 2))


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_attention_qk_matmul_output(tmp_path, mode):
    """The fourth output: scaled scores (mode 0), softcapped (1), with the mask added (2), probabilities (3)."""
    shapes = {"q": [1, 2, 3, 4], "k": [1, 2, 3, 4], "v": [1, 2, 3, 4]}
    softcap = {} if mode == 0 else {"softcap": 2.0}
    mask = np.random.default_rng(7).standard_normal((3, 3)).astype(np.float32)
    nodes = [helper.make_node("Attention", ["q", "k", "v", "m"], ["o", "", "", "y"], name="n",
                              qk_matmul_output_mode=mode, **softcap)]
    _matches(_model(tmp_path, nodes, shapes, {"m": mask}), shapes, batch_sizes=(None, 2))


@pytest.mark.parametrize("causal", [0, 1])
def test_attention_nonpad_kv_seqlen(tmp_path, causal):
    """Opset 24: keys from nonpad_kv_seqlen[b] on are padding; the causal frontier ends at the last valid key."""
    shapes = {"q": [2, 2, 2, 4], "k": [2, 2, 5, 4], "v": [2, 2, 5, 4]}
    nodes = [helper.make_node("Attention", ["q", "k", "v", "", "", "", "n"], ["y"], name="n", is_causal=causal)]
    path = _model(tmp_path, nodes, shapes, {"n": np.array([3, 5], np.int64)}, opset=24)
    _matches(path, shapes)
    with pytest.raises(ModelLoadError, match="'n'.*nonpad_kv_seqlen has 2 entries, one per sample, for a batch of 3"):
        load_onnx(path, batch_size=3)


@pytest.mark.parametrize("left,right,causal", [(1, -1, 1), (2, 0, 0), (-1, 1, 0), (0, 2, 0)])
def test_attention_sliding_window(tmp_path, left, right, causal):
    """Opset 25: keys more than left_window_size before or right_window_size after the query are masked."""
    shapes = {"q": [1, 2, 5, 4], "k": [1, 2, 5, 4], "v": [1, 2, 5, 4]}
    nodes = [helper.make_node("Attention", ["q", "k", "v"], ["y"], name="n", is_causal=causal, left_window_size=left,
                              right_window_size=right)]
    _matches(_model(tmp_path, nodes, shapes, opset=25), shapes, batch_sizes=(None, 2), reference=True)


def test_attention_with_an_input_dependent_boolean_mask(tmp_path):
    shapes = {"q": [2, 2, 3, 4], "k": [2, 2, 3, 4], "v": [2, 2, 3, 4], "m": [2, 1, 3, 3]}
    types = {"m": TensorProto.BOOL}
    nodes = [helper.make_node("Attention", ["q", "k", "v", "m"], ["y"], name="n")]
    _matches(_model(tmp_path, nodes, shapes, types=types), shapes, types=types)


def test_attention_softmax_precision_double(tmp_path):
    shapes = {"q": [1, 2, 3, 4], "k": [1, 2, 3, 4], "v": [1, 2, 3, 4]}
    nodes = [helper.make_node("Attention", ["q", "k", "v"], ["y"], name="n", softmax_precision=TensorProto.DOUBLE)]
    _matches(_model(tmp_path, nodes, shapes), shapes)


def test_attention_refusals_name_the_node(tmp_path):
    four = {"q": [1, 2, 3, 4], "k": [1, 2, 3, 4], "v": [1, 2, 3, 4]}
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], name="n")
    _refused(_model(tmp_path, [node], {"q": [1, 3, 8], "k": [1, 3, 8], "v": [1, 3, 8]}, name="heads.onnx"),
             "q_num_heads", "3-D")
    _refused(_model(tmp_path, [node], {"q": [1, 3, 8], "k": [1, 2, 3, 4], "v": [1, 2, 3, 4]}, name="ranks.onnx"),
             "ranks [3, 4, 4]")
    _refused(_model(tmp_path, [node], {"q": [1, 3, 3, 4], "k": [1, 2, 3, 4], "v": [1, 2, 3, 4]}, name="gqa.onnx"),
             "3 query heads", "multiple")
    heads = helper.make_node("Attention", ["q", "k", "v"], ["y"], name="n", q_num_heads=4, kv_num_heads=2)
    _refused(_model(tmp_path, [heads], four, name="4d_heads.onnx"), "q_num_heads=4", "2 heads")
    nonpad = helper.make_node("Attention", ["q", "k", "v", "", "pk", "pv", "s"], ["y"], name="n")
    _refused(_model(tmp_path, [nonpad], four | {"pk": [1, 2, 2, 4], "pv": [1, 2, 2, 4]}, {"s": np.array([3])},
                    opset=24, name="nonpad.onnx"), "nonpad_kv_seqlen and past_key")
    past = helper.make_node("Attention", ["q", "k", "v", "", "pk"], ["y"], name="n")
    _refused(_model(tmp_path, [past], four | {"pk": [1, 2, 2, 4]}, name="past.onnx"), "past_value")
    masked = helper.make_node("Attention", ["q", "k", "v", "m"], ["y"], name="n")
    _refused(_model(tmp_path, [masked], four, {"m": np.ones((3, 3), np.int64)}, name="int.onnx"), "attn_mask", "int64")
    _refused(_model(tmp_path, [masked], four, {"m": np.ones((3, 5), bool)}, name="long.onnx"), "attn_mask", "[3, 5]")
    per_sample = _model(tmp_path, [masked], four, {"m": np.ones((1, 1, 3, 3), bool)}, name="ok.onnx")
    load_onnx(per_sample, batch_size=2)  # one mask for every sample: any batch size
    per_sample = _model(tmp_path, [masked], {n: [2, *s[1:]] for n, s in four.items()},
                        {"m": np.ones((2, 1, 3, 3), bool)}, name="rows.onnx")
    with pytest.raises(ModelLoadError, match="'n'.*one row per sample"):
        load_onnx(per_sample, batch_size=3)


# ----------------------------------------------------------------- RotaryEmbedding
def _caches(positions: int, half: int):
    angles = np.arange(positions)[:, None] * (1e-1 ** (np.arange(half) / half))[None, :]
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


ROTARY_CASES = {
    # name: (input shape, attributes, rotated size (None: the head size))
    "4d": ([1, 2, 3, 4], {}, None),
    "4d_interleaved": ([1, 2, 3, 6], {"interleaved": 1}, None),
    "4d_partial": ([1, 2, 3, 8], {"rotary_embedding_dim": 4}, 4),
    "4d_partial_interleaved": ([1, 2, 3, 8], {"rotary_embedding_dim": 4, "interleaved": 1}, 4),
    "3d": ([1, 3, 8], {"num_heads": 2}, None),
    "3d_interleaved_partial": ([1, 3, 12], {"num_heads": 2, "interleaved": 1, "rotary_embedding_dim": 4}, 4),
}


@pytest.mark.parametrize("positions", [True, False], ids=["position_ids", "per_token_caches"])
@pytest.mark.parametrize("case", sorted(ROTARY_CASES))
def test_rotary_embedding_matches_onnxruntime(tmp_path, case, positions):
    shape, attributes, rotated = ROTARY_CASES[case]
    head = shape[-1] if len(shape) == 4 else shape[-1] // attributes["num_heads"]
    length = shape[2] if len(shape) == 4 else shape[1]
    cos, sin = _caches(7, (rotated or head) // 2)
    if positions:
        inits = {"c": cos, "s": sin, "p": np.array([[4, 0, 2]][:1], np.int64)[:, :length]}
    else:
        inits = {"c": cos[None, 1 : 1 + length], "s": sin[None, 1 : 1 + length]}
    nodes = [helper.make_node("RotaryEmbedding", ["x", "c", "s"] + (["p"] if positions else []), ["y"], name="n",
                              **attributes)]
    graph = _matches(_model(tmp_path, nodes, {"x": shape}, inits), {"x": shape}, batch_sizes=(None, 3))
    assert set(ops_of(graph)) <= {"aten.view.default", "aten.slice.Tensor", "aten.mul.Tensor", "aten.sub.Tensor",
                                  "aten.add.Tensor", "aten.cat.default", "aten.stack.default", "aten.clone.default"}


def test_rotary_embedding_refusals_name_the_node(tmp_path):
    cos, sin = _caches(3, 2)
    node = helper.make_node("RotaryEmbedding", ["x", "c", "s"], ["y"], name="n")
    _refused(_model(tmp_path, [node], {"x": [1, 3, 8]}, {"c": cos[None], "s": sin[None]}, name="heads.onnx"),
             "num_heads")
    _refused(_model(tmp_path, [node], {"x": [1, 2, 3, 6]}, {"c": cos[None], "s": sin[None]}, name="size.onnx"),
             "cos_cache")


# ----------------------------------------------------------------- RMSNormalization, Swish
@pytest.mark.parametrize("axis,scale_shape,epsilon", [(-1, [6], 1e-5), (-2, [4, 6], 1e-3), (1, [1, 6], 1e-6),
                                                      (-1, [1, 1, 6], 0.1), (2, [1, 4, 1], 1e-5)])
def test_rms_normalization_matches_onnxruntime(tmp_path, axis, scale_shape, epsilon):
    scale = np.random.default_rng(8).standard_normal(scale_shape).astype(np.float32)
    nodes = [helper.make_node("RMSNormalization", ["x", "w"], ["y"], axis=axis, epsilon=epsilon)]
    shape = [1, 3, 4, 6] if len(scale_shape) == 3 and axis == 2 else [1, 4, 6]
    graph = _matches(_model(tmp_path, nodes, {"x": shape}, {"w": scale}), {"x": shape}, batch_sizes=(None, 3))
    assert "aten.rms_norm.default" in ops_of(graph)


@pytest.mark.parametrize("alpha", [1.0, 0.5, 1.702, 0.0, -2.0])
def test_swish_matches_onnxruntime(tmp_path, alpha):
    nodes = [helper.make_node("Swish", ["x"], ["y"], alpha=alpha)]
    graph = _matches(_model(tmp_path, nodes, {"x": [1, 7]}, opset=24), {"x": [1, 7]}, batch_sizes=(None, 3))
    assert alpha == 0.0 or "aten.silu.default" in ops_of(graph)


# ----------------------------------------------------------------- end to end
def _block(tmp_path, causal_mask: np.ndarray | None, opset: int):
    """x [1, 4, 8] → RMSNormalization → q, k, v projections (4 query heads, 2 key heads of size 2) → RotaryEmbedding
    on q and k → Attention (causal, or the given mask) → output projection (→ Swish at opset 24), as torch's exporter
    writes a small LLaMA-style block."""
    rng = np.random.default_rng(9)
    weights = {name: (rng.standard_normal(shape) * 0.5).astype(np.float32)
               for name, shape in {"wq": [8, 8], "wk": [8, 4], "wv": [8, 4], "wo": [8, 3], "g": [8]}.items()}
    cos, sin = _caches(4, 1)
    inits = weights | {"c": cos, "s": sin, "p": np.arange(4, dtype=np.int64)[None]}
    attributes = {"is_causal": 1} if causal_mask is None else {}
    if causal_mask is not None:
        inits["m"] = causal_mask
    nodes = [
        helper.make_node("RMSNormalization", ["x", "g"], ["h"], epsilon=1e-6),
        helper.make_node("MatMul", ["h", "wq"], ["q"]),
        helper.make_node("MatMul", ["h", "wk"], ["k"]),
        helper.make_node("MatMul", ["h", "wv"], ["v"]),
        helper.make_node("RotaryEmbedding", ["q", "c", "s", "p"], ["qr"], num_heads=4),
        helper.make_node("RotaryEmbedding", ["k", "c", "s", "p"], ["kr"], num_heads=2),
        helper.make_node("Attention", ["qr", "kr", "v"] + (["m"] if causal_mask is not None else []), ["a"],
                         q_num_heads=4, kv_num_heads=2, **attributes),
        helper.make_node("MatMul", ["a", "wo"], ["o" if opset >= 24 else "y"]),
    ] + ([helper.make_node("Swish", ["o"], ["y"], alpha=0.8)] if opset >= 24 else [])
    return _model(tmp_path, nodes, {"x": [1, 4, 8]}, inits, opset=opset)


@pytest.mark.parametrize("mask,opset", [(None, 23), ("float", 24), ("bool", 23)])
def test_an_opset_23_block_is_bounded_soundly_and_explained(tmp_path, mask, opset):
    causal = {None: None, "float": _causal_mask(4, 4, float), "bool": _causal_mask(4, 4)}[mask]
    path = _block(tmp_path, causal, opset)
    graph = _matches(path, {"x": [1, 4, 8]}, batch_sizes=(None, 2))
    graph = load_onnx(path)
    x = torch.from_numpy(_feeds({"x": [1, 4, 8]}, None)["x"])
    assert_bounded_and_explained(graph, x, radius=0.05, samples=500)
    bounds = opwise.compute_bounds(graph, x, eps=0.05, method="crown")
    assert torch.isfinite(bounds.lower).all() and torch.isfinite(bounds.upper).all()
