"""α stored only where it changes a line: the neurons a relaxation's lines depend on, and the sides it reads.

α-CROWN gives every intermediate bound its own α per relaxed node before it, per spec (2 per refined
neuron) and per neuron of that node. Stored densely ([specs, *node shape]) that is the product of two
neuron counts: on a CIFAR 6-layer conv net (eps 0.01), 490 M values for the third convolution's bounds
alone, so a cap of 50 M left every convolution's bounds at CROWN's. Yet a ramp's α matters only at
neurons whose interval holds a kink (`needs_refinement`: 6 to 30% of them there), and relu reads only
the lower line's α. `SparseAlpha` keeps those entries alone (16 M values for that convolution), [specs,
lead, k] per side (lead: the node's first dimension, the batch), at `positions` (flat, within one
sample, the union over the batch). A backward pass asks for the lines where its coefficients are:
on every neuron, or on each spec's window of the map (read through `lookup`). The lines that depend
on α are computed at the stored positions alone and placed among the node's lines without α
(`spread`), differentiably in the entries; α-CROWN over them is the dense one exactly. Intervals only
narrow while α is optimised, so a neuron left out never comes to depend on α.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from opwise.bounds.relaxations.base import AlphaPair


@dataclasses.dataclass
class SparseAlpha(AlphaPair):
    """`lower`, `upper`: [specs, lead, k] leaves (or None: a side the lines never read); `positions` [k]: the
    flat positions (within one lead index) they are stored for; `shape`: the node's shape (lead first);
    `lookup` [n]: per flat position, 1 + its column in the entries, 0 where none is stored.

    >>> from opwise.bounds.relaxations.relu import relu
    >>> ramp = relu((), {})
    >>> alpha = SparseAlpha.around(ramp, torch.tensor([[-1.0, 1.0, -2.0]]), torch.tensor([[3.0, 2.0, 1.0]]), specs=2)
    >>> alpha.positions.tolist(), alpha.lower.tolist(), alpha.upper, alpha.lookup.tolist()
    ([0, 2], [[[1.0, 0.0]], [[1.0, 0.0]]], None, [1, 0, 2])
    """

    positions: torch.Tensor = dataclasses.field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    shape: tuple[int, ...] = ()
    lookup: torch.Tensor = dataclasses.field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    @staticmethod
    def applies(relaxation, shape: tuple[int, ...]) -> bool:
        """Whether a relaxation's α can be stored sparsely: it names the neurons its lines depend on
        (`needs_refinement`), and the node has a lead dimension before its neurons."""
        return hasattr(relaxation, "needs_refinement") and len(shape) >= 2

    @classmethod
    def around(cls, relaxation, lower: torch.Tensor, upper: torch.Tensor, specs: int) -> "SparseAlpha | None":
        """CROWN's α on the interval [lower, upper] ([lead, ...]) for `specs` specs, stored at the neurons
        whose lines depend on the interval (in any lead index) and for the sides the lines read; None when
        the relaxation has no α there."""
        pair = relaxation.init_alpha(lower, upper)
        if pair is None:
            return None
        lead = lower.shape[0]
        positions, needed, sides = cls._stored_at(relaxation, lower, upper)
        lookup = torch.zeros(needed.shape[0], dtype=torch.long, device=lower.device)
        lookup[positions] = torch.arange(1, positions.numel() + 1, device=lower.device)

        def stored(tensor: torch.Tensor | None, used: bool) -> torch.Tensor | None:
            if tensor is None or not used:
                return None
            entries = tensor.detach().reshape(lead, -1)[:, positions]
            return entries.expand(specs, *entries.shape).clone().requires_grad_(True)

        return cls(stored(pair.lower, sides[0]), stored(pair.upper, sides[1]), positions, tuple(lower.shape), lookup)

    @staticmethod
    def _stored_at(relaxation, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """The flat positions α is stored at, the mask they come from, and the sides (lower, upper) it is read for."""
        needed = relaxation.needs_refinement(lower, upper).reshape(lower.shape[0], -1).any(0)
        return needed.nonzero().flatten(), needed, getattr(relaxation, "alpha_sides", (True, True))

    @classmethod
    def count(cls, relaxation, lower: torch.Tensor, upper: torch.Tensor, specs: int) -> int:
        """How many values `around` would store, without storing them (a caller checks a budget first: a
        convolution's 160,709 intermediate bounds would have asked for tens of GB).

        >>> from opwise.bounds.relaxations.relu import relu
        >>> SparseAlpha.count(relu((), {}), torch.tensor([[-1.0, 1.0, -2.0]]), torch.tensor([[3.0, 2.0, 1.0]]), specs=2)
        4
        """
        pair = relaxation.init_alpha(lower, upper)
        if pair is None:
            return 0
        positions, _, sides = cls._stored_at(relaxation, lower, upper)
        stored = sum(1 for tensor, used in zip((pair.lower, pair.upper), sides) if tensor is not None and used)
        return specs * lower.shape[0] * positions.numel() * stored

    def at(self, tensor: torch.Tensor) -> torch.Tensor:
        """A per-neuron tensor of the node's shape at the stored positions: [lead, k] (broadcasts against the
        entries, e.g. to clamp them to the range the node's interval allows)."""
        return tensor.reshape(tensor.shape[0], -1)[:, self.positions]

    def lookup_map(self) -> torch.Tensor:
        """`lookup` laid out as one sample of the node ([1, *shape[1:]]), to be windowed like a per-neuron tensor."""
        return self.lookup.reshape(1, *self.shape[1:])

    def columns(self) -> torch.Tensor:
        """`lookup` for every lead index: [lead, n], the `columns` that `spread` over the whole node."""
        return self.lookup.reshape(1, -1).expand(self.shape[0], -1)

    @staticmethod
    def spread(entries: torch.Tensor, columns: torch.Tensor, repeats: int, elsewhere: torch.Tensor) -> torch.Tensor:
        """Per-spec values stored at the positions ([specs, lead, k]: a line computed from the entries) placed at
        `columns` ([block · lead, ...]: values of `lookup`, e.g. the windows of `lookup_map()` per spec of a
        block and lead index) for each of `repeats` blocks of specs (spec r · block + b), `elsewhere`
        ([block · lead, ...]) where nothing is stored: [repeats, block · lead, ...].

        >>> SparseAlpha.spread(torch.tensor([[[5.0, 6.0]], [[7.0, 8.0]]]), torch.tensor([[2, 0, 1]]), 2, torch.zeros(1, 3)).tolist()
        [[[6.0, 0.0, 5.0]], [[8.0, 0.0, 7.0]]]
        """
        rows = columns.shape[0]
        padded = torch.nn.functional.pad(entries, (1, 0)).reshape(repeats, rows, -1)
        placed = padded.gather(2, columns.reshape(1, rows, -1).expand(repeats, -1, -1)).reshape(repeats, *columns.shape)
        return torch.where(columns > 0, placed, elsewhere)

    def size(self) -> int:
        """How many values are stored."""
        return sum(math.prod(t.shape) for t in (self.lower, self.upper) if t is not None)
