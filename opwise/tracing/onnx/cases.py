"""Networks whose free input elements are read only through integer casts: evaluated at one point per cell.

cctsdb_yolo 2023's networks take an image, a patch position and a box in one input; its properties fix all
but the position (X_12288, X_12289 in [0, 62]), which the network casts to int64 and slices the image with. On a
cell where every such cast gives one integer the network is constant in those elements, so its outputs on the
box are its outputs at one point per cell (63 × 63 here), and each such point fixes every element (fixed.py).

Importing the network at each point would take seconds each, so `CasePoints` evaluates it in parts from one
import at the first point: values that do not depend on the discrete elements are kept from there, the light
nodes that do (the index arithmetic, slices and scatters fixed.py follows) run per point, and the rest (the
convolutions on) for many points at once, under `torch.func.vmap`.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import torch

from opwise.tracing.onnx.fixed import FOLLOWED_OPS, FixedElements, FixedFolding

#: nodes cheap enough to run once per point besides those fixed.py follows (they make index tensors)
_LIGHT = FOLLOWED_OPS | {"Cast", "Constant", "ConstantOfShape", "Range"}

#: the most points evaluated
MAX_CASES = 100_000


def integer_cells(lower: torch.Tensor, upper: torch.Tensor, discrete: torch.Tensor,
                  max_cases: int = MAX_CASES) -> torch.Tensor | None:
    """One point ([cases, n], float64) per combination of the integers that truncating the `discrete` elements
    gives on the box [lower, upper] (read in float32 as the network reads them), the other elements at `lower`;
    None when there are more than `max_cases` or an element is too large to cast exactly.

    >>> integer_cells(torch.tensor([0.5, 1.0]), torch.tensor([2.0, 1.0]), torch.tensor([True, False])).tolist()
    [[0.5, 1.0], [1.0, 1.0], [2.0, 1.0]]
    """
    lower, upper = lower.double().flatten(), upper.double().flatten()
    indices = torch.nonzero(discrete.flatten()).flatten().tolist()
    choices = []
    for index in indices:
        low, high = float(lower[index]), float(upper[index])
        if not (abs(low) < 2**24 and abs(high) < 2**24):
            return None
        first = min(math.trunc(low), math.trunc(float(torch.tensor(low, dtype=torch.float32))))
        last = max(math.trunc(high), math.trunc(float(torch.tensor(high, dtype=torch.float32))))
        choices.append([min(max(float(n), low), high) for n in range(first, last + 1)])
    if math.prod(len(values) for values in choices) > max_cases:
        return None
    combinations = torch.tensor(list(itertools.product(*choices)), dtype=torch.float64).reshape(-1, len(indices))
    points = lower.repeat(len(combinations), 1)
    points[:, indices] = combinations
    return points


class CasePoints:
    """The network of one ONNX file at points that agree on every element except discrete ones (`discrete`),
    which it reads only through integer casts; see the module docstring."""

    def __init__(self, folding: FixedFolding, input_name: str, input_shape: list[int]):
        self.folding, self.input_name, self.input_shape = folding, input_name, input_shape
        tracked = folding.tracked
        case = {name for name, state in tracked.items() if state.case is not None}
        self.per_point, self.remainder = [], []
        late: set[str] = set()
        for node in folding.nodes:
            outputs = [name for name in node.outputs if name in case]
            if not outputs:
                continue
            reads_late = any(name in late for name in node.inputs)
            if node.op_type in _LIGHT and not reads_late:
                self.per_point.append(node)
            else:
                self.remainder.append(node)
                late.update(outputs)
        made_per_point = {name for node in self.per_point for name in node.outputs} | {input_name}
        frontier = [name for node in self.remainder for name in node.inputs if name in made_per_point]
        if folding.output in made_per_point:
            frontier.append(folding.output)
        self.frontier = list(dict.fromkeys(frontier))
        self.batched: bool | None = None  # whether vmap runs the remainder as one point at a time does (once checked)
        self.base = {name: value for name, value in folding.env.items() if name not in case}
        self.base.update((name, state.value) for name, state in tracked.items() if name not in case)

    @classmethod
    def open(cls, path: str | Path, point: torch.Tensor, discrete: torch.Tensor) -> "CasePoints | str":
        """The evaluator for the network at `path` (one input, its elements numbered flat) at points like
        `point` that differ only where `discrete` is True; or why not (a node that reads a discrete element
        other than through an integer cast)."""
        from opwise.tracing.onnx.importer import load_onnx_folding

        fixed = FixedElements(~discrete.flatten(), point.flatten(), discrete.flatten())
        graph, folding = load_onnx_folding(path, fixed={0: fixed}, first_output=True)
        if folding.misuses:
            return ("the network reads a free input element other than through an integer cast (or where opwise "
                    f"does not follow it) at {folding.misuses[0]}")
        name = graph.input_names[0]
        return cls(folding, name, list(graph.info(graph.explained_inputs[0]).shape))

    def outputs(self, points: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """The network's outputs ([points, outputs], flat) at `points` ([points, n])."""
        results = []
        for start in range(0, len(points), chunk):
            frontiers = [self._frontier(point) for point in points[start:start + chunk]]
            results.append(self._remainder_batch(frontiers))
        return torch.cat(results)

    def _frontier(self, point: torch.Tensor) -> list[torch.Tensor]:
        env = dict(self.base)
        env[self.input_name] = point.to(self.folding.tracked[self.input_name].value.dtype).reshape(self.input_shape)
        self._run(self.per_point, env)
        return [env[name] for name in self.frontier]

    def _remainder_batch(self, frontiers: list[list[torch.Tensor]]) -> torch.Tensor:
        """The remainder at every point's frontier values: under vmap where they share their shapes (the first
        time checked against one point run alone), else one at a time."""
        one_at_a_time = lambda: torch.cat([self._remainder(*values).reshape(1, -1) for values in frontiers])  # noqa: E731
        shapes = {tuple(tuple(value.shape) for value in values) for values in frontiers}
        if len(shapes) != 1 or self.batched is False:
            return one_at_a_time()
        stacked = [torch.stack(values) for values in zip(*frontiers)]
        try:
            batch = torch.func.vmap(self._remainder)(*stacked).reshape(len(frontiers), -1)
        except (RuntimeError, ValueError, TypeError):
            batch = None
        if self.batched is None:
            self.batched = batch is not None and torch.allclose(
                batch[:1], self._remainder(*frontiers[0]).reshape(1, -1), rtol=1e-5, atol=1e-6)
        return batch if self.batched else one_at_a_time()

    def _remainder(self, *frontier: torch.Tensor) -> torch.Tensor:
        env = dict(self.base)
        env.update(zip(self.frontier, frontier))
        self._run(self.remainder, env)
        return env[self.folding.output]

    def _run(self, nodes: list, env: dict[str, Any]) -> None:
        for node in nodes:
            values = self.folding.evaluate(node, [env[name] if name else None for name in node.inputs])
            if values is None:
                raise RuntimeError(f"ONNX node '{node.name}' ({node.op_type}) could not be evaluated at a point")
            env.update((name, value) for name, value in zip(node.outputs, values) if name)
