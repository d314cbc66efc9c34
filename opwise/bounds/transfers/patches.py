"""Coefficients of intermediate-bound specifications kept only on a window of a [C, H, W] map ("patches").

An intermediate bound of a convolution's output neuron starts as a one-hot row; carried back through
convolutions, batch norm and elementwise relaxations it stays zero outside the neuron's receptive field.
`Patches` stores just that window: values [specs, batch, C, h, w] and, per spec (or per spec and sample:
each sample of a batch may bound its own neurons), the map position of the window's top-left corner (the
window may reach past the map's edges; those positions hold zeros). A
backward step then costs the window's size instead of the map's: on a generator whose 30×30 layer has
26,000 unstable neurons, a 2×2 window instead of a 14×14 map per spec. auto_LiRPA's "patches" mode
serves the same purpose. Transfers that do not take windows get `to_dense()`, the same numbers.
"""

from __future__ import annotations

import dataclasses
import math

import torch


@dataclasses.dataclass
class Patches:
    """Coefficients [specs, batch, C, H, W] that are zero outside one h×w window per spec (and sample).

    `values` [specs, batch, C, h, w]; `top`, `left` [specs] or [specs, batch]: the window's corner in the
    H×W map, shared by the samples or per sample (kept as [specs, 1] or [specs, batch]). `repeats`: the specs
    are that many equal-length blocks whose windows sit at the same corners (spec p of every block at the
    corner of spec p of the first): the lower and upper bound of a neuron, or every channel at one map
    position. Per-neuron tensors (a relaxation's lines, the input box) are then gathered once per block and
    broadcast (`windows`, `blocked`), not copied once per spec.

    >>> rows = Patches.one_hot(torch.tensor([5]), torch.tensor([1.0]), batch=1, shape=(2, 2, 3))
    >>> rows.to_dense()[0, 0].tolist()
    [[[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]
    """

    values: torch.Tensor
    top: torch.Tensor
    left: torch.Tensor
    height: int
    width: int
    repeats: int = 1

    def __post_init__(self):
        if self.top.dim() == 1:
            self.top, self.left = self.top[:, None], self.left[:, None]

    @classmethod
    def one_hot(cls, positions: torch.Tensor, signs: torch.Tensor, batch: int, shape: tuple[int, int, int]) -> "Patches":
        """One spec per flat position of a [C, H, W] map, with coefficient `signs` there. `positions` [specs]
        are the same for every sample; [specs, batch] name each sample's own (then `signs` may be [specs, batch]
        too, zero for a sample that has fewer positions to bound than the others)."""
        channels, height, width = shape
        specs = positions.shape[0]
        values = torch.zeros(specs, batch, channels, 1, 1, dtype=signs.dtype, device=signs.device)
        spec_index = torch.arange(specs, device=positions.device)[:, None]
        if positions.dim() == 1:
            values[spec_index[:, 0], :, positions // (height * width), 0, 0] = signs[:, None]
        else:
            sample_index = torch.arange(batch, device=positions.device)[None, :]
            values[spec_index, sample_index, positions // (height * width), 0, 0] = signs.expand(specs, batch) if signs.dim() == 2 else signs[:, None].expand(specs, batch)
        return cls(values, (positions // width) % height, positions % width, height, width, _repeats(positions % (height * width)))

    @property
    def per_sample(self) -> bool:
        """Whether the windows' positions differ per sample."""
        return self.top.shape[1] > 1

    @property
    def specs(self) -> int:
        return self.values.shape[0]

    def moved(self, values: torch.Tensor, top: torch.Tensor | None = None, left: torch.Tensor | None = None,
              height: int | None = None, width: int | None = None) -> "Patches":
        """New window values (and, after a convolution, a new position and map size); the same blocks."""
        return Patches(values, self.top if top is None else top, self.left if left is None else left,
                       self.height if height is None else height, self.width if width is None else width, self.repeats)

    def blocked(self) -> torch.Tensor:
        """The values as [repeats, block · batch, C, h, w]: what `windows` broadcast against."""
        return self.values.reshape(self.repeats, -1, *self.values.shape[2:])

    def windows(self, tensor: torch.Tensor) -> torch.Tensor:
        """`gather` laid out to broadcast against `blocked()`: a per-neuron tensor's windows once per block,
        [block · batch, C, h, w]; a per-spec tensor's (α-CROWN's lines) [repeats, block · batch, C, h, w].

        >>> rows = Patches.one_hot(torch.tensor([0, 1, 0, 1]), torch.tensor([1.0, 1.0, -1.0, -1.0]), batch=1, shape=(1, 1, 2))
        >>> rows.repeats, tuple(rows.blocked().shape), rows.windows(torch.tensor([[[[5.0, 7.0]]]])).flatten().tolist()
        (2, (2, 2, 1, 1, 1), [5.0, 7.0])
        """
        batch = self.values.shape[1]
        if tensor.dim() == 5:
            windows = self.gather(tensor)
            return windows.expand(-1, batch, *windows.shape[2:]).reshape(self.repeats, -1, *windows.shape[2:])
        block = self.specs // self.repeats
        first = self if self.repeats == 1 else Patches(self.values[:block], self.top[:block], self.left[:block], self.height, self.width)
        windows = first.gather(tensor)
        return windows.expand(-1, batch, *windows.shape[2:]).reshape(-1, *windows.shape[2:])

    def windows_of(self, tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """`windows` of several per-neuron tensors at once: those of one shape [batch or 1, C, H, W] side by side
        along the channels, one gather for all (a relaxation's four lines); others one by one.

        >>> rows = Patches.one_hot(torch.tensor([0, 1]), torch.tensor([1.0, -1.0]), batch=1, shape=(1, 1, 2))
        >>> [t.flatten().tolist() for t in rows.windows_of((torch.tensor([[[[5.0, 7.0]]]]), torch.tensor([[[[1.0, 2.0]]]])))]
        [[5.0, 7.0], [1.0, 2.0]]
        """
        shape = tensors[0].shape if tensors else None
        if len(tensors) < 2 or len(shape) != 4 or any(t.shape != shape for t in tensors):
            return tuple(self.windows(t) for t in tensors)
        channels = shape[1]
        block = self.specs // self.repeats
        # only the shape of `wide`'s values is read (a zero tensor of it cost as much as the windows themselves)
        shape = (block, self.values.shape[1], channels * len(tensors), *self.values.shape[3:])
        wide = Patches(self.values.new_zeros(()).expand(shape), self.top[:block], self.left[:block], self.height, self.width)
        windows = wide.windows(torch.cat(tensors, 1))
        return tuple(windows.split(channels, dim=-3))

    def _positions(self) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int, int]]:
        """Rows [specs, 1 or batch, h] and columns [specs, 1 or batch, w] of each window in the map padded by the
        returned (left, right, top, bottom) amounts, just enough to hold every window."""
        h, w = self.values.shape[-2:]
        pad_top, pad_left = max(0, -int(self.top.min())), max(0, -int(self.left.min()))
        pad_bottom = max(0, int(self.top.max()) + h - self.height)
        pad_right = max(0, int(self.left.max()) + w - self.width)
        device = self.top.device
        rows = self.top[..., None] + pad_top + torch.arange(h, device=device)
        columns = self.left[..., None] + pad_left + torch.arange(w, device=device)
        return rows, columns, (pad_left, pad_right, pad_top, pad_bottom)

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Each spec's window of a per-neuron tensor ([batch or 1, C, H, W], or [specs, batch or 1, C, H, W]
        for per-spec values such as α-CROWN's lines), zero outside the map: [specs, batch or 1, C, h, w]."""
        channels = self.values.shape[2]
        if tensor.dim() < 4:
            tensor = tensor.reshape((1,) * (4 - tensor.dim()) + tuple(tensor.shape))
        tensor = tensor.expand(*tensor.shape[:-3], channels, self.height, self.width)
        rows, columns, padding = self._positions()
        padded = torch.nn.functional.pad(tensor, padding)
        h, w = self.values.shape[-2:]
        if tensor.dim() == 4:
            places = (padded.shape[2] - h + 1) * (padded.shape[3] - w + 1)
            if self.specs * GATHER_DIRECT < places:
                # fewer windows than places a window can sit: index each window's elements directly
                if not self.per_sample:
                    return padded[:, :, rows[:, 0, :, None], columns[:, 0, None, :]].permute(2, 0, 1, 3, 4)
                samples = torch.arange(rows.shape[1], device=rows.device)[None, :, None, None]
                if padded.shape[0] != rows.shape[1]:
                    padded = padded.expand(rows.shape[1], *padded.shape[1:])
                return padded[samples, :, rows[..., None], columns[..., None, :]].permute(0, 1, 4, 2, 3)
            # every window position's [batch, C, h, w] block once (few positions: the map is small or the
            # windows are), then one block per spec by its position: a contiguous copy per spec, several
            # times faster than indexing every element
            blocks = padded.unfold(2, h, 1).unfold(3, w, 1)  # [batch, C, rows, columns, h, w]
            corner = rows[..., 0] * blocks.shape[3] + columns[..., 0]  # [specs, 1 or batch]
            if not self.per_sample:
                table = blocks.permute(2, 3, 0, 1, 4, 5).reshape(-1, *blocks.shape[:2], h, w)
                return table.index_select(0, corner[:, 0])
            table = blocks.permute(0, 2, 3, 1, 4, 5).reshape(blocks.shape[0], -1, blocks.shape[1], h, w)
            samples = torch.arange(table.shape[0], device=rows.device).expand(corner.shape[1]) if table.shape[0] > 1 \
                else torch.zeros(corner.shape[1], dtype=torch.long, device=rows.device)
            return table[samples[None, :], corner]
        specs = torch.arange(self.specs, device=rows.device)[:, None, None]
        if padded.shape[0] != self.specs:
            padded = padded.expand(self.specs, *padded.shape[1:])
        if not self.per_sample:
            return padded[specs, :, :, rows[:, 0, :, None], columns[:, 0, None, :]].permute(0, 3, 4, 1, 2)
        if padded.shape[1] != rows.shape[1]:
            padded = padded.expand(-1, rows.shape[1], *padded.shape[2:])
        samples = torch.arange(rows.shape[1], device=rows.device)[None, :, None, None]
        return padded[specs[..., None], samples, :, rows[..., None], columns[..., None, :]].permute(0, 1, 4, 2, 3)

    def to_dense(self) -> torch.Tensor:
        """The full coefficients [specs, batch, C, H, W]."""
        specs, batch, channels, h, w = self.values.shape
        rows, columns, (left, right, top, bottom) = self._positions()
        padded = self.values.new_zeros(specs, batch, channels, self.height + top + bottom, self.width + left + right)
        spec_index = torch.arange(specs, device=rows.device)[:, None, None, None]
        samples = torch.arange(batch, device=rows.device)[None, :, None, None]
        padded[spec_index, samples, :, rows[..., None], columns[..., None, :]] = self.values.permute(0, 1, 3, 4, 2)
        return padded[..., top : top + self.height, left : left + self.width].contiguous()

    def at(self, positions: torch.Tensor) -> torch.Tensor:
        """The coefficients at flat positions of the [C, H, W] map, `positions` [batch, k] per sample: [specs, batch,
        k] (zero outside the windows).

        >>> rows = Patches.one_hot(torch.tensor([5]), torch.tensor([2.0]), batch=1, shape=(2, 2, 3))
        >>> rows.at(torch.tensor([[5, 4, 11]])).tolist()
        [[[2.0, 0.0, 0.0]]]
        """
        h, w = self.values.shape[-2:]
        channel = positions // (self.height * self.width)
        row = (positions // self.width) % self.height - self.top[..., None]
        column = positions % self.width - self.left[..., None]
        inside = (row >= 0) & (row < h) & (column >= 0) & (column < w)
        specs, batch = self.values.shape[:2]
        spec_index = torch.arange(specs, device=positions.device)[:, None, None]
        samples = torch.arange(batch, device=positions.device)[None, :, None]
        picked = self.values[spec_index, samples, channel[None], row.clamp(0, h - 1), column.clamp(0, w - 1)]
        return torch.where(inside, picked, torch.zeros((), dtype=picked.dtype, device=picked.device))

    def inside_map(self, in_place: bool = False) -> "Patches":
        """The window with positions outside the map zeroed (after a convolution's backward reached into its
        padding: coefficients there multiply constant zeros, so they must not travel further back). `in_place`:
        the values are the caller's own new tensor (a backward's result), zeroed where they are: no new tensor of
        the windows' size (the largest tensors of a pass over a CNN, and their first write costs as much as the
        product)."""
        h, w = self.values.shape[-2:]
        device = self.top.device
        rows = self.top[..., None] + torch.arange(h, device=device)
        columns = self.left[..., None] + torch.arange(w, device=device)
        row_inside = (rows >= 0) & (rows < self.height)
        column_inside = (columns >= 0) & (columns < self.width)
        if bool(row_inside.all()) and bool(column_inside.all()):
            return self
        block = self.specs // self.repeats  # the blocks' windows sit alike: one mask serves them all
        inside = (row_inside[:block, :, None, :, None] & column_inside[:block, :, None, None, :]).to(self.values.dtype)
        inside = inside.expand(-1, self.values.shape[1], -1, -1, -1).reshape(-1, 1, *inside.shape[3:])
        if in_place and self.values.is_contiguous():  # blocked() is then a view of the values
            self.blocked().mul_(inside)
            return self
        return self.moved((self.blocked() * inside).reshape(self.values.shape))

    @classmethod
    def from_dense(cls, A: torch.Tensor, largest: float = 1 / 16) -> "Patches | None":
        """Dense coefficients [specs, batch, C, H, W] as windows: per spec the smallest window holding its nonzero
        elements (at one size for all, moved inside the map); None where that window would cover more than
        `largest` of the map (dense is then about as cheap).

        A pass that went through an operator that does not carry windows (a permute, a reshape) arrives dense at
        the next convolution although each row touches a few positions: carvana_unet's softmax over classes
        behind a transpose sent 5,826 two-element rows back through three wide convolutions as whole maps.

        >>> A = torch.zeros(2, 1, 3, 8, 8); A[0, 0, 1, 2, 3] = 1.0; A[1, 0, 0, 7, 7] = -2.0
        >>> windows = Patches.from_dense(A)
        >>> tuple(windows.values.shape), bool(torch.equal(windows.to_dense(), A))
        ((2, 1, 3, 1, 1), True)
        """
        specs, _, _, height, width = A.shape
        support = (A != 0).any(2).any(1)  # [specs, H, W]
        rows, columns = support.any(2), support.any(1)
        if not bool(rows.any()):
            return None

        def extent(used: torch.Tensor, size: int) -> tuple[torch.Tensor, int]:
            first = used.to(torch.uint8).argmax(1)  # the first used place (0 for a row of zeros)
            last = size - 1 - used.flip(1).to(torch.uint8).argmax(1)
            last = torch.where(used.any(1), last, first)
            span = int((last - first).max()) + 1
            return first.clamp(max=size - span), span

        top, h = extent(rows, height)
        left, w = extent(columns, width)
        if h * w > largest * height * width:
            return None
        device = A.device
        index = torch.arange(specs, device=device)[:, None, None]
        picked = A[index, :, :, (top[:, None] + torch.arange(h, device=device))[:, :, None],
                   (left[:, None] + torch.arange(w, device=device))[:, None, :]]  # [specs, h, w, batch, C]
        return cls(picked.permute(0, 3, 4, 1, 2).contiguous(), top, left, height, width, _repeats(top * width + left))

    def plus(self, other: "Patches") -> "Patches | None":
        """The sum of two window sets over the same specs, as windows over their union; None where the union
        is not one window per spec at one offset from both (corners that differ by different amounts per spec)
        or would be at least as large as the map (dense coefficients are then cheaper).

        A residual block's paths reach its input with windows of different sizes around the same neuron: a
        1×1 shortcut's and a 3×3-ReLU-3×3 branch's. Summed densely, every later step would cost the whole map.

        >>> small = Patches.one_hot(torch.tensor([4]), torch.tensor([1.0]), batch=1, shape=(1, 3, 3))
        >>> wide = Patches(torch.ones(1, 1, 1, 3, 3), torch.tensor([0]), torch.tensor([0]), 4, 4)
        >>> small = Patches(small.values, small.top, small.left, 4, 4)
        >>> total = small.plus(wide)
        >>> tuple(total.values.shape), bool((total.to_dense() == small.to_dense() + wide.to_dense()).all())
        ((1, 1, 1, 3, 3), True)
        """
        if ((self.height, self.width, self.repeats) != (other.height, other.width, other.repeats)
                or self.values.shape[:3] != other.values.shape[:3]):
            return None
        rows, columns = other.top - self.top, other.left - self.left
        if bool((rows != rows.flatten()[0]).any()) or bool((columns != columns.flatten()[0]).any()):
            return None
        rows, columns = int(rows.flatten()[0]), int(columns.flatten()[0])
        (h, w), (oh, ow) = self.values.shape[-2:], other.values.shape[-2:]
        # each window's place in the union: the one further up (left) starts it
        down, right, other_down, other_right = max(0, -rows), max(0, -columns), max(0, rows), max(0, columns)
        height, width = max(down + h, other_down + oh), max(right + w, other_right + ow)
        if height * width >= self.height * self.width:
            return None
        # each set added into its place of the union: a residual block's 1×1 shortcut window lies inside its
        # 3×3 branch's, and padding both to the union and adding them took three passes over it, and two of its size
        if (down, right, h, w) == (0, 0, height, width):
            values = self.values.clone()
        else:
            values = self.values.new_zeros(*self.values.shape[:3], height, width)
            values[..., down : down + h, right : right + w] += self.values
        values[..., other_down : other_down + oh, other_right : other_right + ow] += other.values
        return Patches(values, torch.minimum(self.top, other.top), torch.minimum(self.left, other.left),
                       self.height, self.width, self.repeats)

    def minimum_over_box(self, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """min of the coefficients times x over the box [lower, upper] ([batch, C, H, W]): [specs, batch]."""
        values = self.blocked()
        upper = self.windows(upper)
        bound = summed_product(values, upper) + summed_product(values.clamp(min=0), self.windows(lower) - upper)
        return bound.reshape(self.specs, -1)


#: `Patches.gather` indexes window elements directly when there are this many times fewer windows than places
#: a window can sit (elementwise indexing costs several times a block copy per element)
GATHER_DIRECT = 4


def _repeats(corners: torch.Tensor) -> int:
    """How many equal blocks the corners [specs] or [specs, batch] are made of (1 if they are not): rows bounded
    on both sides, or every channel at the same map positions, repeat the same corners.

    >>> _repeats(torch.tensor([3, 5, 3, 5, 3, 5])), _repeats(torch.tensor([3, 3, 5, 3, 3, 5])), _repeats(torch.tensor([3, 5, 5, 3]))
    (3, 2, 1)
    """
    specs = corners.shape[0]
    if specs < 2:
        return 1
    candidates = [specs // 2] if specs % 2 == 0 else []
    again = (corners[1:] == corners[:1]).reshape(specs - 1, -1).all(1).nonzero()
    if again.numel():
        candidates.insert(0, int(again[0]) + 1)
    for block in candidates:
        if specs % block == 0 and torch.equal(corners.reshape(specs // block, block, -1), corners[:block].reshape(1, block, -1).expand(specs // block, -1, -1)):
            return specs // block
    return 1


def summed_product(A: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """(A · values) summed over every dimension after the first two, [A.shape[0], A.shape[1]]: a batched
    matrix-vector product where `values` has no leading (specs) dimension and matches A's others (a relaxation's
    lines without α, windows gathered once per block), else a product and a sum.

    >>> summed_product(torch.ones(3, 2, 4), torch.arange(8.0).reshape(2, 4)).tolist()
    [[6.0, 22.0], [6.0, 22.0], [6.0, 22.0]]
    """
    # values broadcast to A's own shape (checked by hand: torch.broadcast_shapes took a third of this function's time)
    if values.dim() < A.dim() and all(v in (1, a) for v, a in zip(reversed(values.shape), reversed(A.shape))):
        if A.dim() < 2:
            return (A * values).reshape(A.shape[0], 1)
        flat = A.reshape(A.shape[0], A.shape[1], -1)
        vector = values.expand(A.shape[1:]).reshape(A.shape[1], -1, 1)
        return torch.matmul(flat.transpose(0, 1), vector).squeeze(-1).transpose(0, 1)
    product = A * values
    return product.reshape(*product.shape[:2], -1).sum(-1)


@dataclasses.dataclass
class FreeCoefficients:
    """Input coefficients that are zero but on each sample's free elements of a box (the others fixed): `values`
    [specs, batch, rows] at the flat `positions` [batch, rows] (-1: padding, value 0) of an input of `shape`
    [batch, ...]. A pass over boxes that free one patch each keeps them so; the dense tensor, [specs, batch, whole
    input], is built only when asked for (intermediate bounds never ask).

    >>> FreeCoefficients(torch.tensor([[[2.0, 0.0]]]), torch.tensor([[2, -1]]), (1, 3)).to_dense().tolist()
    [[[0.0, 0.0, 2.0]]]
    """

    values: torch.Tensor
    positions: torch.Tensor
    shape: tuple[int, ...]

    def to_dense(self) -> torch.Tensor:
        specs, batch = self.values.shape[:2]
        flat = self.values.new_zeros(specs, batch, math.prod(self.shape[1:]))
        index = self.positions.clamp(min=0).unsqueeze(0).expand_as(self.values)
        flat.scatter_add_(2, index, self.values * (self.positions >= 0))
        return flat.reshape(specs, *self.shape)

    def at(self, features: torch.Tensor) -> torch.Tensor:
        """The coefficients at flat positions `features` [batch, k] per sample: [specs, batch, k]."""
        match = (self.positions.unsqueeze(2) == features.unsqueeze(1)) & (self.positions >= 0).unsqueeze(2)
        return torch.einsum("sbr,brk->sbk", self.values, match.to(self.values.dtype))


def dense(coefficient: torch.Tensor | Patches | FreeCoefficients) -> torch.Tensor:
    """Coefficients as a plain tensor."""
    return coefficient.to_dense() if isinstance(coefficient, (Patches, FreeCoefficients)) else coefficient


def add_coefficients(first: torch.Tensor | Patches, second: torch.Tensor | Patches) -> torch.Tensor | Patches:
    """The sum of two coefficient sets meeting at a node used twice: windows over the union of both windows
    where that stays smaller than the map (`Patches.plus`: a residual block's two paths back to its input),
    dense coefficients otherwise."""
    if isinstance(first, Patches) and isinstance(second, Patches):
        union = first.plus(second)
        if union is not None:
            return union
    return dense(first) + dense(second)


#: `free_windows` turns dense coefficients into windows when the window over every sample's free elements covers at
#: most this fraction of the map
FREE_WINDOW_FRACTION = 0.25
#: ... and the dense coefficients hold at least this many elements (below, the windows' indexing costs more than
#: the dense products it saves)
FREE_WINDOW_MIN_ELEMENTS = 2**17


def free_windows(A: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, min_elements: int | None = None
                 ) -> tuple[Patches, torch.Tensor] | None:
    """Dense coefficients A [specs, batch, C, H, W] of a node whose interval [lower, upper] ([batch, C, H, W]) is a
    point outside a small window per sample (a box that frees one patch of an image, before a layer mixes the whole
    map): (A on the free elements as that window per sample, the fixed elements' exact share A·value [specs, batch]).
    A backward step then costs the window, not the map. None where the free elements spread over more than
    `FREE_WINDOW_FRACTION` of the map, or A has fewer than `min_elements` (default
    `FREE_WINDOW_MIN_ELEMENTS`).

    >>> A = torch.ones(1, 2, 1, 4, 4)
    >>> lower = torch.zeros(2, 1, 4, 4); upper = lower.clone(); upper[0, 0, 1, 2] = upper[1, 0, 3, 0] = 1.0
    >>> windows, share = free_windows(A, lower + 2, upper + 2, min_elements=0)
    >>> tuple(windows.values.shape), windows.top.tolist(), windows.left.tolist(), share.tolist()
    ((1, 2, 1, 1, 1), [[1, 3]], [[2, 0]], [[30.0, 30.0]])
    """
    least = FREE_WINDOW_MIN_ELEMENTS if min_elements is None else min_elements
    if A.dim() != 5 or A.numel() < least or tuple(lower.shape) != tuple(A.shape[1:]) or tuple(upper.shape) != tuple(A.shape[1:]):
        return None
    height, width = A.shape[-2:]
    free = ~((upper == lower) & torch.isfinite(lower))
    where = free.any(1)  # [batch, H, W]
    rows, columns = where.any(2), where.any(1)
    if not bool(rows.any()):
        return None
    extent = []
    for along in (rows, columns):
        size = along.shape[1]
        first = along.to(torch.int8).argmax(1)
        last = size - 1 - along.flip(1).to(torch.int8).argmax(1)
        extent.append((first, torch.where(along.any(1), last - first + 1, 0)))
    h, w = int(extent[0][1].max()), int(extent[1][1].max())
    if h * w > FREE_WINDOW_FRACTION * height * width:
        return None
    share = (A * torch.where(free, 0.0, lower)).reshape(*A.shape[:2], -1).sum(-1)
    specs = A.shape[0]
    # windows inside the map, at the same corner for every spec of a sample
    top = extent[0][0].clamp(max=height - h).expand(specs, -1)
    left = extent[1][0].clamp(max=width - w).expand(specs, -1)
    windows = Patches(A.new_zeros(*A.shape[:3], h, w), top, left, height, width, repeats=specs)
    return windows.moved(windows.gather(A * free)), share
