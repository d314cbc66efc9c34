"""Choosing the one output tensor a Graph returns from a model's (possibly structured) output."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import torch.utils._pytree as pytree

OutputChoice = str | int | Callable[[Any], Any] | None


def _first(structure: Any) -> Any:
    if isinstance(structure, Mapping) or hasattr(structure, "keys"):
        keys = list(structure.keys())
        return structure["logits"] if "logits" in keys else structure[keys[0]]
    if isinstance(structure, (tuple, list)):
        return structure[0]
    return structure


def select_output(structure: Any, output: OutputChoice) -> Any:
    """Pick a leaf: None -> `logits` or the first entry; a str -> key or attribute; an int -> index.

    `structure` is the model output with every tensor replaced by its flat index (an int leaf).
    """
    if callable(output):
        chosen = output(structure)
    elif output is None:
        chosen = structure
        while not isinstance(chosen, int):
            chosen = _first(chosen)
    elif isinstance(output, str):
        if hasattr(structure, "keys") and output in structure.keys():
            chosen = structure[output]
        elif hasattr(structure, output):
            chosen = getattr(structure, output)
        else:
            raise ValueError(f"output={output!r} is not in the model's outputs {list(_keys(structure))}")
    else:
        chosen = structure[output]
    if not isinstance(chosen, int):
        raise ValueError("output= must pick exactly one tensor of the model's outputs")
    return chosen


def _keys(structure: Any) -> list[str]:
    return list(structure.keys()) if hasattr(structure, "keys") else []


def index_structure(out_spec: pytree.TreeSpec) -> Any:
    """The output structure with flat indices as leaves."""
    return pytree.tree_unflatten(list(range(out_spec.num_leaves)), out_spec)
