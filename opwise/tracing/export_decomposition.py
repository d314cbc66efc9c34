"""`ExportedProgram.run_decompositions` without overriding every composite operator on each call.

torch's own call lists every CompositeImplicitAutograd operator (500+), then overrides each one's kernel for the
duration of the retrace, nearly all of them with the kernel they already have: two thirds of the time tracing a
CIFAR conv net takes. `decompose` splits the table once per operator registry (`decompositions.registry_key`)
and overrides only the composite operators treated otherwise than by their own kernel: those kept whole and
those given a Python decomposition (attention, a few of torch's). The rest decompose through their own kernel,
which is what the override would have run. Where torch lacks the private functions this needs (another
version), it falls back to the public call.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import torch

from opwise.tracing.decompositions import export_table, registry_key

try:
    from torch._export.utils import _get_decomp_for_cia
    from torch.export.exported_program import (
        _decompose_exported_program,
        _disable_prexisiting_fake_mode,
        _split_decomp_table_to_cia_and_python_decomp,
    )
except ImportError:  # another torch: the public call
    _decompose_exported_program = None

_ARGUMENTS = {"cia_to_decomp", "python_decomp_table", "joint_loss_index", "decompose_custom_triton_ops"}

#: (registry key, composite operators to override, the other decompositions) of the last split
_SPLIT: tuple[tuple[int, int], dict, dict] | None = None


def _private_call_available() -> bool:
    return _decompose_exported_program is not None and _ARGUMENTS <= set(
        inspect.signature(_decompose_exported_program).parameters
    )


def _same_kernel(decomposition: Callable, own: Callable) -> bool:
    """Whether `decomposition` is the operator's own composite kernel (`_get_decomp_for_cia` wraps it in a new
    partial of a new closure on every call, so functions are compared by code)."""
    if decomposition is own:
        return True
    if not (isinstance(decomposition, functools.partial) and isinstance(own, functools.partial)):
        return False
    code = getattr(decomposition.func, "__code__", decomposition.func)
    return (
        code is getattr(own.func, "__code__", own.func)
        and decomposition.args == own.args
        and decomposition.keywords == own.keywords
    )


def _split() -> tuple[dict, dict]:
    """(composite operators whose kernel must be overridden, the post-autograd decompositions), rebuilt only when
    an operator or a decomposition has been registered since the last split."""
    global _SPLIT
    key = registry_key()
    if _SPLIT is None or _SPLIT[0] != key:
        composite, others = _split_decomp_table_to_cia_and_python_decomp(export_table())
        overridden = {op: f for op, f in composite.items() if not _same_kernel(f, _get_decomp_for_cia(op))}
        _SPLIT = (key, overridden, others)
    return _SPLIT[1], _SPLIT[2]


def decompose(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """`program.run_decompositions(export_table())`, the same graph, without the per-call override of every
    composite operator.

    >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(18, 2))
    >>> program = torch.export.export(model, (torch.randn(1, 1, 5, 5),))
    >>> [str(n.target) for n in decompose(program).graph.nodes if n.op == "call_function"]
    ['aten.convolution.default', 'aten.view.default', 'aten.linear.default']
    """
    if not _private_call_available():
        return program.run_decompositions(export_table())
    overridden, others = _split()
    return _disable_prexisiting_fake_mode(_decompose_exported_program)(
        program,
        cia_to_decomp=dict(overridden),
        python_decomp_table=dict(others),
        joint_loss_index=None,
        decompose_custom_triton_ops=False,
    )
