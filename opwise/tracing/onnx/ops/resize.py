"""Resize (opset 10 on) to torch's upsampling ops: nearest, nearest-exact, (bi/tri)linear and bicubic.

ONNX maps an output coordinate back by `coordinate_transformation_mode` and picks or mixes inputs by `mode`; the
combinations torch computes are imported, the others refused with the attribute that differs:

- nearest with asymmetric coordinates and floor rounding (opset 10's only mode): `upsample_nearest*d`;
- nearest with half_pixel coordinates rounded half up (round_prefer_ceil): `_upsample_nearest_exact*d`;
- linear and cubic with half_pixel / pytorch_half_pixel (align_corners=False) or align_corners coordinates:
  `upsample_linear1d` / `upsample_bilinear2d` / `upsample_trilinear3d`, and `upsample_bicubic2d` with torch's
  cubic coefficient −0.75;
- Upsample's linear mode, with asymmetric coordinates (x_in = x_out / scale, which no torch upsampling op
  computes): axis by axis, the two neighbours picked with `aten.index_select` and mixed with constant weights
  (`mul`, `add`). Resize's linear with asymmetric coordinates stays refused for now (the same code would serve).

Given `scales`, torch is called with the scale factors (the source coordinate divides by the scale, as ONNX's does);
given `sizes`, with the output size. The batch and channel axes are kept.

Upsample (opsets 7 and 9, deprecated at 10: `scales` an attribute, then an input) is Resize with asymmetric
coordinates: nearest (floor rounding) and linear are imported as above.
"""

from __future__ import annotations

import math

import torch

from opwise.errors import InputDependentArgument, ModelLoadError
from opwise.tracing.onnx.registry import converter

aten = torch.ops.aten

_NEAREST = {1: aten.upsample_nearest1d.vec, 2: aten.upsample_nearest2d.vec, 3: aten.upsample_nearest3d.vec}
_NEAREST_EXACT = {1: aten._upsample_nearest_exact1d.vec, 2: aten._upsample_nearest_exact2d.vec,
                  3: aten._upsample_nearest_exact3d.vec}
_LINEAR = {1: aten.upsample_linear1d.vec, 2: aten.upsample_bilinear2d.vec, 3: aten.upsample_trilinear3d.vec}
#: torch's bicubic coefficient (ONNX's cubic_coeff_a)
TORCH_CUBIC_COEFFICIENT = -0.75


def _refuse(node, what: str) -> ModelLoadError:
    return ModelLoadError(f"{node.op_type} '{node.name}': {what}; opwise imports nearest with asymmetric/floor or "
                          "half_pixel/round_prefer_ceil, linear with half_pixel, pytorch_half_pixel or align_corners "
                          "(and Upsample's asymmetric), cubic with half_pixel, pytorch_half_pixel or align_corners and "
                          "cubic_coeff_a −0.75")


@converter("Resize", since=10)
def _resize_opset_10(builder, node, x, scales):
    return _resize(builder, node, x, scales=scales, default_transformation="asymmetric")


