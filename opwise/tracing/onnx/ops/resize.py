"""Resize (opset 10 on) to torch's upsampling ops: nearest, nearest-exact, (bi/tri)linear and bicubic.

ONNX maps an output coordinate back by `coordinate_transformation_mode` and picks or mixes inputs by `mode`; the
combinations torch computes are imported, the others refused with the attribute that differs:

- nearest with asymmetric coordinates and floor rounding (opset 10's only mode): `upsample_nearest*d`;
- nearest with half_pixel coordinates rounded half up (round_prefer_ceil): `_upsample_nearest_exact*d`;
- linear and cubic with half_pixel / pytorch_half_pixel (align_corners=False) or align_corners coordinates:
  `upsample_linear1d` / `upsample_bilinear2d` / `upsample_trilinear3d`, and `upsample_bicubic2d` with torch's
  cubic coefficient −0.75.

Given `scales`, torch is called with the scale factors (the source coordinate divides by the scale, as ONNX's does);
given `sizes`, with the output size. The batch and channel axes are kept.
"""

from __future__ import annotations

import math

import torch

from opwise.errors import ModelLoadError
from opwise.tracing.onnx.registry import converter

aten = torch.ops.aten

_NEAREST = {1: aten.upsample_nearest1d.vec, 2: aten.upsample_nearest2d.vec, 3: aten.upsample_nearest3d.vec}
_NEAREST_EXACT = {1: aten._upsample_nearest_exact1d.vec, 2: aten._upsample_nearest_exact2d.vec,
                  3: aten._upsample_nearest_exact3d.vec}
_LINEAR = {1: aten.upsample_linear1d.vec, 2: aten.upsample_bilinear2d.vec, 3: aten.upsample_trilinear3d.vec}
#: torch's bicubic coefficient (ONNX's cubic_coeff_a)
TORCH_CUBIC_COEFFICIENT = -0.75


def _refuse(node, what: str) -> ModelLoadError:
    return ModelLoadError(f"Resize '{node.name}': {what}; opwise imports the modes torch computes (nearest with "
                          "asymmetric/floor or half_pixel/round_prefer_ceil, linear and cubic with half_pixel, "
                          "pytorch_half_pixel or align_corners, cubic_coeff_a −0.75)")


@converter("Resize", since=10)
def _resize_opset_10(builder, node, x, scales):
    return _resize(builder, node, x, scales=scales, default_transformation="asymmetric")


@converter("Resize", since=11)
def _resize(builder, node, x, roi=None, scales=None, sizes=None, default_transformation="half_pixel"):
    shape = builder.shape(x)
    rank = len(shape) - 2
    mode = node.attr("mode", "nearest")
    transformation = node.attr("coordinate_transformation_mode", default_transformation)
    if node.attr("antialias", 0) or node.attr("exclude_outside", 0) or node.attr("axes") is not None:
        raise _refuse(node, "antialias, exclude_outside and axes are not imported")
    if rank not in (1, 2, 3) or (mode == "cubic" and rank != 2):
        raise _refuse(node, f"{mode} resizing of a rank-{len(shape)} tensor")
    if isinstance(scales, torch.fx.Node) or isinstance(sizes, torch.fx.Node):
        raise _refuse(node, "its scales or sizes depend on the model input")
    if sizes is not None and sizes.numel():
        sizes = [int(s) for s in sizes.tolist()]
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
        rounding = node.attr("nearest_mode", "round_prefer_floor")
        if transformation == "asymmetric" and (rounding == "floor" or node.opset < 11):
            return builder.call(_NEAREST[rank], x, size, factors)
        if transformation == "half_pixel" and rounding == "round_prefer_ceil":
            return builder.call(_NEAREST_EXACT[rank], x, size, factors)
        raise _refuse(node, f"nearest with {transformation} coordinates and {rounding} rounding")
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
