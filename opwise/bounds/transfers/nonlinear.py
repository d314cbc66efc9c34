"""Elementwise nonlinear operators through their relaxations (opwise.bounds.relaxations).

Every relaxation family module in that package registers itself on import; this module imports them
all, so an operator is bounded as soon as a relaxation for it exists. Backward for a lower bound uses
the lower line where the coefficient is positive and the upper line where it is negative.
"""

from __future__ import annotations

import importlib
import pkgutil

import torch
from torch import fx

import opwise.bounds.relaxations as relaxations_package
from opwise.bounds.relaxations.base import LinearRelaxation
from opwise.bounds.relaxations.registry import RELAXATIONS, relaxation_for
from opwise.bounds.relaxations.sparse_alpha import SparseAlpha
from opwise.bounds.transfers.patches import Patches, summed_product
from opwise.bounds.transfers.registry import Interval, Step


def load_relaxation_families() -> None:
    """Import every module of opwise.bounds.relaxations so that each registers its operators."""
    for module in pkgutil.iter_modules(relaxations_package.__path__):
        importlib.import_module(f"{relaxations_package.__name__}.{module.name}")


def has_relaxation(op: str) -> bool:
    return op in RELAXATIONS


def node_relaxation(op: str, node: fx.Node):
    """The relaxation object of one node: the factory gets the node's arguments after the input."""
    return relaxation_for(op, tuple(node.args[1:]), dict(node.kwargs))


class Elementwise:
    """y = f(x) elementwise, bounded by the relaxation's lines on the interval of x."""

    def needs_bounds(self, step: Step) -> list[fx.Node]:
        return [step.inputs[0]]

    def ibp(self, step: Step, intervals: list[Interval]) -> Interval:
        (x,) = intervals
        relaxation = step.relaxation
        if getattr(relaxation, "monotone", False):
            return Interval(relaxation.function(x.lower), relaxation.function(x.upper))
        if hasattr(relaxation, "image"):
            return Interval(*relaxation.image(x.lower, x.upper))
        lines = relaxation.relax(x.lower, x.upper)
        # the lines bound f on [l, u]; a line's extremes on an interval are at its ends
        low = torch.minimum(lines.lower_slope * x.lower, lines.lower_slope * x.upper) + lines.lower_intercept
        high = torch.maximum(lines.upper_slope * x.lower, lines.upper_slope * x.upper) + lines.upper_intercept
        return Interval(low, high)

    takes_patches = True

    def backward(self, step: Step, A: torch.Tensor | Patches):
        through_origin = getattr(step.relaxation, "lower_through_origin", False)
        if isinstance(step.alpha, SparseAlpha):
            lines, finite = self.sparse_lines(step, A)
        elif isinstance(A, Patches):  # each spec's window of the lines, once per block of specs at the same windows
            lines, finite = self.lines(step)
            if finite and all(part.dim() == 4 for part in _parts(lines)):  # per neuron (no α per spec)
                return _windowed_select(A, lines, through_origin)
            lines = LinearRelaxation(*A.windows_of(_parts(lines)))
        else:
            lines, finite = self.lines(step)
        if isinstance(A, Patches):
            (coefficient,), bias = select_lines(A.blocked(), lines, finite, through_origin)
            return [A.moved(coefficient.reshape(A.values.shape))], bias.reshape(A.specs, -1)
        return select_lines(A, lines, finite, through_origin)

    def lines(self, step: Step) -> tuple[LinearRelaxation, bool]:
        """The relaxation's lines on the input's current interval, and whether they are all finite. Without α
        they are kept while the interval is the same, unchanged tensors: every backward pass through the node (one per
        later intermediate bound, and the final one) uses the same lines. With α, a relaxation that splits its
        lines into an α-free part and α's (`fixed_lines`, `with_alpha`: the ramps) has the first part kept the
        same way, so that each Adam step only applies α (α keeps such lines finite wherever the part is)."""
        if step.alpha is None:
            return self._lines_without_alpha(step)
        x = step.bounds(step.inputs[0])
        relaxation = step.relaxation
        if hasattr(relaxation, "fixed_lines"):
            part, finite = _kept(step, "fixed", x, lambda: _fixed_part(relaxation, x))
            return _folded(relaxation.with_alpha(part, step.alpha), x, relaxation), finite
        return _finite(self._relax(step, x.lower, x.upper, step.alpha))

    def _lines_without_alpha(self, step: Step) -> tuple[LinearRelaxation, bool]:
        x = step.bounds(step.inputs[0])
        return _kept(step, "lines", x, lambda: _finite(self._relax(step, x.lower, x.upper, None)))

    def sparse_lines(self, step: Step, A: torch.Tensor | Patches) -> tuple[LinearRelaxation, bool]:
        """The lines under a sparse α (`SparseAlpha`) where A needs them: on each spec's window of A (Patches:
        [repeats, block · batch, ...] as `Patches.windows` lays them out) or on the whole node ([specs, *shape]).
        Relaxations are elementwise, so the lines that depend on α are computed at the stored positions alone
        and placed among the lines without α (cached), never building per-spec lines of the whole map for a
        window (the size that made a dense α of a convolution's intermediate bounds unaffordable)."""
        alpha = step.alpha
        base, finite = self._lines_without_alpha(step)
        x = step.bounds(step.inputs[0])
        stored, stored_finite = _finite(self._relax(step, alpha.at(x.lower), alpha.at(x.upper), alpha))
        windowed = isinstance(A, Patches)
        columns = A.windows(alpha.lookup_map()) if windowed else alpha.columns()
        repeats = A.repeats if windowed else A.shape[0]
        parts = []
        for line, at in zip(_parts(base), _parts(stored)):
            line = line.expand(alpha.shape)
            line = A.windows(line) if windowed else line
            if at.dim() < 3:  # no α in it ([lead, k]): the line without α is this line there already
                parts.append(line)
                continue
            placed = SparseAlpha.spread(at, columns, repeats, line if windowed else line.reshape(columns.shape))
            parts.append(placed if windowed else placed.reshape(repeats, *alpha.shape))
        return LinearRelaxation(*parts), finite and stored_finite

    @staticmethod
    def _relax(step: Step, lower: torch.Tensor, upper: torch.Tensor, alpha) -> LinearRelaxation:
        return _folded(step.relaxation.relax(lower, upper, alpha), Interval(lower, upper), step.relaxation)


