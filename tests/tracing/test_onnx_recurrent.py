"""ONNX LSTM, GRU and RNN, unrolled at import: every output against onnxruntime (and torch.nn.LSTM / GRU), sound
IBP and CROWN bounds on small cells, an LRP explanation through an LSTM classifier, and each refusal's message."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

import opwise  # noqa: E402
from opwise.errors import ModelLoadError  # noqa: E402
from opwise.tracing.onnx import load_onnx  # noqa: E402
from tests.tracing.test_onnx_import import assert_matches, ops_of, run_onnxruntime, run_opwise, save_model  # noqa: E402
from tests.tracing.test_onnx_ops_more import _bounded_soundly  # noqa: E402

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
OUTPUTS = {"LSTM": ("Y", "Y_h", "Y_c"), "GRU": ("Y", "Y_h"), "RNN": ("Y", "Y_h")}
INPUT, HIDDEN = 4, 3


def save(tmp_path, nodes, inputs, initializers=(), opset=14, name="model.onnx", types=None):
    """An ONNX model with inputs {name: shape} (float unless `types` says otherwise) and the one output 'y'."""
    return save_model(tmp_path, nodes, inputs, None, initializers, opset=opset, name=name, types=types)


def recurrent(op, rng, *, output="Y", direction="forward", bias=True, peepholes=False, hidden=HIDDEN, inputs=INPUT,
              batch=2, layout=0, initial=None, lens=None, name="cell", **attributes):
    """(node, initializers, extra graph inputs) for one `op` node whose output `output` is 'y'; `initial` is None,
    "constant" (initializers) or "input" (graph inputs) for initial_h (and initial_c); `lens` an array of
    sequence_lens (an initializer) or "input"."""
    dirs = 2 if direction == "bidirectional" else 1
    gates = GATES[op]
    inits = {"W": rng.standard_normal((dirs, gates * hidden, inputs)).astype(np.float32) * 0.7,
             "R": rng.standard_normal((dirs, gates * hidden, hidden)).astype(np.float32) * 0.7}
    names = ["x", "W", "R", "", "", "", "", ""]
    if bias:
        inits["B"], names[3] = rng.standard_normal((dirs, 2 * gates * hidden)).astype(np.float32) * 0.5, "B"
    extra = {}
    state_shape = [batch, dirs, hidden] if layout else [dirs, batch, hidden]
    for index, state in [(5, "h0"), (6, "c0")][: 2 if op == "LSTM" else 1]:
        if initial == "constant":
            inits[state] = rng.standard_normal(state_shape).astype(np.float32)
        elif initial == "input":
            extra[state] = state_shape
        names[index] = state if initial else ""
    if lens is not None:
        names[4] = "lens"
        if isinstance(lens, str):
            extra["lens"] = [batch]
        else:
            inits["lens"] = np.asarray(lens, dtype=np.int32)
    if peepholes:
        inits["P"], names[7] = rng.standard_normal((dirs, 3 * hidden)).astype(np.float32), "P"
    used = len(names) - next(i for i, n in enumerate(reversed(names)) if n)
    outputs = [("y" if o == output else f"unused_{o}") for o in OUTPUTS[op]]
    if layout:
        attributes["layout"] = 1
    node = helper.make_node(op, names[:used], outputs, name=name, hidden_size=hidden, direction=direction, **attributes)
    return node, inits, extra


def sequence_first(node, inits, extra, output="y"):
    """The batch-first (layout=1) `node` as onnxruntime can run it (its CPU kernels take only layout 0): the same
    node with layout 0 between Transposes of X, the initial states and its read output `output`."""
    inits = dict(inits)
    renamed = {"x": "x_t", "h0": "h0_t", "c0": "c0_t"}
    nodes = [helper.make_node("Transpose", ["x"], ["x_t"], perm=[1, 0, 2])]
    for state in ("h0", "c0"):
        if state in inits:
            inits[renamed[state]] = np.ascontiguousarray(inits.pop(state).transpose(1, 0, 2))
        elif state in extra:
            nodes.append(helper.make_node("Transpose", [state], [renamed[state]], perm=[1, 0, 2]))
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name != "layout"}
    index = list(node.output).index(output)
    outputs = [("y_t" if name == output else name) for name in node.output]
    nodes.append(helper.make_node(node.op_type, [renamed.get(n, n) for n in node.input], outputs, name=node.name,
                                  **attributes))
    nodes.append(helper.make_node("Transpose", ["y_t"], [output], perm=[2, 0, 1, 3] if index == 0 else [1, 0, 2]))
    return nodes, inits


def check(tmp_path, op, *, seq=3, batch=2, layout=0, seed=0, opset=14, **options):
    """Import the single-node model and compare with onnxruntime at the declared batch; batch-first models (layout=1,
    declared batch 1) are compared also at batch 3, against the same node with layout 0 between Transposes. No
    node of the imported graph is left unused."""
    rng = np.random.default_rng(seed)
    if layout:
        batch = 1
    node, inits, extra = recurrent(op, rng, batch=batch, layout=layout, **options)
    x_shape = [batch, seq, INPUT] if layout else [seq, batch, INPUT]
    path = save(tmp_path, [node], {"x": x_shape, **extra}, inits, opset=opset)
    if not layout:
        graph = assert_matches(path, [x_shape, *extra.values()], seed=seed)
        assert all(n.users for n in graph.call_nodes())
        return graph
    nodes, reference_inits = sequence_first(node, inits, extra)
    reference = save(tmp_path, nodes, {"x": x_shape, **extra}, reference_inits, opset=opset, name="reference.onnx")
    for batch_size in (1, 3):
        inputs = [rng.standard_normal([batch_size] + s[1:]).astype(np.float32) for s in [x_shape, *extra.values()]]
        graph = load_onnx(path, batch_size=batch_size)
        samples = [[v[i : i + 1] for v in inputs] for i in range(batch_size)]
        expected = np.concatenate([run_onnxruntime(reference, sample) for sample in samples])
        np.testing.assert_allclose(run_opwise(graph, inputs), expected, atol=1e-5, rtol=1e-5)
        assert all(n.users for n in graph.call_nodes())
    return graph


CASES = {
    "forward": dict(direction="forward"),
    "reverse-no-bias-constant-states": dict(direction="reverse", bias=False, initial="constant"),
    "bidirectional-constant-states": dict(direction="bidirectional", initial="constant"),
    "bidirectional-input-states-seq2": dict(direction="bidirectional", initial="input", seq=2),
    "batch-first-forward-input-states": dict(layout=1, direction="forward", initial="input"),
    "batch-first-bidirectional-input-states": dict(layout=1, direction="bidirectional", initial="input"),
    "batch-first-reverse-constant-states": dict(layout=1, direction="reverse", bias=False, initial="constant"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("output", OUTPUTS["LSTM"])
def test_lstm_matches_onnxruntime(tmp_path, case, output):
    graph = check(tmp_path, "LSTM", output=output, **CASES[case])
    assert {"aten.linear.default", "aten.sigmoid.default", "aten.tanh.default"} <= set(ops_of(graph))


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("output", OUTPUTS["LSTM"])
def test_lstm_with_peepholes_matches_onnxruntime(tmp_path, layout, direction, output):
    check(tmp_path, "LSTM", output=output, direction=direction, layout=layout, peepholes=True, initial="constant")


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("output", OUTPUTS["GRU"])
@pytest.mark.parametrize("before_reset", [0, 1])
def test_gru_matches_onnxruntime(tmp_path, case, output, before_reset):
    check(tmp_path, "GRU", output=output, linear_before_reset=before_reset, **CASES[case])


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("output", OUTPUTS["RNN"])
def test_rnn_matches_onnxruntime(tmp_path, case, output):
    check(tmp_path, "RNN", output=output, **CASES[case])


@pytest.mark.parametrize("op,activations", [
    ("RNN", ["Relu"]),
    ("RNN", ["Sigmoid", "Relu"]),  # one per direction
    ("GRU", ["Sigmoid", "Relu"]),
    ("LSTM", ["Sigmoid", "Relu", "Tanh"]),
    ("LSTM", ["Tanh", "Sigmoid", "Relu"]),
])
def test_other_activations_match_onnxruntime(tmp_path, op, activations):
    direction = "bidirectional" if len(activations) == 2 and op == "RNN" else "forward"
    graph = check(tmp_path, op, output="Y", direction=direction, activations=activations)
    if "Relu" in activations:
        assert "aten.relu.default" in ops_of(graph)


def test_full_length_constant_sequence_lens_is_accepted(tmp_path):
    rng = np.random.default_rng(1)
    node, inits, _ = recurrent("LSTM", rng, output="Y_h", lens=[3, 3])
    path = save(tmp_path, [node], {"x": [3, 2, INPUT]}, inits)
    assert_matches(path, [[3, 2, INPUT]])


@pytest.mark.parametrize("opset", [7, 13])
def test_lstm_and_gru_before_opset_14_match_onnxruntime(tmp_path, opset):
    check(tmp_path, "LSTM", output="Y", direction="bidirectional", initial="constant", opset=opset)
    check(tmp_path, "GRU", output="Y_h", direction="reverse", linear_before_reset=1, opset=opset)


def test_opset_1_form_imports_as_opset_7(tmp_path):
    """onnxruntime runs recurrent nodes from opset 7; the opset 1-6 forms differ only in legacy attributes."""
    rng = np.random.default_rng(2)
    node, inits, _ = recurrent("GRU", rng, output="Y", direction="bidirectional")
    x = rng.standard_normal((3, 2, INPUT)).astype(np.float32)
    old = load_onnx(save(tmp_path, [node], {"x": [3, 2, INPUT]}, inits, opset=6, name="old.onnx"))
    new = save(tmp_path, [node], {"x": [3, 2, INPUT]}, inits, opset=7, name="new.onnx")
    np.testing.assert_allclose(run_opwise(old, [x]), run_onnxruntime(new, [x]), atol=1e-5, rtol=1e-5)


def test_unused_outputs_leave_no_nodes(tmp_path):
    """Only Y_c read: no stacks for Y or Y_h, no forget gate on the zero initial cell, and no output gate or tanh
    after the last cell update (gates i, o then i, f; tanh of c̃, C, c̃)."""
    graph = check(tmp_path, "LSTM", output="Y_c", seq=2)
    counts = graph.op_counts()
    assert counts.get("aten.stack.default", 0) + counts.get("aten.unsqueeze.default", 0) == 1
    assert counts["aten.sigmoid.default"] == 4 and counts["aten.tanh.default"] == 3
    assert all(len(n.users) for n in graph.call_nodes())


# ----------------------------------------------------------------- the same cells as torch.nn
def _onnx_order(tensor, order):
    """torch's gate blocks (LSTM i, f, g, o; GRU r, z, n) rearranged into ONNX's by `order` (block indices)."""
    return torch.cat([tensor.chunk(len(order))[k] for k in order]).detach().numpy()


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_matches_torch_recurrent_modules(tmp_path, kind):
    torch.manual_seed(0)
    module = getattr(torch.nn, kind)(INPUT, HIDDEN, batch_first=True, bidirectional=True).eval()
    order = [0, 3, 1, 2] if kind == "LSTM" else [1, 0, 2]  # ONNX: LSTM i, o, f, c; GRU z, r, h
    inits = {}
    for name, parts in [("W", "weight_ih"), ("R", "weight_hh")]:
        inits[name] = np.stack([_onnx_order(getattr(module, f"{parts}_l0{s}"), order) for s in ("", "_reverse")])
    biases = [[_onnx_order(getattr(module, f"bias_{p}_l0{s}"), order) for p in ("ih", "hh")] for s in ("", "_reverse")]
    inits["B"] = np.stack([np.concatenate(pair) for pair in biases])
    attributes = {"linear_before_reset": 1} if kind == "GRU" else {}  # torch's GRU resets after the linear map
    outputs = ["y"] + ["", ""][: len(OUTPUTS[kind]) - 1]
    node = helper.make_node(kind, ["x", "W", "R", "B"], outputs, hidden_size=HIDDEN, direction="bidirectional",
                            layout=1, **attributes)
    graph = load_onnx(save(tmp_path, [node], {"x": [2, 5, INPUT]}, inits))
    x = torch.randn(2, 5, INPUT)
    with torch.no_grad():
        expected, _ = module(x)
        got = graph(x)
    assert got.shape == (2, 5, 2, HIDDEN)
    torch.testing.assert_close(got.reshape(2, 5, 2 * HIDDEN), expected, atol=1e-5, rtol=1e-5)


class _LastStepClassifier(torch.nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.rnn = getattr(torch.nn, kind)(INPUT, HIDDEN, batch_first=True, bidirectional=True)
        self.fc = torch.nn.Linear(2 * HIDDEN, 2)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y[:, -1])


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_torch_exported_classifier_with_a_symbolic_batch(tmp_path, kind):
    """What torch.onnx.export writes for a batch-first module (Transposes around a layout 0 node, initial states
    from Shape/Expand subgraphs) imports at any batch size."""
    torch.manual_seed(0)
    model = _LastStepClassifier(kind).eval()
    x = torch.randn(3, 5, INPUT)
    path = tmp_path / "exported.onnx"
    torch.onnx.export(model, (x[:1],), str(path), dynamo=False, opset_version=13, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})
    graph = load_onnx(path, batch_size=3)
    np.testing.assert_allclose(run_opwise(graph, [x.numpy()]), run_onnxruntime(path, [x.numpy()]), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(graph(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_torch_module_and_its_export_get_the_same_relevance(tmp_path, kind):
    """Wb + Rb used to be folded into the input's map: the flat rule on that first layer then passed Rb's share to
    the input, so a torch module and its ONNX export disagreed under epsilon-plus-flat. Rb now stays with the state's
    map (as opwise traces torch's cells), and every composite explains both alike."""
    torch.manual_seed(0)
    model = _LastStepClassifier(kind).eval()
    with torch.no_grad():
        for name, value in model.rnn.named_parameters():
            if name.startswith("bias"):
                value.normal_()  # large biases, so a misplaced one shows
    x = torch.rand(2, 4, INPUT)
    path = tmp_path / "exported.onnx"
    torch.onnx.export(model, (x[:1],), str(path), dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    graph = load_onnx(path, batch_size=2)
    for composite in ("epsilon-plus-flat", "epsilon-alpha2-beta1"):
        ours, theirs = (opwise.explain(m, x, target=1, composite=composite).relevance for m in (graph, model))
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------- bounds and explanations
@pytest.mark.parametrize("op,options", [
    ("LSTM", dict(output="Y_h")),
    ("LSTM", dict(output="Y", peepholes=True, initial="constant")),
    ("GRU", dict(output="Y_h", linear_before_reset=0)),
    ("GRU", dict(output="Y", linear_before_reset=1, direction="bidirectional")),
    ("RNN", dict(output="Y_h", direction="bidirectional")),
])
def test_small_cells_are_bounded_soundly(tmp_path, op, options):
    rng = np.random.default_rng(3)
    node, inits, _ = recurrent(op, rng, layout=1, batch=1, inputs=2, **options)
    path = save(tmp_path, [node], {"x": [1, 3, 2]}, inits)
    _bounded_soundly(load_onnx(path), [1, 3, 2], eps=0.2)


def test_explain_an_lstm_classifier(tmp_path):
    """LSTM -> last hidden state -> Gemm: LRP relevance of the input's shape, finite."""
    rng = np.random.default_rng(4)
    node, inits, _ = recurrent("LSTM", rng, output="h", layout=1, batch=1)
    node.output[:] = ["", "h"]
    inits["fc_w"] = rng.standard_normal((5, HIDDEN)).astype(np.float32)
    inits["fc_b"] = rng.standard_normal(5).astype(np.float32)
    head = [helper.make_node("Flatten", ["h"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], transB=1)]
    path = save(tmp_path, [node, *head], {"x": [1, 4, INPUT]}, inits)
    nodes, reference_inits = sequence_first(node, inits, {}, output="h")
    reference = save(tmp_path, nodes + head, {"x": [1, 4, INPUT]}, reference_inits, name="reference.onnx")
    x = rng.standard_normal((3, 4, INPUT)).astype(np.float32)
    expected = np.concatenate([run_onnxruntime(reference, [x[i : i + 1]]) for i in range(3)])
    np.testing.assert_allclose(run_opwise(load_onnx(path, batch_size=3), [x]), expected, atol=1e-5, rtol=1e-5)
    graph = load_onnx(path, batch_size=2)
    x = torch.randn(2, 4, INPUT, generator=torch.Generator().manual_seed(0))
    explanation = opwise.explain(graph, x, target=1, composite="epsilon")
    assert explanation.relevance.shape == x.shape
    assert torch.isfinite(explanation.relevance).all() and explanation.relevance.abs().sum() > 0


# ----------------------------------------------------------------- refusals
def _refused(tmp_path, nodes, inputs, inits, match, types=None, batch_size=None):
    path = save(tmp_path, nodes, inputs, inits, types=types)
    with pytest.raises(ModelLoadError, match=match) as caught:
        load_onnx(path, batch_size=batch_size)
    assert "'cell'" in str(caught.value)
    return str(caught.value)


def test_input_dependent_sequence_lens_is_refused(tmp_path):
    # a sequence as long as the batch: the inputs' leading sizes agree (the importer refuses them otherwise)
    node, inits, extra = recurrent("LSTM", np.random.default_rng(0), output="Y_h", lens="input")
    message = _refused(tmp_path, [node], {"x": [2, 2, INPUT], **extra}, inits, "sequence_lens",
                       types={"lens": TensorProto.INT32})
    assert "'cell' (LSTM" in message and "leave sequence_lens out" in message


def test_short_sequence_lens_is_refused(tmp_path):
    node, inits, _ = recurrent("GRU", np.random.default_rng(0), output="Y", lens=[3, 2])
    message = _refused(tmp_path, [node], {"x": [3, 2, INPUT]}, inits, r"sequence_lens \[3, 2\]")
    assert "'cell' (GRU" in message and "full-length" in message


@pytest.mark.parametrize("op,attribute,value,match", [
    ("LSTM", "clip", 3.0, "attribute clip=3.0"),
    ("RNN", "clip", 1.0, "attribute clip=1.0"),
    ("LSTM", "input_forget", 1, "attribute input_forget=1"),
    ("RNN", "activations", ["LeakyRelu"], r"attribute activations names \['LeakyRelu'\]"),
    ("GRU", "activations", ["HardSigmoid", "Tanh"], r"activations names \['HardSigmoid'\].*Sigmoid, Tanh and Relu"),
    ("LSTM", "activations", ["Sigmoid", "Tanh"], "does not name 3 function"),
])
def test_unsupported_attributes_are_refused(tmp_path, op, attribute, value, match):
    node, inits, _ = recurrent(op, np.random.default_rng(0), **{attribute: value})
    message = _refused(tmp_path, [node], {"x": [3, 2, INPUT]}, inits, match)
    assert f"'cell' ({op}" in message


def test_unknown_sequence_length_is_refused(tmp_path):
    node, inits, _ = recurrent("LSTM", np.random.default_rng(0))
    message = _refused(tmp_path, [node], {"x": ["seq", 2, INPUT]}, inits, "sequence length is not known")
    assert "layout=1" in message and "'cell' (LSTM" in message


def test_sequence_first_model_at_another_batch_size_is_refused(tmp_path):
    node, inits, _ = recurrent("GRU", np.random.default_rng(0))
    message = _refused(tmp_path, [node], {"x": [3, 2, INPUT]}, inits, "layout=0", batch_size=5)
    assert "batch_size=5" in message and "'cell' (GRU)" in message


def test_per_sample_constant_initial_state_at_another_batch_size_is_refused(tmp_path):
    node, inits, _ = recurrent("RNN", np.random.default_rng(0), layout=1, batch=2, initial="constant")
    message = _refused(tmp_path, [node], {"x": [2, 3, INPUT]}, inits, "initial_h", batch_size=3)
    assert "'cell' (RNN)" in message


def test_input_dependent_weights_are_refused(tmp_path):
    node, inits, _ = recurrent("RNN", np.random.default_rng(0))
    # one step, so that the inputs' leading sizes agree (the importer refuses them otherwise)
    message = _refused(tmp_path, [node], {"x": [1, 2, INPUT], "W": [1, HIDDEN, INPUT]},
                       {k: v for k, v in inits.items() if k != "W"}, "input W depends on the model input")
    assert "only as constants" in message


def test_one_constant_initial_state_for_every_sample_holds_at_another_batch_size(tmp_path):
    """Declared batch 2 with the same constant state in both rows: at batch 3 it is the state of every sample, as
    in the same model declared at batch 1 with that one row (checked against onnxruntime above)."""
    node, inits, _ = recurrent("LSTM", np.random.default_rng(5), output="Y", layout=1, batch=1, initial="constant")
    wide = {k: (np.concatenate([v, v]) if k in ("h0", "c0") else v) for k, v in inits.items()}
    one = load_onnx(save(tmp_path, [node], {"x": [1, 3, INPUT]}, inits, name="one.onnx"), batch_size=3)
    two = load_onnx(save(tmp_path, [node], {"x": [2, 3, INPUT]}, wide, name="two.onnx"), batch_size=3)
    x = np.random.default_rng(6).standard_normal((3, 3, INPUT)).astype(np.float32)
    np.testing.assert_allclose(run_opwise(two, [x]), run_opwise(one, [x]), atol=1e-6)
