"""`certified_map`: per feature or patch, the largest L∞ radius at which the prediction is *certified*
when only that patch may change, beside the attack's radius (the closest counterexample PGD found).

Every patch is one batch row of a bound pass, and all rows search their radius together, so a map costs a
few batched passes however many patches it has. A CROWN pass certifies a radius even where it fails: its
linear bound holds on every smaller box of the patch (`linear_radius.py`), so each pass raises the certified
radius and the next probe lands just past it; methods without a linear bound (IBP, α-CROWN,
branch-and-bound) bisect. Only radii a bound pass proved are reported:
`radius[i] <= true radius[i] <= attack_radius[i]`.
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch

from opwise.bounds import BoundedModel
from opwise.bounds.methods import method_name
from opwise.bounds.spec import margin_matrix
from opwise.combined.box_splitting import certify_by_splitting
from opwise.combined.linear_radius import (FailedProbeIntervals, has_linear_bound, linear_pass, patch_features,
                                           patch_linear_bound)
from opwise.combined.patch_attack import attack_boxes, robust_margins
from opwise.errors import InputError
from opwise.tracing import Graph
from opwise.tracing.precision import as_float32


#: how far below zero a counterexample moved towards x must keep the margin
SLACK = 1e-5

#: method -> the methods a map tries in turn, cheapest first: any of them proving a box certifies it ("bab":
#: CROWN on the pieces of boxes split by branch-and-bound, `box_splitting.py`); a later one starts from the
#: radii the earlier ones certified
CASCADES = {
    "ibp": ("ibp",),
    "crown-ibp": ("crown-ibp",),
    "forward-crown": ("forward-crown",),
    "crown": ("crown",),
    "alpha-crown": ("crown", "alpha-crown"),
    "bab": ("crown", "bab"),
}


@dataclasses.dataclass
class CertifiedMap:
    """`radius` [patches]: certified L∞ radius (`eps_max` where the whole tested range is certified);
    `attack_radius` [patches]: L∞ distance of the closest confirmed counterexample (inf: none found
    within `eps_max`); `masks` [patches, *feature shape]: which features each patch may change;
    `counterexamples` [patches, *feature shape]: that counterexample (NaN where none); `passes`: the
    batched bound passes run; `seconds`: their time, tracing included; `attack_seconds`: the attack's."""

    radius: torch.Tensor
    attack_radius: torch.Tensor
    masks: torch.Tensor
    counterexamples: torch.Tensor
    x: torch.Tensor
    target: int
    eps_max: float
    method: str
    passes: int
    seconds: float
    attack_seconds: float = 0.0

    def per_feature(self, values: torch.Tensor) -> torch.Tensor:
        """Spread one value per patch onto the features, shaped like one sample of x. A feature several
        (overlapping) patches cover takes the smallest of their values: for radii, that of the most fragile
        patch it lies in. NaN values are skipped; a feature no patch covers, or only NaN ones, stays NaN.

        >>> import torch
        >>> windows = torch.tensor([[True, True, False, False], [False, True, True, False], [False, False, True, False]])
        >>> m = CertifiedMap(torch.zeros(3), torch.zeros(3), windows, torch.zeros(3, 4), torch.zeros(1, 4), 0, 1.0, "crown", 1, 0.0)
        >>> m.per_feature(torch.tensor([0.5, 0.25, float("nan")])).tolist()
        [0.5, 0.25, 0.25, nan]
        """
        values = values.reshape(-1).to(self.masks.device, torch.float32)  # the map lives on the CPU
        present = self.masks & ~torch.isnan(values).reshape(-1, *[1] * (self.masks.dim() - 1))
        spread = torch.where(present, values.reshape(-1, *[1] * (self.masks.dim() - 1)), torch.tensor(math.inf))
        return torch.where(present.any(0), spread.amin(0), torch.tensor(math.nan))

    def patch_relevance(self, relevance: torch.Tensor) -> torch.Tensor:
        """Total absolute relevance per patch, from a relevance map shaped like x."""
        relevance = relevance.detach().to(self.masks.device)  # an explanation may come from a GPU; the map is on the CPU
        return (self.masks.to(relevance.dtype) * relevance.reshape(1, *self.masks.shape[1:]).abs()).flatten(1).sum(1)

    def relevance_correlation(self, relevance: torch.Tensor) -> float:
        """Spearman rank correlation between |relevance| per patch and the certified radius: negative when
        the features LRP calls relevant are the fragile ones (NaN when either is constant).

        >>> import torch
        >>> m = CertifiedMap(torch.tensor([0.1, 0.2, 0.3]), torch.full((3,), float("inf")), torch.eye(3, dtype=torch.bool),
        ...                  torch.full((3, 3), float("nan")), torch.zeros(1, 3), 0, 1.0, "crown", 1, 0.0)
        >>> m.relevance_correlation(torch.tensor([[3.0, -2.0, 1.0]]))
        -1.0
        """
        from scipy.stats import spearmanr

        relevant = self.patch_relevance(relevance).detach().numpy()
        radius = self.radius.numpy()
        if relevant.std() == 0 or radius.std() == 0:
            return math.nan
        return float(spearmanr(relevant, radius).statistic)


