"""Where to split a neuron's input interval in GenBaB: pre-optimised points from a lookup table.

Splitting [l, u] at p tightens the relaxation on [l, p] and [p, u]. The best p minimises the summed
relaxation gap, the area between the upper and the lower line of the default relaxation on each part.
`build_split_table` finds it for every (l, u) on a grid (a search over 99 relative positions, refined to
steps of 0.001 around the best); scripts/build_split_tables.py ships the results as
opwise/bounds/tables/<name>.npz, one per relaxation family that declares a `split_table` (the family
names its table: there is no separate list of functions), and `split_point` looks the point up at the
nearest grid pair. Nearest, not interpolated: where the best point jumps (a symmetric interval has two
mirror-image optima r and 1 - r) interpolation would average them into a poor point.

Products x·y need no table: the gap of McCormick's planes over a box is c·(ux - lx)²(uy - ly)² (the
bilinear term is affine-invariant, linear terms are exact), so splitting x at p leaves
c·((p - lx)² + (ux - p)²)(uy - ly)², smallest at the midpoint for every box: a 2-D table of (x, y)
intervals would hold 0.5 everywhere. Products therefore always get the midpoint (`split_point(None, ...)`).

>>> split_point(TABLE_FUNCTIONS["sigmoid"], torch.tensor([-1.0]), torch.tensor([3.0]), mode="midpoint")
tensor([1.])
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import torch

from opwise.bounds.relaxations.curvature import CurvatureRelaxation
from opwise.bounds.transfers.nonlinear import load_relaxation_families
from opwise.errors import OpwiseError

TABLE_DIRECTORY = Path(__file__).resolve().parents[2] / "tables"
# The table's ratio is kept this far from 0 and 1 so that p is strictly inside (l, u).
RATIO_MARGIN = 0.01
#: the coarse search's relative positions 1/100 ... 99/100, then this many around the best, 0.001 apart
REFINE_STEPS = 21


def tabled_relaxations() -> dict[str, CurvatureRelaxation]:
    """Every relaxation family that declares a split-point table, by table name (sorted).

    >>> list(tabled_relaxations())
    ['cos', 'exp', 'gelu', 'gelu_tanh', 'sigmoid', 'silu', 'sin', 'tanh']
    """
    load_relaxation_families()
    found, classes = {}, [CurvatureRelaxation]
    while classes:
        family = classes.pop()
        classes += family.__subclasses__()
        found.update({relaxation.split_table: relaxation for relaxation in family.tabled_variants()})
    return dict(sorted(found.items()))


#: the shipped tables' relaxations by table name (derived from the families' declarations)
TABLE_FUNCTIONS = tabled_relaxations()


def relaxation_gap(relaxation: CurvatureRelaxation, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Area between the default upper and lower lines over [lower, upper] (lines: exact at the midpoint).

    >>> relaxation_gap(TABLE_FUNCTIONS["sigmoid"], torch.tensor([1.0]), torch.tensor([1.0]))
    tensor([0.])
    """
    lines = relaxation.relax(lower, upper)
    middle = (lower + upper) / 2
    height = (lines.upper_slope - lines.lower_slope) * middle + lines.upper_intercept - lines.lower_intercept
    return (upper - lower) * height


