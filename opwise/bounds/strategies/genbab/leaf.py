"""A domain with nothing left to split, decided by a linear program over the input.

When every candidate interval of a domain is a point or split already (on a ReLU network: every unstable neuron
has its phase fixed), branching cannot go on, and β's few Adam steps need not have reached the bound that the
split constraints imply (an infeasible domain is proved only as β grows without limit). The search used to give
up there ("nothing left to split"). Here CROWN's linear bounds of the domain's outputs and of its narrowed split
nodes, in terms of the input, become an LP (scipy's HiGHS): minimise t over the box subject to
`lower_r(x) - d_r <= t` for each row of a disjunct and `upper_i(x) >= l_i`, `lower_i(x) <= u_i` for each narrowed
element i. Each linear bound holds on the domain, so the LP's feasible set contains every input of the domain
(an outer approximation): an infeasible LP or an optimum t > 0 proves the disjunct there. Where every nonlinearity
is fixed to one line on the domain (a fully split ReLU net) the bounds are exact and so is the LP; its optimiser
is then a counterexample, which the search checks with a forward pass as any other candidate.

The input set's own linear constraints join the LP. An L2 or L1 ball is no polytope: the LP over its box is cut down
to it by tangent halfspaces, and a Lagrangian bound with the ball exact tightens each LP's answer; both are lower
bounds by weak duality, so a proof stays sound however early the cuts stop. A leaf that none of this decides (the
solver stops short, the LP is a relaxation, the optimum is 0 up to rounding) is set aside by the search.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch

from opwise.bounds.engine import BoundPropagation
from opwise.bounds.strategies.genbab.bounding import DomainBounder, element_linear_bounds
from opwise.bounds.strategies.genbab.domains import Domain
from opwise.bounds.transfers.patches import dense

#: an LP optimum proves a disjunct when it is above this, relative to 1 + the largest |bias| of its rows (the
#: solver's tolerances are 1e-7; the linear bounds are float32)
PROOF_MARGIN = 1e-5
#: narrower than the root's interval by more than this (relative to its width): the element becomes a constraint
NARROWED = 1e-6
#: cutting planes per disjunct at most over an Lp ball, and the relative distance beyond its radius at which an LP's
#: optimiser counts as on the ball (it is then projected onto it as a counterexample candidate)
BALL_CUTS = 60
BALL_TOLERANCE = 1e-4
#: golden-section steps over the ball's multiplier of the Lagrangian bound (40 orders of magnitude to 1e-6)
LAGRANGIAN_STEPS = 40
#: the cutting planes stop where a point of the set reaches the lower bound up to this (relative)
BALL_GAP = 1e-6


@dataclasses.dataclass
class LeafAnswer:
    """`proved`: every disjunct is ruled out on the domain, and `margin` is a lower bound of its property margin there
    (+inf: no input reaches it). Otherwise `margin` is still a lower bound where the LPs ended at their optimum (-inf
    where one could not), `candidate` holds the LPs' optimisers of the disjuncts they left open, in the input set
    ([k, *input shape]; None where no LP could be posed), and `reason` says why the LPs did not prove the domain."""

    proved: bool
    margin: float = -math.inf
    candidate: torch.Tensor | None = None
    reason: str = ""


def decide_leaf(bounder: DomainBounder, domain: Domain, deadline: float | None = None) -> LeafAnswer:
    """The LP verdict on `domain` (module docstring), each LP stopped at `deadline` (time.monotonic(); one stopped
    early proves nothing). The input set's own linear constraints join the LP; an Lp ball (p < ∞) is cut down to by
    tangent halfspaces (`_minimax_in_ball`).

    >>> import torch
    >>> from opwise.bounds import BoundedModel
    >>> from opwise.bounds.spec import Disjunct, Specification
    >>> model = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.ReLU())
    >>> with torch.no_grad(): _ = model[0].weight.fill_(1.0); _ = model[0].bias.zero_()
    >>> spec = Specification(-torch.ones(1, 1), torch.ones(1, 1), [Disjunct(torch.ones(1, 1), torch.tensor([-0.5]))])
    >>> bounder = DomainBounder(BoundedModel(model, torch.zeros(1, 1)), spec, "crown")
    >>> root = bounder.root()
    >>> active, inactive = root.split("linear", 0, 0.0)[1], root.split("linear", 0, 0.0)[0]
    >>> decide_leaf(bounder, active).proved, decide_leaf(bounder, inactive).proved   # relu(x) > -0.5 everywhere
    (True, True)
    """
    if domain.lower == math.inf:  # proved infeasible by its bounds already
        return LeafAnswer(True, math.inf)
    input_set = bounder.input_set(1)
    size = bounder.bounded.graph.for_batch(1).batch_size
    if size != 1:
        return LeafAnswer(False, reason=f"no LP is posed on a graph fixed at batch size {size}")
    engine = bounder.engine_for([domain], size, refine=bounder.refining)
    A = bounder.output_specs(engine)
    result = engine.bound(engine.graph.output, A, record=False)
    names = dict.fromkeys(node.input for node in bounder.nodes)  # each split input once, in order
    constraints = [_narrowed_rows(bounder, engine, domain, name) for name in names]
    if bool(engine.infeasible.any()):  # the domain's intervals miss each other: no input reaches it
        return LeafAnswer(True, math.inf)
    if input_set.constraints is not None:  # the input set's own G x <= h
        constraints.append((input_set.constraints.G.double().cpu().numpy(), input_set.constraints.h.double().cpu().numpy()))
    rows = dense(result.input_coefficient).detach().reshape(len(A), -1).double().cpu().numpy()
    offsets = (result.bias.detach()[:, 0] - bounder.d).double().cpu().numpy()
    box = list(zip(input_set.lower.flatten().double().tolist(), input_set.upper.flatten().double().tolist()))
    margins, points, reasons, start = [], [], [], 0
    for size in bounder.groups:
        group = slice(start, start + size)
        start += size
        if domain.row_bounds is not None and bool((domain.row_bounds[group] > 0).any()):
            margins.append(float(domain.row_bounds[group].max()))  # ruled out on the domain already
            continue
        enough = PROOF_MARGIN * (1 + float(np.abs(offsets[group]).max()))
        if input_set.is_ball:
            optimum, found, reason = _minimax_in_ball(rows[group], offsets[group], constraints, box, input_set,
                                                      enough, deadline)
        else:
            optimum, point, _ = _minimax(rows[group], offsets[group], constraints, box, deadline)
            found = [] if point is None else [point]
            reason = "the LP solver stopped short" if optimum == -math.inf else f"its LP optimum is {optimum:.3g}"
        if optimum == math.inf:  # infeasible: no input of the set reaches the domain
            return LeafAnswer(True, math.inf)
        margins.append(optimum)
        if not optimum > enough:
            points += found
            reasons.append(reason)
    if not reasons:  # every disjunct proved
        return LeafAnswer(True, min(margins, default=math.inf))
    lower, candidate = input_set.lower, None
    if points:
        candidate = torch.as_tensor(np.stack(points), dtype=lower.dtype).reshape(len(points), *lower.shape[1:])
        candidate = input_set.project(candidate.to(lower.device))
    return LeafAnswer(False, min(margins), candidate, "; ".join(reasons))


def _narrowed_rows(bounder: DomainBounder, engine: BoundPropagation, domain: Domain,
                   name: str) -> tuple[np.ndarray, np.ndarray]:
    """The constraints `G x <= h` that the domain's narrowed elements of split node input `name` put on the input:
    its upper linear bound stays above the element's lower end, its lower linear bound below the upper end."""
    own, root = domain.intervals[name], bounder.root_intervals[name]
    width = (root.upper - root.lower).flatten()
    narrowed = ((own.lower.flatten() - root.lower.flatten() > NARROWED * width)
                | (root.upper.flatten() - own.upper.flatten() > NARROWED * width)).nonzero().flatten()
    if not len(narrowed):
        return np.zeros((0, math.prod(bounder.spec.x_lower.shape[1:]))), np.zeros(0)
    lower_c, lower_b, upper_c, upper_b = element_linear_bounds(engine, engine.graph.node(name), narrowed)
    low, high = own.lower.flatten()[narrowed], own.upper.flatten()[narrowed]
    G = torch.cat([-upper_c, lower_c])  # -upper(x) <= -l  and  lower(x) <= u
    h = torch.cat([upper_b - low, high - lower_b])
    finite = torch.isfinite(h)
    return G[finite].double().cpu().numpy(), h[finite].double().cpu().numpy()