def _kept(step: Step, name: str, x: Interval, compute):
    """`compute()`, kept in the step's cache under `name` while the interval `x` is the same, unchanged tensors."""
    key = (x.lower, x.upper, x.lower._version, x.upper._version)
    cached = step.cache.get(name)
    if cached is not None and cached[0][0] is key[0] and cached[0][1] is key[1] and cached[0][2:] == key[2:]:
        return cached[1]
    value = compute()
    step.cache[name] = (key, value)
    return value


def _fixed_part(relaxation, x: Interval):
    """The relaxation's α-free part on `x` and whether its lines are all finite."""
    part = relaxation.fixed_lines(x.lower, x.upper)
    return part, _finite(part.lines)[1]


def _folded(lines: LinearRelaxation, x: Interval, relaxation) -> LinearRelaxation:
    """`fold_points` unless the relaxation's lower lines go through the origin (ramps: exact on points already, and
    their lower lines must keep intercept 0)."""
    return lines if getattr(relaxation, "lower_through_origin", False) else fold_points(lines, x, relaxation.function)


def _finite(lines: LinearRelaxation) -> tuple[LinearRelaxation, bool]:
    """The lines and whether every part is finite."""
    return lines, all(bool(torch.isfinite(part).all()) for part in _parts(lines))


def fold_points(lines: LinearRelaxation, x: Interval, function) -> LinearRelaxation:
    """The lines with every point interval (l == u) replaced by the constant f(l): exact there, and no coefficient
    reaches that input. Where a score is masked with finfo.min its interval is a point (the mask absorbs the
    score in float32); a tangent of slope 1 at such a point sent coefficients back to two masked scores whose
    finfo.min parts cancel only in exact arithmetic, and coefficient × finfo.min overflowed to −inf in the bias.

    >>> lines = LinearRelaxation(*(torch.ones(2) for _ in range(4)))
    >>> fold_points(lines, Interval(torch.tensor([0.0, 0.0]), torch.tensor([0.0, 1.0])), torch.exp).lower_slope
    tensor([0., 1.])
    """
    point = x.lower == x.upper
    if not bool(point.any()):
        return lines
    value = function(x.lower)
    zero = torch.zeros((), dtype=lines.lower_slope.dtype, device=point.device)
    return LinearRelaxation(torch.where(point, zero, lines.lower_slope), torch.where(point, value, lines.lower_intercept),
                            torch.where(point, zero, lines.upper_slope), torch.where(point, value, lines.upper_intercept))


