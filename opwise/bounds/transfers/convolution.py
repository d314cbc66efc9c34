"""Convolutions and transposed convolutions: backward on [specs·batch, C, H, W] tensors, never dense matrices.

The backward of a convolution is the transposed convolution of A, and the other way round. Intermediate
bounds start from one-hot specifications (one neuron per row): there the backward is the kernel slice
of that neuron placed where it acts, so it is gathered from the weights instead of convolved (the same
numbers, without a convolution over a tensor that is almost all zeros: the largest single cost of
CROWN on convolutional generators).
"""

from __future__ import annotations

import torch

from opwise.bounds.transfers.affine import Affine, BiasedAffine
from opwise.bounds.transfers.patches import Patches
from opwise.bounds.transfers.registry import Step, bound_transfer

#: a convolution's backward on windows is one matrix product with the window's Jacobian (built once per window
#: size) when that matrix has at most this many entries, or no more than the convolution's own multiply-adds
#: per window: a transposed convolution into few channels (the image's 3) is several times slower per
#: multiply-add than a matrix product, and on one-hot rows (1×1 windows) the Jacobian is the kernel itself
WINDOW_MATRIX_LIMIT = 2**17

#: on the CPU, a transposed convolution into at most this many channels (an image's) is a matrix product and a
#: fold (col2im): about twice as fast as the transposed convolution there, slower from 4 channels on
FEW_CHANNELS = 3


def transposed_convolution(A: torch.Tensor, weight: torch.Tensor, stride, padding, output_padding, groups: int,
                           dilation) -> torch.Tensor:
    """`conv_transpose2d(A, weight, ...)`: the backward of a convolution with `weight` on rows [rows, C, H, W].

    >>> A, weight = torch.randn(5, 4, 3, 3), torch.randn(4, 2, 3, 3)
    >>> expected = torch.nn.functional.conv_transpose2d(A, weight, None, 2, 1, 1, 1, 1)
    >>> torch.allclose(transposed_convolution(A, weight, (2, 2), (1, 1), (1, 1), 1, (1, 1)), expected, atol=1e-5)
    True
    """
    if groups == 1 and weight.shape[1] <= FEW_CHANNELS and A.device.type == "cpu":
        rows, channels, height, width = A.shape
        kernel = tuple(weight.shape[2:])
        size = [(n - 1) * stride[i] + dilation[i] * (kernel[i] - 1) + 1 for i, n in enumerate((height, width))]
        columns = torch.matmul(weight.reshape(channels, -1).T, A.reshape(rows, channels, height * width))
        full = torch.nn.functional.fold(columns, size, kernel, dilation, 0, stride)
        # the transposed convolution's output is the full one less `padding` on each side, plus `output_padding`
        # at the end (a negative pad crops)
        crop = (-padding[1], output_padding[1] - padding[1], -padding[0], output_padding[0] - padding[0])
        return torch.nn.functional.pad(full, crop) if any(crop) else full
    return torch.nn.functional.conv_transpose2d(A, weight, None, stride, padding, output_padding, groups, dilation)


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


def patchwise_backward(folded: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups: int,
                       input_shape: tuple[int, int, int]) -> torch.Tensor | None:
    """The backward of a convolution whose windows tile its input without overlap (stride = kernel, no padding or
    dilation: a vision transformer's patch embedding) as one matrix product per patch, [rows, C, H, W] ->
    [rows, *input_shape]; None for other convolutions. The same numbers as conv_transpose2d, which on CPU took
    ten times longer at these shapes (68% of a CROWN pass on vit_2023's networks).

    >>> folded, weight = torch.randn(2, 4, 2, 3), torch.randn(4, 3, 5, 5)
    >>> back = patchwise_backward(folded, weight, (5, 5), (0, 0), (1, 1), 1, (3, 11, 16))
    >>> torch.allclose(back, torch.nn.functional.conv_transpose2d(folded, weight, None, 5, 0, (1, 1)), atol=1e-5)
    True
    """
    kernel = tuple(weight.shape[2:])
    if groups != 1 or tuple(stride) != kernel or any(padding) or any(d != 1 for d in dilation):
        return None
    rows, channels, height, width = folded.shape
    in_channels = weight.shape[1]
    products = folded.permute(0, 2, 3, 1).reshape(-1, channels) @ weight.reshape(channels, -1)
    back = products.reshape(rows, height, width, in_channels, *kernel).permute(0, 3, 1, 4, 2, 5)
    back = back.reshape(rows, in_channels, height * kernel[0], width * kernel[1])
    if back.shape[2:] == input_shape[1:]:
        return back
    # input rows and columns past the last whole window are read by no output
    return torch.nn.functional.pad(back, (0, input_shape[2] - back.shape[3], 0, input_shape[1] - back.shape[2]))