def _minimax(rows: np.ndarray, offsets: np.ndarray, constraints, box,
             deadline: float | None) -> tuple[float, np.ndarray | None, np.ndarray | None]:
    """min over x in the box and the constraints of max_r rows[r]·x + offsets[r]: (optimum, optimiser, the LP's
    multipliers of the rows and then of the constraints, >= 0), or (inf, None, None) where the constraints leave no
    point; (-inf, the box's point nearest 0, None) where the solver stopped short."""
    from scipy.optimize import linprog

    n = rows.shape[1]
    G = np.concatenate([c[0] for c in constraints] + [np.zeros((0, n))])
    h = np.concatenate([c[1] for c in constraints] + [np.zeros(0)])
    # variables (x, t): rows·x - t <= -offsets; G x <= h
    A_ub = np.block([[rows, -np.ones((len(rows), 1))], [G, np.zeros((len(G), 1))]])
    b_ub = np.concatenate([-offsets, h])
    objective = np.zeros(n + 1)
    objective[-1] = 1.0
    options = {} if deadline is None else {"time_limit": max(0.1, deadline - time.monotonic())}
    solved = linprog(objective, A_ub=A_ub, b_ub=b_ub, bounds=box + [(None, None)], method="highs", options=options)
    if solved.status == 2:
        return math.inf, None, None
    if solved.status != 0:
        return -math.inf, np.clip(np.zeros(n), [b[0] for b in box], [b[1] for b in box]), None
    return float(solved.fun), solved.x[:n], np.maximum(-solved.ineqlin.marginals, 0.0)


