"""Operators affine in their bounded inputs: one implementation for all of them.

CROWN backward of an affine `f` is its vector-Jacobian product applied to every row of the coefficient
matrix (`torch.func.vjp`, batched over specifications with `vmap`), and the constant term is `A · f(0)`:
exact, and correct for any such operator without per-operator derivations. IBP needs one fact per
operator: either it is monotone (nonnegative linear part: routing, sums, means, average pooling, so
`[f(l), f(u)]`), or how to apply `|linear part|` to the radius (weights made absolute, biases dropped).
"""

from __future__ import annotations

import numbers
import torch
from torch import fx

from opwise.bounds.transfers.patches import Patches, dense
from opwise.bounds.transfers.registry import Interval, Step, bound_transfer, sum_to
from opwise.errors import UnsupportedOperation

aten = torch.ops.aten


def _is_bounded(step: Step, arg) -> bool:
    return isinstance(arg, fx.Node) and arg in step.inputs


class Affine:
    """Backward by vjp; IBP as a monotone map. Subclasses override `radius` for signed linear parts."""

    def needs_bounds(self, step: Step) -> list[fx.Node]:
        return []

    def backward(self, step: Step, A: torch.Tensor) -> tuple[list[torch.Tensor | None], torch.Tensor | None]:
        if "vjp" not in step.cache:
            zeros = [torch.zeros(shape, dtype=A.dtype, device=A.device) for shape in step.shapes]
            offset, vjp = torch.func.vjp(step.function, *zeros)
            # routing ops have no offset: skip a [specs, ...]-sized product of zeros
            step.cache["vjp"], step.cache["offset"] = torch.func.vmap(vjp), offset.detach() if offset.any() else None
        coefficients = step.cache["vjp"](A.contiguous())  # a view's vjp needs contiguous rows
        offset = step.cache["offset"]
        return list(coefficients), None if offset is None else A * offset

    def ibp(self, step: Step, intervals: list[Interval]) -> Interval:
        return Interval(step.function(*(i.lower for i in intervals)), step.function(*(i.upper for i in intervals)))


class SignedAffine(Affine):
    """IBP through centre and radius: `f(centre) ± |L|(radius)` with `|L|` given by `radius`."""

    def ibp(self, step: Step, intervals: list[Interval]) -> Interval:
        center = step.function(*(i.center for i in intervals))
        spread = self.radius(step, [i.radius for i in intervals])
        return Interval(center - spread, center + spread)

    def radius(self, step: Step, radii: list[torch.Tensor]) -> torch.Tensor:
        """The op with every constant tensor and number made absolute and the bounded inputs set to radii."""
        return _call_absolute(step, radii, zeroed=())


def _call_absolute(step: Step, radii: list[torch.Tensor], zeroed: tuple[int, ...]) -> torch.Tensor:
    position = {node: radius for node, radius in zip(step.inputs, radii)}

    def absolute(index: int, arg):
        if isinstance(arg, fx.Node) and arg in position:
            return position[arg]
        value = step.args[index]
        if index in zeroed:
            return None if value is None else torch.zeros_like(value) if isinstance(value, torch.Tensor) else 0
        if isinstance(value, torch.Tensor):
            return value.abs()
        if isinstance(value, numbers.Number) and not isinstance(value, bool):
            return abs(value)
        return value

    args = [absolute(i, arg) for i, arg in enumerate(step.node.args)]
    return step.node.target(*args, **_absolute_kwargs(step))


def _absolute_kwargs(step: Step) -> dict:
    return {k: abs(v) if isinstance(v, numbers.Number) and not isinstance(v, bool) else v for k, v in step.node.kwargs.items()}


MONOTONE = (
    "aten.view", "aten._unsafe_view", "aten.reshape", "aten.permute", "aten.transpose", "aten.t", "aten.expand",
    "aten.cat", "aten.stack", "aten.split", "aten.split_with_sizes", "aten.unbind",
    "aten.chunk", "aten.squeeze", "aten.unsqueeze", "aten.flatten", "aten.clone", "aten.contiguous", "aten.alias",
    "aten.constant_pad_nd", "aten.pad", "aten.index", "aten.gather", "aten.index_select",
    "aten.sum", "aten.mean", "aten.avg_pool1d", "aten.avg_pool2d", "aten.avg_pool3d", "aten.adaptive_avg_pool1d",
    "aten.adaptive_avg_pool2d", "aten._adaptive_avg_pool2d", "aten.where", "aten.repeat", "aten.narrow",
    "aten.unfold", "aten.lift_fresh_copy", "aten.detach", "aten.roll", "aten.flip", "aten.diagonal",
    "aten.movedim", "aten.unflatten", "aten.tile", "aten.as_strided", "aten.masked_fill", "aten.cumsum",
    # resizing: each output is one input (nearest) or a convex combination of inputs (linear modes); bicubic
    # weights can be negative: SeparableResize below
    "aten.upsample_nearest1d", "aten.upsample_nearest2d", "aten.upsample_nearest3d", "aten._upsample_nearest_exact1d",
    "aten._upsample_nearest_exact2d", "aten._upsample_nearest_exact3d", "aten.upsample_linear1d",
    "aten.upsample_bilinear2d", "aten.upsample_trilinear3d",
)
bound_transfer(*MONOTONE)(Affine)