@converter("Resize", since=11)
def _resize(builder, node, x, roi=None, scales=None, sizes=None, default_transformation="half_pixel",
            default_rounding="round_prefer_floor"):
    shape = builder.shape(x)
    rank = len(shape) - 2
    mode = node.attr("mode", "nearest")
    transformation = node.attr("coordinate_transformation_mode", default_transformation)
    if node.attr("antialias", 0) or node.attr("exclude_outside", 0) or node.attr("axes") is not None:
        raise _refuse(node, "antialias, exclude_outside and axes are not imported")
    if rank not in (1, 2, 3) or (mode == "cubic" and rank != 2):
        raise _refuse(node, f"{mode} resizing of a rank-{len(shape)} tensor")
    if isinstance(scales, torch.fx.Node) or isinstance(sizes, torch.fx.Node):
        raise InputDependentArgument(f"{node.op_type} '{node.name}': its scales or sizes depend on the model input; "
                                     "opwise graphs are shape-specialized and need them constant")
    if sizes is not None and sizes.numel():
        sizes = [int(s) for s in sizes.tolist()]
        if builder.rebatched and sizes and sizes[0] == builder.declared_batch:  # the declared batch: any batch
            sizes[0] = shape[0]
        if sizes[:2] != shape[:2]:
            raise _refuse(node, f"sizes {sizes} change the batch or channel axes of {shape}")
        size, factors = sizes[2:], None
    else:
        factors = [float(s) for s in scales.tolist()]
        if factors[:2] != [1.0, 1.0]:
            raise _refuse(node, f"scales {factors} change the batch or channel axes")
        size, factors = None, factors[2:]
        if any(math.floor(n * f) < 1 for n, f in zip(shape[2:], factors)):
            raise _refuse(node, f"scales {factors} leave an empty axis")
    if mode == "nearest":
        rounding = node.attr("nearest_mode", default_rounding)
        if transformation == "asymmetric" and (rounding == "floor" or node.opset < 11):
            return builder.call(_NEAREST[rank], x, size, factors)
        if transformation == "half_pixel" and rounding == "round_prefer_ceil":
            return builder.call(_NEAREST_EXACT[rank], x, size, factors)
        raise _refuse(node, f"nearest with {transformation} coordinates and {rounding} rounding")
    if mode == "linear" and transformation == "asymmetric" and node.op_type == "Upsample":
        return _linear_asymmetric(builder, x, [s / n for s, n in zip(size, shape[2:])] if size else factors, size)
    if transformation in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        align = transformation == "align_corners"
    else:
        raise _refuse(node, f"{mode} with {transformation} coordinates")
    if transformation == "half_pixel" and size is not None and any(s == 1 for s in size):
        raise _refuse(node, "half_pixel coordinates onto an axis of size 1 (torch maps it as pytorch_half_pixel)")
    if mode == "linear":
        return builder.call(_LINEAR[rank], x, size, align, factors)
    if mode == "cubic":
        if node.attr("cubic_coeff_a", -0.75) != TORCH_CUBIC_COEFFICIENT:
            raise _refuse(node, f"cubic_coeff_a {node.attr('cubic_coeff_a')}")
        return builder.call(aten.upsample_bicubic2d.vec, x, size, align, factors)
    raise _refuse(node, f"mode {mode!r}")


def _linear_asymmetric(builder, x, factors: list[float], size: list[int] | None):
    """Linear interpolation at x_in = x_out / scale, clamped to the last input, one spatial axis at a time:
    x[i0]·(1 − w) + x[i1]·w with i0 = ⌊x_in⌋, i1 = min(i0 + 1, n − 1), w = x_in − i0 (as onnxruntime
    computes it)."""
    shape = builder.shape(x)
    for axis, factor in enumerate(factors):
        length = shape[2 + axis]
        count = size[axis] if size else math.floor(length * factor)
        if count == length and factor == 1.0:
            continue
        source = (torch.arange(count, dtype=torch.float32) / torch.tensor(factor, dtype=torch.float32)).double()
        source = source.clamp(0, length - 1)
        low = source.floor().long().clamp(max=length - 1)
        high = (low + 1).clamp(max=length - 1)
        weight = (source - low).float().reshape([count] + [1] * (len(factors) - 1 - axis))
        near = builder.call(aten.index_select.default, x, 2 + axis, low)
        far = builder.call(aten.index_select.default, x, 2 + axis, high)
        x = builder.call(aten.add.Tensor, builder.call(aten.mul.Tensor, near, 1.0 - weight),
                         builder.call(aten.mul.Tensor, far, weight))
    return x


@converter("Upsample", since=7)
def _upsample_attribute(builder, node, x):
    return _upsample(builder, node, x, torch.tensor(list(node.attr("scales")), dtype=torch.float32))


@converter("Upsample", since=9)
def _upsample_input(builder, node, x, scales):
    if isinstance(scales, torch.fx.Node):
        raise InputDependentArgument(f"{node.op_type} '{node.name}': its scales depend on the model input; opwise "
                                     "graphs are shape-specialized and need them constant")
    return _upsample(builder, node, x, scales)


def _upsample(builder, node, x, scales):
    """Resize with asymmetric coordinates, nearest rounding down (Upsample's only meaning of both)."""
    if node.attr("mode", "nearest") not in ("nearest", "linear"):
        raise _refuse(node, f"mode {node.attr('mode')!r}")
    return _resize(builder, node, x, scales=scales, default_transformation="asymmetric", default_rounding="floor")
