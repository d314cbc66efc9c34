"""Branch-and-bound for certified maps: a box a bound pass cannot prove is cut into sub-boxes that together
cover it, and proved when every piece is. Every patch's box is split at once: the open pieces of all
patches are the rows of the same batched bound passes, so a round costs one pass however many patches
are still open. A patch's box perturbs only the patch's few features, so bisecting its widest side
narrows exactly those, and the relaxations of the pieces tighten quickly.
"""

from __future__ import annotations

from typing import Callable

import torch

from opwise.bounds.strategies.input_split import bisect

Margins = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""`margins(lower [n, *shape], upper [n, *shape])`: a sound lower bound of the robust margin on each box, [n]."""


def certify_by_splitting(margins: Margins, lower: torch.Tensor, upper: torch.Tensor, *, max_boxes: int = 64,
                         broken: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Which boxes [rows, *shape] are proved: bound every open piece, drop the proved ones, bisect the others
    along their widest side, until a box has no open piece (proved) or would need more than `max_boxes`
    bound rows in all (not proved). `broken(points)` (optional, a forward pass: True where the prediction
    changed) ends a box early when the centre of one of its pieces is a counterexample. Only what
    `margins` proved on pieces covering the whole box counts: the result is as sound as `margins`.

    >>> import torch
    >>> margins = lambda lower, upper: 1.0 - upper.sum(1)  # x0 + x1 <= 1 on the box, bounded by a loose box bound
    >>> loose = lambda lower, upper: margins(lower, upper) - (upper - lower).sum(1)
    >>> lower, upper = torch.tensor([[0.0, 0.0], [0.0, 0.0]]), torch.tensor([[0.4, 0.4], [0.6, 0.6]])
    >>> certify_by_splitting(loose, lower, upper).tolist()
    [True, False]
    """
    rows = lower.shape[0]
    owner = torch.arange(rows, device=lower.device)
    spent = torch.zeros(rows, dtype=torch.long, device=lower.device)
    failed = torch.zeros(rows, dtype=torch.bool, device=lower.device)
    while owner.numel():
        spent += torch.bincount(owner, minlength=rows)
        open_ = margins(lower, upper) <= 0
        if broken is not None and bool(open_.any()):
            failed[owner[open_][broken((lower[open_] + upper[open_]) / 2)]] = True
        open_ &= ~failed[owner]
        # a box whose open pieces, split in two each, would pass its budget is given up
        pieces = torch.bincount(owner[open_], minlength=rows)
        failed |= spent + 2 * pieces > max_boxes
        open_ &= ~failed[owner]
        owner, lower, upper = owner[open_], lower[open_], upper[open_]
        if owner.numel():
            lower, upper = bisect(lower, upper, (upper - lower).flatten(1).argmax(1))  # across the widest side
            owner = torch.cat([owner, owner])
    return ~failed
