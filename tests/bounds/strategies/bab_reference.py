"""Reference oracles for branch-and-bound tests on small Linear/ReLU MLPs (test code, not the engine).

`interval_bound_fn` is exact interval arithmetic; `milp_min_margin` solves, with scipy's HiGHS, the
smallest violation margin over the box exactly (big-M ReLU encoding with interval pre-activation bounds).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import Bounds, LinearConstraint, milp

from opwise.bounds.spec import Disjunct, Specification


def random_mlp(seed: int, sizes: tuple[int, ...]) -> torch.nn.Sequential:
    """A float64 Linear/ReLU MLP with the given layer sizes (no ReLU after the last layer)."""
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        layers.append(torch.nn.Linear(fan_in, fan_out).double())
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers).eval()


def linear_layers(model: torch.nn.Sequential) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(m.weight.detach(), m.bias.detach()) for m in model if isinstance(m, torch.nn.Linear)]


def interval_bounds(model, lower, upper) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Interval bounds of every layer's pre-activation, [B, width] each (the last is the output)."""
    result = []
    layers = linear_layers(model)
    for i, (weight, bias) in enumerate(layers):
        centre, radius = (lower + upper) / 2, (upper - lower) / 2
        mid, rad = centre @ weight.T + bias, radius @ weight.abs().T
        result.append((mid - rad, mid + rad))
        lower, upper = (mid - rad).clamp(min=0), (mid + rad).clamp(min=0)
    return result


def interval_bound_fn(model):
    """bound_fn for input_split_bab: interval lower bounds of C·f(x) over each box."""
    def bound_fn(x_lower, x_upper, C):
        low, high = interval_bounds(model, x_lower.reshape(len(x_lower), -1), x_upper.reshape(len(x_upper), -1))[-1]
        centre, radius = (low + high) / 2, (high - low) / 2
        return centre @ C.T - radius @ C.abs().T
    return bound_fn


def milp_min_margin(model, spec: Specification) -> float:
    """min over x in the box (cut by the spec's relations between inputs, if any) of spec.margin(f(x)), exactly, by
    one MILP per disjunct."""
    return min(_disjunct_min(model, spec, disjunct) for disjunct in spec.unsafe)


def _disjunct_min(model, spec: Specification, disjunct: Disjunct) -> float:
    layers = linear_layers(model)
    pre_bounds = interval_bounds(model, spec.x_lower.reshape(1, -1), spec.x_upper.reshape(1, -1))
    names: list[tuple[float, float, bool]] = []  # (lower, upper, integer) per variable

    def new(low, high, integer=False) -> int:
        names.append((low, high, integer))
        return len(names) - 1

    rows, lows, highs = [], [], []

    def constrain(coefficients: dict[int, float], low: float, high: float):
        rows.append(coefficients)
        lows.append(low)
        highs.append(high)

    current = [new(float(a), float(b)) for a, b in zip(spec.x_lower.flatten(), spec.x_upper.flatten())]
    relations = spec.input_set.constraints if spec.input_set is not None else None
    if relations is not None:  # the box cut by linear relations between inputs: G x <= h
        for row, bound in zip(relations.G.tolist(), relations.h.tolist()):
            constrain({current[i]: c for i, c in enumerate(row) if c}, -np.inf, bound)
    for index, (weight, bias) in enumerate(layers):
        low, high = (t[0].tolist() for t in pre_bounds[index])
        pre = []
        for j in range(weight.shape[0]):
            z = new(low[j], high[j])
            coefficients = {z: -1.0}
            for k, var in enumerate(current):
                coefficients[var] = coefficients.get(var, 0.0) + float(weight[j, k])
            constrain(coefficients, -float(bias[j]), -float(bias[j]))
            pre.append(z)
        if index == len(layers) - 1:
            current = pre
            break
        post = []
        for j, z in enumerate(pre):
            if high[j] <= 0:
                post.append(new(0.0, 0.0))
            elif low[j] >= 0:
                post.append(z)
            else:
                a, delta = new(0.0, high[j]), new(0.0, 1.0, True)
                constrain({a: 1.0, z: -1.0}, 0.0, np.inf)
                constrain({a: 1.0, delta: -high[j]}, -np.inf, 0.0)
                constrain({a: 1.0, z: -1.0, delta: -low[j]}, -np.inf, -low[j])
                post.append(a)
        current = post
    t = new(-np.inf, np.inf)
    for r in range(disjunct.C.shape[0]):  # C_r y - d_r <= t
        coefficients = {t: -1.0}
        for k, var in enumerate(current):
            coefficients[var] = coefficients.get(var, 0.0) + float(disjunct.C[r, k])
        constrain(coefficients, -np.inf, float(disjunct.d[r]))
    matrix = np.zeros((len(rows), len(names)))
    for i, coefficients in enumerate(rows):
        for var, value in coefficients.items():
            matrix[i, var] += value
    objective = np.zeros(len(names))
    objective[t] = 1.0
    result = milp(objective, constraints=LinearConstraint(matrix, lows, highs),
                  bounds=Bounds([n[0] for n in names], [n[1] for n in names]),
                  integrality=np.array([n[2] for n in names], dtype=int),
                  options={"mip_rel_gap": 0, "presolve": True})
    assert result.success, result.message
    return float(result.fun)


def crown_bound_fn(model):
    """bound_fn for input_split_bab giving `LinearLowerBounds`: CROWN's linear lower bounds of C·f(x) per box
    (ReLU lines from interval pre-activation bounds; lower slope 1 where u > -l, else 0), written out here."""
    from opwise.bounds.strategies.input_split import LinearLowerBounds

    def bound_fn(x_lower, x_upper, C):
        lower, upper = x_lower.reshape(len(x_lower), -1), x_upper.reshape(len(x_upper), -1)
        layers, pre = linear_layers(model), interval_bounds(model, lower, upper)
        A = C.to(lower.dtype).expand(len(lower), *C.shape)
        bias = torch.zeros(A.shape[:2], dtype=lower.dtype)
        for index in reversed(range(len(layers))):
            weight, b = layers[index]
            bias, A = bias + A @ b, A @ weight
            if index:
                low, high = pre[index - 1]
                unstable = (low < 0) & (high > 0)
                up_slope = torch.where(unstable, high / (high - low).clamp(min=1e-12), (low >= 0).to(low.dtype))
                up_intercept = torch.where(unstable, -up_slope * low, 0)
                low_slope = torch.where(unstable, (high > -low).to(low.dtype), (low >= 0).to(low.dtype))
                positive, negative = A.clamp(min=0), A.clamp(max=0)
                bias = bias + (negative * up_intercept[:, None]).sum(-1)
                A = positive * low_slope[:, None] + negative * up_slope[:, None]
        value = bias + torch.minimum(A * lower[:, None], A * upper[:, None]).sum(-1)
        return LinearLowerBounds(value, A, bias)
    return bound_fn
