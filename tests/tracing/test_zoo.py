"""Every zoo architecture traces, and its Graph reproduces the model on the example and on new inputs."""

from __future__ import annotations

import functools
import operator
import sys

import pytest
import torch

import opwise
from opwise.errors import ModelLoadError
from opwise.models.zoo import ZOO, zoo_case

pytest.importorskip("transformers")

# The ops both engines must have rules for, decided when the decomposition table was chosen: growing
# this set means new relevance rules and bound transfers, so it is a test failure, not a silent change.
INPUT_PATH_VOCABULARY = {
    "aten._softmax.default", "aten.adaptive_avg_pool2d.default", "aten.add.Tensor", "aten.batch_norm.default",
    "aten.bmm.default", "aten.cat.default", "aten.clone.default", "aten.constant_pad_nd.default",
    "aten.convolution.default", "aten.embedding.default", "aten.exp.default", "aten.expand.default",
    "aten.gelu.default", "aten.layer_norm.default", "aten.linear.default", "aten.max_pool2d.default",
    "aten.mean.dim", "aten.mul.Tensor", "aten.neg.default", "aten.permute.default", "aten.pow.Tensor_Scalar",
    "aten.relu.default", "aten.rsqrt.default", "aten.select.int", "aten.silu.default", "aten.slice.Tensor",
    "aten.softplus.default", "aten.squeeze.dims", "aten.tanh.default", "aten.unsqueeze.default",
    "aten.view.default",
}  # fmt: skip


# The slowest to trace (5-15 s each on a loaded 2-core machine) run only with --run-slow.
SLOW_TO_TRACE = ("swin", "t5", "whisper", "mamba")
NAMES = [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_TO_TRACE else name for name in ZOO]


@functools.cache
def traced(name: str, strategy: str = "auto"):
    case = zoo_case(name)
    return case, opwise.trace(case.model, *case.args, output=case.output, strategy=strategy, **case.kwargs)


def model_output(case, args, kwargs) -> torch.Tensor:
    with torch.no_grad():
        result = case.model(*args, **kwargs)
    return result if isinstance(result, torch.Tensor) else result[case.output]


def graph_output(graph, args, kwargs) -> torch.Tensor:
    with torch.no_grad():
        return graph(*graph.layout.flatten(args, kwargs))


def fresh_like(tensor: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A new input of the same shape: random tokens for integer inputs, random values otherwise."""
    if tensor.dtype.is_floating_point:
        return torch.randn(tensor.shape, generator=generator)
    return torch.randint(1, 100, tensor.shape, generator=generator)


@pytest.mark.parametrize("name", NAMES)
def test_graph_reproduces_the_model(name):
    case, graph = traced(name)
    expected = model_output(case, case.args, case.kwargs)
    assert torch.allclose(graph_output(graph, case.args, case.kwargs), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_graph_generalizes_to_new_inputs_of_the_same_shape(name):
    """Catches constants folded from inputs and control flow specialized to the example's values."""
    case, graph = traced(name)
    generator = torch.Generator().manual_seed(1)
    args = tuple(fresh_like(a, generator) for a in case.args)
    expected = model_output(case, args, case.kwargs)
    assert torch.allclose(graph_output(graph, args, case.kwargs), expected, rtol=1e-5, atol=1e-5)


def test_a_new_attention_mask_is_honoured():
    """The mask is a graph input, not a folded constant."""
    case, graph = traced("bert")
    mask = torch.ones_like(case.kwargs["attention_mask"])
    mask[0, 3:] = 0
    kwargs = {"attention_mask": mask}
    expected = model_output(case, case.args, kwargs)
    assert not torch.allclose(expected, model_output(case, case.args, case.kwargs))
    assert torch.allclose(graph_output(graph, case.args, kwargs), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_input_dependence(name):
    _, graph = traced(name)
    assert graph.depends_on_input(graph.output)
    for node, explained in zip(graph.input_nodes, graph.explained):
        assert graph.depends_on_input(node) == explained
    constants = [n for n in graph.nodes if n.op == "get_attr"]
    assert constants and not any(graph.depends_on_input(n) for n in constants)
    assert all(isinstance(graph.constant(n), torch.Tensor) for n in constants)


@pytest.mark.parametrize("name", NAMES)
def test_input_path_uses_only_the_fundamental_operators(name):
    _, graph = traced(name)
    on_path = {graph.info(n).op for n in graph.call_nodes() if graph.depends_on_input(n)}
    assert on_path <= INPUT_PATH_VOCABULARY, on_path - INPUT_PATH_VOCABULARY
    assert all(n.target is not operator.getitem for n in graph.call_nodes())


def test_parameters_keep_their_names():
    case, graph = traced("bert")
    names = {name for name, _ in case.model.named_parameters()}
    sources = {graph.info(n).source for n in graph.nodes if n.op == "get_attr"}
    assert "bert.encoder.layer.0.attention.self.query.weight" in sources
    assert sources - {None} <= names | {name for name, _ in case.model.named_buffers()}


@pytest.mark.slow
def test_decoder_ids_are_constants_for_encoder_decoder_models():
    _, graph = traced("t5")
    assert graph.input_names == ["arg0", "decoder_input_ids"]
    assert graph.explained == [True, False]


def test_fx_fallback_traces_a_hugging_face_model_with_a_mask():
    """make_fx runs under the compiling flags, so HF's mask builders do not call .item() on tensors."""
    case, graph = traced("bert", "fx")
    assert graph.strategy == "fx"
    expected = model_output(case, case.args, case.kwargs)
    assert torch.allclose(graph_output(graph, case.args, case.kwargs), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
def test_fx_fallback_reproduces_every_model_with_the_same_vocabulary(name):
    case, graph = traced(name, "fx")
    expected = model_output(case, case.args, case.kwargs)
    assert torch.allclose(graph_output(graph, case.args, case.kwargs), expected, rtol=1e-5, atol=1e-5)
    on_path = {graph.info(n).op for n in graph.call_nodes() if graph.depends_on_input(n)}
    assert on_path <= INPUT_PATH_VOCABULARY, on_path - INPUT_PATH_VOCABULARY


def test_unknown_zoo_model_names_the_choices():
    with pytest.raises(ModelLoadError, match="vgg_bn"):
        zoo_case("alexnet")


def test_missing_transformers_is_a_load_error_with_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ModelLoadError, match=r"opwise\[zoo\]"):
        zoo_case("bert")
    assert zoo_case("resnet_bn").model is not None  # the torch-only models need no extra


def test_same_seed_same_case():
    first, second = zoo_case("gpt2", seed=3), zoo_case("gpt2", seed=3)
    assert torch.equal(first.args[0], second.args[0])
    assert torch.equal(first.model.lm_head.weight, second.model.lm_head.weight)
