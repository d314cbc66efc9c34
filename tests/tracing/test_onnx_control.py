"""ONNX If with a condition known at import time (e.g. from shapes, as torch.onnx.export writes for
nn.LocalResponseNorm) is inlined; one that depends on the input is refused with a clear message."""

from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from opwise.errors import ModelLoadError  # noqa: E402
from opwise.tracing.onnx import load_onnx  # noqa: E402
from tests.tracing.test_onnx_import import assert_matches, ops_of, save_model, weights  # noqa: E402
from tests.tracing.test_onnx_ops_more import _bounded_soundly  # noqa: E402


def _branch(name, nodes, output, shape):
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(output, TensorProto.FLOAT, shape)])


def _squeeze_if(dim_size_test: int):
    """If(Shape(x)[1] == dim_size_test, Squeeze(x, 1), Identity(x)) then Relu, as torch exports squeeze."""
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    then_branch = _branch("then", [helper.make_node("Constant", [], ["a"], value=axes),
                                   helper.make_node("Squeeze", ["x", "a"], ["s"])], "s", None)
    else_branch = _branch("else", [helper.make_node("Identity", ["x"], ["i"])], "i", None)
    return [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Constant", [], ["one"], value=helper.make_tensor("one", TensorProto.INT64, [], [1])),
        helper.make_node("Gather", ["shape", "one"], ["size"], axis=0),
        helper.make_node("Constant", [], ["k"], value=helper.make_tensor("k", TensorProto.INT64, [], [dim_size_test])),
        helper.make_node("Equal", ["size", "k"], ["cond"]),
        helper.make_node("If", ["cond"], ["chosen"], then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Relu", ["chosen"], ["y"]),
    ]


@pytest.mark.parametrize("taken", ["then", "else"])
def test_if_with_a_shape_condition_inlines_the_chosen_branch(tmp_path, taken):
    output = [None, 4] if taken == "then" else [None, 1, 4]
    path = save_model(tmp_path, _squeeze_if(1 if taken == "then" else 2), {"x": [None, 1, 4]}, output)
    graph = assert_matches(path, [[2, 1, 4]], batch_sizes=(None, 3))
    assert "aten.relu.default" in ops_of(graph)
    assert (graph.info(graph.output_node.args[0]).shape[1:] == (4,)) == (taken == "then")


def test_if_branch_reads_outer_values_and_its_own_initializers(tmp_path):
    """A branch may read outer values by name and hold initializers; the outer Gemm's bias fusion still sees the
    branch's read of the MatMul result (a use), so the result is exact."""
    rng = np.random.default_rng(0)
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [3], rng.standard_normal(3).astype(np.float32).tolist())
    then_branch = helper.make_graph([helper.make_node("Add", ["m", "bias"], ["t"])], "then", [],
                                    [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)], [bias])
    else_branch = _branch("else", [helper.make_node("Identity", ["m"], ["e"])], "e", None)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])),
        helper.make_node("If", ["c"], ["chosen"], then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Add", ["chosen", "m"], ["y"]),
    ]
    path = save_model(tmp_path, nodes, {"x": [2, 4]}, [2, 3], {"w": rng.standard_normal((4, 3)).astype(np.float32)})
    assert_matches(path, [[2, 4]])


def test_if_on_an_input_dependent_condition_is_refused(tmp_path):
    nodes = _squeeze_if(1)
    nodes[4] = helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0)
    nodes.insert(5, helper.make_node("Greater", ["total", "k"], ["cond"]))
    path = save_model(tmp_path, nodes, {"x": [2, 1, 4]}, [2, 4])
    with pytest.raises(ModelLoadError, match="condition that depends on the model input"):
        load_onnx(path)


