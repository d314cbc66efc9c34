"""Convolutions and transposed convolutions: backward on [specs·batch, C, H, W] tensors, never dense matrices.

The backward of a convolution is the transposed convolution of A, and the other way round. Intermediate
bounds start from one-hot specifications (one neuron per row): there the backward is the kernel slice
of that neuron placed where it acts, so it is gathered from the weights instead of convolved (the same
numbers, without a convolution over a tensor that is almost all zeros: the largest single cost of
CROWN on convolutional generators).
"""

from __future__ import annotations

import torch

from opwise.bounds.transfers.affine import BiasedAffine
from opwise.bounds.transfers.registry import Step, bound_transfer


def _kernel_offsets(position: torch.Tensor, size: int, stride: int, padding: int, dilation: int, kernel: int,
                    transposed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row and per coordinate of the backward's output along one axis: (the kernel index that links it
    to the row's neuron at `position`, whether such an index exists). [rows, size] each."""
    coordinate = torch.arange(size, device=position.device)
    if transposed:  # neuron at output position h of the transposed conv reads inputs i with h = i·s − p + k·d
        distance = position[:, None] + padding - coordinate[None, :] * stride
    else:  # neuron at output position i of the conv reads inputs y with y = i·s − p + k·d
        distance = coordinate[None, :] + padding - position[:, None] * stride
    index = torch.div(distance, dilation, rounding_mode="floor")
    valid = (distance % dilation == 0) & (index >= 0) & (index < kernel)
    return index.clamp(0, kernel - 1), valid


def one_hot_backward(folded: torch.Tensor, weight: torch.Tensor, transposed: bool, stride, padding, dilation, groups: int,
                     input_shape: tuple[int, int, int]) -> torch.Tensor | None:
    """The backward of rows with at most one nonzero each ([rows, C, H, W] -> [rows, *input_shape]) by
    gathering kernel slices; None when some row has more than one nonzero."""
    rows = folded.shape[0]
    flat = folded.reshape(rows, -1)
    # the first row settles dense coefficients cheaply; only then is every row checked
    if rows == 0 or int(torch.count_nonzero(flat[0])) > 1 or int(torch.count_nonzero(flat, dim=1).max()) > 1:
        return None
    position = flat.abs().argmax(dim=1)
    value = flat.gather(1, position[:, None])[:, 0]
    channels, height, width = folded.shape[1:]
    channel, row, column = position // (height * width), (position // width) % height, position % width
    in_channels = input_shape[0]
    # weight: conv [out, in / groups, kh, kw]; transposed conv [in, out / groups, kh, kw]
    per_group = channels // groups
    if transposed:  # output channel c of the transposed conv; input channel o: weight[o, c mod per_group]
        slices = weight[:, channel % per_group]  # [in_channels, rows, kh, kw]
        same_group = torch.arange(in_channels, device=folded.device)[:, None] // (in_channels // groups) == (channel // per_group)[None, :]
    else:  # output channel c of the conv; input channel o: weight[c, o mod (in / groups)]
        slices = weight[channel].transpose(0, 1).repeat(groups, 1, 1, 1)  # [in_channels, rows, kh, kw]
        same_group = torch.arange(in_channels, device=folded.device)[:, None] // (in_channels // groups) == (channel // per_group)[None, :]
    kernel_h, kernel_w = weight.shape[2:]
    index_h, valid_h = _kernel_offsets(row, input_shape[1], stride[0], padding[0], dilation[0], kernel_h, transposed)
    index_w, valid_w = _kernel_offsets(column, input_shape[2], stride[1], padding[1], dilation[1], kernel_w, transposed)
    rows_index = torch.arange(rows, device=folded.device)
    # [in_channels, rows, H, W]: slices[o, r, index_h[r, y], index_w[r, x]]
    gathered = slices[:, rows_index[:, None, None], index_h[:, :, None], index_w[:, None, :]]
    mask = (valid_h[:, :, None] & valid_w[:, None, :])[None] & same_group[:, :, None, None]
    back = torch.where(mask, gathered, torch.zeros((), dtype=gathered.dtype, device=gathered.device))
    return (back * value[None, :, None, None]).transpose(0, 1)


@bound_transfer("aten.convolution")
class Convolution(BiasedAffine):
    """2-D convolutions and transposed convolutions get a direct backward on [specs·batch, C, H, W], as fast
    under α-CROWN's autograd as in CROWN; other convolutions use the generic vjp."""

    bias_positions = (2,)

    def backward(self, step: Step, A: torch.Tensor):
        x, weight, bias, stride, padding, dilation, transposed, _, groups = step.args
        if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
            return super().backward(step, A)
        specs, batch, channels, height, width = A.shape
        input_shape = step.shapes[0]
        folded = A.reshape(specs * batch, channels, height, width)
        back = one_hot_backward(folded, weight, transposed, stride, padding, dilation, groups, tuple(input_shape[1:]))
        if back is None and transposed:
            back = torch.nn.functional.conv2d(folded, weight, None, stride, padding, dilation, groups)
        elif back is None:
            kernel = weight.shape[2:]
            output_padding = [
                input_shape[2 + i] - (A.shape[3 + i] - 1) * stride[i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1
                for i in range(2)
            ]
            back = torch.nn.functional.conv_transpose2d(folded, weight, None, stride, padding, output_padding, groups, dilation)
        terms = None if bias is None else A * bias.reshape(-1, 1, 1)
        return [back.reshape(specs, *input_shape)], terms