def _parts(lines: LinearRelaxation) -> tuple[torch.Tensor, ...]:
    return lines.lower_slope, lines.lower_intercept, lines.upper_slope, lines.upper_intercept


def _windowed_select(A: Patches, lines: LinearRelaxation, through_origin: bool):
    """`select_lines` on windows, for finite lines per neuron ([batch or 1, C, H, W]): the differences between the
    upper and the lower lines are taken per neuron before the windows are gathered, and a ReLU's zero lower intercept
    is not gathered (a window of each costs as much as the coefficients themselves). Returns the backward's
    ([coefficient windows], bias [specs, batch])."""
    parts = [lines.lower_slope, lines.upper_slope - lines.lower_slope]
    parts += [lines.upper_intercept] if through_origin else \
        [lines.lower_intercept, lines.upper_intercept - lines.lower_intercept]
    windows = A.windows_of(tuple(parts))
    (coefficient,), bias = _selected(A.blocked(), windows[0], windows[1], windows[2:])
    return [A.moved(coefficient.reshape(A.values.shape))], bias.reshape(A.specs, -1)


def _selected(A: torch.Tensor, lower_slope: torch.Tensor, slope_gap: torch.Tensor,
              intercepts: tuple) -> tuple[list[torch.Tensor], torch.Tensor]:
    """A·lower + A⁻·(upper − lower) from the lower slope and the slopes' gap; `intercepts`: (upper intercept,)
    for lines through the origin, else (lower intercept, the intercepts' gap). See `select_lines`."""
    negative = A.clamp(max=0)
    coefficient = torch.addcmul(A * lower_slope, negative, slope_gap)
    if len(intercepts) == 1:
        return [coefficient], summed_product(negative, intercepts[0])
    return [coefficient], summed_product(A, intercepts[0]) + summed_product(negative, intercepts[1])


def select_lines(A: torch.Tensor, lines: LinearRelaxation, finite: bool,
                 through_origin: bool = False) -> tuple[list[torch.Tensor], torch.Tensor]:
    """`A` through the lower line where positive and the upper line where negative: ([coefficient], bias
    terms summed per spec and sample, [specs, A.shape[1]]). `through_origin`: every lower line has intercept
    zero (relu's), so its bias term is skipped.

    With `finite` lines this is A·lower + A⁻·(upper − lower): the differences are per-neuron tensors without the
    specs dimension, so the [specs, ...] tensors that dominate intermediate bounds are touched by one clamp, one
    product and one fused multiply-add, and the bias is a batched dot product, never an [specs, ...] temporary
    (on CPU a boolean `torch.where` over them costs several times more). With an infinite slope or intercept
    somewhere, 0·inf would be NaN, so each element picks its line instead.

    >>> lines = LinearRelaxation(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([0.5]), torch.tensor([1.0]))
    >>> [c.tolist() for c in select_lines(torch.tensor([[2.0], [-2.0]]), lines, True)[0]], select_lines(torch.tensor([[-2.0]]), lines, False)[1].tolist()
    ([[[2.0], [-1.0]]], [[-2.0]])
    """
    if finite:
        intercepts = (lines.upper_intercept,) if through_origin else \
            (lines.lower_intercept, lines.upper_intercept - lines.lower_intercept)
        return _selected(A, lines.lower_slope, lines.upper_slope - lines.lower_slope, intercepts)
    positive = A > 0
    terms = A * torch.where(positive, lines.lower_intercept, lines.upper_intercept)
    return [A * torch.where(positive, lines.lower_slope, lines.upper_slope)], terms.reshape(*A.shape[:2], -1).sum(-1)


ELEMENTWISE = Elementwise()
load_relaxation_families()