def _smallest_gap(relaxation: CurvatureRelaxation, lower: torch.Tensor, upper: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
    """Per row of `ratios` ([intervals, candidates]), the ratio with the smallest summed gap; ties (symmetric
    intervals give r and 1 - r) go to the candidate nearest the midpoint, then the lower."""
    points = lower[:, None] + (upper - lower)[:, None] * ratios
    gap = relaxation_gap(relaxation, lower[:, None].expand_as(points).reshape(-1), points.reshape(-1)) + relaxation_gap(
        relaxation, points.reshape(-1), upper[:, None].expand_as(points).reshape(-1)
    )
    gap = gap.reshape(points.shape)
    smallest = gap.min(dim=1, keepdim=True).values
    tied = gap <= smallest + 1e-9 * smallest.abs() + 1e-12
    distance = torch.where(tied, (ratios - 0.5).abs(), torch.full_like(gap, float("inf")))
    return ratios.gather(1, distance.argmin(dim=1, keepdim=True))[:, 0]


def best_split_ratios(relaxation: CurvatureRelaxation, lower: torch.Tensor, upper: torch.Tensor, candidates: int = 99,
                      refine: int = REFINE_STEPS) -> torch.Tensor:
    """For each [l, u] (1-D, float64), the relative position r of p = l + r (u - l) with the smallest summed
    gap: the best of r = 1/(candidates+1) ... candidates/(candidates+1), then the best of `refine` positions
    spaced a tenth of that step apart around it (none when `refine` is 0).

    >>> relaxation = TABLE_FUNCTIONS["exp"]
    >>> best_split_ratios(relaxation, torch.tensor([0.0], dtype=torch.float64), torch.tensor([4.0], dtype=torch.float64), refine=0)
    tensor([0.6500], dtype=torch.float64)
    >>> best_split_ratios(relaxation, torch.tensor([0.0], dtype=torch.float64), torch.tensor([4.0], dtype=torch.float64))
    tensor([0.6510], dtype=torch.float64)
    """
    step = 1.0 / (candidates + 1)
    coarse = torch.arange(1, candidates + 1, dtype=torch.float64, device=lower.device) * step
    best = _smallest_gap(relaxation, lower, upper, coarse.expand(len(lower), -1))
    if not refine:
        return best
    offsets = (torch.arange(refine, dtype=torch.float64, device=lower.device) - (refine - 1) / 2) * step / 10
    fine = (best[:, None] + offsets).clamp(step / 10, 1 - step / 10)
    return _smallest_gap(relaxation, lower, upper, fine)


def build_split_table(function: str, low: float, high: float, step: float, candidates: int = 99, refine: int = REFINE_STEPS,
                      chunk: int = 2000) -> dict[str, np.ndarray]:
    """The arrays of one shipped table: the grid (low, step, size) and the best ratio for every grid
    pair l < u, upper triangle row by row (numpy.triu_indices(size, 1) order), as float32.

    >>> table = build_split_table("exp", 0.0, 2.0, 1.0, candidates=9, refine=0)
    >>> [round(float(r), 3) for r in table["ratio"]]
    [0.5, 0.6, 0.5]
    """
    relaxation = TABLE_FUNCTIONS[function]
    size = int(round((high - low) / step)) + 1
    grid = low + step * np.arange(size)
    rows, columns = np.triu_indices(size, 1)
    lower = torch.from_numpy(grid[rows])
    upper = torch.from_numpy(grid[columns])
    ratio = torch.cat([best_split_ratios(relaxation, lower[i : i + chunk], upper[i : i + chunk], candidates, refine)
                       for i in range(0, len(rows), chunk)])
    return {"low": np.float64(low), "step": np.float64(step), "size": np.int64(size), "ratio": ratio.numpy().astype(np.float32)}


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
        """(ratio at the nearest grid pair, whether (l, u) lies on the grid); ratio 0.5 off the grid."""
        size = self.ratio.shape[0]
        row = torch.round((lower - self.low) / self.step)
        column = torch.round((upper - self.low) / self.step)
        on_grid = (row >= 0) & (column <= size - 1) & (lower < upper)
        i, j = row.clamp(0, size - 1).long(), column.clamp(0, size - 1).long()
        ratio = self.ratio.to(device=lower.device)[i, j].to(lower.dtype)
        return torch.where(on_grid, ratio, torch.full_like(lower, 0.5)), on_grid


@functools.lru_cache(maxsize=None)
def load_split_table(name: str) -> SplitTable:
    """The shipped table `name` (cached).

    >>> load_split_table("sigmoid").step
    0.01
    """
    path = TABLE_DIRECTORY / f"{name}.npz"
    if not path.is_file():
        raise OpwiseError(f"split-point table {path} is missing; rebuild it with `python scripts/build_split_tables.py`")
    with np.load(path) as arrays:
        return SplitTable.from_arrays(arrays)


def split_point(relaxation, lower: torch.Tensor, upper: torch.Tensor, mode: str = "table") -> torch.Tensor:
    """A split point strictly inside (l, u) (l itself where l == u), elementwise.

    mode "table" looks the point up in the table `relaxation` declares (`split_table`), "midpoint" takes
    (l + u) / 2; lookups outside the grid [-5, 5], families without a table and products (`relaxation` None)
    get the midpoint too.

    >>> split_point(TABLE_FUNCTIONS["sigmoid"], torch.tensor([-4.0, 10.0]), torch.tensor([1.0, 20.0]))
    tensor([-1.5950, 15.0000])
    """
    middle = lower + (upper - lower) / 2
    if mode not in ("table", "midpoint"):
        raise OpwiseError(f"unknown split-point mode '{mode}'; use 'table' or 'midpoint'")
    if mode == "midpoint" or relaxation is None:
        return middle
    name = getattr(relaxation, "split_table", None)
    if name is None:  # a family without a table (ELU, hardswish, log, ...)
        return middle
    ratio, _ = load_split_table(name).lookup(lower, upper)
    point = lower + (upper - lower) * ratio.clamp(RATIO_MARGIN, 1 - RATIO_MARGIN)
    return torch.where((point > lower) & (point < upper), point, middle)
