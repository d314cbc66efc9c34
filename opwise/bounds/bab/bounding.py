"""Bounding a batch of branch-and-bound domains in one engine pass, and the root's shortcut bounds.

The input set is repeated once per domain and each domain's narrowed intervals enter the engine as
splits; batches are padded to the full batch size, so that a model is traced for one new batch size
(tracing costs a second or more).
"""

from __future__ import annotations

import math

import torch

from opwise.bounds.alpha import AlphaOptions
from opwise.bounds.bab.beta import optimize_alpha_beta
from opwise.bounds.bab.branching import Shortcut, SplitNode, split_nodes
from opwise.bounds.bab.domains import Domain, Guide, stack_intervals
from opwise.bounds.bounded_model import BoundedModel
from opwise.bounds.engine import BoundPropagation
from opwise.bounds.input_set import InputSet
from opwise.bounds.spec import Specification
from opwise.bounds.transfers.registry import Interval
from opwise.errors import InputError

#: rows per backward pass when computing the root's shortcut bounds
SHORTCUT_CHUNK = 1024


class DomainBounder:
    """Bounds the property margin of domains: min over disjuncts of the best row's `C y - d` lower bound.

    "alpha-crown" optimizes α with the domains' split multipliers β (beta.py); "crown" uses neither,
    so its splits only tighten relaxations.

    >>> import torch
    >>> from opwise.bounds.spec import Specification, robustness_disjuncts
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    >>> bounder = DomainBounder(BoundedModel(model, torch.zeros(1, 2)),
    ...     Specification(torch.zeros(1, 2), torch.ones(1, 2) * 0.1, robustness_disjuncts(2, 0)), "crown")
    >>> root = bounder.root()
    >>> sorted(root.intervals), root.guide is not None
    (['linear'], True)
    """

    def __init__(self, bounded: BoundedModel, spec: Specification, method: str = "alpha-crown",
                 alpha: AlphaOptions | None = None):
        if method not in ("crown", "alpha-crown"):
            raise InputError(f"branch-and-bound bounds with 'crown' or 'alpha-crown', not {method!r}")
        self.bounded, self.spec, self.method, self.alpha = bounded, spec, method, alpha
        self.C = torch.cat([d.C for d in spec.unsafe]).to(bounded.device)
        self.d = torch.cat([d.d for d in spec.unsafe]).to(bounded.device)
        self.groups = [len(d.d) for d in spec.unsafe]
        self.nodes: list[SplitNode] = split_nodes(bounded.graph)
        self.visited = 0

    def input_set(self, batch: int) -> InputSet:
        lower, upper = self.spec.x_lower.to(self.bounded.device), self.spec.x_upper.to(self.bounded.device)
        return InputSet(lower.expand(batch, *lower.shape[1:]), upper.expand(batch, *upper.shape[1:]))

    def root(self) -> Domain:
        """The unsplit domain, bounded (its intervals are the engine's intermediate bounds)."""
        domain = Domain({node.input: Interval(torch.full((1,), -math.inf), torch.full((1,), math.inf))
                         for node in self.nodes})
        engine = self._engine([domain], 1, root=True)
        self._bound_with(engine, [domain])
        return domain

    def bound(self, domains: list[Domain], batch_size: int) -> None:
        """Set each domain's `lower`, `guide` and tightened intervals (infeasible domains get +inf)."""
        size = batch_size
        if self.bounded.graph_for(size) is None:
            size = self.bounded.example_shape[0]
        for start in range(0, len(domains), size):
            chunk = domains[start : start + size]
            padded = chunk + [chunk[-1]] * (size - len(chunk))
            self._bound_with(self._engine(padded, size), chunk)

    def _engine(self, domains: list[Domain], size: int, root: bool = False) -> BoundPropagation:
        graph = self.bounded.graph_for(size) or self.bounded.graph
        splits = {} if root else self.bounded.split_nodes(graph, stack_intervals(domains))
        return BoundPropagation(graph, self.input_set(size), "crown", splits)

    def _bound_with(self, engine: BoundPropagation, domains: list[Domain]) -> None:
        graph, count = engine.graph, len(domains)
        output = graph.output
        shape = graph.info(output).shape
        batch = shape[0]
        A = self.C[:, None, :].expand(len(self.C), batch, self.C.shape[1]).reshape(len(self.C), *shape)
        engine.prepare(output)
        by_name = {node.name: node for node in graph.nodes}
        engine.record = {by_name[node.nonlinear] for node in self.nodes}
        if self.method == "alpha-crown":
            lower = optimize_alpha_beta(engine, output, A, self.alpha)
        else:
            lower = engine.backward(output, A)
        margins, rows = self._margins(lower.detach() - self.d[:, None])
        input_coefficient, bias = (t.detach() for t in engine.last_linear)
        self.visited += count
        for index, domain in enumerate(domains):
            row = int(rows[index])
            infeasible = bool(engine.infeasible[index])
            # a child's inputs are among its parent's, so the parent's bound (carried in `lower`) holds too
            domain.lower = math.inf if infeasible else max(domain.lower, float(margins[index]))
            domain.guide = Guide({node.nonlinear: engine.coefficients_at[by_name[node.nonlinear]][row, index : index + 1]
                                  for node in self.nodes},
                                 input_coefficient[row, index : index + 1], bias[row, index])
            if not infeasible:
                for node in self.nodes:
                    interval = engine.interval(by_name[node.input])
                    domain.intervals[node.input] = Interval(interval.lower[index : index + 1], interval.upper[index : index + 1])
        engine.record = set()
        self.last_engine = engine

    def _margins(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per domain the margin bound (min over disjuncts of max over their rows) and its deciding row."""
        best_values, best_rows = [], []
        start = 0
        for size in self.groups:
            value, row = rows[start : start + size].max(0)
            best_values.append(value)
            best_rows.append(row + start)
            start += size
        values, rows_ = torch.stack(best_values), torch.stack(best_rows)
        worst = values.argmin(0)
        pick = torch.arange(values.shape[1])
        return values[worst, pick], rows_[worst, pick]

    def shortcuts(self) -> dict[str, Shortcut]:
        """Linear bounds of every split node's input in terms of the input, over the whole input set (root)."""
        engine = self.last_engine
        by_name = {node.name: node for node in engine.graph.nodes}
        result = {}
        for node in self.nodes:
            if node.input in result:
                continue
            target = by_name[node.input]
            shape = engine.graph.info(target).shape
            elements = math.prod(shape[1:])
            eye = torch.eye(elements, device=self.bounded.device)
            coefficients, biases = [], []
            for chunk in torch.cat([eye, -eye]).split(SHORTCUT_CHUNK):
                engine.backward(target, chunk.reshape(chunk.shape[0], 1, *shape[1:]))
                coefficient, bias = engine.last_linear
                coefficients.append(coefficient.detach().reshape(chunk.shape[0], -1))
                biases.append(bias.detach()[:, 0])
            coefficient, bias = torch.cat(coefficients), torch.cat(biases)
            result[node.input] = Shortcut(coefficient[:elements], bias[:elements], -coefficient[elements:], -bias[elements:])
        return result

    def primal_inputs(self, domains: list[Domain]) -> torch.Tensor:
        """Per domain, the box corner that minimizes its bound's linear function: a likely counterexample."""
        box = self.input_set(1)
        return torch.cat([torch.where(d.guide.input_coefficient >= 0, box.lower, box.upper) for d in domains])
