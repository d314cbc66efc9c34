"""The Graph API other packages use instead of reaching in: node lookup, rewrites, batch sizes, devices."""

from __future__ import annotations

import pytest
import torch

import opwise
from opwise.tracing.batching import padded_size


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).eval()


def test_node_by_name_and_a_clear_error_for_a_missing_one():
    graph = opwise.trace(_mlp(), torch.zeros(1, 3))
    relu = next(n for n in graph.call_nodes() if graph.info(n).op == "aten.relu.default")
    assert graph.node(relu.name) is relu
    with pytest.raises(KeyError, match="no node 'nowhere'"):
        graph.node("nowhere")


def _double_relu(module) -> bool:
    """Replace relu(x) by 2·relu(x) (a new node, to be annotated by the rewrite)."""
    relu = next(n for n in module.graph.nodes if n.target is torch.ops.aten.relu.default)
    with module.graph.inserting_after(relu):
        doubled = module.graph.call_function(torch.ops.aten.mul.Tensor, (relu, 2.0))
    relu.replace_all_uses_with(doubled, delete_user_cb=lambda user: user is not doubled)
    return True


def test_rewrite_copies_annotates_and_is_reapplied_at_other_batch_sizes():
    model, x = _mlp(), torch.randn(5, 3)
    graph = opwise.trace(model, torch.zeros(1, 3))
    rewritten = graph.rewrite(_double_relu)
    assert graph.rewrite(lambda module: False) is graph  # nothing changed: the same graph
    assert [graph.info(n).op for n in graph.call_nodes()].count("aten.mul.Tensor") == 0  # the original is untouched
    mul = next(n for n in rewritten.call_nodes() if rewritten.info(n).op == "aten.mul.Tensor")
    assert rewritten.info(mul).shape == (1, 4) and rewritten.info(mul).depends_on_input
    expected = model[2](2 * model[1](model[0](x)))
    wide = rewritten.for_batch(5)
    assert wide.batch_size == 5 and any(wide.info(n).op == "aten.mul.Tensor" for n in wide.call_nodes())
    torch.testing.assert_close(wide(x), expected)


def test_for_batch_caches_and_map_batches_pads_and_chunks():
    model = _mlp()
    graph = opwise.trace(model, torch.zeros(2, 3))
    assert graph.for_batch(8) is graph.for_batch(8) and graph.for_batch(2) is graph
    sizes = []

    def run(specialized, chunk):
        sizes.append((specialized.batch_size, len(chunk)))
        return specialized(chunk), None

    x = torch.randn(5, 3)
    y, nothing = graph.map_batches(run, x)
    torch.testing.assert_close(y, model(x))
    assert nothing is None and sizes == [(8, 8)]  # 5 samples padded to 8, one pass
    sizes.clear()
    y, _ = graph.map_batches(run, torch.randn(20, 3), max_batch=8)
    assert y.shape == (20, 2) and sizes == [(8, 8)] * 3  # chunks of the largest batch, the last one padded
    assert [padded_size(n, 1024) for n in (1, 2, 3, 1000, 5000)] == [1, 2, 4, 1024, 1024]


def test_map_batches_reuses_a_larger_specialization_instead_of_tracing_again():
    """5 samples would pad to 8: a graph already specialized to 32 (at most 8 × 8) runs them there; one
    specialized only to 128 (more than 8 × 8 of padding) gets its batch of 8."""
    for ready, used in ((32, 32), (128, 8)):
        graph = opwise.trace(_mlp(), torch.zeros(2, 3))
        graph.for_batch(ready)
        sizes = []
        graph.map_batches(lambda specialized, chunk: sizes.append(specialized.batch_size) or specialized(chunk),
                          torch.randn(5, 3))
        assert sizes == [used]


def test_a_model_fixed_to_its_batch_size_runs_in_chunks_of_it(tmp_path):
    """A program exported without a dynamic batch cannot be traced at another batch size: for_batch raised
    the TraceError instead of returning the graph itself, so map_batches (and every bound pass and attack over
    it, e.g. opwise.verify) failed."""
    from opwise.tracing.loading import load_model

    model = _mlp()
    torch.export.save(torch.export.export(model, (torch.zeros(1, 3),)), tmp_path / "fixed.pt2")
    fixed = load_model(str(tmp_path / "fixed.pt2")).model  # its guards refuse any other batch size
    graph = opwise.trace(fixed, torch.zeros(1, 3))
    assert graph.for_batch(4) is graph
    x = torch.randn(5, 3)
    torch.testing.assert_close(graph.map_batches(lambda g, chunk: g(chunk), x), model(x))


def test_a_graph_that_cannot_change_batch_runs_in_chunks_of_its_own(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]), helper.make_node("Relu", ["t"], ["r"]),
             helper.make_node("Transpose", ["r"], ["y"], perm=[1, 0])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    path = tmp_path / "axis0.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    from opwise.tracing.onnx import load_onnx

    imported = load_onnx(path, batch_size=1)
    assert imported.for_batch(4) is imported  # the importer refuses batch 4 (axis 0 moves)
    x = torch.randn(5, 3)
    torch.testing.assert_close(imported.map_batches(lambda g, chunk: g(chunk), x), x.relu())


def test_to_copies_constants_and_leaves_the_model_where_it_is():
    model = _mlp()
    graph = opwise.trace(model, torch.zeros(1, 3))
    moved = graph.to(torch.device("cpu"))
    assert moved is graph  # already there
    copied = graph.rewrite(_double_relu).to("meta")
    assert copied.device.type == "meta" and next(model.parameters()).device.type == "cpu"
    assert all(p.device.type == "cpu" for p in graph.module.parameters())
    assert copied.for_batch(4).device.type == "meta"


def test_declared_input_fields():
    graph = opwise.trace(_mlp(), torch.zeros(1, 3))
    assert graph.input_names == ["arg0"] and graph.layout is not None and graph.opset is None


def test_a_graph_called_at_another_batch_size_runs_instead_of_failing_on_its_fixed_shapes():
    """Traced graphs and ONNX imports are specialized to a batch size (a Flatten becomes a view to [1, N]); called
    with 5 samples they failed with "shape '[1, 72]' is invalid". They now run through map_batches, and match the
    model sample by sample. A graph that already runs at the new size (one that mixes samples) keeps running as it
    is: padding it to a power of two would change its result."""
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(72, 3)).eval()
    graph = opwise.trace(model, torch.zeros(1, 1, 8, 8))
    x = torch.rand(5, 1, 8, 8)
    attempts = []
    graph.module.register_forward_pre_hook(lambda module, args: attempts.append(args[0].shape[0]))
    with torch.no_grad():
        assert torch.allclose(graph(x), model(x), atol=1e-6)
        assert torch.allclose(graph(x), model(x), atol=1e-6)
    assert attempts == [5]  # the size it failed at is remembered: a loop does not fail on every call

    class Mix(torch.nn.Module):
        def forward(self, x):
            return x.flip(0) + x.sum(0, keepdim=True)

    mixing = opwise.trace(Mix(), torch.zeros(2, 3))
    x = torch.rand(3, 3)
    assert torch.allclose(mixing(x), Mix()(x))
    with pytest.raises(RuntimeError):  # a failure at the graph's own batch size is the model's, and is raised
        graph(torch.zeros(1, 1, 7, 7))
