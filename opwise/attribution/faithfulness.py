"""Faithfulness metrics for explanations: pixel flipping, ABPC and the model-randomization check.

These work on plain tensors and callables, so they score relevance from any method (opwise, Zennit,
gradient x input) the same way.

Definitions used throughout (Samek et al. 2017; Blücher et al. 2024, "Decoupling pixel flipping and
occlusion strategy for consistent XAI benchmarks"):

- the input is cut into patches, ranked by their summed relevance; step k replaces the first
  ``n_k = round(k * P / K)`` patches of that ranking by the baseline (k = 0..K, P patches, K steps), giving
  x_0 = x, ..., x_K = fully replaced;
- a perturbation curve is ``c_k = f(x_k)[target]``, the per-sample target logit at each step; MoRF ranks
  most relevant first, LeRF least relevant first;
- the area under a curve is its mean over the K + 1 steps, ``AUPC = (1 / (K + 1)) * sum_k c_k``;
- ``ABPC = AUPC(LeRF) - AUPC(MoRF) = (1 / (K + 1)) * sum_k (c_k^LeRF - c_k^MoRF)``, the area between the
  two curves. A faithful explanation removes the evidence fastest under MoRF and slowest under LeRF, so
  ABPC > 0; a random ranking gives ABPC ~ 0 on average; a reversed ranking gives ABPC < 0.

With AOPC taken as Samek's "area over the perturbation curve", ``AOPC = (1 / (K + 1)) * sum_k (c_0 - c_k)``,
the same number is ``ABPC = AOPC(MoRF) - AOPC(LeRF)``; with AOPC read as the area *under* each curve
(the reading in which the formula ``AOPC(LeRF) - AOPC(MoRF)`` is positive for a faithful explanation) it is
``AUPC(LeRF) - AUPC(MoRF)``. Both name the area between the curves above.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from opwise.errors import InputError

Baseline = str | float
Target = int | Sequence[int] | torch.Tensor


def pixel_flipping(
    function: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    relevance: torch.Tensor,
    target: Target,
    *,
    patch_size: int = 1,
    steps: int = 16,
    baseline: Baseline = "mean",
    order: str = "most",
    blur_sigma: float = 2.0,
) -> torch.Tensor:
    """Per-sample target logit as patches are replaced in relevance order: a ``[B, K + 1]`` curve.

    ``x`` is a batch ``[B, C, H, W]`` / ``[B, H, W]`` (image patches are ``patch_size`` squares over all
    channels) or ``[B, D]`` (patches are runs of ``patch_size`` features; integer token ids take an integer
    baseline, e.g. the pad token id). ``relevance`` has the shape of
    ``x``, or ``[B, H, W]`` for images. ``baseline`` is what replaced patches become: ``"mean"`` (each
    sample's per-channel mean), ``"blur"`` (a Gaussian blur of the sample, images only) or a number.
    ``order`` is ``"most"`` (MoRF) or ``"least"`` (LeRF); ``steps`` is K, capped at the patch count.

    >>> w = torch.tensor([1.0, 1.0, 1.0])
    >>> x = torch.tensor([[1.0, 2.0, 3.0]])
    >>> f = lambda inputs: (inputs * w).sum(1, keepdim=True)
    >>> pixel_flipping(f, x, w * x, 0, steps=3, baseline=0.0, order="most")
    tensor([[6., 3., 1., 0.]])
    >>> pixel_flipping(f, x, w * x, 0, steps=3, baseline=0.0, order="least")
    tensor([[6., 5., 3., 0.]])
    """
    if order not in ("most", "least"):
        raise InputError(f"pixel_flipping: order must be 'most' or 'least', got {order!r}")
    x = _check_input(x)
    relevance = _check_relevance(relevance, x)
    if patch_size < 1:
        raise InputError(f"pixel_flipping: patch_size must be >= 1, got {patch_size}")
    if steps < 1:
        raise InputError(f"pixel_flipping: steps must be >= 1, got {steps}")
    replacement = _baseline(x, baseline, blur_sigma)
    pixel_rank, n_patches = _pixel_ranks(relevance, x, patch_size, order)
    steps = min(steps, n_patches)
    targets = _targets(target, x.shape[0])
    values = []
    with torch.no_grad():
        for k in range(steps + 1):
            removed = round(k * n_patches / steps)
            mask = pixel_rank < removed
            mask = mask.unsqueeze(1) if _has_channels(x) else mask
            x_k = torch.where(mask, replacement, x)
            values.append(_select(function(x_k), targets))
    return torch.stack(values, dim=1)


def area_between(most: torch.Tensor, least: torch.Tensor) -> torch.Tensor:
    """ABPC from a MoRF and a LeRF curve (``[..., K + 1]``): the mean over steps of LeRF minus MoRF.

    >>> area_between(torch.tensor([6.0, 3.0, 1.0, 0.0]), torch.tensor([6.0, 5.0, 3.0, 0.0]))
    tensor(1.)
    """
    if most.shape != least.shape:
        raise InputError(f"area_between: MoRF curve {tuple(most.shape)} and LeRF curve {tuple(least.shape)} differ")
    return (least - most).mean(dim=-1)


def abpc(
    function: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    relevance: torch.Tensor,
    target: Target,
    **options,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ABPC per sample and both curves ``{"most": [B, K+1], "least": [B, K+1]}`` (options as pixel_flipping).

    Higher is more faithful; see the module docstring for the exact definition.

    >>> w = torch.tensor([1.0, 1.0, 1.0])
    >>> x = torch.tensor([[1.0, 2.0, 3.0]])
    >>> score, curves = abpc(lambda v: (v * w).sum(1, keepdim=True), x, w * x, 0, steps=3, baseline=0.0)
    >>> score
    tensor([1.])
    """
    if "order" in options:
        raise InputError("abpc: computes both orders itself; drop the 'order' option")
    curves = {order: pixel_flipping(function, x, relevance, target, order=order, **options) for order in ("most", "least")}
    return area_between(curves["most"], curves["least"]), curves


def randomization_check(
    explain_fn: Callable[[torch.nn.Module, torch.Tensor, Target], torch.Tensor],
    model: torch.nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    seed: int = 0,
    method: str = "spearman",
) -> float:
    """Correlation between relevance of ``model`` and of a weight-randomized copy (Adebayo et al. 2018).

    ``explain_fn(model, x, target)`` returns relevance for the batch. Every parameter of a copy of the
    model is re-initialized (``reset_parameters`` where a module has it, else drawn from a normal with the
    parameter's own spread); the result is the per-sample Spearman (or Pearson) correlation of the two
    relevance maps, averaged over the batch. Low values are good: the explanation depends on the model.
    The model passed in is left unchanged.

    >>> model = torch.nn.Linear(16, 2, bias=False)
    >>> x = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    >>> ignores_model = lambda m, inputs, t: inputs
    >>> randomization_check(ignores_model, model, x, 0)
    1.0
    """
    if method not in ("spearman", "pearson"):
        raise InputError(f"randomization_check: method must be 'spearman' or 'pearson', got {method!r}")
    if not any(True for _ in model.parameters()):
        raise InputError("randomization_check: the model has no parameters to randomize")
    before = explain_fn(model, x, target).detach()
    randomized = _randomized_copy(model, seed)
    after = explain_fn(randomized, x, target).detach()
    if before.shape != after.shape or before.shape[0] != x.shape[0]:
        raise InputError(
            f"randomization_check: explain_fn returned shapes {tuple(before.shape)} and {tuple(after.shape)}; "
            f"both must be batched like x {tuple(x.shape)}"
        )
    from scipy import stats  # here, not at the top: scipy.stats takes half a second, and every CLI command imports this module

    correlate = stats.spearmanr if method == "spearman" else stats.pearsonr
    values = []
    for sample, (a, b) in enumerate(zip(before.flatten(1).double().numpy(), after.flatten(1).double().numpy())):
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            raise InputError(
                f"randomization_check: relevance of sample {sample} is constant before or after randomization, "
                "so no correlation is defined; check that explain_fn returns per-feature relevance"
            )
        values.append(float(correlate(a, b)[0]))
    return float(np.mean(values))


def _randomized_copy(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A deep copy of the model with every parameter re-drawn from a seeded generator."""
    randomized = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    covered: set[int] = set()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for module in randomized.modules():
            own = list(module.parameters(recurse=False))
            if own and callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
                covered.update(id(p) for p in own)
        for parameter in randomized.parameters():
            if id(parameter) not in covered:
                spread = parameter.std().item() if parameter.numel() > 1 else 0.0
                spread = spread if math.isfinite(spread) and spread > 0 else 1.0
                noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
                parameter.copy_(noise * spread)
    return randomized


def _has_channels(x: torch.Tensor) -> bool:
    """Images ``[B, C, H, W]`` carry a channel axis; ``[B, H, W]`` and ``[B, D]`` do not."""
    return x.dim() == 4


def _pattern_shape(x: torch.Tensor) -> tuple[int, ...]:
    """The per-sample shape patches are cut from: ``(H, W)`` for images, ``(D,)`` for feature vectors."""
    return tuple(x.shape[-2:]) if x.dim() > 2 else (x.shape[1],)


def _check_input(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() not in (2, 3, 4):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"pixel_flipping: x must be a batch [B, D], [B, H, W] or [B, C, H, W], got {shape}")
    if not torch.isfinite(x).all():
        raise InputError("pixel_flipping: x contains NaN or inf")
    return x


def _check_relevance(relevance: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Relevance shaped like x, or channel-summed ``[B, H, W]`` for images; returns it as given."""
    relevance = torch.as_tensor(relevance).detach().to(x.device, torch.float64)
    allowed = [tuple(x.shape)] + ([(x.shape[0], *x.shape[-2:])] if _has_channels(x) else [])
    if tuple(relevance.shape) not in allowed:
        raise InputError(f"pixel_flipping: relevance shape {tuple(relevance.shape)} does not fit x; expected one of {allowed}")
    if not torch.isfinite(relevance).all():
        raise InputError("pixel_flipping: relevance contains NaN or inf; fix the explanation before scoring it")
    silent = (relevance.flatten(1) == 0).all(dim=1)
    if silent.any():
        warnings.warn(
            f"pixel_flipping: relevance of samples {silent.nonzero()[:, 0].tolist()} is zero everywhere, so their "
            "patch order is arbitrary (index order); check the target and that the explanation did not vanish",
            RuntimeWarning,
            stacklevel=3,
        )
    return relevance


def _pixel_ranks(relevance: torch.Tensor, x: torch.Tensor, patch_size: int, order: str) -> tuple[torch.Tensor, int]:
    """Per pixel of the pattern, the position of its patch in the removal order ``[B, *pattern]``; and P.

    Ties keep the patches' index order (stable sort), so equal relevance gives a deterministic curve.
    """
    patch_relevance, pixel_to_patch = _patches(relevance, x, patch_size)
    n_patches = patch_relevance.shape[1]
    ranking = torch.sort(patch_relevance, dim=1, descending=order == "most", stable=True).indices
    rank = torch.empty_like(ranking)
    rank.scatter_(1, ranking, torch.arange(n_patches, device=ranking.device).expand_as(ranking))
    pixel_rank = torch.gather(rank, 1, pixel_to_patch.expand(x.shape[0], -1))
    return pixel_rank.view(x.shape[0], *_pattern_shape(x)), n_patches


def _patches(relevance: torch.Tensor, x: torch.Tensor, patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed relevance per patch ``[B, P]`` and, per pixel of the pattern, its patch index ``[1, pixels]``."""
    if relevance.dim() == 4:
        relevance = relevance.sum(1)
    shape = _pattern_shape(x)
    grids = [torch.arange(size, device=relevance.device) // patch_size for size in shape]
    counts = [math.ceil(size / patch_size) for size in shape]
    if len(shape) == 2:
        index = grids[0][:, None] * counts[1] + grids[1][None, :]
    else:
        index = grids[0]
    index = index.reshape(1, -1)
    n_patches = math.prod(counts)
    summed = torch.zeros(relevance.shape[0], n_patches, dtype=relevance.dtype, device=relevance.device)
    summed.index_add_(1, index[0], relevance.reshape(relevance.shape[0], -1))
    return summed, index


def _baseline(x: torch.Tensor, baseline: Baseline, blur_sigma: float) -> torch.Tensor:
    """The values replaced patches take, shaped like x."""
    if not x.is_floating_point():
        if isinstance(baseline, int) and not isinstance(baseline, bool):
            return torch.full_like(x, baseline)
        raise InputError(
            f"pixel_flipping: integer inputs (token ids) need an integer baseline such as the pad or mask token id, "
            f"got {baseline!r}"
        )
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if baseline == "mean":
        dims = tuple(range(x.dim() - 2, x.dim())) if x.dim() > 2 else (1,)
        return x.mean(dim=dims, keepdim=True).expand_as(x)
    if baseline == "blur":
        if x.dim() == 2:
            raise InputError("pixel_flipping: baseline 'blur' needs images [B, H, W] or [B, C, H, W]; use 'mean' or a number")
        return _gaussian_blur(x, blur_sigma)
    raise InputError(f"pixel_flipping: baseline must be 'mean', 'blur' or a number, got {baseline!r}")


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur over the last two axes with replicated borders (kernel radius 3 sigma)."""
    if sigma <= 0:
        raise InputError(f"pixel_flipping: blur_sigma must be > 0, got {sigma}")
    height, width = x.shape[-2:]
    radius = math.ceil(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    planes = x.reshape(-1, 1, height, width)
    planes = torch.nn.functional.pad(planes, (radius, radius, radius, radius), mode="replicate")
    planes = torch.nn.functional.conv2d(planes, kernel.view(1, 1, 1, -1))
    planes = torch.nn.functional.conv2d(planes, kernel.view(1, 1, -1, 1))
    return planes.reshape(x.shape)


def _targets(target: Target, batch: int) -> torch.Tensor:
    """Per-sample target indices ``[B]`` from one index or one per sample."""
    targets = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    if targets.numel() == 1:
        targets = targets.expand(batch)
    if targets.numel() != batch:
        raise InputError(f"pixel_flipping: got {targets.numel()} targets for a batch of {batch}; give one or one per sample")
    return targets


def _select(output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The target logit of each sample from a ``[B, classes]`` output."""
    if output.dim() != 2 or output.shape[0] != targets.shape[0]:
        raise InputError(f"pixel_flipping: function must return [B, classes] logits, got {tuple(output.shape)}")
    if (targets < 0).any() or (targets >= output.shape[1]).any():
        raise InputError(f"pixel_flipping: target {targets.tolist()} out of range for {output.shape[1]} classes")
    return output.gather(1, targets[:, None].to(output.device))[:, 0]
