"""Where to split a neuron's input interval in GenBaB: pre-optimised points from a lookup table.

Splitting [l, u] at p tightens the relaxation on [l, p] and [p, u]. The best p minimises the summed
relaxation gap, the area between the upper and the lower line of the default relaxation on each part.
`build_split_table` finds it by a vectorised search over candidate points for every (l, u) on a grid;
scripts/build_split_tables.py ships the results as opwise/bounds/tables/<function>.npz, which
`split_point` looks up (bilinear interpolation of the relative position (p - l) / (u - l)).

Products x·y need no table: the McCormick gap volume of a box is c·(ux - lx)²(uy - ly)² (the bilinear
term is affine-invariant, linear terms are exact), so splitting x at p leaves c·((p - lx)² + (ux - p)²)(uy - ly)²,
smallest at the midpoint. "mul" therefore always gets the midpoint.

>>> split_point("sigmoid", torch.tensor([-1.0]), torch.tensor([3.0]), mode="midpoint")
tensor([1.])
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import torch

from opwise.bounds.relaxations.curvature import CurvatureRelaxation
from opwise.bounds.relaxations.elementary import ExpRelaxation
from opwise.bounds.relaxations.gelu_silu import GeluRelaxation, SiluRelaxation, TanhGeluRelaxation
from opwise.bounds.relaxations.sshaped import SigmoidRelaxation, TanhRelaxation
from opwise.bounds.relaxations.trig import SineRelaxation
from opwise.errors import OpwiseError

TABLE_DIRECTORY = Path(__file__).resolve().parents[2] / "tables"
TABLE_FUNCTIONS: dict[str, CurvatureRelaxation] = {
    "sigmoid": SigmoidRelaxation(),
    "tanh": TanhRelaxation(),
    "sin": SineRelaxation(),
    "cos": SineRelaxation(phase=float(np.pi / 2)),
    "gelu": GeluRelaxation(),
    "gelu_tanh": TanhGeluRelaxation(),
    "silu": SiluRelaxation(),
    "exp": ExpRelaxation(),
}
MIDPOINT_FUNCTIONS = ("mul",)
# The table's ratio is kept this far from 0 and 1 so that p is strictly inside (l, u).
RATIO_MARGIN = 0.01


def relaxation_gap(relaxation: CurvatureRelaxation, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Area between the default upper and lower lines over [lower, upper] (lines: exact at the midpoint).

    >>> relaxation_gap(SigmoidRelaxation(), torch.tensor([1.0]), torch.tensor([1.0]))
    tensor([0.])
    """
    lines = relaxation.relax(lower, upper)
    middle = (lower + upper) / 2
    height = (lines.upper_slope - lines.lower_slope) * middle + lines.upper_intercept - lines.lower_intercept
    return (upper - lower) * height


def best_split_ratios(relaxation: CurvatureRelaxation, lower: torch.Tensor, upper: torch.Tensor, candidates: int = 99) -> torch.Tensor:
    """For each [l, u] (1-D, float64), the relative position r of p = l + r (u - l) among
    r = 1/(candidates+1), ..., candidates/(candidates+1) with the smallest summed gap.

    >>> best_split_ratios(ExpRelaxation(), torch.tensor([0.0], dtype=torch.float64), torch.tensor([4.0], dtype=torch.float64))
    tensor([0.6500], dtype=torch.float64)
    """
    ratios = torch.arange(1, candidates + 1, dtype=torch.float64) / (candidates + 1)
    points = lower[:, None] + (upper - lower)[:, None] * ratios[None, :]
    left_lower, right_upper = lower[:, None].expand_as(points), upper[:, None].expand_as(points)
    gap = relaxation_gap(relaxation, left_lower.reshape(-1), points.reshape(-1)) + relaxation_gap(
        relaxation, points.reshape(-1), right_upper.reshape(-1)
    )
    gap = gap.reshape(points.shape)
    # ties (symmetric intervals give r and 1 - r) go to the candidate nearest the midpoint, then the lower
    smallest = gap.min(dim=1, keepdim=True).values
    tied = gap <= smallest + 1e-9 * smallest.abs() + 1e-12
    distance = torch.where(tied, (ratios - 0.5).abs(), torch.full_like(gap, float("inf")))
    return ratios[distance.argmin(dim=1)]


