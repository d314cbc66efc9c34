"""End-to-end relevance: conservation, batches, targets, errors, the Promise path, intermediate nodes."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import opwise
from opwise.attribution import LRP
from tests.attribution.models import FanOut, TinyBERT, TinyViT, Writes, cnn

EXACT = {"composite": "epsilon", "epsilon": 1e-9}


def _conserves(explanation, rtol=1e-5):
    total, output = explanation.conservation.unbind(1)
    torch.testing.assert_close(total, output, rtol=rtol, atol=1e-6)


def _quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return opwise.explain(*args, **kwargs)


@pytest.mark.parametrize(
    "build, shape",
    [(cnn, (3, 1, 14, 14)), (FanOut, (3, 2, 6, 6)), (TinyViT, (3, 1, 8, 8)), (Writes, (3, 3))],
    ids=["cnn", "fan-out", "vit", "writes"],
)
def test_conservation_end_to_end(build, shape):
    torch.manual_seed(0)
    model = build().eval()
    composite = "cp-lrp" if build is TinyViT else "epsilon"
    explanation = opwise.explain(model, torch.randn(shape), target=1, composite=composite, epsilon=1e-9)
    assert explanation.relevance.shape == shape
    _conserves(explanation)


class SliceWrite(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 3, bias=False)

    def forward(self, x):
        h = self.layer(x)
        h[:, :2] = 0
        h += x
        return h


def test_an_in_place_slice_write_is_explained():
    """Regression (issue 15): `aten.copy` has no derivative, and explain stopped with a raw RuntimeError."""
    torch.manual_seed(0)
    model, x = SliceWrite().eval(), torch.randn(2, 3)
    explanation = opwise.explain(model, x, target=0, composite="epsilon", epsilon=1e-9)
    _conserves(explanation)
    torch.testing.assert_close(explanation.relevance[:, 0], x[:, 0])  # output 0 is x0 after the write
    torch.testing.assert_close(explanation.relevance[:, 1:], torch.zeros(2, 2))


@pytest.mark.slow
def test_attn_lrp_gives_queries_and_keys_relevance_that_cp_lrp_does_not():
    torch.manual_seed(0)
    model, x = TinyViT().eval(), torch.randn(2, 1, 8, 8)
    attention = _quiet(model, x, target=0, composite="attn-lrp")
    constant = _quiet(model, x, target=0, composite="cp-lrp")
    assert torch.isfinite(attention.relevance).all()
    node = next(n.name for n in attention.plan.graph.call_nodes() if attention.plan.graph.info(n).op == "aten._softmax.default")
    assert attention.node_relevance(node).abs().sum() > 0
    assert not torch.allclose(attention.relevance, constant.relevance)


@pytest.mark.parametrize("norm", ["layer", "rms"])
def test_token_relevance_for_bert_like(norm):
    torch.manual_seed(0)
    ids = torch.randint(0, 20, (2, 6))
    explanation = opwise.explain(TinyBERT(norm=norm).eval(), ids, target=0, composite="cp-lrp", epsilon=1e-9)
    assert explanation.relevance.shape == (2, 6)
    _conserves(explanation)


class MinusConstant(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("center", torch.full((5,), 0.7))
        self.linear = nn.Linear(5, 2, bias=False)

    def forward(self, x):
        return self.linear(torch.relu(x - self.center) * 3.0)


class ManualRMS(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 2.0, 6))
        self.linear = nn.Linear(6, 2, bias=False)

    def forward(self, x):
        return self.linear(x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.scale)


@pytest.mark.parametrize("model, shape", [(MinusConstant(), (4, 5)), (ManualRMS(), (4, 6))], ids=["x-c", "rms"])
def test_constants_take_no_relevance(model, shape):
    torch.manual_seed(1)
    _conserves(opwise.explain(model, torch.randn(shape) + 1.0, target=0, **EXACT))


def test_eval_mode_batch_norm_alone():
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(2)
    norm.running_var.copy_(torch.tensor([0.5, 2.0]))
    norm.weight.data.copy_(torch.tensor([1.5, -0.5]))
    model = nn.Sequential(norm, nn.Conv2d(2, 3, 3, bias=False), nn.Flatten(), nn.Linear(12, 2, bias=False)).eval()
    _conserves(opwise.explain(model, torch.randn(3, 2, 4, 4), target=1, **EXACT))


def test_batch_equals_per_sample_with_own_targets():
    torch.manual_seed(0)
    model = TinyViT().eval()
    x = torch.randn(8, 1, 8, 8)
    targets = [0, 1, 2, 3, 3, 2, 1, 0]
    batch = _quiet(model, x, target=targets, composite="attn-lrp").relevance
    for i in range(8):
        single = _quiet(model, x[i : i + 1], target=targets[i], composite="attn-lrp").relevance
        torch.testing.assert_close(batch[i : i + 1], single, rtol=1e-4, atol=1e-6)


def test_checkpoints_equal_keep_all():
    torch.manual_seed(0)
    model, x = FanOut().eval(), torch.randn(2, 2, 6, 6)
    every = opwise.explain(model, x, composite="epsilon-plus-flat")
    few = opwise.explain(model, x, composite="epsilon-plus-flat", keep="checkpoints")
    assert few.plan.store.recomputations > 0
    assert len(few.plan.store.kept) < len(every.plan.store.kept)
    torch.testing.assert_close(few.relevance, every.relevance)
    budget = opwise.explain(model, x, composite="epsilon-plus-flat", keep=1)
    torch.testing.assert_close(budget.relevance, every.relevance)


def test_node_relevance_is_the_relevance_reaching_that_node():
    torch.manual_seed(0)
    model = cnn().eval()
    explanation = opwise.explain(model, torch.randn(2, 1, 14, 14), target=2, **EXACT)
    last = [n.name for n in explanation.plan.graph.call_nodes()][-2]
    at_node = explanation.node_relevance(last)
    torch.testing.assert_close(at_node.sum(1), explanation.explained_output, rtol=1e-5, atol=1e-7)
    with pytest.raises(opwise.InputError, match="no node named"):
        explanation.node_relevance("nope")


def test_callable_target_and_default_target():
    torch.manual_seed(0)
    model, x = cnn().eval(), torch.randn(2, 1, 14, 14)
    default = opwise.explain(model, x, **EXACT)
    assert default.target.tolist() == model(x).argmax(1).tolist()
    picked = opwise.explain(model, x, target=lambda out: out[:, 3], **EXACT)
    torch.testing.assert_close(picked.relevance, opwise.explain(model, x, target=3, **EXACT).relevance)


def test_explains_a_graph_too():
    torch.manual_seed(0)
    model, x = cnn().eval(), torch.randn(2, 1, 14, 14)
    graph = opwise.trace(model, x)
    torch.testing.assert_close(opwise.explain(graph, x, target=1).relevance, opwise.explain(model, x, target=1).relevance)
    with pytest.raises(opwise.InputError, match="traced for"):
        opwise.explain(graph, torch.randn(1, 1, 14, 14))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, x: opwise.explain(m, x, target=9), "out of range"),
        (lambda m, x: opwise.explain(m, x, target=[0, 1, 2]), "out of range"),
        (lambda m, x: opwise.explain(m, x * float("nan")), "NaN"),
        (lambda m, x: opwise.explain(m, x, composite="nope"), "unknown composite"),
        (lambda m, x: opwise.explain(m, x, keep="some"), "keep must be"),
    ],
    ids=["target", "targets", "nan", "composite", "keep"],
)
def test_bad_input_is_an_input_error(call, message):
    with pytest.raises(opwise.InputError, match=message):
        call(cnn().eval(), torch.randn(2, 1, 14, 14))


def test_missing_rule_names_node_and_operator():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.special.bessel_j0(x)

    with pytest.raises(opwise.UnsupportedOperation, match=r"special_bessel_j0.*relevance_rule"):
        opwise.explain(Odd(), torch.randn(2, 3))


def test_warns_when_relevance_vanishes():
    model = nn.Sequential(nn.Linear(3, 2, bias=True))
    nn.init.zeros_(model[0].weight)
    nn.init.ones_(model[0].bias)
    with pytest.warns(UserWarning, match="vanished"):
        opwise.explain(model, torch.randn(2, 3), target=0, composite="epsilon")


def test_warns_when_biases_or_the_stabilizer_absorb_almost_all_relevance():
    """Activations far below ε (untrained nets whose logits are ~1e-9): ε-LRP legitimately gives the input
    almost nothing, and the user is told why and what to pass instead; a smaller ε brings it back."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        model[0].weight.mul_(1e-9)
    x = torch.randn(2, 3)
    with pytest.warns(UserWarning, match=r"below 1% .* epsilon=1e-12"):
        opwise.explain(model, x, target=0, composite="epsilon")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        e = opwise.explain(model, x, target=0, composite="epsilon", epsilon=1e-15)
    torch.testing.assert_close(e.conservation[:, 0], e.conservation[:, 1], rtol=1e-4, atol=0)


