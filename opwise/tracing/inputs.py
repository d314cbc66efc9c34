"""Flattening of model inputs: positional and keyword arguments to the graph's tensor placeholders."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import torch
import torch.utils._pytree as pytree


@dataclasses.dataclass(frozen=True)
class InputLayout:
    """Where each graph placeholder comes from, and which are explained.

    Positional tensor arguments are explained (relevance, bounds) by default; keyword tensors
    (attention masks, position ids) are constants unless named in `explain`.
    """

    names: tuple[str, ...]
    explained: tuple[bool, ...]
    spec: Any
    tensor_positions: tuple[int, ...]
    leaves: tuple[Any, ...]
    defaults: tuple[tuple[str, Any], ...] = ()  # keyword arguments the tracer added (filled in when absent)

    def flatten(self, args: Sequence[Any], kwargs: dict[str, Any]) -> list[torch.Tensor]:
        """The graph's positional inputs for `model(*args, **kwargs)`; keyword order does not matter.

        >>> import torch
        >>> layout = layout_of((torch.zeros(1),), {"mask": torch.ones(1), "scale": 2}, None)
        >>> [t.tolist() for t in layout.flatten((torch.zeros(1),), {"scale": 2, "mask": torch.ones(1)})]
        [[0.0], [1.0]]
        """
        kwargs = {**dict(self.defaults), **kwargs}
        traced_keys = list(self.spec.child(1).context)
        if set(kwargs) == set(traced_keys):
            kwargs = {key: kwargs[key] for key in traced_keys}
        leaves, spec = pytree.tree_flatten((tuple(args), dict(kwargs)))
        if spec != self.spec:
            raise ValueError("inputs are not structured like the traced example inputs")
        return [leaves[i] for i in self.tensor_positions]

    def with_batch(self, batch: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The example (args, kwargs) for `batch` samples: every tensor whose leading dimension is the explained
        inputs' batch gets its first sample repeated (real values, so token ids and masks stay valid).

        >>> import torch
        >>> layout = layout_of((torch.arange(6.0).reshape(2, 3),), {"mask": torch.ones(2, 3), "scale": 2}, None)
        >>> args, kwargs = layout.with_batch(3)
        >>> args[0].tolist(), tuple(kwargs["mask"].shape), kwargs["scale"]
        ([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [0.0, 1.0, 2.0]], (3, 3), 2)
        """
        explained = [self.leaves[p] for p, e in zip(self.tensor_positions, self.explained) if e]
        old = explained[0].shape[0] if explained and explained[0].dim() else None
        leaves = [
            leaf[:1].expand(batch, *leaf.shape[1:]).clone()
            if isinstance(leaf, torch.Tensor) and leaf.dim() and leaf.shape[0] == old else leaf
            for leaf in self.leaves
        ]
        args, kwargs = pytree.tree_unflatten(leaves, self.spec)
        return tuple(args), dict(kwargs)


def _leaf_name(path) -> str:
    """`arg0`, `arg1.0` for positional leaves; `attention_mask` for keyword leaves."""
    head = path[1]
    base = f"arg{head.idx}" if path[0].idx == 0 else str(head.key)
    return ".".join([base] + [str(getattr(k, "key", getattr(k, "idx", k))) for k in path[2:]])


def layout_of(args: Sequence[Any], kwargs: dict[str, Any], explain: Sequence[str] | None) -> InputLayout:
    with_paths, spec = pytree.tree_flatten_with_path((tuple(args), dict(kwargs)))
    names, explained, positions = [], [], []
    for position, (path, leaf) in enumerate(with_paths):
        if not isinstance(leaf, torch.Tensor):
            continue
        is_positional = path[0].idx == 0
        name = _leaf_name(path)
        names.append(name)
        explained.append(name in explain if explain is not None else is_positional)
        positions.append(position)
    if explain is not None:
        unknown = set(explain) - set(names)
        if unknown:
            raise ValueError(f"explain names {sorted(unknown)} are not tensor inputs; inputs are {names}")
    if not any(explained):
        raise ValueError("no input is explained: pass the explained tensor positionally or name it in explain=")
    return InputLayout(tuple(names), tuple(explained), spec, tuple(positions), tuple(leaf for _, leaf in with_paths))
