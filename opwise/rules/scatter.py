"""Op rules for writes into tensors: in-place slice writes (`copy`), `index_put`, `scatter` and their sums.

A write that replaces values (`copy`, `index_put`, `scatter`, `masked_scatter`) routes relevance by provenance: each output element's relevance goes to the
input element it holds (none for a constant written there), so relevance is conserved even where the op
has no derivative (`aten.copy`) or repeated indices make its vjp credit every duplicate. A write that adds
(`index_put(accumulate=True)`, which `index_add` becomes, `scatter_add`, `scatter_reduce` by sum or mean)
is a sum of its explained terms and splits relevance in proportion to them, as `add` does.
"""

from __future__ import annotations

import torch

from opwise.errors import UnsupportedOperation
from opwise.rules.elementwise import SUM_EPSILON
from opwise.rules.operation import stabilize
from opwise.rules.registry import relevance_rule
from opwise.tracing.provenance import provenance

#: per operator packet: the argument positions holding the values it moves (the rest index or configure)
DATA_ARGUMENTS = {"aten.copy": (0, 1), "aten.index_put": (0, 2), "aten.scatter": (0, 3),
                  "aten.scatter_add": (0, 3), "aten.scatter_reduce": (0, 3), "aten.masked_scatter": (0, 2)}


def _packet(call) -> str:
    return f"aten.{call.target._opname}"


def accumulates(target, args: tuple, kwargs: dict) -> bool:
    """Whether a write adds into the tensor rather than replacing values (an error for reductions that are not
    sums: a rule would have to know which element won a max).

    >>> aten = torch.ops.aten
    >>> accumulates(aten.index_put.default, (None, None, None, True), {}), accumulates(aten.copy.default, (), {})
    (True, False)
    """
    name = target._opname
    if name == "index_put":
        return bool(args[3] if len(args) > 3 else kwargs.get("accumulate", False))
    if name == "scatter_reduce":
        reduce = args[4] if len(args) > 4 else kwargs["reduce"]
        if reduce not in ("sum", "mean"):
            raise UnsupportedOperation(str(target), f"aten.scatter_reduce(reduce={reduce!r})",
                                       hint="only the linear reductions 'sum' and 'mean' are supported")
        return True
    return name == "scatter_add"


def _data(call) -> list[int]:
    return [i for i in DATA_ARGUMENTS[_packet(call)] if i < len(call.args) and isinstance(call.arg(i), torch.Tensor)]


@relevance_rule(*DATA_ARGUMENTS)
def write(call, relevance):
    """Route by provenance (replacing writes) or split in proportion to the terms (accumulating writes)."""
    args = [call.arg(i) for i in range(len(call.args))]
    data = _data(call)
    explained = [i for i in data if call.explained[i]]
    result: list = [None] * len(call.args)
    if accumulates(call.target, args, call.kwargs):
        for i, share in zip(explained, _proportional(call, args, explained, relevance)):
            result[i] = share
        return result
    key = ("provenance", tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor)))
    if key not in call.cache:
        call.cache.clear()
        call.cache[key] = provenance(call.target, args, call.kwargs, data)
    shares = call.cache[key].scatter(relevance.reshape(-1))
    for i, share in zip(data, shares):
        if call.explained[i]:
            result[i] = share.to(relevance.dtype)
    return result


def _proportional(call, args: list, explained: list[int], relevance: torch.Tensor) -> list[torch.Tensor]:
    """R_i = x_i ⊙ vjp_i(R / (z ± ε)), z the explained terms' sum (the output less what constants wrote)."""
    sources = [args[i].detach().requires_grad_() for i in explained]

    def run(*values):
        full = list(args)
        for i, value in zip(explained, values):
            full[i] = value
        return call.target(*full, **call.kwargs)

    with torch.enable_grad():
        output = run(*sources)
        terms = output - run(*(torch.zeros_like(s) for s in sources)).detach()
        grads = torch.autograd.grad(output, sources, relevance / stabilize(terms.detach(), SUM_EPSILON))
    return [source.detach() * grad for source, grad in zip(sources, grads)]
