"""PGD attack on a specification: searches its input set (a box, or an Lp ball clipped to a box) for a
point in the unsafe output set.

Used before and during bounding: a counterexample ends verification early, and only a point that a
real forward pass confirms is ever reported (`check_counterexample`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import torch
from torch.overrides import TorchFunctionMode

from opwise.bounds.input_set import InputSet
from opwise.bounds.spec import Specification

Function = Callable[[torch.Tensor], torch.Tensor]
#: steps that the centre's starts take alone before the random starts join them (`pgd_attack`)
FIRST_STEPS = 10


@dataclasses.dataclass
class AttackResult:
    """`counterexample` is a confirmed violating input (shaped like spec.x_lower) or None."""

    counterexample: torch.Tensor | None
    margin: float
    output: torch.Tensor | None = None

    @property
    def found(self) -> bool:
        return self.counterexample is not None


def disjunct_margins(spec: Specification, y: torch.Tensor) -> torch.Tensor:
    """[batch, disjuncts]: for each disjunct the largest row of C y - d (<= 0: that disjunct holds at y)."""
    return torch.stack([d.margin(y) for d in spec.unsafe], dim=-1)


def check_counterexample(function: Function, spec: Specification, x: torch.Tensor) -> tuple[bool, float, torch.Tensor]:
    """Forward pass at x, projected into the input set: (violates, margin, output). Give points of the set:
    a counterexample reported is the point given, so projecting is only a guard."""
    x = spec.region.project(x)
    with torch.no_grad():
        y = function(x)
    margin = float(spec.margin(y.reshape(y.shape[0], -1)).min())
    return margin <= 0, margin, y


def pgd_attack(
    function: Function,
    spec: Specification,
    *,
    steps: int = 100,
    restarts: int = 8,
    step_size: float = 0.25,
    seed: int = 0,
    time_limit: float | None = None,
    patience: int | None = 40,
    tolerance: float = 1e-3,
    first_steps: int = FIRST_STEPS,
) -> AttackResult:
    """Minimise each disjunct's margin by projected steepest-descent steps inside the input set, several
    starts per disjunct.

    `function` maps a batch `[n, *spec.x_lower.shape[1:]]` to outputs `[n, outputs]`. A step moves
    `step_size` times the set's size (each input's box width along the gradient's sign; on an Lp ball ε
    along the dual-norm direction, `InputSet.ascent_step`), decayed by a cosine schedule, and projects back
    onto the set. Starts: the box centre (the ball's centre), then random points of the set. The centre's
    starts (one per disjunct) first take `first_steps` steps alone, at a `restarts`-th of the cost: they find
    most counterexamples, and one step of all starts can take seconds (a binarized CNN on 64×64 images with
    42 disjuncts: 10 s on one CPU thread); then all starts descend together.

    Step activations pass a surrogate gradient (`StraightThrough`); a start whose gradient still
    vanishes (a saturated softmax or clamp after them) takes it with those passed through too, and once every
    start's has, all do (one pass per step). The attack stops early when it has stalled: no disjunct's best
    margin fell by more than `tolerance` of its size (at least `tolerance`² absolutely) in the last `patience`
    steps (None: never), or none falls fast enough to reach zero in the steps left at twice its pace over
    those steps. Signed steps reach a vertex of the box within a few steps and stay at a local minimum there,
    so on a property that holds the remaining steps (most of the time, on a large network) find nothing.

    >>> import torch
    >>> from opwise.bounds.spec import Specification, robustness_disjuncts
    >>> model = torch.nn.Linear(2, 2)
    >>> with torch.no_grad(): _ = model.weight.copy_(torch.eye(2)); _ = model.bias.zero_()
    >>> spec = Specification(torch.tensor([[0.4, 0.0]]), torch.tensor([[0.6, 1.0]]), robustness_disjuncts(2, 0))
    >>> result = pgd_attack(model, spec)
    >>> result.found, result.margin <= 0, spec.contains(result.counterexample)
    (True, True, True)

    On the L2 disk of radius 0.08 around (0.5, 0.4) the margin x0 − x1 falls to 0.1 − 0.08·√2 < 0 only
    near the direction (−1, 1); the disk's bounding box reaches −0.06 in its corner, outside the disk:

    >>> disk = InputSet.ball(torch.tensor([[0.5, 0.4]]), 0.08, norm=2)
    >>> result = pgd_attack(model, Specification.over(disk, robustness_disjuncts(2, 0)))
    >>> result.found, disk.contains(result.counterexample), -0.0132 <= result.margin <= 0
    (True, True, True)
    """
    region = spec.region
    count = len(spec.unsafe)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    x = region.sample(restarts * count, generator)
    x[:count] = region.center if region.is_ball else region.project((spec.x_lower + spec.x_upper) / 2)
    chosen = torch.arange(len(x), device=x.device) % count
    deadline = None if time_limit is None else time.monotonic() + time_limit
    best_x, best_margin = x[:1].detach(), math.inf
    saturating = False  # whether every start's gradient has vanished under the exact saturating operations

    def evaluate(x: torch.Tensor, chosen: torch.Tensor, saturating: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(margins [starts, disjuncts], each start's margin of its own disjunct)."""
        with StraightThrough(saturating):
            margins = disjunct_margins(spec, function(x).reshape(len(x), -1))
        return margins, margins.gather(1, chosen[:, None]).squeeze(1)

    def descend(x: torch.Tensor, chosen: torch.Tensor, steps: int) -> None:
        """`steps` steps from the starts x, each aimed at its `chosen` disjunct; keeps the best point."""
        nonlocal best_x, best_margin, saturating
        history = []  # per step: each disjunct's best margin so far
        for step in range(steps + 1):
            x = x.detach().requires_grad_(True)
            margins, own = evaluate(x, chosen, saturating)
            overall = margins.amin(dim=1).detach()
            index = int(overall.argmin())
            if float(overall[index]) < best_margin:
                best_margin, best_x = float(overall[index]), x[index : index + 1].detach().clone()
            history.append(torch.minimum(history[-1], _best_per_disjunct(own, chosen, count)) if history else
                           _best_per_disjunct(own, chosen, count))
            if (best_margin <= 0 or step == steps or (deadline is not None and time.monotonic() > deadline)
                    or _stalled(history, patience, tolerance, steps - step)):
                return
            gradient = input_gradient(own.sum(), x)
            flat = gradient.reshape(len(gradient), -1).abs().amax(dim=1) == 0  # also starts of one scalar each
            if not saturating and bool(flat.any()):
                saturating = bool(flat.all())  # then for the remaining steps: one pass per step
                surrogate = input_gradient(evaluate(x, chosen, True)[1].sum(), x)
                gradient = torch.where(flat.reshape(-1, *[1] * (x.dim() - 1)), surrogate, gradient)
            scale = step_size * 0.5 * (1 + math.cos(math.pi * step / steps))
            x = region.project(x.detach() - scale * region.ascent_step(gradient))

    if restarts > 1 and first_steps > 0:  # the centre's starts alone first: a fraction of a step's cost
        descend(x[:count], chosen[:count], min(first_steps, steps))
    if best_margin > 0 and (deadline is None or time.monotonic() < deadline):
        descend(x, chosen, steps)
    violates, margin, output = check_counterexample(function, spec, best_x)
    return AttackResult(best_x if violates else None, margin, output)


class _PassGradient(torch.autograd.Function):
    """The value given, with the gradient of the identity of x."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return value

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class _SmoothStepGradient(torch.autograd.Function):
    """A step's value (sign, heaviside), with the gradient 1 / (1 + (x/τ)²) of τ·arctan(x/τ), τ the mean |x| of
    the sample: 1 at the threshold as the straight-through pass, falling off with the distance from it. Units
    next to their threshold, which a small move flips, lead; far ones keep some pull (a heavy tail: no
    underflow). On VNN-COMP 2023's traffic_signs_recognition (binarized CNNs) the search found 38 of its 43
    counterexamples within 30 s this way, 36 with the identity."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1 if x.dim() > 1 else 0, x.dim()))  # each sample's, where there is a batch axis
        scale = x.detach().abs().mean(dim=dims, keepdim=True)
        ctx.save_for_backward(x.detach() / scale.clamp(min=torch.finfo(x.dtype).tiny))
        return value

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (ratio,) = ctx.saved_tensors
        return grad / (1 + ratio * ratio), None


class _LogSoftmaxGradient(torch.autograd.Function):
    """softmax's value p, with the gradient of log p: it stays finite where p has saturated to exactly 0 or 1 in
    floats (p's own gradient, p (δ − p), is then zero)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, value: torch.Tensor, dim: int) -> torch.Tensor:
        ctx.save_for_backward(value)
        ctx.dim = dim
        return value

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (value,) = ctx.saved_tensors
        return grad - value * grad.sum(ctx.dim, keepdim=True), None, None


aten = torch.ops.aten
#: piecewise-constant operations whose gradient is zero almost everywhere: roundings (the identity on average)
_ROUNDINGS = {torch.round, torch.floor, torch.ceil, torch.trunc, torch.Tensor.round, torch.Tensor.floor,
              torch.Tensor.ceil, torch.Tensor.trunc, aten.round.default, aten.floor.default, aten.ceil.default,
              aten.trunc.default}
#: and steps at one threshold
_STEPS = {torch.sign, torch.heaviside, torch.Tensor.sign, torch.Tensor.heaviside, aten.sign.default,
          aten.heaviside.default}
#: operations whose gradient is zero where they saturate
_CLAMPS = {torch.clamp, torch.clamp_min, torch.clamp_max, torch.Tensor.clamp, torch.Tensor.clamp_min,
           torch.Tensor.clamp_max, torch.nn.functional.hardtanh, aten.clamp.default, aten.clamp_min.default,
           aten.clamp_max.default, aten.hardtanh.default}
_SOFTMAXES = {torch.softmax, torch.Tensor.softmax, torch.nn.functional.softmax, aten._softmax.default,
              aten.softmax.int}


class StraightThrough(TorchFunctionMode):
    """Within it, piecewise-constant operations (round, floor, ceil, trunc, sign, heaviside: the step activations
    of quantized and binarized networks) keep their values but pass a gradient: their own is zero almost
    everywhere, so an attack would move only by its random starts. Roundings pass it straight through, as
    quantization-aware training does; sign and heaviside pass that of a smooth step (`_SmoothStepGradient`).
    With `saturating`, clamps (hardtanh) pass it straight through too, where they clip, and softmax passes the
    gradient of its logarithm (softmax's outputs saturate to exactly 0 and 1 in floats, and its gradient with
    them). Only the attack's search direction changes; every point it reports is checked by a plain forward
    pass. Comparisons give booleans, which carry no gradient: the bound graph writes them as sign
    (bounds/expand.py).

    >>> x = torch.tensor([0.4, 1.6], requires_grad=True)
    >>> with StraightThrough():
    ...     y = (torch.round(x) * 3).sum()
    >>> float(y.detach()), torch.autograd.grad(y, x)[0].tolist()  # round: 0 and 2, times 3; gradient as of x * 3
    (6.0, [3.0, 3.0])
    >>> with StraightThrough():
    ...     s = torch.sign(x).sum()
    >>> float(s.detach()), [round(g, 3) for g in torch.autograd.grad(s, x)[0].tolist()]  # 1 / (1 + x²): τ = 1
    (2.0, [0.862, 0.281])
    >>> with StraightThrough(saturating=True):
    ...     z = torch.clamp(x, max=1.0).sum()
    >>> round(float(z.detach()), 4), torch.autograd.grad(z, x)[0].tolist()  # 0.4 + 1; gradient as of x
    (1.4, [1.0, 1.0])
    """

    def __init__(self, saturating: bool = False):
        super().__init__()
        self.saturating = saturating

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        value = func(*args, **kwargs)
        x = args[0] if args else None
        if not (isinstance(x, torch.Tensor) and x.requires_grad):
            return value
        if func in _ROUNDINGS:
            return _PassGradient.apply(x, value.detach())
        if func in _STEPS:
            return _SmoothStepGradient.apply(x, value.detach())
        if not self.saturating:
            return value
        others = [a for a in (*args[1:], *kwargs.values()) if isinstance(a, torch.Tensor) and a.requires_grad]
        if func in _CLAMPS and not others:  # bounds that depend on the input keep their exact gradient
            return _PassGradient.apply(x, value.detach())
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        if func in _SOFTMAXES and isinstance(dim, int):
            return _LogSoftmaxGradient.apply(x, value.detach(), dim)
        return value


def input_gradient(objective: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """d objective / d x, zero where the model cuts the gradient (an integer cast, a rounding): the attack then
    moves those inputs only by its random starts, instead of failing.

    >>> x = torch.ones(2, requires_grad=True)
    >>> input_gradient((x * 3).long().sum().float(), x).tolist()
    [0.0, 0.0]
    """
    if not objective.requires_grad:
        return torch.zeros_like(x)
    (gradient,) = torch.autograd.grad(objective, x, allow_unused=True)
    return torch.zeros_like(x) if gradient is None else gradient


def _best_per_disjunct(own: torch.Tensor, chosen: torch.Tensor, count: int) -> torch.Tensor:
    """[count]: the lowest margin among the starts aimed at each disjunct."""
    best = own.new_full((count,), math.inf)
    return best.scatter_reduce(0, chosen, own.detach(), reduce="amin")


def _stalled(history: list[torch.Tensor], patience: int | None, tolerance: float, steps_left: int | None = None) -> bool:
    """Whether no disjunct's best margin fell by more than `tolerance` of its size in the last `patience` steps, or
    (with `steps_left`) none would reach zero in the steps left falling twice as fast as it did in those steps.
    On a property that holds, the margins keep creeping down by a thousandth of their size per `patience`
    steps: on vit_2023's ibp_3_3_8 the attack ran its 100 steps, 22 of a 60 s budget, after its margins had
    settled in 6.

    >>> flat = [torch.tensor([2.0, 1.0])] * 21
    >>> _stalled(flat, 20, 1e-3), _stalled(flat[:-1] + [torch.tensor([2.0, 0.9])], 20, 1e-3), _stalled(flat, None, 1e-3)
    (True, False, False)
    >>> creeping = flat[:-1] + [torch.tensor([2.0, 0.99])]     # 0.01 per 20 steps: 0.04 in 40 steps left at twice that
    >>> _stalled(creeping, 20, 1e-3), _stalled(creeping, 20, 1e-3, steps_left=40), _stalled(creeping, 20, 1e-3, steps_left=1000)
    (False, True, False)
    """
    if patience is None or len(history) <= patience:
        return False
    now, before = history[-1], history[-1 - patience]
    fallen = before - now
    if bool((fallen <= tolerance * now.abs().clamp(min=tolerance)).all()):
        return True
    return steps_left is not None and bool((2 * fallen * steps_left / patience < now).all())
