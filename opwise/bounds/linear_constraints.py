"""Linear constraints between input elements, `G·x <= h`, on top of an input box.

VNN-LIB properties may relate inputs to each other (VNN-COMP 2026's monotonicity queries: the second copy's
input no larger than the first's, `X_g[0] <= X_f[0]`). The set is then a polytope: the box cut by halfspaces.
Its jobs mirror the box's:

- the minimum of a linear function `A·x` over it, the last step of a bound pass: by weak duality
  `min_{box} (A + λG)·x − λ·h` bounds it from below for every λ >= 0 (λ = 0 is the box's bound), and the λ
  that makes it largest is searched per constraint in turn, exactly (the function of one λ is concave and
  piecewise linear, its kinks where a coefficient of A + λG changes sign);
- membership, and a feasible point near any point (attacks and counterexample candidates): alternating
  projections onto the box and the halfspaces, then the segment from a known interior point cut where it
  leaves the set, so the result is feasible exactly (in float64).

`G` is over the flat elements of one sample; the constraints hold for every sample of a batch alike.
"""

from __future__ import annotations

import dataclasses

import torch

#: alternating projections before the cut toward the interior point (each a sweep over box and halfspaces)
PROJECTION_SWEEPS = 50
#: sweeps of the per-constraint multiplier search (one suffices for one constraint)
MULTIPLIER_SWEEPS = 3