@bound_transfer("aten.constant_pad_nd")
class ConstantPad(Affine):
    """Padding (or cropping, by negative amounts) of a map's rows and columns with a constant: on windows
    (`Patches`) a shift of each window's corner, the padded positions dropped (with zeros, the padding adds
    nothing to the bound); otherwise, and where it pads other axes or with another value, the generic vjp."""

    takes_patches = True

    def backward(self, step: Step, A: torch.Tensor | Patches):
        if isinstance(A, Patches):
            pads = list(step.args[1])
            value = step.args[2] if len(step.args) > 2 else 0
            if len(step.shapes[0]) == 4 and not any(pads[4:]) and value == 0:
                left, _, top = (pads + [0, 0, 0])[:3]
                shape = step.shapes[0]
                return [Patches(A.values, A.top - top, A.left - left, shape[2], shape[3], A.repeats).inside_map()], None
            A = A.to_dense()
        return super().backward(step, A)


@bound_transfer("aten.view", "aten._unsafe_view", "aten.reshape", "aten.flatten", "aten.unflatten", "aten.squeeze",
                "aten.unsqueeze")
class Reshape(Affine):
    """Operators that keep the elements in memory order: backward reshapes the rows back (the vjp's result,
    without an autograd pass per call)."""

    def backward(self, step: Step, A: torch.Tensor):
        return [A.reshape(A.shape[0], *step.shapes[0])], None


class _Placing(Affine):
    """Operators that pick a part of their input: backward places the rows into zeros at that part, without the
    autograd pass per call of the generic vjp (a recurrent net unrolled into ONNX picks its gates by slices and
    its steps by selects: dozens per backward pass, each pass repeated by every α-CROWN step)."""

    def part(self, step: Step) -> tuple:
        raise NotImplementedError

    def backward(self, step: Step, A: torch.Tensor):
        placed = A.new_zeros(A.shape[0], *step.shapes[0])
        placed[(slice(None), *self.part(step))] = A
        return [placed], None


@bound_transfer("aten.slice")
class Slice(_Placing):
    """slice(x, dim=0, start=None, end=None, step=1): Python's slice along dim (ends clamped, negatives from the
    end), as aten's. Channels of a map sliced: windows (`Patches`) stay windows, their channels placed into
    zeros (carvana_unet slices the image's channels off its input: made dense there, a pass over its 160,709
    conv neurons wrote 2 GB of zeros)."""

    takes_patches = True

    def part(self, step: Step) -> tuple:
        dim, start, end, stride = (list(step.args[1:]) + [0, None, None, 1][len(step.args) - 1 :])[:4]
        dim = dim % len(step.shapes[0])
        return (*[slice(None)] * dim, slice(start, end, stride))

    def backward(self, step: Step, A: torch.Tensor | Patches):
        if isinstance(A, Patches):
            part = self.part(step)
            if len(step.shapes[0]) != 4 or len(part) != 2:  # not the channels of a [batch, C, H, W] map
                return super().backward(step, A.to_dense())
            specs, batch, _, h, w = A.values.shape
            placed = A.values.new_zeros(specs, batch, step.shapes[0][1], h, w)
            placed[:, :, part[1]] = A.values
            return [A.moved(placed)], None
        return super().backward(step, A)


@bound_transfer("aten.select")
class Select(_Placing):
    """select(x, dim, index): one index along dim (negative from the end)."""

    def part(self, step: Step) -> tuple:
        dim = step.args[1] % len(step.shapes[0])
        return (*[slice(None)] * dim, step.args[2])


@bound_transfer("aten.div.Scalar", "aten.mul.Scalar")
class WeightedAffine(SignedAffine):
    """Products with constant tensors or numbers: |weights| times the radius (see product.py for the
    operators that may also multiply two bounded tensors)."""


class BiasedAffine(SignedAffine):
    """Like WeightedAffine, with bias arguments (by position) dropped from the radius."""

    bias_positions: tuple[int, ...] = ()

    def radius(self, step: Step, radii: list[torch.Tensor]) -> torch.Tensor:
        return _call_absolute(step, radii, zeroed=self.bias_positions)


