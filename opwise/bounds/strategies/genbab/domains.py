"""Subdomains of a branch-and-bound search over nonlinear neurons, and the queue that orders them.

A domain is the original input set plus, for every splittable node's input, an interval per element
that the search has narrowed (the full interval where it has not split). Its `lower` is the proven
lower bound of the property margin on it; the queue hands out the worst domains first, because the
property fails or holds on those.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math

import torch

from opwise.bounds.transfers.registry import Interval


@dataclasses.dataclass
class Guide:
    """What one bounding pass says about a domain, for choosing its next split (one spec row).

    `coefficients`: per nonlinear node name, the coefficient of the bound w.r.t. that node's output
    ([1, *node shape]); `input_coefficient` / `bias`: the bound as a linear function of the input
    before concretization ([1, *input shape], scalar tensor); `alphas`: per product node name, the α of its
    McCormick planes in that bound ([1, *node shape] per side; absent: CROWN's planes, α = 1).
    """

    coefficients: dict[str, torch.Tensor]
    input_coefficient: torch.Tensor
    bias: torch.Tensor
    alphas: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Domain:
    """Narrowed intervals per split node input name ([1, *node shape]), the margin bound, depth, guide,
    the α/β its last bounding ended with (per node name, [specs, 1, ...]: its children's warm start), and
    the lower bound of every spec row's `C y - d` ([rows]; its own or an ancestor's, whichever is higher)."""

    intervals: dict[str, Interval]
    lower: float = -float("inf")
    depth: int = 0
    guide: Guide | None = None
    parameters: dict | None = None
    row_bounds: torch.Tensor | None = None
    #: whether its last bound pass did not raise the margin bound it inherited (`DomainBounder.adapt_iterations`)
    stalled: bool = False

    def split(self, name: str, index: int | list[int], point: float, isolate: bool = False) -> tuple["Domain", ...]:
        """The children: element `index` (flat; a list: several elements that hold the same value, such as
        a broadcast's copies) of node `name` below and above `point`, each interval intersected with its side
        (they keep the parent's bound, guide and α/β until they are bounded themselves).

        `isolate`: three children, strictly below `point`, at it, and strictly above it, for a function whose value
        at the point is neither side's (sign(0) = 0): "strictly" is up to the next representable number, which
        every value the network computes in its precision respects, and the sides' relaxations are then exact.

        >>> d = Domain({"z": Interval(torch.tensor([[-1.0, 0.0]]), torch.tensor([[1.0, 2.0]]))})
        >>> left, right = d.split("z", 1, 0.5)
        >>> left.intervals["z"].upper.tolist(), right.intervals["z"].lower.tolist()
        ([[1.0, 0.5]], [[-1.0, 0.5]])
        >>> left, right = d.split("z", [0, 1], 0.5)
        >>> left.intervals["z"].upper.tolist(), right.intervals["z"].lower.tolist()
        ([[0.5, 0.5]], [[0.5, 0.5]])
        >>> [(c.intervals["z"].lower[0, 0].item(), c.intervals["z"].upper[0, 0].item()) for c in d.split("z", 0, 0.0, isolate=True)]
        [(-1.0, -1.401298464324817e-45), (0.0, 0.0), (1.401298464324817e-45, 1.0)]
        """
        interval = self.intervals[name]
        # own contiguous memory: an interval may be a permuted view (a pass that computed it channels-last), which
        # clone() would copy with its strides, and the flat writes below need one flat layout
        below, above = (t.clone(memory_format=torch.contiguous_format) for t in (interval.upper, interval.lower))
        at = torch.tensor(point, dtype=below.dtype, device=below.device)
        below_point, above_point = (torch.nextafter(at, at.new_tensor(side)) for side in (-math.inf, math.inf)) \
            if isolate else (at, at)
        below.view(-1)[index] = torch.minimum(below.view(-1)[index], below_point)
        above.view(-1)[index] = torch.maximum(above.view(-1)[index], above_point)
        sides = [Interval(interval.lower, below), Interval(above, interval.upper)]
        if isolate:
            low, high = (t.clone(memory_format=torch.contiguous_format) for t in (interval.lower, interval.upper))
            low.view(-1)[index], high.view(-1)[index] = at, at
            sides.insert(1, Interval(low, high))
        return tuple(Domain({**self.intervals, name: narrowed}, self.lower, self.depth + 1, self.guide, self.parameters,
                            self.row_bounds) for narrowed in sides)


def stack_intervals(domains: list[Domain]) -> dict[str, Interval]:
    """The domains' intervals batched per node name: [len(domains), *node shape without batch]."""
    names = domains[0].intervals
    return {name: Interval(torch.cat([d.intervals[name].lower for d in domains]),
                           torch.cat([d.intervals[name].upper for d in domains])) for name in names}


class DomainQueue:
    """Unverified domains, worst margin bound first; with `count_bytes`, also the bytes their tensors hold
    (`nbytes`: a tensor that several domains share, as children share their parent's unsplit intervals,
    counted once), a walk over every tensor on each push and pop that only a memory limit needs.

    >>> queue = DomainQueue(count_bytes=True)
    >>> for bound in (0.3, -2.0, -0.5): queue.push(Domain({}, bound))
    >>> [d.lower for d in queue.pop(2)], len(queue)
    ([-2.0, -0.5], 1)
    >>> shared = Domain({"z": Interval(torch.zeros(1, 4), torch.ones(1, 4))})
    >>> for child in shared.split("z", 0, 0.5): queue.push(child)
    >>> queue.nbytes                                  # two shared 16-byte tensors, one new one per child
    64
    """

    def __init__(self, count_bytes: bool = False):
        self._heap: list[tuple[float, int, Domain]] = []
        self._counter = itertools.count()
        self._storages: dict[int, list[int]] | None = {} if count_bytes else None  # data pointer -> [holders, bytes]
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, domain: Domain) -> None:
        heapq.heappush(self._heap, (domain.lower, next(self._counter), domain))
        if self._storages is None:
            return
        for tensor in _tensors(domain):
            entry = self._storages.setdefault(tensor.untyped_storage().data_ptr(), [0, tensor.untyped_storage().nbytes()])
            if not entry[0]:
                self.nbytes += entry[1]
            entry[0] += 1

    def pop(self, count: int) -> list[Domain]:
        popped = [heapq.heappop(self._heap)[2] for _ in range(min(count, len(self._heap)))]
        if self._storages is None:
            return popped
        for tensor in (t for domain in popped for t in _tensors(domain)):
            key = tensor.untyped_storage().data_ptr()
            entry = self._storages[key]
            entry[0] -= 1
            if not entry[0]:
                self.nbytes -= entry[1]
                del self._storages[key]
        return popped

    def worst(self) -> float:
        """The smallest margin bound in the queue (+inf when empty)."""
        return self._heap[0][0] if self._heap else float("inf")


def _tensors(domain: Domain):
    """Every tensor a domain holds: its intervals, its guide, its α/β warm start."""
    for interval in domain.intervals.values():
        yield interval.lower
        yield interval.upper
    if domain.guide is not None:
        yield from (domain.guide.input_coefficient, domain.guide.bias, *domain.guide.coefficients.values())
        yield from _nested_tensors(domain.guide.alphas)
    yield from _nested_tensors(domain.parameters)
    if domain.row_bounds is not None:
        yield domain.row_bounds


def _nested_tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _nested_tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _nested_tensors(item)
    elif dataclasses.is_dataclass(value):  # AlphaPair
        for field in dataclasses.fields(value):
            yield from _nested_tensors(getattr(value, field.name))