def test_torch_exported_local_response_norm_imports(tmp_path):
    """torch.onnx.export writes nn.LocalResponseNorm with an If (squeeze of a size it cannot prove is 1)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.LocalResponseNorm(3), torch.nn.ReLU()).eval()
    x = torch.rand(1, 2, 6, 6)
    path = tmp_path / "lrn.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    assert "If" in [node.op_type for node in onnx.load(str(path)).graph.node]
    graph = load_onnx(path, batch_size=2)
    x2 = torch.rand(2, 2, 6, 6)
    torch.testing.assert_close(graph(x2), model(x2).detach(), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- Scan and Loop, unrolled
F, H, T = 3, 4, 5


def _value(name, elem=TensorProto.FLOAT, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


def _constant(name, value, elem=TensorProto.FLOAT):
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, elem, [], [value]))


def _rnn_body():
    """(h, x_t) -> (h' = tanh(x_t·W + h·R + b), h'): reads W, R and b from the outer graph."""
    nodes = [
        helper.make_node("MatMul", ["x_t", "W"], ["xw"]),
        helper.make_node("MatMul", ["h", "R"], ["hr"]),
        helper.make_node("Add", ["xw", "hr"], ["pre0"]),
        helper.make_node("Add", ["pre0", "b"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["h_new"]),
        helper.make_node("Identity", ["h_new"], ["out"]),
    ]
    return helper.make_graph(nodes, "rnn", [_value("h"), _value("x_t")], [_value("h_new"), _value("out")])


def _rnn_weights(seed=0):
    rng = np.random.default_rng(seed)
    return {name: (rng.standard_normal(shape) * 0.6).astype(np.float32)
            for name, shape in {"W": (F, H), "R": (H, H), "b": (H,), "W0": (F, H)}.items()}


def _initial_state(source="x"):
    """h0 = tanh(mean over the sequence of x · W0): an input-dependent [batch, H] initial state."""
    return [helper.make_node("ReduceMean", [source], ["mean"], axes=[1], keepdims=0),
            helper.make_node("MatMul", ["mean", "W0"], ["h0w"]),
            helper.make_node("Tanh", ["h0w"], ["h0"])]


def _scan_rnn(tmp_path, reverse: bool, output: str, transposed: bool = False, batch=None):
    direction = [int(reverse)]
    nodes = [helper.make_node("Transpose", ["x"], ["seq_x"], perm=[1, 0, 2])] if transposed else []
    nodes += _initial_state()
    axis = 0 if transposed else 1
    nodes.append(helper.make_node("Scan", ["h0", "seq_x" if transposed else "x"], ["h_last", "hs"], name="rnn_scan",
                                  body=_rnn_body(), num_scan_inputs=1, scan_input_axes=[axis],
                                  scan_input_directions=direction, scan_output_axes=[axis],
                                  scan_output_directions=direction))
    if output == "final":
        nodes.append(helper.make_node("Identity", ["h_last"], ["y"]))
        shape = [batch, H]
    elif transposed:
        nodes.append(helper.make_node("Transpose", ["hs"], ["y"], perm=[1, 0, 2]))
        shape = [batch, T, H]
    else:
        nodes.append(helper.make_node("Identity", ["hs"], ["y"]))
        shape = [batch, T, H]
    return save_model(tmp_path, nodes, {"x": [batch, T, F]}, shape, _rnn_weights())


@pytest.mark.parametrize("output", ["final", "sequence"])
@pytest.mark.parametrize("reverse", [False, True])
def test_scan_rnn_along_the_sequence_axis_matches_and_is_bounded(tmp_path, reverse, output):
    path = _scan_rnn(tmp_path, reverse, output)
    graph = assert_matches(path, [[2, T, F]], batch_sizes=(None, 3))
    ops = ops_of(graph)
    assert ops.count("aten.tanh.default") == T + 1 and "aten.select.int" in ops
    assert ("aten.stack.default" in ops) == (output == "sequence")
    _bounded_soundly(load_onnx(path), [1, T, F], eps=0.2)


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_along_axis_0_between_transposes_imports_at_the_declared_batch(tmp_path, reverse):
    path = _scan_rnn(tmp_path, reverse, "sequence", transposed=True, batch=2)
    assert_matches(path, [[2, T, F]])
    with pytest.raises(ModelLoadError, match="batch_size=3"):
        load_onnx(path, batch_size=3)


def _two_input_scan(tmp_path, state):
    """acc' = acc + a_t * c_t with two scan inputs (x along axis 1 reversed, a constant along axis 0), outputs
    relu(acc') stacked along the last axis, in reverse order."""
    rng = np.random.default_rng(1)
    body = helper.make_graph(
        [helper.make_node("Mul", ["a_t", "c_t"], ["prod"]),
         helper.make_node("Add", ["acc", "prod"], ["acc_new"]),
         helper.make_node("Relu", ["acc_new"], ["r"])],
        "body", [_value("acc"), _value("a_t"), _value("c_t")], [_value("acc_new"), _value("r")])
    nodes = [helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1], keepdims=0),
             helper.make_node("Scan", [state, "x", "c"], ["acc", "rs"], name="two_inputs", body=body,
                              num_scan_inputs=2, scan_input_axes=[1, 0], scan_input_directions=[1, 0],
                              scan_output_axes=[-1], scan_output_directions=[1]),
             helper.make_node("Add", ["rs", "k"], ["y"])]
    inits = {"acc0": np.zeros((1, 3), np.float32), "c": weights(rng, T, 1, 3), "k": weights(rng, 1, 3, T)}
    return save_model(tmp_path, nodes, {"x": [None, T, 3]}, [None, 3, T], inits)


