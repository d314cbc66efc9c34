"""Where each output element of a value-moving operator came from: `copy`, `index_put`, `scatter` and kin.

These operators write some inputs' elements over others'. Their vector-Jacobian product is not always a
faithful account of that (`aten.copy` has none; `index_put` with repeated indices credits every duplicate
although one write wins), so both engines route by provenance instead: the operator is run once on element
ids, and each output element names the one input element it holds, or none (a constant written there).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import torch


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Per output element (flat): `source`, its index into the routed inputs flattened and concatenated;
    `routed`, whether it came from one of them at all. `shapes` are the routed inputs' shapes."""

    source: torch.Tensor
    routed: torch.Tensor
    shapes: tuple[tuple[int, ...], ...]

    @property
    def sizes(self) -> list[int]:
        return [math.prod(shape) for shape in self.shapes]

    def gather(self, values: Sequence[torch.Tensor], otherwise: torch.Tensor) -> torch.Tensor:
        """The output the operator computes from `values` (one per routed input, any leading dimensions
        `lead` before their own shapes), with `otherwise` (flat, output-sized) where no input was routed.

        >>> p = provenance(torch.ops.aten.slice_scatter.default, [torch.zeros(3), torch.zeros(1), 0, 1, 2], {}, [1])
        >>> p.gather([torch.tensor([[7.0]])], torch.tensor([1.0, 2.0, 3.0]))
        tensor([[1., 7., 3.]])
        """
        if not values:  # nothing routed: every element is a constant's
            return otherwise
        lead = values[0].shape[: values[0].dim() - len(self.shapes[0])]
        flat = torch.cat([v.reshape(*lead, -1) for v in values], dim=-1)
        picked = flat[..., self.source.clamp(max=max(flat.shape[-1] - 1, 0))]
        return torch.where(self.routed, picked, otherwise.to(picked.dtype))

    def scatter(self, output: torch.Tensor) -> list[torch.Tensor]:
        """Each routed input's share of `output` (flat over the output's elements, after any leading
        dimensions): the adjoint of `gather`, summing what several outputs took from one element.

        >>> p = provenance(torch.ops.aten.copy.default, [torch.zeros(2, 3), torch.zeros(3)], {}, [1])
        >>> p.scatter(torch.arange(6.0).reshape(1, 6))[0]
        tensor([[3., 5., 7.]])
        """
        lead = output.shape[:-1]
        total = output.new_zeros(*lead, sum(self.sizes))
        total.index_add_(total.dim() - 1, self.source[self.routed], output[..., self.routed])
        return [part.reshape((*lead, *shape)) for part, shape in zip(total.split(self.sizes, dim=-1), self.shapes)]


def provenance(target: Any, args: Sequence[Any], kwargs: dict, routed: Sequence[int]) -> Provenance:
    """Run `target(*args, **kwargs)` on element ids in the argument positions `routed` (the tensors whose
    values the operator moves) and read off where each output element came from.

    Ids are float64 (exact to 2^53 elements); the other floating-point tensors are cast to float64 too, so
    the operator sees one dtype. Two runs, the ids shifted between them: an element that moved with the shift
    was routed, one that stayed is a constant's.

    >>> p = provenance(torch.ops.aten.index_put.default, [torch.zeros(3), [torch.tensor([2, 0])], torch.zeros(2)], {}, [0, 2])
    >>> p.source.tolist(), p.routed.tolist()
    ([4, 1, 3], [True, True, True])
    """
    shapes = tuple(tuple(args[i].shape) for i in routed)
    sizes = [math.prod(shape) for shape in shapes]
    shift = float(sum(sizes) + 1)

    def run(offset: float) -> torch.Tensor:
        values, start = list(args), 0
        for i, size in zip(routed, sizes):
            values[i] = torch.arange(start, start + size, dtype=torch.float64, device=args[i].device).reshape(args[i].shape) + offset
            start += size
        values = [_as_float64(v) if i not in routed else v for i, v in enumerate(values)]
        return target(*values, **{k: _as_float64(v) for k, v in kwargs.items()}).reshape(-1)

    first, second = run(0.0), run(shift)
    routed_mask = (second - first) == shift
    source = torch.where(routed_mask, first, 0).long()
    return Provenance(source, routed_mask, shapes)


def _as_float64(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(torch.float64)
    if isinstance(value, (list, tuple)):
        return [_as_float64(v) for v in value]
    return value