@dataclasses.dataclass
class LinearConstraints:
    """`G` [k, n] · x <= `h` [k] over one sample's n flat elements, and `interior`, a point of the box that
    satisfies them ([1, n], float64), strictly where the set has an interior."""

    G: torch.Tensor
    h: torch.Tensor
    interior: torch.Tensor

    @classmethod
    def within(cls, G: torch.Tensor, h: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> "LinearConstraints | None":
        """The constraints with an interior point found in the box [lower, upper] (flat [n]) by a linear program
        (the point farthest inside the halfspaces, scipy's HiGHS over the constrained elements only); None when
        no point of the box satisfies them.

        >>> c = LinearConstraints.within(torch.tensor([[1.0, -1.0]]), torch.tensor([0.0]), torch.zeros(2), torch.ones(2))
        >>> bool(c.G @ c.interior[0] <= c.h), c.interior.shape
        (True, torch.Size([1, 2]))
        """
        from scipy.optimize import linprog

        device = G.device  # the LP runs on the CPU; the constraints stay where they were given
        G, h = G.to(torch.float64).cpu(), h.to(torch.float64).cpu()
        lower, upper = lower.to(torch.float64).cpu().flatten(), upper.to(torch.float64).cpu().flatten()
        used = (G != 0).any(0).nonzero().flatten()
        point = (lower + upper) / 2
        sub = G[:, used]
        norms = sub.norm(dim=1, keepdim=True).clamp(min=1e-30)
        # maximise the slack s: sub·x + s·|row| <= h, lower <= x <= upper, 0 <= s <= width of the box
        width = float((upper[used] - lower[used]).max()) if len(used) else 0.0
        cost = [0.0] * len(used) + [-1.0]
        bounds = [(float(lower[i]), float(upper[i])) for i in used] + [(0.0, max(width, 0.0))]
        solved = linprog(cost, A_ub=torch.cat([sub, norms], 1).numpy(), b_ub=h.numpy(), bounds=bounds, method="highs")
        if solved.status != 0:
            return None
        point[used] = torch.tensor(solved.x[:-1], dtype=torch.float64)
        point = torch.max(torch.min(point, upper), lower)
        if bool((G @ point > h + 1e-9 * (1 + h.abs())).any()):
            return None
        return cls(G, h, point[None]).to(device)

    def to(self, device=None, dtype=None) -> "LinearConstraints":
        """The constraints on `device` (G and h in `dtype`; the interior point stays float64)."""
        return LinearConstraints(self.G.to(device=device, dtype=dtype), self.h.to(device=device, dtype=dtype),
                                 self.interior.to(device=device))

    def violation(self, x: torch.Tensor) -> torch.Tensor:
        """Per point of the batch x, the largest `G·x − h` (<= 0 inside), in float64 as projections check it.

        >>> below = LinearConstraints(torch.tensor([[-1.0, 1.0]]), torch.tensor([0.0]), torch.zeros(1, 2))  # x1 <= x0
        >>> below.violation(torch.tensor([[0.5, 0.25], [0.25, 0.5]])).tolist()
        [-0.25, 0.25]
        """
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        return (flat @ self.G.to(torch.float64).T - self.h.to(torch.float64)).amax(1)

    def minimum(self, flat: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """A lower bound on min `flat·x` over box ∩ constraints, per spec and sample: flat [s, b, n], the box
        lower/upper [b, n] -> [s, b]. Differentiable in `flat` (the multipliers are chosen without gradients).

        >>> below = LinearConstraints(torch.tensor([[-1.0, 1.0]]), torch.tensor([0.0]), torch.zeros(1, 2))  # x1 <= x0
        >>> below.minimum(torch.tensor([[[1.0, -1.0]]]), -torch.ones(1, 2), torch.ones(1, 2)).tolist()  # x0 - x1 >= 0
        [[0.0]]
        """
        G, h = self.G.to(flat.dtype), self.h.to(flat.dtype)
        with torch.no_grad():
            multipliers = self._multipliers(flat.detach(), G, h, lower, upper)
        shifted = flat + multipliers @ G
        box = (torch.einsum("sbn,bn->sb", shifted, lower)
               + torch.einsum("sbn,bn->sb", shifted.clamp(max=0), upper - lower))
        return box - multipliers @ h

    def shifted(self, flat: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """The rows `flat` [n, elements] plus their multipliers' multiple of G: where each changes sign is the box
        corner at which `minimum` takes its bound (a counterexample candidate, once projected).

        >>> below = LinearConstraints(torch.tensor([[-1.0, 1.0]]), torch.tensor([0.0]), torch.zeros(1, 2))
        >>> below.shifted(torch.tensor([[1.0, -1.0]]), -torch.ones(1, 2), torch.ones(1, 2)).tolist()
        [[0.0, 0.0]]
        """
        G = self.G.to(flat.dtype)
        with torch.no_grad():
            multipliers = self._multipliers(flat[None], G, self.h.to(flat.dtype), lower, upper)[0]
        return flat + multipliers @ G

    def _multipliers(self, flat, G, h, lower, upper) -> torch.Tensor:
        """λ [s, b, k] >= 0 making `min_box (flat + λG)·x − λh` large: per constraint in turn, the best of its
        kinks (where a coefficient of the shifted row changes sign) and 0."""
        k = G.shape[0]
        multipliers = flat.new_zeros(*flat.shape[:2], k)
        for _ in range(MULTIPLIER_SWEEPS if k > 1 else 1):
            for j in range(k):
                support = G[j].nonzero().flatten()
                if not len(support):
                    continue
                others = multipliers.clone()
                others[..., j] = 0
                row = (flat[..., support] + others @ G[:, support])               # [s, b, m]
                g = G[j, support]
                kinks = (-row / g).clamp(min=0)
                candidates = torch.cat([torch.zeros_like(kinks[..., :1]), kinks], -1)   # [s, b, m + 1]
                shifted = row[..., :, None] + candidates[..., None, :] * g[:, None]  # [s, b, m, m + 1]
                low, high = lower[:, support, None], upper[:, support, None]
                value = torch.minimum(low * shifted, high * shifted).sum(-2) - candidates * h[j]
                multipliers[..., j] = candidates.gather(-1, value.argmax(-1, keepdim=True)).squeeze(-1)
        return multipliers

    def project(self, x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """A point of box ∩ constraints per point of x (flat shapes as x's): alternating projections onto the
        box and each halfspace, then the segment from the interior point cut at the set's boundary.

        >>> below = LinearConstraints(torch.tensor([[-1.0, 1.0]]), torch.tensor([0.0]), torch.tensor([[0.5, -0.5]]))
        >>> below.project(torch.tensor([[-1.0, 1.0]]), -torch.ones(1, 2), torch.ones(1, 2)).tolist()
        [[0.0, 0.0]]
        """
        shape, dtype = x.shape, x.dtype
        flat = x.reshape(shape[0], -1).to(torch.float64)
        low, high = lower.reshape(lower.shape[0], -1).to(torch.float64), upper.reshape(upper.shape[0], -1).to(torch.float64)
        G, h = self.G.to(torch.float64), self.h.to(torch.float64)
        squared = (G * G).sum(1).clamp(min=1e-30)
        point = torch.max(torch.min(flat, high), low)
        for _ in range(PROJECTION_SWEEPS):
            excess = point @ G.T - h
            if not bool((excess > 0).any()):
                break
            for j in range(G.shape[0]):
                over = (point @ G[j] - h[j]).clamp(min=0)
                point = point - (over / squared[j])[:, None] * G[j]
            point = torch.max(torch.min(point, high), low)
        interior = self.interior.to(point.device, torch.float64)
        direction = point - interior
        reach = direction @ G.T                                           # [b, k]: growth of G·x along the segment
        room = (h - interior @ G.T).clamp(min=0)                          # [1, k]
        cut = torch.where(reach > 0, room / reach.clamp(min=1e-300), torch.ones_like(reach)).amin(1, keepdim=True)
        base = torch.max(torch.min(interior + cut.clamp(max=1.0) * direction, high), low)
        result = interior.expand_as(base).to(dtype)
        done = torch.zeros(base.shape[0], dtype=torch.bool, device=base.device)
        for shrink in (1.0, 1 - 1e-9, 1 - 1e-6, 1 - 1e-3, 0.5):  # rounding to dtype may cross the boundary by an ulp
            candidate = (interior + shrink * (base - interior)).to(dtype)
            inside = ((candidate.to(torch.float64) @ G.T - h) <= 0).all(1)
            result = torch.where((inside & ~done)[:, None], candidate, result)
            done |= inside
            if bool(done.all()):
                break
        return result.reshape(shape)