def patch_masks(shape: tuple[int, ...], patch: int | tuple[int, int] | torch.Tensor = 1) -> torch.Tensor:
    """Boolean masks [patches, *shape]: vectors in runs of `patch` features; anything with two or more
    dimensions in tiles of `patch` (int or (height, width)) over its last two, every leading index
    (channel) included. A bool tensor [patches, *shape] is taken as the masks themselves.

    >>> patch_masks((1, 4, 4), 2).shape, patch_masks((5,), 2).sum(dim=1).tolist()
    (torch.Size([4, 1, 4, 4]), [2, 2, 1])
    """
    shape = tuple(shape)
    if isinstance(patch, torch.Tensor):
        if patch.dtype != torch.bool or tuple(patch.shape[1:]) != shape:
            raise InputError(f"patch masks must be a bool tensor [patches, {', '.join(map(str, shape))}], got {patch.dtype} {tuple(patch.shape)}")
        return patch
    size = (patch, patch) if isinstance(patch, int) else tuple(patch)
    if len(size) != 2 or min(size) < 1:
        raise InputError(f"patch must be a positive int or (height, width), got {patch!r}")
    if len(shape) == 1:
        starts = range(0, shape[0], size[0])
        masks = torch.zeros(len(starts), shape[0], dtype=torch.bool)
        for row, start in enumerate(starts):
            masks[row, start : start + size[0]] = True
        return masks
    height, width = shape[-2:]
    tiles = [(r, c) for r in range(0, height, size[0]) for c in range(0, width, size[1])]
    masks = torch.zeros(len(tiles), *shape, dtype=torch.bool)
    for row, (r, c) in enumerate(tiles):
        masks[row, ..., r : r + size[0], c : c + size[1]] = True
    return masks


#: `rows_per_pass` without a batch size: about this fraction of the patches, within `AUTO_ROWS`
AUTO_FRACTION = 1 / 8
AUTO_ROWS = (16, 64)


def rows_per_pass(count: int, batch_size: int | None = None) -> int:
    """Rows per bound pass of a map of `count` patches: `batch_size` (at most `count`), or by default an eighth of the
    patches within `AUTO_ROWS`. A search pass over more rows costs less per row, but the later passes hold only the
    few patches still open (an eighth to a twentieth of them), and a pass costs a whole chunk however few rows fill it.

    >>> rows_per_pass(64), rows_per_pass(256), rows_per_pass(4096), rows_per_pass(10), rows_per_pass(256, 8)
    (16, 32, 64, 10, 8)
    """
    if batch_size is None:
        batch_size = min(max(int(count * AUTO_FRACTION), AUTO_ROWS[0]), AUTO_ROWS[1])
    return max(1, min(batch_size, count))


