"""A model given by functions instead of a traced graph: its forward pass and a bound function.

What a custom VNN-COMP loader hands `verify_instance` (another verifier's bounds, a test's exact interval
bounds). The orchestrator (`bounds/verify.py`) attacks it through `forward`, bounds it with `lower_bounds`
for every bound method (`optimized`, where given, for the whole-box pass before input splitting) and splits its
inputs. Neuron branch-and-bound and the affine–ReLU chain work on a traced graph: give one as `bounded`
where there is one.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:
    from opwise.bounds.bounded_model import BoundedModel


@dataclasses.dataclass
class FunctionBounds:
    """`forward(x [B, *input]) -> y`; `lower_bounds(x_lower, x_upper, C [rows, outputs]) -> [B, rows]`, sound
    lower bounds of C·f(x) per box; `optimized(x_lower, x_upper, C, threshold [rows], time_limit) -> [1, rows]`,
    an optional tighter pass over one box that may stop once every row exceeds its threshold; `bounded`, an
    optional BoundedModel of the same network for the searches that need a graph.

    >>> import torch
    >>> double = FunctionBounds(lambda x: 2 * x.reshape(len(x), -1),
    ...                         lambda lo, up, C: torch.minimum(C.T * 2 * lo, C.T * 2 * up))
    >>> double(torch.ones(1, 1)), double.lower_bounds(torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1))
    (tensor([[2.]]), tensor([[0.]]))
    """

    forward: Callable[[torch.Tensor], torch.Tensor]
    lower_bounds: Callable[..., torch.Tensor]
    optimized: Callable[..., torch.Tensor] | None = None
    bounded: BoundedModel | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    @property
    def device(self) -> torch.device:
        """Where the network runs: its BoundedModel's device, else the CPU."""
        return self.bounded.device if self.bounded is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """What the network computes in: its BoundedModel's dtype, else float32."""
        return self.bounded.dtype if self.bounded is not None else torch.float32
