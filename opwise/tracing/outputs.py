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


def _step(structure: Any, part: str) -> Any:
    if hasattr(structure, "keys") and part in structure.keys():
        return structure[part]
    if isinstance(structure, (tuple, list)) and part.lstrip("-").isdigit() and -len(structure) <= int(part) < len(structure):
        return structure[int(part)]
    if not isinstance(structure, (Mapping, tuple, list, int)) and hasattr(structure, part):
        return getattr(structure, part)
    raise ValueError(f"output= part {part!r} is not in the model's outputs {_keys(structure)}")


def select_output(structure: Any, output: OutputChoice) -> Any:
    """Pick a leaf: None -> `logits` or the first entry; a str -> key or attribute, with dots for nested
    outputs ("hidden_states.2"); an int -> index.

    `structure` is the model output with every tensor replaced by its flat index (an int leaf).

    >>> outputs = {"logits": 0, "hidden_states": (1, 2, 3)}
    >>> select_output(outputs, None), select_output(outputs, "hidden_states.-1")
    (0, 3)
    """
    if callable(output):
        chosen = output(structure)
    elif output is None:
        chosen = structure
        while not isinstance(chosen, int):
            chosen = _first(chosen)
    elif isinstance(output, str):
        chosen = structure
        for part in output.split("."):
            chosen = _step(chosen, part)
    else:
        chosen = structure[output]
    if not isinstance(chosen, int):
        raise ValueError("output= must pick exactly one tensor of the model's outputs")
    return chosen


def _keys(structure: Any) -> list[str]:
    if hasattr(structure, "keys"):
        return list(structure.keys())
    return [str(i) for i in range(len(structure))] if isinstance(structure, (tuple, list)) else []


def index_structure(out_spec: pytree.TreeSpec) -> Any:
    """The output structure with flat indices as leaves."""
    return pytree.tree_unflatten(list(range(out_spec.num_leaves)), out_spec)
