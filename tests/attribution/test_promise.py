"""The memory policy and promise resolution: what is kept, and recomputation from checkpoints."""

from __future__ import annotations

import pytest
import torch

import opwise
from opwise.attribution.promise import ActivationStore, memory_policy
from tests.attribution.models import FanOut


@pytest.fixture(scope="module")
def graph():
    return opwise.trace(FanOut().eval(), torch.randn(2, 2, 6, 6))


def test_keep_all_keeps_what_is_needed_in_one_segment(graph):
    needed = {n.name for n in graph.call_nodes()}
    kept, segments = memory_policy(graph, "all", needed)
    assert kept == needed and len(segments) == 1


def test_checkpoints_recompute_every_value_exactly(graph):
    operations = [n for n in graph.call_nodes() if graph.depends_on_input(n)]
    kept, segments = memory_policy(graph, "checkpoints", {n.name for n in operations})
    assert len(segments) > 1 and len(kept & {n.name for n in operations}) < len(operations)
    x = torch.randn(2, 2, 6, 6)
    values = {graph.input_nodes[0].name: x}
    for node in graph.call_nodes():
        args = torch.fx.node.map_arg(node.args, lambda n: values.get(n.name, graph.constant(n) if n.op == "get_attr" else None))
        values[node.name] = node.target(*args, **node.kwargs)
    store = ActivationStore(graph, kept, segments)
    for name in kept:
        if name in values:
            store.put(name, values[name])
    for node in reversed(operations):
        torch.testing.assert_close(store.promise(node.name).resolve(), values[node.name])
    assert 0 < store.recomputations <= len(segments)  # resolved backwards: each segment recomputed once


def test_a_byte_budget_keeps_whole_segments_while_they_fit(graph):
    from opwise.attribution.promise import needed_bytes

    needed = {n.name for n in graph.call_nodes()}
    checkpoints, _ = memory_policy(graph, "checkpoints", needed)
    floor, everything = needed_bytes(graph, checkpoints), needed_bytes(graph, needed)
    assert memory_policy(graph, everything, needed)[0] == needed
    assert memory_policy(graph, floor, needed)[0] == checkpoints
    middle = (floor + everything) // 2
    kept, segments = memory_policy(graph, middle, needed)
    assert checkpoints < kept and kept & needed < needed and needed_bytes(graph, kept) <= middle
    whole = [s for s in segments if {n.name for n in s} <= kept]
    assert whole  # at least one segment needs no recomputation


def test_stored_values_are_dropped_once_no_rule_reads_them():
    torch.manual_seed(0)
    model, x = FanOut().eval(), torch.randn(2, 2, 6, 6)
    for keep in ("all", "checkpoints"):
        plan = opwise.explain(model, x, target=0, composite="epsilon", keep=keep).plan
        dependent = {n.name for n in plan.graph.call_nodes() if plan.graph.depends_on_input(n)}
        source = x.clone().requires_grad_()
        with torch.enable_grad():
            out = plan.run([source])
            assert set(plan.store.values) & dependent
            torch.autograd.grad(out.reshape(2, -1)[:, 0].sum(), source)
        assert not set(plan.store.values) & dependent, keep
        assert plan.store._recomputed is None