def test_captum_shaped_lrp():
    torch.manual_seed(0)
    model, x = cnn().eval(), torch.randn(2, 1, 14, 14)
    attribution = LRP(model, composite="epsilon").attribute(x, target=1)
    torch.testing.assert_close(attribution, opwise.explain(model, x, target=1, composite="epsilon").relevance)


def test_graph_and_plan_are_built_once_per_input_shape():
    torch.manual_seed(0)
    model = cnn().eval()
    first = opwise.explain(model, torch.randn(2, 1, 14, 14), **EXACT)
    again = opwise.explain(model, torch.randn(2, 1, 14, 14), **EXACT)
    other = opwise.explain(model, torch.randn(3, 1, 14, 14), **EXACT)
    assert first.plan is again.plan and other.plan is not first.plan
    assert not first.plan.store.values  # activations are released after each pass


def test_changed_weights_are_planned_again():
    """A cached plan holds the weights it was built from (merged batch norms, stacked rule weights): weights
    loaded in place, or moved to another device, must give a new plan and the new model's relevance."""
    torch.manual_seed(0)
    model, x = cnn().eval(), torch.randn(2, 1, 14, 14)
    first = opwise.explain(model, x, **EXACT)
    twin = cnn().eval()
    model.load_state_dict(twin.state_dict())
    again = opwise.explain(model, x, **EXACT)
    assert again.plan is not first.plan
    torch.testing.assert_close(again.relevance, opwise.explain(twin, x, **EXACT).relevance)


