"""dtype casts (`aten._to_copy`): the identity where no value changes, a bounded error where one may.

A cast to a float narrower than float32 (float16, bfloat16) rounds each value to
the nearest representable one; a cast to an integer truncates towards zero. Either way y = x + e with e in a
known range per element, and rounding is monotone, so:

- IBP: [cast(l), cast(u)], exact, in the target's dtype (integers: in the interval's float dtype);
- CROWN: y >= x + e_low and y <= x + e_high, so A·y >= A·x + A⁺·e_low + A⁻·e_high: the coefficients pass
  through and the error joins the bias. Rounding to nearest moves a value by at most half a unit in the last
  place, at most 2^-(mantissa bits + 1)·|x| plus half the smallest subnormal; truncation moves x >= 0 down by
  less than 1 and x <= 0 up by less than 1.

Where a value can leave the target's range (overflow to inf in a float, wrap-around in an integer) the error is
unbounded, and so are the bounds that depend on it. A cast to bool (x != 0) is a step no line follows: refused.
An integer or bool cast to an integer changes no value where it fits (a narrower integer may wrap: unbounded there).
A device move, a cast to a dtype that holds every value of the source (an integer to a wide enough float, a bool to
an integer) and a float cast to float32 or float64 are the plain identity: float64 to float32 rounds as every float32 operation of
the model does, which the bounds (computed in float32) treat alike.
"""

from __future__ import annotations

import math

import torch

from opwise.bounds.transfers.affine import Affine
from opwise.bounds.transfers.registry import Interval, Step, bound_transfer
from opwise.errors import UnsupportedOperation


def _kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    return "float" if dtype.is_floating_point else "complex" if dtype.is_complex else "int"


def _holds(source: torch.dtype, target: torch.dtype) -> bool:
    """Whether every value of `source` is a value of `target` (so the cast changes none)."""
    if source == target:
        return True
    source_kind, target_kind = _kind(source), _kind(target)
    if target_kind == "float":
        target_info = torch.finfo(target)
        if source_kind == "float":
            # to float32 from float64 rounds as every float32 operation of the model does, which the bounds
            # (computed in float32) treat alike: only narrower targets get an error term
            return target_info.eps <= torch.finfo(torch.float32).eps
        if source_kind in ("int", "bool"):
            bits = 1 if source_kind == "bool" else torch.iinfo(source).bits
            return bits <= -math.log2(target_info.eps) + 1
    if source_kind == "bool" and target_kind == "int":
        return True
    if source_kind == "int" and target_kind == "int":
        source_info, target_info = torch.iinfo(source), torch.iinfo(target)
        return source_info.min >= target_info.min and source_info.max <= target_info.max
    return False


@bound_transfer("aten._to_copy")
class Cast(Affine):
    """See the module docstring."""

    def _target(self, step: Step) -> torch.dtype | None:
        """The dtype the cast changes values to, or None where it changes none (the identity)."""
        if "target" not in step.cache:
            target = step.node.kwargs.get("dtype")
            source = step.node.args[0].meta.get("val")
            source = source.dtype if isinstance(source, torch.Tensor) else torch.float32
            if target is not None and _kind(target) == "bool" and source != torch.bool:
                raise UnsupportedOperation(
                    step.node.name, step.op, step.module_path, "bound",
                    "it casts to bool (x != 0), a step no linear bound follows; bound the model before the cast, or "
                    "compare with a threshold outside the bounded part")
            step.cache["target"] = None if target is None or _holds(source, target) else target
            step.cache["integral"] = _kind(source) in ("int", "bool")
        return step.cache["target"]

    def _integral_identity(self, step: Step) -> bool:
        """Whether the cast changes no value and its result is an integer or a bool: the engine keeps those as
        floats, so the interval passes as it is (the op itself would make it an integer tensor)."""
        target = step.node.kwargs.get("dtype")
        return self._target(step) is None and target is not None and _kind(target) in ("int", "bool")

    def needs_bounds(self, step: Step):
        return [] if self._target(step) is None else [step.inputs[0]]

    def ibp(self, step: Step, intervals: list[Interval]) -> Interval:
        target = self._target(step)
        if self._integral_identity(step):
            return Interval(intervals[0].lower, intervals[0].upper)
        if target is None:
            return super().ibp(step, intervals)
        (x,) = intervals
        low, high = self._error(target, x, step.cache["integral"])
        if _kind(target) == "int":  # integers kept as floats: the engine's arithmetic after the cast is float
            rounded, dtype = (torch.trunc(x.lower), torch.trunc(x.upper)), x.lower.dtype
        else:  # the model's own rounded values (inf where the cast overflows, as the model's value)
            rounded, dtype = (x.lower.to(target), x.upper.to(target)), target
        # the rounded ends where the cast stays in range, else the error's (infinite) reach
        return Interval(torch.where(torch.isfinite(low), rounded[0], (x.lower + low).to(dtype)),
                        torch.where(torch.isfinite(high), rounded[1], (x.upper + high).to(dtype)))

    def backward(self, step: Step, A: torch.Tensor):
        target = self._target(step)
        if self._integral_identity(step):
            return [A], None
        if target is None:
            return super().backward(step, A)
        low, high = self._error(target, step.bounds(step.inputs[0]), step.cache["integral"])
        terms = A.clamp(min=0) * low + A.clamp(max=0) * high
        return [A], terms

    @staticmethod
    def _error(target: torch.dtype, x: Interval, integral: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """e_low, e_high with cast(v) − v in [e_low, e_high] for every v in [x.lower, x.upper] (inf: it may
        overflow); `integral`: the values are integers, which an integer cast leaves as they are where they fit."""
        largest = torch.maximum(x.lower.abs(), x.upper.abs())
        if _kind(target) == "float":
            info = torch.finfo(target)
            # half an ulp of the largest magnitude, and half the smallest subnormal (an ulp near 0)
            half_ulp = largest * (info.eps / 2) + info.smallest_normal * info.eps / 2
            # the largest finite value plus half its ulp rounds to inf
            fits = largest < info.max * (1 + info.eps / 4)
            error = torch.where(fits, half_ulp, torch.full_like(largest, math.inf))
            return -error, error
        info = torch.iinfo(target)
        fits = (x.lower > float(info.min) - 1) & (x.upper < float(info.max) + 1)
        zero, one, infinite = torch.zeros_like(largest), torch.ones_like(largest), torch.full_like(largest, math.inf)
        # truncation moves positive values down and negative ones up, each by less than one
        if integral:
            return torch.where(fits, zero, -infinite), torch.where(fits, zero, infinite)
        low = torch.where(fits, torch.where(x.upper <= 0, zero, -one), -infinite)
        high = torch.where(fits, torch.where(x.lower >= 0, zero, one), infinite)
        return low, high