def build_split_table(function: str, low: float, high: float, step: float, candidates: int = 99, chunk: int = 2000) -> dict[str, np.ndarray]:
    """The arrays of one shipped table: the grid (low, step, size) and the best ratio for every grid
    pair l < u, upper triangle row by row (numpy.triu_indices(size, 1) order), as float16.

    >>> table = build_split_table("exp", 0.0, 2.0, 1.0, candidates=9)
    >>> [round(float(r), 3) for r in table["ratio"]]
    [0.5, 0.6, 0.5]
    """
    relaxation = TABLE_FUNCTIONS[function]
    size = int(round((high - low) / step)) + 1
    grid = low + step * np.arange(size)
    rows, columns = np.triu_indices(size, 1)
    lower = torch.from_numpy(grid[rows])
    upper = torch.from_numpy(grid[columns])
    ratio = torch.cat([best_split_ratios(relaxation, lower[i : i + chunk], upper[i : i + chunk], candidates) for i in range(0, len(rows), chunk)])
    return {"low": np.float64(low), "step": np.float64(step), "size": np.int64(size), "ratio": ratio.numpy().astype(np.float16)}


@dataclasses.dataclass
class SplitTable:
    """A loaded table: ratio[i, j] for l = low + i·step, u = low + j·step (0.5 where i >= j)."""

    low: float
    step: float
    ratio: torch.Tensor

    @classmethod
    def from_arrays(cls, arrays) -> "SplitTable":
        size = int(arrays["size"])
        full = np.full((size, size), 0.5, dtype=np.float32)
        full[np.triu_indices(size, 1)] = arrays["ratio"].astype(np.float32)
        return cls(float(arrays["low"]), float(arrays["step"]), torch.from_numpy(full))

    def lookup(self, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ratio by bilinear interpolation, whether (l, u) lies on the grid); ratio 0.5 off the grid."""
        size = self.ratio.shape[0]
        ratio_table = self.ratio.to(device=lower.device)
        row, column = (lower - self.low) / self.step, (upper - self.low) / self.step
        on_grid = (row >= 0) & (column <= size - 1) & (lower < upper)
        row0 = row.floor().clamp(0, size - 2)
        column0 = column.floor().clamp(0, size - 2)
        row_weight, column_weight = (row - row0).clamp(0, 1), (column - column0).clamp(0, 1)
        i, j = row0.long(), column0.long()
        ratio = (
            ratio_table[i, j] * (1 - row_weight) * (1 - column_weight)
            + ratio_table[i + 1, j] * row_weight * (1 - column_weight)
            + ratio_table[i, j + 1] * (1 - row_weight) * column_weight
            + ratio_table[i + 1, j + 1] * row_weight * column_weight
        )
        return torch.where(on_grid, ratio.to(lower.dtype), torch.full_like(lower, 0.5)), on_grid


@functools.lru_cache(maxsize=None)
def load_split_table(function: str) -> SplitTable:
    """The shipped table of one function (cached).

    >>> load_split_table("sigmoid").step
    0.05
    """
    path = TABLE_DIRECTORY / f"{function}.npz"
    if not path.is_file():
        raise OpwiseError(f"split-point table {path} is missing; rebuild it with `python scripts/build_split_tables.py`")
    with np.load(path) as arrays:
        return SplitTable.from_arrays(arrays)


def canonical_function(function: str) -> str:
    """'aten.sigmoid.default' -> 'sigmoid'; plain names pass through.

    >>> canonical_function("aten.tanh.default")
    'tanh'
    """
    return function.split(".")[1] if function.startswith("aten.") else function


def split_point(function: str, lower: torch.Tensor, upper: torch.Tensor, mode: str = "table") -> torch.Tensor:
    """A split point strictly inside (l, u) (l itself where l == u), elementwise.

    mode "table" looks the point up in `function`'s shipped table, "midpoint" takes (l + u) / 2; table
    lookups outside the grid [-5, 5] and products ("mul") get the midpoint too.

    >>> split_point("sigmoid", torch.tensor([-4.0, 10.0]), torch.tensor([1.0, 20.0]))
    tensor([-1.6001, 15.0000])
    """
    middle = lower + (upper - lower) / 2
    name = canonical_function(function)
    if mode == "midpoint" or (mode == "table" and name in MIDPOINT_FUNCTIONS):
        return middle
    if mode != "table":
        raise OpwiseError(f"unknown split-point mode '{mode}'; use 'table' or 'midpoint'")
    if name not in TABLE_FUNCTIONS:
        known = ", ".join([*TABLE_FUNCTIONS, *MIDPOINT_FUNCTIONS])
        raise OpwiseError(f"no split-point table for '{function}' (tables: {known}); use mode='midpoint'")
    ratio, _ = load_split_table(name).lookup(lower, upper)
    point = lower + (upper - lower) * ratio.clamp(RATIO_MARGIN, 1 - RATIO_MARGIN)
    return torch.where((point > lower) & (point < upper), point, middle)
