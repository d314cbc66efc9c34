"""ONNX operators real models use, imported by decomposition into ATen ops with bound and LRP rules: GatherND,
ScatterND, ScatterElements, OneHot, Compress, Upsample, LRN, GroupNormalization, MeanVarianceNormalization,
LpNormalization, ReduceProd, ReduceLogSum, Trilu, EyeLike, CastLike, IsInf, IsNaN, Xor, Mod, Round, ArgMax / ArgMin,
Hardmax. Each matches onnxruntime (also at another batch size where the operator keeps samples apart), is bounded
soundly where its output is real-valued and continuous, and each refusal names the node."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import helper  # noqa: E402

from opwise.bounds import BoundedModel  # noqa: E402
from opwise.errors import ModelLoadError, OpwiseError  # noqa: E402
from opwise.rules.registry import coverage  # noqa: E402
from opwise.tracing.onnx import load_onnx  # noqa: E402
from tests.bounds.helpers import assert_sound  # noqa: E402
from tests.tracing.test_onnx_import import assert_matches, ops_of, run_onnxruntime, run_opwise, save_model  # noqa: E402
from tests.tracing.test_onnx_ops_more import _bounded_soundly  # noqa: E402


def _bounded_per_sample(graph, shape, eps=0.3):
    """As `_bounded_soundly`, for a graph whose output mixes the samples of its batch (e.g. it indexes axis 0): bounds
    at the declared batch, each sampled point run on its own."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    run = lambda z: torch.stack([graph(z[i : i + shape[0]]) for i in range(0, z.shape[0], shape[0])])  # noqa: E731
    assert_sound(run, x - eps, x + eps, methods=("ibp", "crown"), samples=200, attack=False,
                 bounded=BoundedModel(graph, x))


def _refused(path, *words):
    """load_onnx refuses the model with a ModelLoadError naming the node 'n' and each of `words`."""
    with pytest.raises(ModelLoadError) as error:
        load_onnx(path)
    for word in ("'n'", *words):
        assert word in str(error.value), str(error.value)