def _transposed_window(top: torch.Tensor, size: int, stride: int, padding: int, dilation: int, kernel: int):
    """Along one axis, the backward of a transposed convolution (a strided convolution) on windows of `size`
    starting at `top`: (inputs per window n, first input per window, where each window goes in a buffer whose
    first `margin` entries are skipped, buffer length, margin). Input i reads the window's outputs
    i·s − p + k·d; windows start at different phases of the stride, so each is shifted to put its first
    input's first read at the buffer's start (after the margin, which keeps every shift nonnegative) and one
    strided convolution serves them all."""
    reach = dilation * (kernel - 1)
    count = (size - 1 + reach) // stride + 1
    first = -torch.div(-(top + padding - reach), stride, rounding_mode="floor")  # ceil
    phase = first * stride - padding - top + reach  # in [0, stride)
    margin = max(0, stride - 1 - reach)
    length = margin + max((count - 1) * stride + reach + 1, reach + size)
    return count, first, margin + reach - phase, length, margin


def _window_matrix(weight: torch.Tensor, stride, dilation, groups: int, window: tuple[int, int, int],
                   cache: dict | None) -> torch.Tensor | None:
    """The Jacobian [C·h·w, C_in·h'·w'] of a convolution's backward on one window [C, h, w] (the same for every
    window position: the window's corner moves with it), or None where a transposed convolution is cheaper
    (see `WINDOW_MATRIX_LIMIT`). Kept in `cache` (the step's) per window size, and in `_MATRICES` for the engines
    that follow over the same weights (a batch of boxes goes through a new engine per chunk)."""
    key = ("window matrix", window)
    if cache is not None and key in cache:
        return cache[key]
    shared = (weight.data_ptr(), weight._version, tuple(weight.shape), weight.dtype, tuple(stride), tuple(dilation),
              groups, window)
    kept = _MATRICES.get(shared)
    # the entry holds the weights, so their memory (and address) cannot pass to other tensors while it is kept
    if kept is not None and kept[0].data_ptr() == weight.data_ptr() and kept[0]._version == weight._version:
        if cache is not None:
            cache[key] = kept[1]
        return kept[1]
    channels, h, w = window
    kernel = weight.shape[2:]
    size = [(n - 1) * stride[i] + dilation[i] * (kernel[i] - 1) + 1 for i, n in enumerate((h, w))]
    rows, columns = channels * h * w, weight.shape[1] * groups * size[0] * size[1]
    multiply_adds = rows * weight.shape[1] * kernel[0] * kernel[1]
    matrix = None
    if rows * columns <= max(WINDOW_MATRIX_LIMIT, multiply_adds):
        eye = torch.eye(rows, dtype=weight.dtype, device=weight.device).reshape(rows, channels, h, w)
        matrix = torch.nn.functional.conv_transpose2d(eye, weight, None, stride, 0, 0, groups, dilation).reshape(rows, columns)
    if cache is not None:
        cache[key] = matrix
    _MATRICES[shared] = (weight, matrix)
    while len(_MATRICES) > SHARED_MATRICES:
        del _MATRICES[next(iter(_MATRICES))]
    return matrix


#: window Jacobians kept across engines (`_window_matrix`), the oldest dropped first
SHARED_MATRICES = 64
_MATRICES: dict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = {}


