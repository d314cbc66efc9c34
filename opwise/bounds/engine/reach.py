"""Which positions of each node the output specifications can reach: only their intervals need CROWN.

A specification that reads a few outputs of a fully convolutional net (a detector's anchor, a pixel of a
segmentation) has nonzero coefficients on each layer only inside its receptive field. Intermediate bounds
outside it are never used by a relaxation whose coefficient is nonzero, so refining them is wasted work: on
VNN-COMP 2023's TinyYOLO (5 outputs of 21,125 read) most of a CROWN pass bounded the deepest layer's 10,816
neurons, of which the specification reaches 1,600.

The reach is found by carrying random positive coefficients back from the specifications (one row for all
of them): linear transfers by their own backward, elementwise relaxations as the identity, and every other
transfer by reaching all of its inputs. A position reached only through exactly cancelling coefficients is
missed with probability zero, and a missed position keeps its interval-propagation bounds: sound, only looser.
"""

from __future__ import annotations

import torch
from torch import fx

from opwise.bounds.transfers.nonlinear import Elementwise


def reach(engine, target: fx.Node, specs: torch.Tensor) -> dict[fx.Node, torch.Tensor]:
    """Per ancestor of `target`, a bool mask of the node's shape: the positions some row of `specs`
    ([specs, *target shape]) reaches. Nodes absent from the result are not reached at all.

    >>> import torch, opwise
    >>> from opwise.bounds.engine import BoundPropagation
    >>> from opwise.bounds.input_set import InputSet
    >>> model = torch.nn.Sequential(torch.nn.Conv1d(1, 1, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv1d(1, 1, 3, padding=1))
    >>> graph = opwise.trace(model, torch.zeros(1, 1, 8))
    >>> engine = BoundPropagation(graph, InputSet.ball(torch.zeros(1, 1, 8), 0.1))
    >>> rows = torch.zeros(1, 1, 1, 8); rows[..., 0] = 1.0
    >>> masks = reach(engine, graph.output, rows)
    >>> [int(mask.sum()) for node, mask in masks.items() if node.name.startswith("relu")]
    [2]
    """
    generator = torch.Generator(device=specs.device).manual_seed(0)
    touched = (specs != 0).any(0, keepdim=True)
    values = torch.rand(touched.shape, generator=generator, device=specs.device, dtype=specs.dtype) + 1.0
    coefficients = {target: values * touched}
    reached = {}
    for node in reversed(engine.ancestors(target)):
        coefficient = coefficients.pop(node, None)
        if coefficient is None:
            continue
        reached[node] = coefficient[0] != 0
        if node is engine.input_node:
            continue
        step = engine.step(node)
        parts = _parts(engine.transfer(node), step, coefficient)
        for parent, part in zip(step.inputs, parts):
            if part is not None:
                part = part.abs()
                coefficients[parent] = coefficients[parent] + part if parent in coefficients else part
    return reached


def _parts(transfer, step, coefficient: torch.Tensor) -> list[torch.Tensor | None]:
    """The coefficients a step passes to its inputs: by its backward where it is linear in them (it needs no
    interval), unchanged through an elementwise relaxation, and everywhere (ones) otherwise."""
    if isinstance(transfer, Elementwise) and tuple(step.shapes[0]) == tuple(coefficient.shape[1:]):
        return [coefficient]
    needs = getattr(transfer, "needs_bounds", None)
    if needs is not None and not needs(step):
        try:
            parts, _ = transfer.backward(step, coefficient)
            return list(parts)
        except Exception:  # a transfer whose backward needs more than A: reach everything it reads
            pass
    return [coefficient.new_ones(1, *shape) for shape in step.shapes]