def test_scan_with_two_scan_inputs_and_mixed_axes(tmp_path):
    assert_matches(_two_input_scan(tmp_path, "mean"), [[2, T, 3]], batch_sizes=(None, 3))


def test_explain_a_scan_rnn(tmp_path):
    import opwise

    graph = load_onnx(_scan_rnn(tmp_path, False, "final"))
    x = torch.randn(1, T, F, generator=torch.Generator().manual_seed(0))
    relevance = opwise.explain(graph, x, target=1).relevance
    assert relevance.shape == x.shape and torch.isfinite(relevance).all()


def _loop_body(condition_nodes=None, grow=False):
    """(i, cond, y) -> (cond', y' = y·0.5 + tanh(y·W + x) + 0.1·i, y'): reads x and W from the outer graph."""
    nodes = [
        _constant("half", 0.5), _constant("tenth", 0.1),
        helper.make_node("MatMul", ["y_in", "W"], ["yw"]),
        helper.make_node("Add", ["yw", "x"], ["s"]),
        helper.make_node("Tanh", ["s"], ["t"]),
        helper.make_node("Mul", ["y_in", "half"], ["scaled"]),
        helper.make_node("Add", ["scaled", "t"], ["u"]),
        helper.make_node("Cast", ["i"], ["fi"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["fi", "tenth"], ["shift"]),
        helper.make_node("Add", ["u", "shift"], ["y_out"]),
    ]
    if grow:  # a scan output whose shape grows: [y_out, y_out, ...] along axis 1, one more each iteration
        nodes += [helper.make_node("Concat", ["acc_in", "y_out"], ["acc_out"], axis=1),
                  helper.make_node("Identity", ["acc_out"], ["scan_out"])]
    else:
        nodes.append(helper.make_node("Identity", ["y_out"], ["scan_out"]))
    nodes += condition_nodes or [helper.make_node("Identity", ["cond_in"], ["cond_out"])]
    inputs = [_value("i", TensorProto.INT64, []), _value("cond_in", TensorProto.BOOL, []), _value("y_in")]
    outputs = [_value("cond_out", TensorProto.BOOL, []), _value("y_out")]
    if grow:
        inputs.append(_value("acc_in"))
        outputs.append(_value("acc_out"))
    return helper.make_graph(nodes, "loop_body", inputs, outputs + [_value("scan_out")])


def _loop_model(tmp_path, output="final", trips=3, body=None, before=(), trip="M", cond="c", batch=None):
    rng = np.random.default_rng(2)
    nodes = [*before,
             helper.make_node("Constant", [], ["M"], value=helper.make_tensor("M", TensorProto.INT64, [], [trips])),
             helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])),
             helper.make_node("Loop", [trip, cond, "x"], ["y_last", "ys"], name="the_loop", body=body or _loop_body()),
             helper.make_node("Identity", ["y_last" if output == "final" else "ys"], ["y"])]
    shape = [batch, F] if output == "final" else [trips, batch, F]
    return save_model(tmp_path, nodes, {"x": [batch, F]}, shape, {"W": weights(rng, F, F) * 0.5})


def test_loop_with_a_constant_trip_count_matches_and_is_bounded(tmp_path):
    path = _loop_model(tmp_path)
    graph = assert_matches(path, [[2, F]], batch_sizes=(None, 3))
    assert ops_of(graph).count("aten.tanh.default") == 3
    _bounded_soundly(load_onnx(path), [1, F], eps=0.2)


def test_loop_scan_outputs_stack_along_a_new_axis_0(tmp_path):
    path = _loop_model(tmp_path, output="scan", batch=2)
    assert_matches(path, [[2, F]])
    with pytest.raises(ModelLoadError, match="the_loop.*moving the batch axis"):
        load_onnx(path, batch_size=3)


def test_loop_ends_when_its_body_condition_folds_to_false(tmp_path):
    """cond' = i < 2 folds to a constant each iteration: 3 iterations of the 10 allowed."""
    condition = [helper.make_node("Constant", [], ["two"], value=helper.make_tensor("two", TensorProto.INT64, [], [2])),
                 helper.make_node("Less", ["i", "two"], ["cond_out"])]
    path = _loop_model(tmp_path, trips=10, body=_loop_body(condition))
    graph = assert_matches(path, [[2, F]])
    assert ops_of(graph).count("aten.tanh.default") == 3


_SUM = helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0)


