"""A Captum-shaped front door: `LRP(model).attribute(inputs, target=...)`."""

from __future__ import annotations

from typing import Any

import torch

from opwise.attribution.explain import Target, explain


class LRP:
    """For people coming from Captum: same call shape, opwise's operation-level rules underneath.

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    >>> LRP(model, composite="epsilon").attribute(torch.randn(2, 4), target=0).shape
    torch.Size([2, 4])
    """

    def __init__(self, model: torch.nn.Module, composite: str = "epsilon-plus-flat", **options: Any):
        self.model, self.composite, self.options = model, composite, options

    def attribute(
        self,
        inputs: torch.Tensor | tuple,
        target: Target = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
    ):
        """Relevance shaped like `inputs` (a tuple when `inputs` is a tuple), as Captum returns it; with
        `return_convergence_delta=True`, also Captum's delta per sample: the relevance total minus the
        explained output (zero when relevance is conserved).

        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3, bias=False))
        >>> relevance, delta = LRP(model, composite="epsilon").attribute(torch.rand(2, 4), target=1,
        ...                                                           return_convergence_delta=True)
        >>> relevance.shape, delta.shape, bool(delta.abs().max() < 1e-4)
        (torch.Size([2, 4]), torch.Size([2]), True)
        """
        single = isinstance(inputs, torch.Tensor)
        tensors = (inputs,) if single else tuple(inputs)
        extra = () if additional_forward_args is None else tuple(additional_forward_args)
        result = explain(self.model, *tensors, *extra, target=target, composite=self.composite, **self.options)
        relevance = result.relevance if isinstance(result.relevance, tuple) else (result.relevance,)
        attributions = relevance[0] if single else relevance[: len(tensors)]
        if not return_convergence_delta:
            return attributions
        total, explained = result.conservation.unbind(1)
        return attributions, total - explained
