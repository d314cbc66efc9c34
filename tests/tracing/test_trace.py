"""opwise.trace on the built-in models and small custom ones: outputs, inputs, fallback, metadata."""

from __future__ import annotations

import dataclasses
import inspect
import sys

import pytest
import torch
from torch import nn

import opwise


@pytest.fixture(scope="module")
def builtin_graphs() -> dict[str, opwise.Graph]:
    return {name: opwise.trace(opwise.models.builtin(name), torch.rand(4, 1, 8, 8)) for name in opwise.models.NAMES}


@pytest.mark.parametrize("name", opwise.models.NAMES)
def test_graph_reproduces_builtin_models(name, builtin_graphs):
    model, graph = opwise.models.builtin(name), builtin_graphs[name]
    assert graph.strategy == "export"
    images, _ = opwise.models.demo_inputs(name, n=4)
    torch.manual_seed(0)
    with torch.no_grad():
        for inputs in (images, torch.rand(4, 1, 8, 8)):
            assert torch.allclose(graph(inputs), model(inputs), atol=1e-5)


def test_builtins_contain_the_operations_they_are_meant_to_exercise(builtin_graphs):
    assert {"aten.convolution.default", "aten.batch_norm.default", "aten.relu.default", "aten.max_pool2d.default"} <= set(
        builtin_graphs["cnn"].op_counts()
    )
    assert {"aten.sigmoid.default", "aten.tanh.default"} <= set(builtin_graphs["mlp"].op_counts())
    transformer = builtin_graphs["transformer"].op_counts()
    assert {"aten._softmax.default", "aten.layer_norm.default", "aten.gelu.default", "aten.mean.dim"} <= set(transformer)
    assert any(op.startswith(("aten.bmm", "aten.matmul")) for op in transformer)


def test_batch_norm_is_kept_whole_and_uses_running_statistics(builtin_graphs):
    graph = builtin_graphs["cnn"]
    (node,) = [n for n in graph.call_nodes() if graph.info(n).op == "aten.batch_norm.default"]
    assert node.args[5] is False  # training=False: eval-mode statistics
    assert graph.info(node).module_path == "features.1"


class MaskedScorer(nn.Module):
    """A keyword mask multiplies the scores; the mask path depends on no explained input."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 6)

    def forward(self, x, mask=None):
        keep = (1.0 - mask) * -1e4
        return self.proj(x) + keep


@pytest.mark.parametrize("strategy", ["export", "fx"])
def test_keyword_mask_is_a_constant_input(strategy):
    torch.manual_seed(0)
    model = MaskedScorer()
    x, mask = torch.randn(2, 6), (torch.rand(2, 6) > 0.5).float()
    graph = opwise.trace(model, x, mask=mask, strategy=strategy)
    assert graph.input_names == ["arg0", "mask"]
    assert graph.explained == [True, False]
    other_mask = 1.0 - mask
    assert torch.allclose(graph(x, other_mask), model(x, mask=other_mask))
    dependence = {graph.info(n).op: graph.depends_on_input(n) for n in graph.call_nodes()}
    assert dependence["aten.mul.Tensor"] is False  # (1 - mask) * -1e4 is a constant for both engines
    assert dependence["aten.add.Tensor"] and graph.depends_on_input(graph.output)
    assert graph.depends_on_input(graph.output)


def test_explain_names_a_keyword_input():
    model = MaskedScorer()
    x, mask = torch.randn(2, 6), torch.ones(2, 6)
    graph = opwise.trace(model, x, mask=mask, explain=["mask"])
    assert graph.explained == [False, True]


@dataclasses.dataclass
class Output:
    logits: torch.Tensor
    hidden: torch.Tensor


# Plain dataclasses must be pytree nodes for torch.export, as Hugging Face's ModelOutput classes are.
torch.export.register_dataclass(Output)


class Structured(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.body = nn.Linear(4, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        hidden = torch.tanh(self.body(x))
        logits = self.head(hidden)
        if self.kind == "dict":
            return {"hidden": hidden, "logits": logits}
        if self.kind == "tuple":
            return hidden, logits
        return Output(logits=logits, hidden=hidden)


@pytest.mark.parametrize(
    "kind, output, expected",
    [
        ("dict", None, "logits"),
        ("dict", "hidden", "hidden"),
        ("tuple", None, "hidden"),
        ("tuple", 1, "logits"),
        ("dataclass", "hidden", "hidden"),
        ("dataclass", lambda out: out.logits, "logits"),
    ],
)
@pytest.mark.parametrize("strategy", ["export", "fx"])
def test_structured_outputs_select_one_tensor(kind, output, expected, strategy):
    torch.manual_seed(0)
    model = Structured(kind)
    x = torch.randn(2, 4)
    graph = opwise.trace(model, x, output=output, strategy=strategy)
    hidden = torch.tanh(model.body(x))
    reference = {"hidden": hidden, "logits": model.head(hidden)}[expected]
    assert torch.allclose(graph(x), reference, atol=1e-6)


def test_unknown_output_name_is_a_trace_error():
    with pytest.raises(opwise.TraceError, match="'scores' is not in the model's outputs"):
        opwise.trace(Structured("dict"), torch.randn(2, 4), output="scores")


class DataDependentBranch(nn.Module):
    """Python `if` on a tensor value computed from the input: a trace would freeze the example's branch."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 3)

    def forward(self, x):
        y = self.layer(x)
        if y.sum() > 0:
            return torch.relu(y)
        return torch.sigmoid(y)