def _bounding_refused(graph, shape, *words):
    """Bounding the graph fails with an opwise error (not a traceback from inside torch) naming `words`."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    with pytest.raises(OpwiseError) as error:
        BoundedModel(graph, x).compute_bounds(x_lower=x - 0.1, x_upper=x + 0.1, method="ibp")
    for word in words:
        assert word in str(error.value), str(error.value)


# ----------------------------------------------------------------- GatherND, ScatterND, ScatterElements, ...
GATHER_ND_CASES = {
    # name: (data shape, indices, batch_dims)
    "rows": ([1, 3, 4], [[[0, 2], [0, 1]]], 0),
    "elements": ([1, 3, 4], [[[0, 2, 3], [0, 0, -1]]], 0),
    "batch_dims_1": ([1, 3, 4], [[[2], [0]]], 1),
    "batch_dims_2": ([1, 3, 4], [[[1], [3], [0]]], 2),
}


@pytest.mark.parametrize("case", sorted(GATHER_ND_CASES))
def test_gather_nd(tmp_path, case):
    shape, indices, batch_dims = GATHER_ND_CASES[case]
    nodes = [helper.make_node("GatherND", ["x", "i"], ["y"], batch_dims=batch_dims)]
    path = save_model(tmp_path, nodes, {"x": shape}, None, {"i": np.array(indices, dtype=np.int64)}, opset=13)
    graph = assert_matches(path, [shape], batch_sizes=(None, 3) if batch_dims else (None,))
    assert ops_of(graph) == ["aten.index.Tensor"]
    (_bounded_soundly if batch_dims else _bounded_per_sample)(graph, shape)
    if not batch_dims:
        with pytest.raises(ModelLoadError, match="GatherND.*axis 0"):
            load_onnx(path, batch_size=3)


def test_gather_nd_with_input_dependent_indices_is_refused(tmp_path):
    nodes = [helper.make_node("Cast", ["x"], ["i"], to=7), helper.make_node("GatherND", ["x", "i"], ["y"], name="n")]
    _refused(save_model(tmp_path, nodes, {"x": [2, 1]}, None, opset=13), "indices depend on the model input")


@pytest.mark.parametrize("reduction,opset", [("none", 13), ("add", 16), ("mul", 16), ("max", 18), ("min", 18)])
def test_scatter_nd(tmp_path, reduction, opset):
    rng = np.random.default_rng(0)
    indices = np.array([[0, 1], [0, -1], [0, 1]] if reduction != "none" else [[0, 1], [0, -1]], dtype=np.int64)
    updates = rng.standard_normal([len(indices), 4]).astype(np.float32)
    attributes = {} if reduction == "none" else {"reduction": reduction}
    nodes = [helper.make_node("ScatterND", ["x", "i", "u"], ["y"], **attributes)]
    path = save_model(tmp_path, nodes, {"x": [1, 3, 4]}, None, {"i": indices, "u": updates}, opset=opset)
    graph = assert_matches(path, [[1, 3, 4]])
    if reduction in ("none", "add"):
        assert ops_of(graph) == ["aten.index_put.default"]
        _bounded_per_sample(graph, [1, 3, 4])
    else:
        _bounding_refused(graph, [1, 3, 4], "scatter_reduce")
    # input-dependent updates written into a constant (indices [1, n, 2], updates [1, n, 4]: sample 0 stays sample 0)
    nodes = [helper.make_node("ScatterND", ["d", "i", "x"], ["y"], **attributes)]
    data = rng.standard_normal([1, 3, 4]).astype(np.float32)
    path = save_model(tmp_path, nodes, {"x": [1, len(indices), 4]}, None, {"i": indices[None], "d": data}, opset=opset,
                      name="updates.onnx")
    graph = assert_matches(path, [[1, len(indices), 4]])
    if reduction in ("none", "add"):
        _bounded_per_sample(graph, [1, len(indices), 4])


def test_scatter_nd_refusals(tmp_path):
    rng = np.random.default_rng(0)
    inits = {"i": np.array([[0, 1]], dtype=np.int64), "u": rng.standard_normal([1, 4]).astype(np.float32)}
    node = helper.make_node("ScatterND", ["x", "i", "u"], ["y"], name="n")
    path = save_model(tmp_path, [node], {"x": [1, 3, 4]}, None, inits, opset=13)
    with pytest.raises(ModelLoadError, match="'n'.*axis 0"):
        load_onnx(path, batch_size=2)
    nodes = [helper.make_node("Cast", ["x"], ["j"], to=7),
             helper.make_node("ScatterND", ["x", "j", "u"], ["y"], name="n")]
    _refused(save_model(tmp_path, nodes, {"x": [1, 2]}, None, {"u": inits["u"][:, :1]}, opset=13, name="dynamic.onnx"),
             "indices depend on the model input")


@pytest.mark.parametrize("op,reduction,opset", [("ScatterElements", "none", 13), ("ScatterElements", "add", 16),
                                                ("ScatterElements", "mul", 16), ("ScatterElements", "max", 18),
                                                ("ScatterElements", "min", 18), ("Scatter", "none", 9)])
def test_scatter_elements(tmp_path, op, reduction, opset):
    rng = np.random.default_rng(1)
    indices = np.array([[[1, 0, 3], [2, 2, 0], [-1, 0, 1]]], dtype=np.int64)  # [1, 3, 3] along axis 2 of [1, 3, 4]
    if reduction == "none":
        indices = np.array([[[1, 0, 3], [2, 1, 0], [-1, 0, 1]]], dtype=np.int64)  # no repeated target in a row
    attributes = {} if reduction == "none" else {"reduction": reduction}
    nodes = [helper.make_node(op, ["x", "i", "u"], ["y"], axis=2, **attributes)]
    inits = {"i": indices, "u": rng.standard_normal(indices.shape).astype(np.float32)}
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 3, 4]}, None, inits, opset=opset), [[1, 3, 4]],
                           batch_sizes=(None, 3))
    if reduction in ("none", "add"):
        _bounded_soundly(graph, [1, 3, 4])
    else:
        _bounding_refused(graph, [1, 3, 4], "scatter_reduce")
    # input-dependent updates
    nodes = [helper.make_node(op, ["d", "i", "x"], ["y"], axis=2, **attributes)]
    inits = {"i": indices, "d": rng.standard_normal([1, 3, 4]).astype(np.float32)}
    path = save_model(tmp_path, nodes, {"x": [1, 3, 3]}, None, inits, opset=opset, name="updates.onnx")
    graph = assert_matches(path, [[1, 3, 3]], batch_sizes=(None, 3))
    if reduction in ("none", "add"):
        _bounded_soundly(graph, [1, 3, 3])


def test_scatter_elements_refusals(tmp_path):
    inits = {"i": np.zeros([1, 2], dtype=np.int64), "u": np.ones([1, 2], dtype=np.float32)}
    node = helper.make_node("ScatterElements", ["x", "i", "u"], ["y"], name="n", reduction="mean")
    _refused(save_model(tmp_path, [node], {"x": [1, 3]}, None, inits, opset=18), "reduction 'mean'",
             "none, add, mul, max and min")
    node = helper.make_node("ScatterElements", ["x", "i", "u"], ["y"], name="n", axis=0)
    with pytest.raises(ModelLoadError, match="'n'.*axis 0"):
        load_onnx(save_model(tmp_path, [node], {"x": [1, 3]}, None, inits, opset=13, name="axis0.onnx"), batch_size=2)
    nodes = [helper.make_node("Cast", ["x"], ["j"], to=7),
             helper.make_node("ScatterElements", ["x", "j", "x"], ["y"], name="n", axis=1)]
    _refused(save_model(tmp_path, nodes, {"x": [1, 2]}, None, opset=13, name="dynamic.onnx"),
             "indices depend on the model input", "only constant indices")


def test_one_hot(tmp_path):
    indices = np.array([[0, 3, -1, 5, -4]], dtype=np.int64)  # 5 is outside [-4, 4): a row of the off value
    inits = {"i": indices, "d": np.array(4, dtype=np.int64), "v": np.array([-1.0, 2.0], dtype=np.float32)}
    nodes = [helper.make_node("OneHot", ["i", "d", "v"], ["h"], axis=1),  # [1, 4, 5]
             helper.make_node("Mul", ["x", "h"], ["y"])]
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 4, 5]}, None, inits, opset=11), [[1, 4, 5]],
                           batch_sizes=(None, 3))
    _bounded_soundly(graph, [1, 4, 5])
    # one-hot rows of input-dependent indices (an integer-valued result): imported, and bounded by the comparisons'
    # interval rules (comparison.py; it was refused), negative indices (counted from the end) included
    nodes = [helper.make_node("Cast", ["x"], ["i"], to=7), helper.make_node("OneHot", ["i", "d", "v"], ["y"])]
    path = save_model(tmp_path, nodes, {"x": [2, 3]}, None, {k: inits[k] for k in "dv"}, opset=11, name="dyn.onnx")
    x = np.array([[0.0, 1.5, -1.0], [3.0, 7.0, -5.0]], dtype=np.float32)
    graph = load_onnx(path)
    np.testing.assert_array_equal(run_opwise(graph, [x]), run_onnxruntime(path, [x]))
    center = torch.from_numpy(x)
    run = lambda z: graph.for_batch(z.shape[0])(z).float()  # noqa: E731
    for eps in (0.3, 2.0):
        assert_sound(run, center - eps, center + eps, methods=("ibp", "crown"), samples=500, attack=False,
                     bounded=BoundedModel(graph, center))


def test_compress(tmp_path):
    inits = {"c": np.array([True, False, True], dtype=bool)}
    nodes = [helper.make_node("Compress", ["x", "c"], ["y"], axis=-1)]
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 2, 4]}, None, inits, opset=11), [[1, 2, 4]],
                           batch_sizes=(None, 3))
    assert ops_of(graph) == ["aten.index_select.default"]
    _bounded_soundly(graph, [1, 2, 4])
    nodes = [helper.make_node("Compress", ["x", "c"], ["y"])]  # flattened
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 4]}, None, inits, opset=11, name="flat.onnx"),
                           [[1, 4]])
    node = helper.make_node("Compress", ["x", "c"], ["y"], name="n", axis=0)
    with pytest.raises(ModelLoadError, match="'n'.*axis 0"):
        load_onnx(save_model(tmp_path, [node], {"x": [3, 2]}, None, inits, opset=11, name="axis0.onnx"), batch_size=2)
    nodes = [helper.make_node("Greater", ["x", "z"], ["c"]), helper.make_node("Compress", ["x", "c"], ["y"], name="n")]
    _refused(save_model(tmp_path, nodes, {"x": [1, 3]}, None, {"z": np.zeros(1, np.float32)}, opset=11,
                        name="dynamic.onnx"), "condition depend on the model input")


# ----------------------------------------------------------------- Upsample
@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("opset", [7, 9])
def test_upsample(tmp_path, mode, opset):
    scales = [1.0, 1.0, 2.0, 1.5]
    if opset == 7:
        nodes, inits = [helper.make_node("Upsample", ["x"], ["y"], mode=mode, scales=scales)], {}
    else:
        nodes, inits = [helper.make_node("Upsample", ["x", "s"], ["y"], mode=mode)], {"s": np.array(scales, np.float32)}
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 2, 3, 4]}, None, inits, opset=opset), [[1, 2, 3, 4]],
                           batch_sizes=(None, 3))
    if mode == "nearest":
        assert ops_of(graph) == ["aten.upsample_nearest2d.vec"]
    else:
        assert not any("upsample" in op for op in ops_of(graph))
    _bounded_soundly(graph, [1, 2, 3, 4])


def test_resize_with_sizes_imports_at_another_batch_size(tmp_path):
    """sizes name the declared batch; at another batch size they mean that one (samples are resized apart)."""
    nodes = [helper.make_node("Resize", ["x", "", "", "z"], ["y"], mode="nearest", nearest_mode="floor",
                              coordinate_transformation_mode="asymmetric")]
    inits = {"z": np.array([1, 2, 6, 4], np.int64)}
    assert_matches(save_model(tmp_path, nodes, {"x": [1, 2, 3, 2]}, None, inits, opset=13), [[1, 2, 3, 2]],
                   batch_sizes=(None, 3))


def test_upsample_refusals(tmp_path):
    node = helper.make_node("Upsample", ["x"], ["y"], name="n", mode="cubic", scales=[1.0, 1.0, 2.0, 2.0])
    _refused(save_model(tmp_path, [node], {"x": [1, 1, 2, 2]}, None, opset=7), "Upsample", "mode 'cubic'",
             "opwise imports nearest")
    node = helper.make_node("Upsample", ["x"], ["y"], name="n", scales=[2.0, 1.0, 2.0, 2.0])
    _refused(save_model(tmp_path, [node], {"x": [1, 1, 2, 2]}, None, opset=7, name="batch.onnx"),
             "change the batch or channel axes")


# ----------------------------------------------------------------- normalizations
@pytest.mark.parametrize("size", [3, 5])
def test_local_response_normalization(tmp_path, size):
    nodes = [helper.make_node("LRN", ["x"], ["y"], size=size, alpha=0.5, beta=0.75, bias=2.0)]
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 5, 2, 3]}, None, opset=13), [[1, 5, 2, 3]],
                           batch_sizes=(None, 3))
    assert "aten.avg_pool2d.default" in ops_of(graph)
    _bounded_soundly(graph, [1, 5, 2, 3], eps=0.1)


def test_local_response_normalization_with_an_even_size(tmp_path):
    """onnxruntime refuses even sizes; ONNX defines them (the window reaches one channel further up than down)."""
    nodes = [helper.make_node("LRN", ["x"], ["y"], size=4, alpha=0.3, beta=0.5, bias=1.5)]
    graph = load_onnx(save_model(tmp_path, nodes, {"x": [2, 5, 3]}, None, opset=13))
    x = np.random.default_rng(0).standard_normal([2, 5, 3]).astype(np.float32)
    padded = np.pad(x**2, [(0, 0), (1, 2), (0, 0)])
    window = sum(padded[:, i : i + 5] for i in range(4))
    np.testing.assert_allclose(run_opwise(graph, [x]), x / (1.5 + 0.3 / 4 * window) ** 0.5, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("opset", [18, 21])
def test_group_normalization(tmp_path, opset):
    rng = np.random.default_rng(2)
    count = 2 if opset == 18 else 4  # per group, then per channel
    inits = {"s": rng.standard_normal(count).astype(np.float32), "b": rng.standard_normal(count).astype(np.float32)}
    nodes = [helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=2, epsilon=1e-3)]
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 4, 2, 3]}, None, inits, opset=opset),
                           [[1, 4, 2, 3]], batch_sizes=(None, 3))
    assert "aten.native_group_norm.default" in ops_of(graph)
    _bounded_soundly(graph, [1, 4, 2, 3], eps=0.05)
    nodes = [helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], name="n", num_groups=3)]
    _refused(save_model(tmp_path, nodes, {"x": [1, 4, 2, 3]}, None, inits, opset=opset, name="bad.onnx"),
             "num_groups 3")


@pytest.mark.parametrize("axes", [None, [2, 3], [1]])
def test_mean_variance_normalization(tmp_path, axes):
    attributes = {} if axes is None else {"axes": axes}
    nodes = [helper.make_node("MeanVarianceNormalization", ["x"], ["y"], **attributes)]
    path = save_model(tmp_path, nodes, {"x": [1, 3, 2, 3]}, None, opset=13)
    graph = assert_matches(path, [[1, 3, 2, 3]], batch_sizes=(None,) if axes is None else (None, 3))
    (_bounded_per_sample if axes is None else _bounded_soundly)(graph, [1, 3, 2, 3], eps=0.02)
    if axes is None:  # the default axes [0, 2, 3] normalize across the batch
        with pytest.raises(ModelLoadError, match="MeanVarianceNormalization.*axis 0"):
            load_onnx(path, batch_size=2)


@pytest.mark.parametrize("p", [1, 2])
def test_lp_normalization(tmp_path, p):
    nodes = [helper.make_node("LpNormalization", ["x"], ["y"], p=p, axis=1)]
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 4, 2]}, None, opset=13), [[1, 4, 2]],
                           batch_sizes=(None, 3))
    _bounded_soundly(graph, [1, 4, 2], eps=0.02)
    nodes = [helper.make_node("LpNormalization", ["x"], ["y"], name="n", p=3)]
    _refused(save_model(tmp_path, nodes, {"x": [1, 4]}, None, opset=13, name="p3.onnx"), "p=3", "p 1 and 2")


# ----------------------------------------------------------------- reductions and arg-reductions
@pytest.mark.parametrize("op", ["ReduceProd", "ReduceLogSum"])
@pytest.mark.parametrize("opset,axes,keepdims", [(13, [1, 2], 1), (13, [-1], 0), (18, [2], 1), (18, None, 1)])
def test_product_and_log_sum_reductions(tmp_path, op, opset, axes, keepdims):
    if opset >= 18:
        names, inits = (["x", "axes"], {"axes": np.array(axes, np.int64)}) if axes else (["x"], {})
        nodes = [helper.make_node(op, names, ["y"], keepdims=keepdims)]
    else:
        nodes, inits = [helper.make_node(op, ["x"], ["y"], axes=axes, keepdims=keepdims)], {}
    if op == "ReduceLogSum":  # log of a positive sum: the input squared and shifted first
        nodes = [helper.make_node("Mul", ["x", "x"], ["q"]), helper.make_node("Add", ["q", "one"], ["p"])] + nodes
        nodes[-1].input[0] = "p"
        inits["one"] = np.array(1.0, np.float32)
    path = save_model(tmp_path, nodes, {"x": [1, 3, 5]}, None, inits, opset=opset)
    graph = assert_matches(path, [[1, 3, 5]], batch_sizes=(None, 2) if axes else (None,))
    assert not any("prod" in o for o in ops_of(graph))
    if axes:
        _bounded_soundly(graph, [1, 3, 5], eps=0.1)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("keepdims,last", [(1, 0), (0, 1)])
def test_arg_max_and_min(tmp_path, op, keepdims, last):
    """Integer indices: the forward value matches (ties included), and the index, cast to float and fed into
    further arithmetic, is bounded soundly (bounds/transfers/position.py)."""
    nodes = [helper.make_node(op, ["x"], ["i"], axis=-1, keepdims=keepdims, select_last_index=last),
             helper.make_node("Cast", ["i"], ["f"], to=1), helper.make_node("Mul", ["f", "two"], ["g"]),
             helper.make_node("ReduceSum", ["x"], ["s"], axes=[-1], keepdims=keepdims),
             helper.make_node("Add", ["g", "s"], ["y"])]
    path = save_model(tmp_path, nodes, {"x": [1, 3, 4]}, None, {"two": np.array(2.0, np.float32)}, opset=12)
    graph = assert_matches(path, [[1, 3, 4]], batch_sizes=(None, 3))
    x = np.array([[[1, 3, 3, 0], [2, 2, 2, 2], [0, -1, 5, -1]]], np.float32)  # ties
    np.testing.assert_array_equal(run_opwise(load_onnx(path), [x]), run_onnxruntime(path, [x]))
    for eps in (0.05, 0.5):
        _bounded_soundly(graph, [1, 3, 4], eps=eps)
    tied = torch.from_numpy(x)
    bounds = BoundedModel(graph, tied).compute_bounds(x_lower=tied, x_upper=tied, method="crown")
    assert torch.equal(bounds.lower, bounds.upper) and torch.allclose(bounds.lower, graph(tied).reshape(1, -1))  # a point: exact


@pytest.mark.parametrize("opset,axis", [(11, 1), (13, -1), (13, 1)])
def test_hardmax(tmp_path, opset, axis):
    nodes = [helper.make_node("Hardmax", ["x"], ["y"], axis=axis)]
    path = save_model(tmp_path, nodes, {"x": [1, 3, 4]}, None, opset=opset)
    graph = assert_matches(path, [[1, 3, 4]], batch_sizes=(None, 3))
    x = np.array([[[1, 3, 3, 0], [2, 2, 2, 2], [0, -1, 5, -1]]], np.float32)  # ties: the first maximum
    np.testing.assert_array_equal(run_opwise(load_onnx(path), [x]), run_onnxruntime(path, [x]))
    # argmax is bounded, and so is its one-hot comparison (it was refused: comparison.py); a point is exact
    for eps in (0.05, 0.5):
        _bounded_soundly(graph, [1, 3, 4], eps=eps)
    tied = torch.from_numpy(x)
    bounds = BoundedModel(graph, tied).compute_bounds(x_lower=tied, x_upper=tied, method="crown")
    assert torch.equal(bounds.lower, bounds.upper) and torch.allclose(bounds.lower, graph(tied).reshape(1, -1))


# ----------------------------------------------------------------- elementwise, masks, casts, constants
@pytest.mark.parametrize("upper,k", [(1, None), (0, None), (1, 1), (0, -1)])
def test_trilu(tmp_path, upper, k):
    names, inits = (["x"], {}) if k is None else (["x", "k"], {"k": np.array(k, np.int64)})
    nodes = [helper.make_node("Trilu", names, ["y"], upper=upper)]
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 3, 4]}, None, inits, opset=14), [[1, 3, 4]],
                           batch_sizes=(None, 3))
    _bounded_soundly(graph, [1, 3, 4])


def test_eye_like(tmp_path):
    nodes = [helper.make_node("EyeLike", ["x"], ["e"], k=1), helper.make_node("Mul", ["x", "e"], ["y"])]
    path = save_model(tmp_path, nodes, {"x": [3, 4]}, None, opset=13)
    graph = assert_matches(path, [[3, 4]])
    _bounded_per_sample(graph, [3, 4])
    with pytest.raises(ModelLoadError, match="EyeLike.*axis 0"):
        load_onnx(path, batch_size=2)
    nodes = [helper.make_node("EyeLike", ["c"], ["e"], dtype=1), helper.make_node("Add", ["x", "e"], ["y"])]
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 2, 3]}, None, {"c": np.zeros([2, 3], np.int64)},
                                      opset=13, name="constant.onnx"), [[1, 2, 3]], batch_sizes=(None, 3))
    _bounded_soundly(graph, [1, 2, 3])


def test_cast_like(tmp_path):
    nodes = [helper.make_node("CastLike", ["x", "double"], ["h"]), helper.make_node("CastLike", ["h", "one"], ["f"]),
             helper.make_node("Mul", ["f", "one"], ["y"])]
    inits = {"double": np.zeros(1, np.float64), "one": np.array(2.0, np.float32)}
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 4]}, None, inits, opset=15), [[1, 4]],
                           batch_sizes=(None, 3))
    _bounded_soundly(graph, [1, 4])
    nodes = [helper.make_node("CastLike", ["x", "int"], ["i"]), helper.make_node("Cast", ["i"], ["y"], to=1)]
    path = save_model(tmp_path, nodes, {"x": [1, 4]}, None, {"int": np.zeros(1, np.int32)}, opset=15, name="i.onnx")
    x = np.array([[-1.7, -0.2, 0.6, 2.9]], np.float32)
    np.testing.assert_array_equal(run_opwise(load_onnx(path), [x]), run_onnxruntime(path, [x]))


def _logic_model(tmp_path, op_nodes, opset, name="model.onnx", inits=None):
    """x -> op_nodes (reading x, writing 'r') -> Cast to float -> y."""
    nodes = op_nodes + [helper.make_node("Cast", ["r"], ["y"], to=1)]
    return save_model(tmp_path, nodes, {"x": [1, 6]}, None, inits or {}, opset=opset, name=name)


def test_is_inf_is_nan_xor_and_round(tmp_path):
    x = np.array([[np.inf, -np.inf, np.nan, 0.5, -2.5, 1.5]], np.float32)
    detections = ({}, {"detect_negative": 0}, {"detect_positive": 0}, {"detect_positive": 0, "detect_negative": 0})
    for attributes in detections:
        path = _logic_model(tmp_path, [helper.make_node("IsInf", ["x"], ["r"], **attributes)], 10)
        np.testing.assert_array_equal(run_opwise(load_onnx(path), [x]), run_onnxruntime(path, [x]))
    path = _logic_model(tmp_path, [helper.make_node("IsNaN", ["x"], ["r"])], 13)
    np.testing.assert_array_equal(run_opwise(load_onnx(path), [x]), run_onnxruntime(path, [x]))
    nodes = [helper.make_node("Greater", ["x", "zero"], ["a"]), helper.make_node("Less", ["x", "one"], ["b"]),
             helper.make_node("Xor", ["a", "b"], ["r"])]
    inits = {"zero": np.array(0.0, np.float32), "one": np.array(1.0, np.float32)}
    path = _logic_model(tmp_path, nodes, 13, inits=inits)
    graph = assert_matches(path, [[1, 6]], batch_sizes=(None, 3))
    for eps in (0.3, 1.5):  # Greater, Less and Xor of bounded values: decided where the intervals decide (comparison.py)
        _bounded_soundly(graph, [1, 6], eps=eps)
    path = save_model(tmp_path, [helper.make_node("Round", ["x"], ["y"])], {"x": [1, 6]}, None, opset=13)
    np.testing.assert_array_equal(run_opwise(load_onnx(path), [x]), run_onnxruntime(path, [x]))  # halves to even
    graph = assert_matches(path, [[1, 6]], batch_sizes=(None, 3))
    _bounded_soundly(graph, [1, 6], eps=2.0)  # across several steps
    _bounded_soundly(graph, [1, 6], eps=0.01)


def test_mod(tmp_path):
    inits = {"d": np.array([3.0, -3.0, 2.5, -2.5, 1.0, 4.0], np.float32)}
    nodes = [helper.make_node("Mod", ["x", "d"], ["y"], fmod=1)]
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 6]}, None, inits, opset=13), [[1, 6]],
                           batch_sizes=(None, 3))
    for eps in (0.1, 3.0):  # within one period for most elements, then across several (bounds/transfers/modulo.py)
        _bounded_soundly(graph, [1, 6], eps=eps)
    for fmod in (0, 1):  # integers: the divisor's sign, then the dividend's
        nodes = [helper.make_node("Mul", ["x", "ten"], ["s"]), helper.make_node("Cast", ["s"], ["i"], to=6),
                 helper.make_node("Mod", ["i", "d"], ["r"], fmod=fmod)]
        inits = {"ten": np.array(10.0, np.float32), "d": np.array([3, -3, 4, -4, 7, 1], np.int32)}
        path = _logic_model(tmp_path, nodes, 13, name=f"int{fmod}.onnx", inits=inits)
        graph = assert_matches(path, [[1, 6]], batch_sizes=(None, 3))
        for eps in (0.01, 0.5):
            _bounded_soundly(graph, [1, 6], eps=eps)
    nodes = [helper.make_node("Mod", ["d", "x"], ["y"], fmod=1, name="n")]  # the divisor is the input
    graph = load_onnx(save_model(tmp_path, nodes, {"x": [1, 6]}, None, inits | {"d": np.ones(6, np.float32)}, opset=13,
                                 name="divisor.onnx"))
    _bounding_refused(graph, [1, 6], "aten.fmod", "divisor depends on the bounded input")
    nodes = [helper.make_node("Mod", ["x", "d"], ["y"], name="n")]
    _refused(save_model(tmp_path, nodes, {"x": [1, 6]}, None, {"d": np.ones(6, np.float32)}, opset=13, name="f0.onnx"),
             "fmod=0 on floating-point inputs")


def test_real_valued_imports_are_explained(tmp_path):
    """Every input-dependent op the real-valued converters emit has an LRP rule (as it has a bound rule)."""
    cases = [
        ([helper.make_node("GatherND", ["x", "i"], ["y"], batch_dims=1)], [1, 3, 4],
         {"i": np.array([[[1]]], np.int64)}, 13),
        ([helper.make_node("ScatterND", ["x", "i", "u"], ["y"])], [1, 3, 4],
         {"i": np.array([[0, 1]], np.int64), "u": np.ones([1, 4], np.float32)}, 13),
        ([helper.make_node("Upsample", ["x"], ["y"], mode="linear", scales=[1.0, 1.0, 2.0, 2.0])], [1, 1, 2, 2], {}, 7),
        ([helper.make_node("LRN", ["x"], ["y"], size=3)], [1, 4, 2, 2], {}, 13),
        ([helper.make_node("MeanVarianceNormalization", ["x"], ["y"], axes=[2, 3])], [1, 4, 2, 2], {}, 13),
        ([helper.make_node("LpNormalization", ["x"], ["y"])], [1, 4], {}, 13),
        ([helper.make_node("ReduceProd", ["x"], ["y"], axes=[1])], [1, 5], {}, 13),
        ([helper.make_node("Trilu", ["x"], ["y"])], [1, 3, 3], {}, 14),
    ]
    for index, (nodes, shape, inits, opset) in enumerate(cases):
        graph = load_onnx(save_model(tmp_path, nodes, {"x": shape}, None, inits, opset=opset, name=f"{index}.onnx"))
        assert not coverage(graph).missing, (nodes[0].op_type, str(coverage(graph)))