@pytest.mark.parametrize("change", ["attribute", "swap"])
def test_changed_modules_are_traced_again(change):
    """A changed layer attribute or a swapped layer changes what the model computes without touching its
    weights: the next explanation must explain the model as it is now."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LeakyReLU(0.01), torch.nn.Linear(3, 2)).eval()
    x = torch.randn(5, 4)
    opwise.explain(model, x, target=0)
    if change == "attribute":
        model[1].negative_slope = 5.0
    else:
        model[1] = torch.nn.Tanh()
    explanation = opwise.explain(model, x, target=0)
    with torch.no_grad():
        expected = model(x)[:, 0]
    torch.testing.assert_close(explanation.output[:, 0], expected)


def test_the_cache_keeps_only_the_last_models_alive():
    """Cached graphs hold their model (to retrace it): the cache must not keep every model ever explained."""
    import gc
    import weakref

    from opwise.attribution.explain import CACHED_MODELS

    references = []
    for seed in range(CACHED_MODELS + 3):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)).eval()
        opwise.explain(model, torch.randn(2, 4), target=0)
        references.append(weakref.ref(model))
        del model
    gc.collect()
    assert sum(reference() is not None for reference in references) <= CACHED_MODELS


def test_internal_batch_size_gives_the_whole_batch_explanation():
    """Chunks of the batch (uneven last chunk, per-sample targets, checkpoints) join to the one-pass result."""
    torch.manual_seed(0)
    model = cnn(bias=True).eval()
    x, targets = torch.randn(5, 1, 14, 14), [0, 1, 2, 3, 0]
    whole = _quiet(model, x, target=targets, composite="epsilon-gamma-box")
    for keep in ("all", "checkpoints"):
        chunked = _quiet(model, x, target=targets, composite="epsilon-gamma-box", keep=keep, internal_batch_size=2)
        torch.testing.assert_close(chunked.relevance, whole.relevance, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(chunked.conservation, whole.conservation, rtol=1e-5, atol=1e-6)
        assert chunked.target.tolist() == targets
    name = [n.name for n in whole.plan.graph.call_nodes()][-2]
    torch.testing.assert_close(chunked.node_relevance(name), whole.node_relevance(name), rtol=1e-5, atol=1e-7)
    same = opwise.explain(model, x, target=1, internal_batch_size=8)
    torch.testing.assert_close(same.relevance, opwise.explain(model, x, target=1).relevance)
    with pytest.raises(opwise.InputError, match="positive integer"):
        opwise.explain(model, x, internal_batch_size=0)
    with pytest.raises(opwise.InputError, match="not a traced Graph"):
        opwise.explain(whole.plan.graph, x, internal_batch_size=2)


class _CountedPositions(nn.Module):
    """Position ids counted from the token ids (RoBERTa's padding-aware positions): integer arithmetic on the
    explained input that selects embeddings but carries no contribution."""

    def __init__(self):
        super().__init__()
        self.words, self.positions = nn.Embedding(10, 4), nn.Embedding(8, 4)
        self.head = nn.Linear(4, 3, bias=False)

    def forward(self, ids):
        mask = ids.ne(0).int()
        positions = torch.cumsum(mask, dim=1) * mask
        return self.head((self.words(ids) + self.positions(positions)).sum(1))


def test_integer_arithmetic_on_token_ids_needs_no_rule_and_takes_no_relevance():
    torch.manual_seed(0)
    model, ids = _CountedPositions().eval(), torch.tensor([[3, 5, 0, 0], [1, 2, 3, 4]])
    explanation = opwise.explain(model, ids, target=1, composite="epsilon", epsilon=1e-12)
    assert explanation.relevance.shape == ids.shape
    # the position embeddings are constants of the explained tokens, so the add gives the words all relevance
    torch.testing.assert_close(explanation.conservation[:, 0], explanation.conservation[:, 1], rtol=1e-5, atol=1e-7)
    assert "cumsum" not in str(opwise.rules.coverage(explanation.plan.graph))


def test_an_onnx_graph_at_the_wrong_batch_points_to_its_import(tmp_path):
    """'pass the model instead of the graph' cannot be followed for an imported file: the hint names the import."""
    pytest.importorskip("onnx")
    from opwise.tracing.onnx import load_onnx

    model = nn.Sequential(nn.Linear(3, 2)).eval()
    torch.onnx.export(model, (torch.zeros(1, 3),), str(tmp_path / "m.onnx"), dynamo=False)
    with pytest.raises(opwise.InputError, match=r"load_onnx\(path, batch_size=N\)"):
        opwise.explain(load_onnx(tmp_path / "m.onnx"), torch.randn(2, 3))


def test_an_integer_cast_on_the_only_path_is_a_clear_error(tmp_path):
    """An ONNX import has no trainable constants, so with an int8 cast on the path (fake quantization) autograd's
    'element 0 of tensors does not require grad' escaped; the error now names the integer-valued node."""
    pytest.importorskip("onnx")
    from opwise.tracing.onnx import load_onnx

    class Quantized(nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.last = nn.Linear(4, 5), nn.Linear(5, 3)

        def forward(self, x):
            return self.last(torch.round(self.first(x) / 0.1).to(torch.int8).to(torch.float32) * 0.1)

    torch.manual_seed(0)
    torch.onnx.export(Quantized().eval(), (torch.zeros(1, 4),), str(tmp_path / "q.onnx"), dynamo=False)
    with pytest.raises(opwise.InputError, match="integer-valued on the way"):
        opwise.explain(load_onnx(tmp_path / "q.onnx"), torch.rand(1, 4))