def certified_map(
    model: torch.nn.Module,
    x: torch.Tensor,
    *,
    patch: int | tuple[int, int] | torch.Tensor = 1,
    method: str = "crown",
    eps_max: float = 0.5,
    domain: tuple[float, float] | None = (0.0, 1.0),
    target: int | None = None,
    steps: int = 8,
    attack: bool = True,
    attack_steps: int = 2,
    batch_size: int | None = None,
    max_boxes: int = 16,
    search: str = "linear",
) -> CertifiedMap:
    """Certified L∞ radius per patch of one sample x [1, ...], searched in [0, eps_max], every patch a row
    of the same batched bound pass (`method`: "crown", "alpha-crown", ... as in `opwise.compute_bounds`);
    boxes are clipped to `domain`. A row stops once its certified radius is within eps_max / 2**steps of a
    radius `method` failed to prove. With a linear bound (CROWN, CROWN-IBP, forward-CROWN) every pass
    certifies a radius, failed probes included (`linear_radius.py`), and the search starts from where the
    model's linearization at x reaches a zero margin (`_search`); `search="bisect"` ignores that and
    bisects, as methods without one do (α-CROWN refines CROWN's radii, `CASCADES`). `attack` also
    bisects a batched PGD attack per patch for its closest counterexample (`attack_steps` rounds after one
    at eps_max). `batch_size`: rows per bound pass (more go through in chunks; None: `rows_per_pass`;
    `benchmarks/certified_map.py` measures the choice).

    `method="bab"` (branch-and-bound) goes on from CROWN's radii: a box CROWN cannot prove is split into
    pieces (`box_splitting.py`, at most `max_boxes` bound rows per box and radius tried) and certified
    when CROWN proves every piece; the attack runs first and bounds the radii it tries from above. Its
    radii are never below CROWN's, and cost several bound passes per radius tried.

    >>> import torch, opwise
    >>> model = torch.nn.Linear(2, 2)
    >>> with torch.no_grad(): _ = model.weight.copy_(torch.diag(torch.tensor([1.0, 2.0]))); _ = model.bias.zero_()
    >>> m = opwise.certified_map(model, torch.tensor([[0.8, 0.2]]), eps_max=1.0, steps=10)
    >>> [round(r, 2) for r in m.radius.tolist()], [round(r, 2) for r in m.attack_radius.tolist()]
    ([0.4, 0.2], [0.4, 0.2])
    """
    start = time.monotonic()
    # the search's bookkeeping (masks, radii, boxes) stays on the CPU; bound passes and the attack move what they
    # need to the model's device (BoundedModel, linear_pass, attack_boxes)
    x = torch.as_tensor(x, dtype=torch.float32).detach().cpu()
    if x.dim() == 0 or x.shape[0] != 1:
        raise InputError(f"certified_map takes one sample with a batch dimension of 1, got shape {tuple(x.shape)}")
    method = method_name(method, extra=("bab",))
    if isinstance(model, torch.nn.Module):
        model = as_float32(model, "bounds")  # the attack runs the model itself
    if method not in CASCADES:
        raise InputError(f"method {method!r} has no certified map; choose one of {', '.join(CASCADES)}")
    if not (isinstance(eps_max, (int, float)) and eps_max > 0 and math.isfinite(eps_max)):
        raise InputError(f"eps_max must be a positive number, got {eps_max!r}")
    if search not in ("linear", "bisect"):
        raise InputError(f"search must be 'linear' or 'bisect', got {search!r}")
    for name, value, least in (("steps", steps, 0), ("attack_steps", attack_steps, 0), ("batch_size", batch_size, 1)):
        if name == "batch_size" and value is None:  # chosen by `rows_per_pass`
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise InputError(f"{name} must be a whole number of at least {least}, got {value!r}")
    if domain is not None and ((x < domain[0]).any() or (x > domain[1]).any()):
        raise InputError(f"x lies outside its domain [{domain[0]}, {domain[1]}]; pass domain=None or the input's range")
    masks = patch_masks(tuple(x.shape[1:]), patch.cpu() if isinstance(patch, torch.Tensor) else patch)
    count = masks.shape[0]
    chunk = rows_per_pass(count, batch_size)  # one traced batch size for every pass: a re-trace costs seconds
    # traced at that batch size at once (a module can be; a Graph keeps its own)
    bounded = BoundedModel(model, x if isinstance(model, Graph) else x.expand(chunk, *x.shape[1:]))
    with torch.no_grad():
        output = bounded(x.expand(chunk, *x.shape[1:]))[:1].reshape(1, -1)
    target = int(output.argmax()) if target is None else int(target)
    if not 0 <= target < output.shape[1]:
        raise InputError(f"target {target} is out of range for {output.shape[1]} outputs")

    at_x = margin_matrix(output.shape[1], target) @ output[0].cpu()  # the margins at x, spec by spec
    passes = 0

    def margins(lower: torch.Tensor, upper: torch.Tensor, stage: str) -> torch.Tensor:
        nonlocal passes
        passes += 1
        found = []
        for part in _row_chunks(lower.shape[0], chunk):
            bounds = bounded.compute_bounds(x_lower=_padded(lower[part], chunk), x_upper=_padded(upper[part], chunk),
                                            target=target, method=stage, bound_upper=False)
            found.append(bounds.lower.min(1).values[: part.stop - part.start])
        return torch.cat(found).cpu()

    def prove(rows: torch.Tensor, eps: torch.Tensor, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass of `stage` at `eps` [rows]: the radius it certifies (eps where it proves the box; where it
        does not, what its linear bound still proves, 0 for a method without one or under plain bisection) and
        a guess for the next probe (NaN without a linear bound): where a proved probe's linear bound reaches
        zero (up to eps_max), or below a failed one, where the method's bound is predicted to
        (`PatchLinearBound.predicted_radius`)."""
        nonlocal passes
        lower, upper = _boxes(x, masks[rows], eps, domain)
        nothing = torch.full_like(eps, math.nan)
        if stage == "bab":
            with torch.no_grad():
                proved = certify_by_splitting(lambda lo, up: margins(lo, up, "crown"), lower, upper, max_boxes=max_boxes,
                                              broken=lambda points: robust_margins(model, points, target) <= 0)
            return torch.where(proved, eps, torch.zeros_like(eps)), nothing
        if search == "bisect" or not has_linear_bound(stage):
            return torch.where(margins(lower, upper, stage) > 0, eps, torch.zeros_like(eps)), nothing
        passes += 1
        bound, slope, settled = linear_pass(bounded, lower, upper, index[rows], target, stage, chunk,
                                            outer=failed_probes.outer(rows, eps), settle=True)
        linear = patch_linear_bound(bound.cpu(), slope.cpu(), x, index[rows], real[rows], eps, domain)
        reach = linear.radius(torch.full_like(eps, eps_max))
        proved = bound.cpu().amin(1) > 0
        failed_probes.keep(rows, eps, ~proved, settled)
        guess = linear.predicted_radius(at_x, eps, eps)
        return torch.where(proved, eps, torch.minimum(reach, eps)), torch.where(proved, torch.maximum(reach, eps), guess)

    low = torch.zeros(count)
    attack_radius = torch.full((count,), math.inf)
    counterexamples = torch.full((count, *x.shape[1:]), math.nan)
    attack_seconds, attacked = 0.0, False
    tolerance = eps_max / 2**steps
    features = patch_features(masks)
    failed_probes = FailedProbeIntervals(count)
    index, real = features
    for position, stage in enumerate(CASCADES[method]):
        if stage == "bab" and attack:
            # branch-and-bound costs many passes per radius: the attack first closes the bracket from above, so
            # only radii between CROWN's and the closest counterexample's are tried
            attack_start = time.monotonic()
            _attack_radius(model, x, masks, target, domain, eps_max, low, attack_radius, counterexamples, attack_steps)
            attack_seconds, attacked = time.monotonic() - attack_start, True
        start_from = "bisect" if stage == "bab" else "grow" if position > 0 else "top"
        linear = search != "bisect" and has_linear_bound(stage)
        guess = None
        if linear and position == 0:
            passes += 1
            guess = _linearized_radius(bounded, x, features, target, stage, domain, eps_max, chunk)
            wide = torch.nonzero((guess >= eps_max) & (low < eps_max)).flatten()
            if stage != "crown-ibp" and wide.numel():
                # boxes that may hold up to eps_max are the costliest to bound: CROWN-IBP passes cost a fraction of
                # CROWN's, and a box one proves needs no other
                certified, _ = prove(wide, torch.full((wide.numel(),), float(eps_max)), "crown-ibp")
                low[wide] = torch.maximum(low[wide], certified)
        # the attack's radius bounds the search from above where the attack ran first (inf elsewhere)
        _search(lambda rows, eps: prove(rows, eps, stage), low, attack_radius, eps_max, tolerance, start_from, guess,
                chunk if stage != "bab" else 1)
    if attack and not attacked:
        attack_start = time.monotonic()
        _attack_radius(model, x, masks, target, domain, eps_max, low, attack_radius, counterexamples, attack_steps)
        attack_seconds = time.monotonic() - attack_start
    return CertifiedMap(low, attack_radius, masks, counterexamples, x, target, float(eps_max), method, passes,
                        time.monotonic() - start - attack_seconds, attack_seconds)


def _search(prove, low: torch.Tensor, limit: torch.Tensor, eps_max: float, tolerance: float, start: str,
            guess: torch.Tensor | None = None, width: int = 1) -> None:
    """Raise every row's certified radius `low` in place until it is within `tolerance` of a radius the
    method failed at or of `limit` (a counterexample's distance: nothing at or above it can be certified),
    or reaches eps_max. `prove(rows, eps)` is one batched pass: the radius it certifies per row (eps where it
    proves the box; below eps, what a failed probe's linear bound still proves) and where its linear bound
    reaches zero (a guess past eps; NaN without a linear bound).

    Until a row's probe fails, its probes grow: to `guess` first (where the model's linearization at x
    reaches zero), then to where the last pass's linear bound reaches zero, or, with neither, by doubling
    their step (`start` "top": from eps_max down; "grow", a later and costlier method that rarely proves
    much more: from the radius certified so far by one tolerance). Once probes fail, the
    radius is where a failed probe p would certify p itself: the root of p − certified(p), which the search
    finds by the secant through the last two failed probes (the first alone: `prove`'s guess, or as far
    below as above the radius) and probes half a tolerance past, so that the probe's failed pass closes the bracket. Without
    linear bounds (and under "bisect", which starts at once, below eps_max and the limit: branch-and-bound)
    a failed probe certifies nothing and this is bisection. A pass of fewer rows than `width` (a chunk, which
    costs the same) gives every row more probes, evenly over its bracket.
    """
    high = limit.clamp(max=eps_max) if start == "bisect" else limit.clone()
    step = torch.full_like(low, tolerance if start == "grow" else eps_max)
    growing = torch.full_like(low, start != "bisect", dtype=torch.bool)
    reach = torch.full_like(low, math.nan) if guess is None else guess.clone()
    # the last two failed probes and what their passes certified (NaN: none yet)
    last, last_certified = torch.full_like(low, math.nan), torch.full_like(low, math.nan)
    before, before_certified = last.clone(), last.clone()
    proved_last = torch.zeros_like(low, dtype=torch.bool)
    predicted = torch.full_like(low, math.nan)  # below the last failed probe, where `prove` guessed the radius is
    while True:
        active = (low < eps_max) & (high - low > tolerance * (1 + 1e-6))
        rows = torch.nonzero(active).flatten()
        if rows.numel() == 0:
            return
        known = torch.isfinite(reach)
        grown = torch.minimum(torch.where(known, torch.maximum(reach, low + tolerance), low + step), high)
        gap, gap_before = last - last_certified, before - before_certified
        secant = last - gap * (last - before) / (gap - gap_before)
        # the secant holds where both failed probes proved something and the gap grows with the probe, as it
        # does near the radius; from one failed probe, the radius is guessed as far below it as its bound proved
        rising = (gap - gap_before) * (last - before) > 0
        alone = torch.where(torch.isfinite(predicted), predicted, last - gap / 2)
        root = torch.where(torch.isfinite(secant) & rising & (before_certified > 0), secant, alone)
        root = torch.where(last_certified > 0, root, math.nan)
        # a guess outside the bracket, or after a proved probe (the guess was too low), gives way to halving the
        # bracket (up to where that probe's bound reaches zero, if lower)
        middle = (low + torch.minimum(high, torch.where(torch.isfinite(reach), reach, high))) / 2
        usable = torch.isfinite(root) & ~proved_last & (root > low) & (root < high)
        narrowed = torch.where(usable, root + tolerance / 2, middle)
        narrowed = torch.minimum(torch.maximum(narrowed, low + tolerance / 2), high - tolerance / 4)
        probe = torch.where(growing, grown, narrowed).clamp(max=eps_max)[rows]
        # a pass of fewer rows than a chunk costs a whole chunk: each row fills it with more probes, spread evenly
        # over its bracket (a multi-point bisection step)
        spread = width // rows.numel() - 1 if rows.numel() < width else 0
        fractions = torch.arange(1, spread + 1, dtype=low.dtype) / (spread + 1)
        top = torch.minimum(high, torch.full_like(high, eps_max))[rows]
        extra = (low[rows].unsqueeze(1) + (top - low[rows]).unsqueeze(1) * fractions).flatten()
        owner = torch.cat([torch.arange(rows.numel()), torch.arange(rows.numel()).repeat_interleave(spread)])
        probes = torch.cat([probe, extra])
        certified_all, reach_all = prove(rows[owner], probes)
        proved_all = certified_all >= probes
        certified = torch.zeros_like(probe).scatter_reduce(0, owner, certified_all, "amax")
        # the lowest failed probe of each row (inf: none) and what it certified
        failed_at = torch.where(proved_all, math.inf, probes)
        lowest = torch.full_like(probe, math.inf).scatter_reduce(0, owner, failed_at, "amin")
        at_lowest = (failed_at == lowest[owner]) & ~proved_all
        lowest_certified = torch.zeros_like(probe).scatter_reduce(0, owner[at_lowest], certified_all[at_lowest], "amax")
        lowest_guess = torch.full_like(probe, -math.inf).scatter_reduce(0, owner[at_lowest], reach_all[at_lowest], "amax")
        proved = torch.isinf(lowest)  # every probe of the row proved
        reach_proved = torch.where(proved_all, reach_all, -math.inf)
        reach[rows] = torch.full_like(probe, -math.inf).scatter_reduce(0, owner, reach_proved, "amax")
        low[rows] = torch.maximum(low[rows], certified)
        failed = rows[~proved]
        high[failed] = torch.minimum(high[failed], lowest[~proved])
        before[failed], before_certified[failed] = last[failed], last_certified[failed]
        last[failed], last_certified[failed] = lowest[~proved], lowest_certified[~proved]
        reach[failed] = math.nan
        predicted[failed] = lowest_guess[~proved]
        step[rows[proved]] *= 2
        growing[failed] = False
        proved_last[rows] = proved


#: where the first probe goes, relative to where the model's linearization at x reaches a zero margin: CROWN's
#: relaxations only loosen as a box grows, so its radius lies below that (on the benchmark's nets by 5 to 45%)
GUESS_SCALE = 0.9


def _linearized_radius(bounded, x, features, target, method, domain, eps_max, chunk) -> torch.Tensor:
    """Per patch, `GUESS_SCALE` of where the model's linearization at x (one bound pass over the point x itself,
    where the relaxations are exact) reaches a zero margin, or eps_max where it does not before: a first probe
    for a search, not a certified radius. The point is repeated to fill a chunk, which runs on the graph every
    other pass runs on (no re-trace)."""
    index, real = features
    count = index.shape[0]
    everything = torch.arange(x[0].numel()).reshape(1, -1)
    points = x.expand(chunk, *x.shape[1:])
    lower, slope, _ = linear_pass(bounded, points, points, everything.expand(chunk, -1), target, method, chunk)
    slope = slope[:1].cpu().expand(count, -1, -1).gather(2, index.unsqueeze(1).expand(-1, slope.shape[1], -1))
    bound = patch_linear_bound(lower[:1].cpu().expand(count, -1), slope, x, index, real, torch.zeros(count), domain)
    zero = bound.radius(torch.full((count,), float(eps_max)))
    return torch.where(zero >= eps_max, zero, zero * GUESS_SCALE)


def _attack_radius(model, x, masks, target, domain, eps_max, certified, radius, counterexamples, rounds):
    """Fill `radius` / `counterexamples` in place: PGD on every patch at eps_max, then, on the patches it
    broke, at the midpoint between the certified radius (no attack can succeed below it) and the closest
    counterexample so far."""
    low = certified.clone()
    eps = torch.full_like(certified, float(eps_max))
    rows = torch.arange(masks.shape[0])
    for round_ in range(rounds + 1):
        lower, upper = _boxes(x, masks[rows], eps[rows], domain)
        found, points = attack_boxes(model, lower, upper, target, seed=round_)
        points = _closest_on_segment(model, x, points, found, target)
        distance = (points - x).abs().flatten(1).amax(1)
        closer = found & (distance < radius[rows])
        radius[rows[closer]] = distance[closer]
        counterexamples[rows[closer]] = points[closer]
        low[rows[~found]] = torch.maximum(low[rows[~found]], eps[rows[~found]])
        eps = (low + radius.clamp(max=eps_max)) / 2
        rows = torch.nonzero(torch.isfinite(radius) & (radius - low > eps_max * 1e-3)).flatten()
        if rows.numel() == 0:
            break


def _closest_on_segment(model, x: torch.Tensor, points: torch.Tensor, found: torch.Tensor, target: int, steps: int = 12) -> torch.Tensor:
    """Move each counterexample towards x along the segment between them, by bisection on the fraction of
    the way, keeping only points a forward pass confirms (the segment stays in the patch's box). A kept point
    must break the margin by `SLACK`: at the boundary itself, batched and single forward passes disagree on
    its sign by rounding."""
    far = torch.ones(points.shape[0])
    near = torch.zeros(points.shape[0])
    for _ in range(steps):
        middle = (far + near) / 2
        trial = x + middle.reshape(-1, *[1] * (x.dim() - 1)) * (points - x)
        with torch.no_grad():
            broken = robust_margins(model, trial, target) < -SLACK
        far = torch.where(broken, middle, far)
        near = torch.where(broken, near, middle)
    closest = x + far.reshape(-1, *[1] * (x.dim() - 1)) * (points - x)
    return torch.where(found.reshape(-1, *[1] * (x.dim() - 1)), closest, points)


def _boxes(x: torch.Tensor, masks: torch.Tensor, eps: torch.Tensor, domain):
    delta = masks.to(x.dtype) * eps.reshape(-1, *[1] * (masks.dim() - 1))
    lower, upper = x - delta, x + delta
    if domain is not None:
        lower, upper = lower.clamp(min=domain[0]), upper.clamp(max=domain[1])
    return lower, upper


def _row_chunks(rows: int, size: int) -> list[slice]:
    return [slice(start, min(rows, start + size)) for start in range(0, rows, size)]


def _padded(rows: torch.Tensor, size: int) -> torch.Tensor:
    """Pad a short chunk by repeating its last row, so every pass reuses one traced batch size."""
    if rows.shape[0] == size or rows.shape[0] == 0:
        return rows
    return torch.cat([rows, rows[-1:].expand(size - rows.shape[0], *rows.shape[1:])])