def _minimax_in_ball(rows: np.ndarray, offsets: np.ndarray, constraints, box, input_set, enough: float,
                     deadline: float | None) -> tuple[float, list[np.ndarray], str]:
    """`_minimax` over the input set's Lp ball too, by cutting planes (Kelley's): each LP's optimiser outside the
    ball is cut off by the halfspace `g·(x − c) <= ε` tangent where the ball meets the segment to it (g the dual-norm
    unit gradient of ‖x − c‖_p there: ‖g‖_q = 1, so `g·(x − c) <= ‖x − c‖_p <= ε` keeps the whole ball). Every LP
    is over a superset of the ball ∩ box ∩ constraints, so its optimum is a lower bound; so is the Lagrangian bound
    with the LP's multipliers of the rows and constraints and the ball exact (`_lagrangian`), which converges much
    faster than the cuts alone in many dimensions. The larger proves the disjunct where it exceeds `enough`.
    Returns (that bound, the optimisers and the Lagrangian's minimisers (candidates), why it is not a proof);
    no points where the set misses the constraints (bound +inf)."""
    center = input_set.center.flatten().double().cpu().numpy()
    eps, norm = input_set.eps, input_set.norm
    lower, upper = np.array([b[0] for b in box]), np.array([b[1] for b in box])
    G = np.concatenate([c[0] for c in constraints] + [np.zeros((0, len(center)))])
    h = np.concatenate([c[1] for c in constraints] + [np.zeros(0)])
    cuts, points, bound = [], [], -math.inf
    for _ in range(BALL_CUTS):
        optimum, point, weights = _minimax(rows, offsets, constraints + [_stacked(cuts, len(center))], box, deadline)
        if point is None:
            return optimum, [], ""
        points.append(point)
        if optimum == -math.inf:
            return max(bound, optimum), points, "the LP solver stopped short"
        bound = max(bound, optimum)
        if norm in (1, 2):
            dual, minimiser = _lagrangian(rows, offsets, G, h, weights, lower, upper, center, eps, norm)
            bound = max(bound, dual)
            points.append(minimiser)
        offset = point - center
        distance = float(np.linalg.norm(offset, ord=norm))
        upper_value = _best_inside(rows, offsets, G, h, points[-2:], input_set)
        if bound > enough or distance <= eps * (1 + BALL_TOLERANCE) or upper_value <= 0 \
                or upper_value - bound <= BALL_GAP * (1 + abs(bound)):
            return bound, points, f"its bound over the ball is {bound:.3g} (a point of the set reaches {upper_value:.3g})"
        gradient = _dual_unit(offset, norm)
        scale = float(np.linalg.norm(gradient, ord=_dual(norm)))  # 1 up to rounding: the cut keeps the ball
        cuts.append((gradient, float(gradient @ center) + eps * scale * (1 + 1e-12)))
    return bound, points, (f"{BALL_CUTS} cutting planes left the LP's optimiser outside the ball "
                           f"(a lower bound {bound:.3g})")