class ParameterBranch(nn.Module):
    """Python `if` on a parameter's value: torch.export rejects it, make_fx fixes it (the same for every input)."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 3)

    def forward(self, x):
        y = self.layer(x)
        if self.layer.bias.sum() > 0:
            return torch.relu(y)
        return torch.sigmoid(y)


def test_fx_fallback_on_parameter_dependent_control_flow():
    torch.manual_seed(0)
    model = ParameterBranch()
    with torch.no_grad():
        model.layer.bias.fill_(10.0)  # every input takes the relu branch
    x = torch.randn(2, 3)
    graph = opwise.trace(model, x)
    assert graph.strategy == "fx"
    assert "aten.relu.default" in graph.op_counts() and "aten.sigmoid.default" not in graph.op_counts()
    other = torch.randn(2, 3) * 10
    assert torch.allclose(graph(other), model(other))
    with pytest.raises(opwise.TraceError, match="could not trace the model"):
        opwise.trace(model, x, strategy="export")


def test_input_dependent_control_flow_is_refused_with_the_model_line():
    """Regression (issue 15): the example's branch was traced and stood in for the model on every input."""
    model = DataDependentBranch()
    line = next(i for i, text in enumerate(inspect.getsource(sys.modules[__name__]).splitlines(), 1)
                if text.strip() == "if y.sum() > 0:")
    for strategy in ("auto", "fx"):
        with pytest.raises(opwise.TraceError, match=rf"test_trace.py:{line} \(`if y.sum\(\) > 0:`\).*torch.where"):
            opwise.trace(model, torch.randn(2, 3), strategy=strategy)


def test_fx_fallback_records_parameter_sources():
    model = ParameterBranch()
    graph = opwise.trace(model, torch.randn(2, 3), strategy="fx")
    sources = {graph.info(n).source for n in graph.nodes if n.op == "get_attr"}
    assert {"layer.weight", "layer.bias"} <= sources


def test_module_paths_and_parameter_sources_from_export(builtin_graphs):
    model, graph = opwise.models.builtin("transformer"), builtin_graphs["transformer"]
    sources = {graph.info(n).source for n in graph.nodes if n.op == "get_attr"}
    assert {"embed.weight", "position", "block.attention.query.weight", "head.bias"} <= sources
    paths = {graph.info(n).module_path for n in graph.call_nodes()}
    assert {"embed", "block.attention.query", "block.mlp.1", "head"} <= paths
    constants = [n for n in graph.nodes if n.op == "get_attr" and graph.info(n).source == "embed.weight"]
    assert torch.equal(graph.constant(constants[0]), model.embed.weight)