@pytest.mark.parametrize("case", ["trip count", "condition", "body condition", "no trip count", "growing"])
def test_loop_refusals_name_the_node(tmp_path, case):
    kwargs, match = {}, {"trip count": "trip count M depends on the model input",
                         "condition": "its condition depends on the model input",
                         "body condition": "body's condition output depends on the model input",
                         "no trip count": "no trip count",
                         "growing": "scan output 0 changes shape between iterations"}[case]
    if case == "trip count":
        kwargs = dict(before=[_SUM, helper.make_node("Cast", ["total"], ["n"], to=TensorProto.INT64)], trip="n")
    elif case == "condition":
        kwargs = dict(before=[_SUM, _constant("zero", 0.0), helper.make_node("Greater", ["total", "zero"], ["pos"])],
                      cond="pos")
    elif case == "body condition":
        kwargs = dict(body=_loop_body([helper.make_node("ReduceSum", ["y_out"], ["ys_total"], keepdims=0),
                                       _constant("zero", 0.0),
                                       helper.make_node("Greater", ["ys_total", "zero"], ["cond_out"])]))
    elif case == "no trip count":
        kwargs = dict(trip="")
    path = _loop_model(tmp_path, **kwargs)
    if case == "growing":  # a second loop-carried value that grows, returned as a scan output
        model = onnx.load(str(path))
        loop = model.graph.node[2]
        loop.input.append("x")
        loop.output.insert(1, "acc_last")
        loop.attribute[0].g.CopyFrom(_loop_body(grow=True))
        onnx.save(model, str(path))
    with pytest.raises(ModelLoadError, match=f"the_loop.*{match}"):
        load_onnx(path)


def test_scan_refusals_name_the_node(tmp_path):
    # a [1, 3] initial state that the body broadcasts to [2, 3]
    with pytest.raises(ModelLoadError, match="two_inputs.*state 0 changes shape between iterations"):
        load_onnx(_two_input_scan(tmp_path, "acc0"), batch_size=2)
    # opset 8: the batch-axis form with sequence_lens
    path = _scan_rnn(tmp_path, False, "final")
    model = onnx.load(str(path))
    model.opset_import[0].version = 8
    onnx.save(model, str(tmp_path / "opset8.onnx"))
    with pytest.raises(ModelLoadError, match="rnn_scan.*opset 8"):
        load_onnx(tmp_path / "opset8.onnx")
    # along axis 0 of a graph input: a running sum over the samples
    body = helper.make_graph([helper.make_node("Add", ["acc", "x_t"], ["acc_new"])], "sum",
                             [_value("acc"), _value("x_t")], [_value("acc_new")])
    nodes = [helper.make_node("Scan", ["zeros", "x"], ["y"], name="over_samples", body=body, num_scan_inputs=1)]
    zeros = {"zeros": np.zeros(3, np.float32)}
    path = save_model(tmp_path, nodes, {"x": [None, 3]}, [3], zeros, name="symbolic.onnx")
    with pytest.raises(ModelLoadError, match="over_samples.*length is not known"):
        load_onnx(path)
    # ... with a fixed leading axis it imports at the declared batch only (the iterations run over samples)
    path = save_model(tmp_path, nodes, {"x": [2, 3]}, [3], zeros, name="fixed.onnx")
    assert_matches(path, [[2, 3]])
    with pytest.raises(ModelLoadError, match="batch_size=3.*over_samples.*Scan along axis 0"):
        load_onnx(path, batch_size=3)


def test_an_if_nested_in_a_scan_body_reads_the_body_values(tmp_path):
    then_branch = _branch("then", [helper.make_node("Relu", ["acc_new"], ["r"])], "r", None)
    else_branch = _branch("else", [helper.make_node("Identity", ["acc_new"], ["e"])], "e", None)
    body = helper.make_graph(
        [helper.make_node("Add", ["acc", "x_t"], ["acc_new"]),
         helper.make_node("Constant", [], ["yes"], value=helper.make_tensor("yes", TensorProto.BOOL, [], [True])),
         helper.make_node("If", ["yes"], ["chosen"], then_branch=then_branch, else_branch=else_branch)],
        "body", [_value("acc"), _value("x_t")], [_value("chosen")])
    nodes = [helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1], keepdims=0),
             helper.make_node("Scan", ["mean", "x"], ["y"], body=body, num_scan_inputs=1, scan_input_axes=[1])]
    path = save_model(tmp_path, nodes, {"x": [None, T, 3]}, [None, 3])
    assert_matches(path, [[2, T, 3]], batch_sizes=(None, 3))