def _lagrangian(rows, offsets, G, h, weights, lower, upper, center, eps: float, norm: float
                ) -> tuple[float, np.ndarray]:
    """Weak duality: for λ >= 0 summing to 1 over the rows, μ >= 0 over `G x <= h` and ν >= 0,
    `min over the box of Σλ_r(rows_r·x + offsets_r) + μ·(G x − h) + ν·(‖x − c‖ − ε)` (‖·‖² / 2 and ε² / 2 for p = 2)
    is at most the minimax over box ∩ ball ∩ constraints, and it is separable per input: x_i = clip(c_i − w_i/ν)
    for p = 2, the best of l_i, u_i, clip(c_i) for p = 1. λ, μ are the LP's (`weights`); ν is searched (the
    function is concave in ν), every ν tried a valid bound. Returns the best bound and its minimiser."""
    count = len(rows)
    lam, mu = weights[:count], weights[count:count + len(G)]
    if lam.sum() <= 0:
        return -math.inf, center.copy()
    lam = lam / lam.sum()
    w = lam @ rows + mu @ G
    constant = float(lam @ offsets - mu @ h)

    def value(nu: float) -> tuple[float, np.ndarray]:
        if norm == 2:
            x = center - w / nu if nu > 0 else np.where(w >= 0, lower, upper)
            x = np.clip(x, lower, upper)
            return constant + float(w @ x) + nu / 2 * (float((x - center) @ (x - center)) - eps * eps), x
        options = np.stack([lower, upper, np.clip(center, lower, upper)])
        terms = options * w + nu * np.abs(options - center)
        x = options[terms.argmin(0), np.arange(len(w))]
        return constant + float(terms.min(0).sum()) - nu * eps, x

    best = value(0.0)
    scale = (float(np.abs(w).max()) + 1e-12) / max(eps, 1e-12)  # ν where the ball term weighs as the linear one
    low, high = math.log(scale) - 20, math.log(scale) + 20
    for _ in range(LAGRANGIAN_STEPS):  # golden-section search on log ν
        a, b = low + 0.382 * (high - low), low + 0.618 * (high - low)
        at_a, at_b = value(math.exp(a)), value(math.exp(b))
        best = max(best, at_a, at_b, key=lambda pair: pair[0])
        low, high = (low, b) if at_a[0] >= at_b[0] else (a, high)
    return best


def _best_inside(rows, offsets, G, h, points: list[np.ndarray], input_set) -> float:
    """The smallest `max_r rows_r·x + offsets_r` over the points projected into the input set that meet `G x <= h`
    (+inf where none does): an upper end of the minimax where the rows are exact."""
    inside = input_set.project(torch.as_tensor(np.stack(points)).reshape(len(points), *input_set.lower.shape[1:]))
    flat = inside.reshape(len(points), -1).double().cpu().numpy()
    meets = (flat @ G.T <= h + 1e-9 * (1 + np.abs(h))).all(1)
    values = (flat @ rows.T + offsets).max(1)
    return float(values[meets].min()) if meets.any() else math.inf


def _dual(norm: float) -> float:
    return math.inf if norm == 1 else norm / (norm - 1)


def _dual_unit(offset: np.ndarray, norm: float) -> np.ndarray:
    """The gradient of ‖·‖_p at `offset` (nonzero): the g with ‖g‖_q = 1 and g·offset = ‖offset‖_p."""
    if norm == 1:
        return np.sign(offset)
    magnitude = np.abs(offset) / np.abs(offset).max()  # scaled first: |o|^(p−1) neither under- nor overflows
    gradient = np.sign(offset) * magnitude ** (norm - 1)
    return gradient / np.linalg.norm(gradient, ord=_dual(norm))


def _stacked(cuts: list[tuple[np.ndarray, float]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The cuts as `G x <= h`."""
    if not cuts:
        return np.zeros((0, n)), np.zeros(0)
    return np.stack([g for g, _ in cuts]), np.array([h for _, h in cuts])
