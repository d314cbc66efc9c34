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


@dataclasses.dataclass
class LeafAnswer:
    """`proved`: every disjunct is ruled out on the domain, and `margin` is a lower bound of its property margin there
    (+inf: no input reaches it); otherwise `candidate` is the LP's optimiser of a disjunct it left open ([1, *input
    shape]; None where no LP could be posed)."""

    proved: bool
    margin: float = -math.inf
    candidate: torch.Tensor | None = None


def decide_leaf(bounder: DomainBounder, domain: Domain, deadline: float | None = None) -> LeafAnswer:
    """The LP verdict on `domain` (module docstring), each LP stopped at `deadline` (time.monotonic(); one stopped
    early proves nothing). Input sets other than boxes (L2/L1 balls) are not posed (not proved, no candidate).

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
    if not input_set.is_box or size != 1:  # an L2/L1 ball is no LP; a graph fixed at another batch is not posed
        return LeafAnswer(False)
    engine = bounder.engine_for([domain], size, refine=bounder.refining)
    A = bounder.output_specs(engine)
    result = engine.bound(engine.graph.output, A, record=False)
    names = dict.fromkeys(node.input for node in bounder.nodes)  # each split input once, in order
    constraints = [_narrowed_rows(bounder, engine, domain, name) for name in names]
    if bool(engine.infeasible.any()):  # the domain's intervals miss each other: no input reaches it
        return LeafAnswer(True, math.inf)
    rows = dense(result.input_coefficient).detach().reshape(len(A), -1).double().cpu().numpy()
    offsets = (result.bias.detach()[:, 0] - bounder.d).double().cpu().numpy()
    box = list(zip(input_set.lower.flatten().double().tolist(), input_set.upper.flatten().double().tolist()))
    margins, start = [], 0
    for size in bounder.groups:
        group = slice(start, start + size)
        start += size
        if domain.row_bounds is not None and bool((domain.row_bounds[group] > 0).any()):
            margins.append(float(domain.row_bounds[group].max()))  # ruled out on the domain already
            continue
        optimum, point = _minimax(rows[group], offsets[group], constraints, box, deadline)
        if point is None:  # infeasible: no input of the box reaches the domain
            return LeafAnswer(True, math.inf)
        if not optimum > PROOF_MARGIN * (1 + float(np.abs(offsets[group]).max())):
            lower = input_set.lower
            candidate = torch.as_tensor(point, dtype=lower.dtype).reshape(lower.shape).to(lower.device)
            return LeafAnswer(False, candidate=candidate)
        margins.append(optimum)
    return LeafAnswer(True, min(margins, default=math.inf))


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
             deadline: float | None) -> tuple[float, np.ndarray | None]:
    """min over x in the box and the constraints of max_r rows[r]·x + offsets[r]: (optimum, optimiser), or (inf,
    None) where the constraints leave no point; (-inf, the box's point nearest 0) where the solver stopped short."""
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
        return math.inf, None
    if solved.status != 0:
        return -math.inf, np.clip(np.zeros(n), [b[0] for b in box], [b[1] for b in box])
    return float(solved.fun), solved.x[:n]