def window_backward(patches: Patches, weight: torch.Tensor, transposed: bool, stride, padding, dilation, groups: int,
                    input_shape: tuple[int, int, int], cache: dict | None = None) -> Patches | None:
    """The backward of a convolution on windows: windows over its input map; None when a window would cover
    the whole map (one dense convolution is then cheaper than many overlapping windows). `cache` (the step's)
    keeps per-window-size work between passes."""
    specs, batch, channels, h, w = patches.values.shape
    folded = patches.values.reshape(specs * batch, channels, h, w)
    kernel = weight.shape[2:]
    reach = [dilation[i] * (kernel[i] - 1) for i in range(2)]
    size = [(n - 1 + reach[i]) // stride[i] + 1 if transposed else (n - 1) * stride[i] + reach[i] + 1 for i, n in enumerate((h, w))]
    if size[0] * size[1] >= input_shape[1] * input_shape[2]:
        return None
    if transposed:
        count_h, top, place_h, length_h, margin_h = _transposed_window(patches.top, h, stride[0], padding[0], dilation[0], kernel[0])
        count_w, left, place_w, length_w, margin_w = _transposed_window(patches.left, w, stride[1], padding[1], dilation[1], kernel[1])
        buffer = folded.new_zeros(specs, batch, length_h, length_w, channels)
        rows = place_h[..., None] + torch.arange(h, device=top.device)  # [specs, 1 or batch, h]
        columns = place_w[..., None] + torch.arange(w, device=top.device)
        specs_index = torch.arange(specs, device=top.device)[:, None, None, None]
        samples = torch.arange(batch, device=top.device)[None, :, None, None]
        buffer = buffer.index_put((specs_index, samples, rows[..., None], columns[..., None, :]), patches.values.permute(0, 1, 3, 4, 2))
        buffer = buffer[:, :, margin_h:, margin_w:].permute(0, 1, 4, 2, 3).reshape(specs * batch, channels, length_h - margin_h, length_w - margin_w)
        back = torch.nn.functional.conv2d(buffer, weight, None, stride, 0, dilation, groups)[:, :, :count_h, :count_w]
    else:
        top, left = patches.top * stride[0] - padding[0], patches.left * stride[1] - padding[1]
        matrix = _window_matrix(weight, stride, dilation, groups, (channels, h, w), cache)
        if matrix is not None:
            back = (folded.reshape(specs * batch, -1) @ matrix).reshape(specs * batch, weight.shape[1] * groups, *size)
        else:
            back = transposed_convolution(folded, weight, stride, (0, 0), (0, 0), groups, dilation)
    return Patches(back.reshape(specs, batch, *back.shape[1:]), top, left, input_shape[1], input_shape[2], patches.repeats).inside_map(in_place=True)


@bound_transfer("aten.convolution")
class Convolution(BiasedAffine):
    """2-D convolutions and transposed convolutions get a direct backward on [specs·batch, C, H, W], as fast
    under α-CROWN's autograd as in CROWN, and on windows (`Patches`); other convolutions use the generic vjp."""

    bias_positions = (2,)
    takes_patches = True

    def backward(self, step: Step, A: torch.Tensor | Patches):
        x, weight, bias, stride, padding, dilation, transposed, _, groups = step.args
        if isinstance(A, Patches):
            back = None
            if isinstance(weight, torch.Tensor) and weight.dim() == 4:
                back = window_backward(A, weight, transposed, stride, padding, dilation, groups, tuple(step.shapes[0][1:]),
                                       step.cache)
            if back is not None:
                return [back], None if bias is None else _bias_terms(A.values, bias)
            A = A.to_dense()
        if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
            return super().backward(step, A)
        specs, batch, channels, height, width = A.shape
        input_shape = step.shapes[0]
        folded = A.reshape(specs * batch, channels, height, width)
        back = one_hot_backward(folded, weight, transposed, stride, padding, dilation, groups, tuple(input_shape[1:]))
        if back is None and transposed:
            back = torch.nn.functional.conv2d(folded, weight, None, stride, padding, dilation, groups)
        if back is None and not transposed:
            back = patchwise_backward(folded, weight, stride, padding, dilation, groups, tuple(input_shape[1:]))
        if back is None and not transposed:
            kernel = weight.shape[2:]
            output_padding = [
                input_shape[2 + i] - (A.shape[3 + i] - 1) * stride[i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1
                for i in range(2)
            ]
            back = transposed_convolution(folded, weight, stride, padding, output_padding, groups, dilation)
        terms = None if bias is None else _bias_terms(A, bias)
        return [back.reshape(specs, *input_shape)], terms


def _bias_terms(values: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The bias's share of coefficients [specs, batch, C, h, w] over a convolution's output, [specs, batch]: the
    windows summed per channel first, then one product per channel (a product of the windows' size with the bias
    and its sum read them three times).

    >>> values, bias = torch.randn(4, 2, 3, 5, 5), torch.randn(3)
    >>> torch.allclose(_bias_terms(values, bias), (values * bias.reshape(-1, 1, 1)).sum((2, 3, 4)), atol=1e-5)
    True
    """
    return values.sum((-2, -1)) @ bias.to(values.dtype)


@bound_transfer("aten.avg_pool2d")
class AveragePool(Affine):
    """Average pooling is a depthwise convolution with weights 1/k: on windows (`Patches`) it goes back as one
    (`window_backward`), so a pooled residual net keeps its windows; dense coefficients, and the forms that are no
    such convolution (ceil mode, a divisor override, padding left out of the count), take the generic vjp."""

    takes_patches = True

    def backward(self, step: Step, A: torch.Tensor | Patches):
        if isinstance(A, Patches):
            back = self._window_backward(step, A)
            if back is not None:
                return [back], None
            A = A.to_dense()
        return super().backward(step, A)

    @staticmethod
    def _window_backward(step: Step, A: Patches) -> Patches | None:
        _, kernel, stride, padding, ceil_mode, count_include_pad, divisor = (
            list(step.args) + [[], 0, False, True, None][len(step.args) - 2 :])[:7]
        shape = step.shapes[0]
        kernel = _pair(kernel)
        stride, padding = _pair(stride or kernel), _pair(padding)
        if len(shape) != 4 or ceil_mode or divisor is not None or (any(padding) and not count_include_pad):
            return None
        channels = shape[1]
        if "weight" not in step.cache:
            step.cache["weight"] = A.values.new_full((channels, 1, *kernel), 1.0 / (kernel[0] * kernel[1]))
        weight = step.cache["weight"]
        return window_backward(A, weight, False, stride, padding, (1, 1), channels, tuple(shape[1:]), step.cache)


def _pair(value) -> tuple[int, int]:
    """An int or a one- or two-element list as two ints (aten's pooling arguments)."""
    value = [value] if isinstance(value, int) else list(value)
    return (value[0], value[-1])