def test_node_info_shapes_and_input_dependence(builtin_graphs):
    graph = builtin_graphs["mlp"]
    infos = [graph.info(n) for n in graph.call_nodes()]
    assert [i.op for i in infos if i.op != "aten.view.default"] == [
        "aten.linear.default", "aten.sigmoid.default", "aten.linear.default", "aten.tanh.default", "aten.linear.default"
    ]
    assert all(i.depends_on_input for i in infos)
    assert graph.info(graph.output).shape == (4, 10) and graph.info(graph.output).dtype == torch.float32


def test_retrace_for_another_batch_size(builtin_graphs):
    graph = builtin_graphs["cnn"].retrace(torch.rand(5, 1, 8, 8))
    assert graph.info(graph.output).shape == (5, 10)


def test_model_that_no_tracer_accepts():
    class Broken(nn.Module):
        def forward(self, x):
            return x @ torch.ones(7, 2)

    with pytest.raises(opwise.TraceError, match="could not trace the model .*export: .*fx: "):
        opwise.trace(Broken(), torch.randn(2, 3))


def test_not_a_module_is_a_trace_error():
    with pytest.raises(opwise.TraceError, match="expected a torch.nn.Module, got function"):
        opwise.trace(lambda x: x, torch.randn(2))


def test_data_dependent_shape_falls_back_to_fx():
    class NonzeroCount(nn.Module):
        def forward(self, x):
            return torch.nonzero(x > 0).float().sum(dim=0) + x.sum()

    x = torch.tensor([[1.0, -1.0], [2.0, 3.0]])
    graph = opwise.trace(NonzeroCount(), x)
    assert graph.strategy == "fx"
    assert torch.allclose(graph(x), NonzeroCount()(x))
    with pytest.raises(opwise.TraceError, match="data-dependent shape"):
        opwise.trace(NonzeroCount(), x, strategy="export")


@pytest.mark.parametrize("forward, message", [
    (lambda x: torch.from_numpy(x.numpy() * 2), "does not depend on the explained inputs"),
    (lambda x: float(x.sum()), "reads a Python value from an input-dependent tensor"),
])
def test_outputs_the_tracer_cannot_follow_are_trace_errors(forward, message):
    class Opaque(nn.Module):
        def forward(self, x):
            return forward(x)

    with pytest.raises(opwise.TraceError, match=message):
        opwise.trace(Opaque(), torch.randn(2, 3))


def test_training_flag_is_restored():
    model = opwise.models.architecture("cnn").train()
    graph = opwise.trace(model, torch.rand(2, 1, 8, 8))
    assert model.training and model.features[1].training
    (node,) = [n for n in graph.call_nodes() if graph.info(n).op == "aten.batch_norm.default"]
    assert node.args[5] is False



class _CachingModel(torch.nn.Module):
    """Records the use_cache it was called with (Hugging Face models return a cache object torch.export
    cannot flatten when it is True)."""

    def __init__(self):
        super().__init__()
        self.linear, self.seen = torch.nn.Linear(3, 2), set()

    def forward(self, x, use_cache=True):
        self.seen.add(use_cache)
        return self.linear(x)


def test_models_taking_use_cache_are_traced_without_their_cache():
    model = _CachingModel()
    graph = opwise.trace(model, torch.randn(1, 3))
    assert graph.info(graph.output).shape == (1, 2) and model.seen == {False}
    assert graph.layout.flatten((torch.ones(1, 3),), {})[0].shape == (1, 3)  # calls need not repeat it
    model.seen.clear()
    opwise.trace(model, torch.randn(1, 3), use_cache=True)  # the caller's own choice stands
    assert model.seen == {True}


def test_a_module_unlifted_from_an_exported_program_traces_and_verifies():
    """`ExportedProgram.module()` says it is training and refuses `eval()` (NotImplementedError): tracing it,
    and so `opwise.verify` on it, raised that error. Its mode was fixed at export; it now traces as it is."""
    import opwise

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    x = torch.randn(1, 4)
    unlifted = torch.export.export(model, (x,)).module()
    assert unlifted.training
    result = opwise.verify(unlifted, x, eps=1e-3)
    assert result.status == "verified" and result.margin_lower > 0
    output = model(x)[0].detach()
    others = torch.cat([output[: result.target], output[result.target + 1 :]])
    assert result.target == int(output.argmax()) and result.margin_lower <= float(output[result.target] - others.max())