@bound_transfer("aten.linear")
class Linear(BiasedAffine):
    """The most common op gets a direct backward (A·W, A·b), the same result as the vjp without its overhead."""

    bias_positions = (2,)

    def backward(self, step: Step, A: torch.Tensor):
        x, weight, *rest = step.args
        if not isinstance(weight, torch.Tensor):
            return super().backward(step, A)
        bias = rest[0] if rest else None
        return [A @ weight], None if bias is None else A * bias


@bound_transfer("aten.addmm", "aten.baddbmm", "aten.addmv")
class AddMatrixProduct(BiasedAffine):
    bias_positions = (0,)


@bound_transfer("aten.batch_norm")
class BatchNorm(SignedAffine):
    """Evaluation-mode batch norm: a per-channel scale w/sqrt(var+eps) and shift, applied directly in
    both directions (the generic vjp costs an autograd pass per call)."""

    def _scale_shift(self, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
        if "scale" not in step.cache:
            _, weight, bias, mean, var, *rest = step.args
            scale = torch.rsqrt(var + step.args[7])
            if weight is not None:
                scale = scale * weight
            shift = -mean * scale if bias is None else bias - mean * scale
            step.cache["scale"], step.cache["shift"] = scale, shift
        return step.cache["scale"], step.cache["shift"]

    takes_patches = True

    def backward(self, step: Step, A: torch.Tensor | Patches):
        if step.args[5] or not isinstance(step.args[3], torch.Tensor):
            return super().backward(step, dense(A))  # training mode: batch statistics are not a fixed affine map
        scale, shift = self._scale_shift(step)
        values = A.values if isinstance(A, Patches) else A
        shape = [1, 1, -1] + [1] * (values.dim() - 3)
        coefficient, terms = values * scale.reshape(shape), values * shift.reshape(shape)
        return [A.moved(coefficient) if isinstance(A, Patches) else coefficient], terms

    def radius(self, step: Step, radii: list[torch.Tensor]) -> torch.Tensor:
        _, weight, _, mean, var, *rest = step.args
        scale = torch.rsqrt(var + step.args[7])
        if weight is not None:
            scale = scale * weight.abs()
        shape = [1, -1] + [1] * (radii[0].dim() - 2)
        return radii[0] * scale.reshape(shape)


@bound_transfer("aten.upsample_bicubic2d")
class SeparableResize(SignedAffine):
    """Bicubic resizing: out = W_h · x · W_wᵀ per channel, with cubic weights that can be negative (so not monotone).
    Each axis's weights are read off the op itself, resizing an image whose row (column) k is ones: its rows' weights
    sum to 1, so the result's column is W_h[:, k]. IBP is then |W_h| · radius · |W_w|ᵀ around the centre's image;
    CROWN takes the vjp (exact)."""

    def _axis_weights(self, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
        if "axis_weights" not in step.cache:
            height, width = step.shapes[0][-2:]
            resize = lambda image: step.node.target(image, *step.args[1:], **step.node.kwargs)  # noqa: E731
            rows = torch.eye(height)[:, None, :, None].expand(height, 1, height, width)
            columns = torch.eye(width)[:, None, None, :].expand(width, 1, height, width)
            step.cache["axis_weights"] = (resize(rows)[:, 0, :, 0].T.abs(), resize(columns)[:, 0, 0, :].T.abs())
        return step.cache["axis_weights"]

    def radius(self, step: Step, radii: list[torch.Tensor]) -> torch.Tensor:
        height, width = self._axis_weights(step)
        height, width = height.to(radii[0]), width.to(radii[0])
        return torch.einsum("oh,...hw,pw->...op", height, radii[0], width)


#: where `aten._embedding_bag(weight, indices, offsets, scale_grad_by_freq, mode, sparse, per_sample_weights, ...)`
#: takes its table and its per-sample weights
EMBEDDING_TABLE, PER_SAMPLE_WEIGHTS = 0, 6


@bound_transfer("aten._embedding_bag", "aten._embedding_bag_forward_only")
class EmbeddingBag(SignedAffine):
    """nn.EmbeddingBag with per-sample weights as the bounded input (mode "sum"): each bag is Σ_i w_i · E[id_i], linear
    in the weights w; IBP takes |E| for the radius. Bounding through a table or token ids computed from the input is
    refused."""

    def radius(self, step: Step, radii: list[torch.Tensor]) -> torch.Tensor:
        args = list(step.args)
        bounded = [i for i, arg in enumerate(args) if isinstance(arg, fx.Node)]
        if bounded != [PER_SAMPLE_WEIGHTS]:
            raise UnsupportedOperation(
                step.node.name, step.op, step.module_path, engine="bound",
                hint="only its per_sample_weights may depend on the bounded input (the token ids and the table must "
                     "be constants); pass the weights of the bag's entries as the input to bound")
        args[EMBEDDING_TABLE], args[PER_SAMPLE_WEIGHTS] = args[EMBEDDING_TABLE].abs(), radii[0]
        return torch.ops.aten._embedding_bag.default(*args)[0]

    def backward(self, step: Step, A: torch.Tensor):
        """Entry j of bag b contributes w_j · E[id_j]: its coefficient is A[.., b, :] · E[id_j] (torch has no derivative
        of the vjp, which α-CROWN's gradient would need)."""
        table, indices, offsets = step.args[0], step.args[1], step.args[2]
        include_last = step.args[7] if len(step.args) > 7 else False
        starts = offsets[:-1] if include_last else offsets
        bag_of_entry = torch.searchsorted(starts, torch.arange(indices.numel(), device=indices.device), right=True) - 1
        coefficient = (A[:, bag_of_entry, :] * table[indices]).sum(-1)
        return [coefficient.reshape(A.shape[0], *step.shapes[0])], None


@bound_transfer("aten.neg")
class Negation(SignedAffine):
    def radius(self, step: Step, radii: list[torch.Tensor]) -> torch.Tensor:
        return radii[0]


@bound_transfer("aten.add.Tensor", "aten.sub.Tensor", "aten.add.Scalar", "aten.sub.Scalar", "aten.rsub")
class AddSubtract(SignedAffine):
    """x ± α·y with either side bounded: radii add up, scaled by |α| on the second operand.

    IBP takes each bounded operand's lower or upper end by the sign of its factor, so a bound is computed
    as the op computes a value: through centre and radius, `var + eps` with var in [0, 1e21] would lose
    eps to rounding (0 + 1e-5 → 0) and leave a layer norm's rsqrt an input interval that touches 0.
    """

    def ibp(self, step: Step, intervals: list[Interval]) -> Interval:
        lows, highs = [], []
        for sign, interval in zip(self.signs(step), intervals):
            lows.append(interval.lower if sign >= 0 else interval.upper)
            highs.append(interval.upper if sign >= 0 else interval.lower)
        return Interval(step.function(*lows), step.function(*highs))

    @staticmethod
    def signs(step: Step) -> list[float]:
        """Per bounded input, its factor in the sum (an input given twice: the factors added)."""
        alpha = step.node.kwargs.get("alpha", step.args[2] if len(step.args) > 2 else 1)
        reverse, subtract = step.op.startswith("aten.rsub"), step.op.startswith("aten.sub")
        factors = ((-alpha, 1) if reverse else (1, -alpha if subtract else alpha))
        return [sum(f for arg, f in zip(step.node.args[:2], factors) if arg is node) for node in step.inputs]

    takes_patches = True

    def backward(self, step: Step, A: torch.Tensor | Patches):
        """Each bounded operand gets A times its factor, summed over the axes it was broadcast along; the constant
        operand (its value where every bounded one is 0) joins the bias. The generic vjp's autograd pass per call
        was most of a backward pass through the many sums of an unrolled recurrent net. Windows (`Patches`) stay
        windows where no operand is broadcast: a residual block's sum."""
        values = A.values if isinstance(A, Patches) else A
        if "offset" not in step.cache:
            with torch.no_grad():
                offset = step.function(*[torch.zeros(shape, dtype=values.dtype, device=values.device) for shape in step.shapes])
            step.cache["offset"] = offset if offset.any() else None
        offset = step.cache["offset"]
        if isinstance(A, Patches):
            if all(tuple(shape) == tuple(step.shape) for shape in step.shapes) and (offset is None or offset.dim() == 4):
                terms = None if offset is None else (A.blocked() * A.windows(offset)).reshape(values.shape)
                return [A if sign == 1 else A.moved(values * sign) for sign in self.signs(step)], terms
            A = A.to_dense()
        coefficients = [sum_to(A if sign == 1 else A * sign, shape)
                        for sign, shape in zip(self.signs(step), step.shapes)]
        return coefficients, None if offset is None else A * offset

    def radius(self, step: Step, radii: list[torch.Tensor]) -> torch.Tensor:
        alpha = abs(step.node.kwargs.get("alpha", step.args[2] if len(step.args) > 2 else 1))
        total = 0
        for index, arg in enumerate(step.node.args[:2]):
            if _is_bounded(step, arg):
                scaled = 0 if step.op.startswith("aten.rsub") else 1
                scale = alpha if index == scaled else 1
                total = total + scale * radii[step.inputs.index(arg)]
        shape = step.shape
        return torch.broadcast_to(total, shape) if shape is not None else total

