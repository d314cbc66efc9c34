"""Products of variables in a property's constraints: extra columns computed after the network's output.

VNN-LIB 2 allows polynomial constraints (VNN-COMP 2026's adaptive cruise control asserts kinematics such as
`(>= (* X[0,0] 200.0) (* X[0,1] X[0,1]))`, and outputs times inputs). The reader names each product of two
non-constant linear terms a column `P_k` (a product of more factors is a chain of them: x*y*z = (x*y)*z), so every
constraint stays linear over the outputs, the inputs and the P_k, and a property's rows keep their form. The network
is then bounded with its input and the products appended to its output (`AppendedColumns`): the bound engine relaxes
x*y (bilinear) and x**2 (pow) as it does inside any network, and input splitting and GenBaB refine them like any
other node; nothing special-cases the constraint.

>>> products = Products()
>>> square = products.name(({"X_1": 1.0}, 0.0), ({"X_1": 1.0}, 0.0))    # X_1 * X_1
>>> mixed = products.name(({"X_0": 2.0}, 0.0), ({"Y_0": 1.0}, 0.0))     # (2 X_0) * Y_0
>>> square, mixed, len(products)
('P_0', 'P_1', 2)
>>> products.values(torch.tensor([[3.0]]), torch.tensor([[0.5, -2.0]]), outputs=1, inputs=2).tolist()
[[4.0, 3.0]]
"""

from __future__ import annotations

import torch

Linear = tuple[dict[str, float], float]
"""A linear term: (coefficient by variable name, constant)."""


class Products:
    """The distinct products of a property, each of two linear factors over the outputs Y_j, inputs X_i and earlier
    products P_k. Column order (`positions`): by level (a product of products comes after them), squares first within
    a level, so `AppendedColumns` computes each level with one pow and one bilinear product."""

    def __init__(self) -> None:
        self.factors: list[tuple[Linear, Linear]] = []
        self.lines: list[int | None] = []  # the line each product is first written on (for messages)
        self._named: dict[tuple, str] = {}

    def __len__(self) -> int:
        return len(self.factors)

    def name(self, left: Linear, right: Linear, line: int | None = None) -> str:
        """The column name of left * right (one name per distinct product, in either order)."""
        key = tuple(sorted((_key(left), _key(right))))
        if key not in self._named:
            self._named[key] = f"P_{len(self.factors)}"
            self.factors.append((left, right))
            self.lines.append(line)
        return self._named[key]

    def levels(self) -> list[list[int]]:
        """Product indices by level (1 + the deepest product a factor reads), squares first within a level."""
        depth: list[int] = []
        for left, right in self.factors:
            read = [depth[int(name[2:])] for terms, _ in (left, right) for name in terms if name.startswith("P")]
            depth.append(1 + max(read, default=0))
        grouped: dict[int, list[int]] = {}
        for index in sorted(range(len(depth)), key=lambda i: (depth[i], not self.is_square(i), i)):
            grouped.setdefault(depth[index], []).append(index)
        return [grouped[level] for level in sorted(grouped)]

    def positions(self) -> dict[str, int]:
        """Each product's column among the product columns (after the outputs and inputs)."""
        order = [index for level in self.levels() for index in level]
        return {f"P_{index}": position for position, index in enumerate(order)}

    def is_square(self, index: int) -> bool:
        left, right = self.factors[index]
        return _key(left) == _key(right)

    def values(self, y: torch.Tensor, x: torch.Tensor, outputs: int, inputs: int) -> torch.Tensor:
        """The product columns ([batch, products], in `positions` order) at outputs y and inputs x, in their dtype:
        what the competition's check computes from the network's outputs (in float64 where it is given float64)."""
        columns = AppendedColumns.weights(self, outputs, inputs, y.dtype, y.device)
        v = torch.cat([y.reshape(len(y), -1), x.reshape(len(x), -1)], dim=1)
        return _levels(v, columns)[:, outputs + inputs:]


    def bounds(self, lower: torch.Tensor, upper: torch.Tensor, outputs: int,
               inputs: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Interval bounds of the product columns (in `positions` order) from bounds of the outputs and inputs
        (`lower`, `upper` [outputs + inputs], ±inf where none), level by level: a product of two bounded factors
        is bounded by its factors' corners; a square is never below 0; anything else is unbounded.

        >>> products = Products()
        >>> _ = products.name(({"X_0": 1.0}, 0.0), ({"X_0": 1.0}, 0.0)), products.name(({"X_0": 1.0}, 0.0), ({"Y_0": 1.0}, 0.0))
        >>> low, high = products.bounds(torch.tensor([-float("inf"), -1.0]), torch.tensor([float("inf"), 2.0]), 1, 1)
        >>> low.tolist(), high.tolist()
        ([0.0, -inf], [4.0, inf])
        """
        low, high = lower.double().flatten(), upper.double().flatten()
        for squares, others in AppendedColumns.weights(self, outputs, inputs, torch.float64):
            parts_low, parts_high = [low], [high]
            if squares is not None:
                a_low, a_high = _affine_interval(low, high, *squares)
                straddles = (a_low <= 0) & (a_high >= 0)
                parts_low.append(torch.where(straddles, 0.0, torch.minimum(a_low ** 2, a_high ** 2)))
                parts_high.append(torch.maximum(a_low ** 2, a_high ** 2))
            if others is not None:
                (a_low, a_high), (b_low, b_high) = (_affine_interval(low, high, *others[:2]),
                                                    _affine_interval(low, high, *others[2:]))
                corners = torch.stack([a_low * b_low, a_low * b_high, a_high * b_low, a_high * b_high])
                finite = torch.isfinite(torch.stack([a_low, a_high, b_low, b_high])).all(dim=0)
                parts_low.append(torch.where(finite, corners.amin(dim=0), -torch.inf))
                parts_high.append(torch.where(finite, corners.amax(dim=0), torch.inf))
            low, high = torch.cat(parts_low), torch.cat(parts_high)
        return low[outputs + inputs:], high[outputs + inputs:]


class AppendedColumns(torch.nn.Module):
    """A network followed by its own input and the property's products: outputs [batch, outputs + inputs +
    products]. A property relating outputs to inputs (`Y_0 >= X_0 + 3`), or with products of variables, is then rows
    over this output alone. Each level of products is a linear map of the columns so far, then a square (pow 2) or a
    product of two linear maps."""

    def __init__(self, network: torch.nn.Module, products: Products | None, outputs: int, inputs: int,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.network = network
        levels = self.weights(products, outputs, inputs, dtype) if products else []
        self.kinds = [[part is not None for part in level] for level in levels]  # which parts each level has
        self.tensors = torch.nn.ParameterList([torch.nn.Parameter(w, requires_grad=False)
                                               for level in levels for part in level if part is not None for w in part])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = torch.cat([self.network(x).reshape(len(x), -1), x.reshape(len(x), -1)], dim=1)
        tensors = iter(self.tensors)
        levels = [tuple(tuple(next(tensors) for _ in range(2 * (i + 1))) if present else None
                        for i, present in enumerate(kinds)) for kinds in self.kinds]
        return _levels(v, levels)

    @staticmethod
    def weights(products: Products, outputs: int, inputs: int, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> list[tuple]:
        """Per level: (the squares' factor map (weight, bias) or None, the other products' left and right maps
        (weight, bias, weight, bias) or None), each map over the columns before the level."""
        positions = products.positions()
        width = outputs + inputs
        levels = []
        for level in products.levels():
            squares = [i for i in level if products.is_square(i)]
            others = [i for i in level if not products.is_square(i)]
            parts = []
            for indices, sides in ((squares, (0,)), (others, (0, 1))):
                maps = [t for side in sides for t in _affine([products.factors[i][side] for i in indices], outputs,
                                                               inputs, positions, width, dtype, device)]
                parts.append(tuple(maps) if indices else None)
            levels.append(tuple(parts))
            width += len(level)
        return levels


def _levels(v: torch.Tensor, levels: list[tuple]) -> torch.Tensor:
    """v with each level's products appended (maps as AppendedColumns.weights makes them)."""
    linear = torch.nn.functional.linear
    for squares, others in levels:
        parts = [v]
        if squares is not None:
            parts.append(linear(v, *squares) ** 2)
        if others is not None:
            parts.append(linear(v, *others[:2]) * linear(v, *others[2:]))
        v = torch.cat(parts, dim=1)
    return v


def _affine_interval(low: torch.Tensor, high: torch.Tensor, weight: torch.Tensor,
                     bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Interval bounds of `weight @ v + bias` for v in [low, high] (±inf allowed: a zero weight ignores them)."""
    positive, negative = weight > 0, weight < 0
    lower = torch.where(positive, weight * low, 0.0) + torch.where(negative, weight * high, 0.0)
    upper = torch.where(positive, weight * high, 0.0) + torch.where(negative, weight * low, 0.0)
    return lower.sum(dim=1) + bias, upper.sum(dim=1) + bias


def _affine(terms: list[Linear], outputs: int, inputs: int, positions: dict[str, int], width: int,
            dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The linear terms as (weight [terms, width], bias [terms]) over the columns: Y_j, then X_i, then products."""
    weight = torch.zeros(len(terms), width, dtype=torch.float64)
    bias = torch.zeros(len(terms), dtype=torch.float64)
    for row, (coefficients, constant) in enumerate(terms):
        bias[row] = constant
        for name, coefficient in coefficients.items():
            index = int(name[2:])
            column = {"Y": index, "X": outputs + index}.get(name[0])
            weight[row, outputs + inputs + positions[name] if column is None else column] += coefficient
    return weight.to(dtype=dtype, device=device), bias.to(dtype=dtype, device=device)


def _key(term: Linear) -> tuple:
    coefficients, constant = term
    return tuple(sorted(coefficients.items())), constant
