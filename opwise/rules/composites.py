"""Composites: data saying which rule each node gets, by module name, module type, first layer or operator.

As in Zennit, a composite is a mapping, not a code path; write your own by building a `Composite`.
Lookup order for a node: module-name patterns, module types, first layer, operator keys (overload,
then packet), then the registry's default for the operator.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import re
from typing import Any

import torch
from torch import fx

from opwise.rules.linear import AlphaBeta, Constant, Epsilon, Flat, Gamma, LinearRule, ZBox, ZPlus
from opwise.tracing.graph import Graph, op_packet_key

CONVOLUTION = "aten.convolution.default"
DENSE = ("aten.linear.default", "aten.addmm.default")
WEIGHTED = (CONVOLUTION, *DENSE)


@dataclasses.dataclass
class Composite:
    """Which rule each node gets.

    >>> comp = Composite(by_operator={"aten.linear": Epsilon(epsilon=0.1)}, first=Flat())
    >>> sorted(comp.by_operator)
    ['aten.linear']
    """

    by_operator: dict[str, Any] = dataclasses.field(default_factory=dict)
    by_module_type: dict[type, Any] = dataclasses.field(default_factory=dict)
    by_module_name: dict[str, Any] = dataclasses.field(default_factory=dict)
    first: LinearRule | None = None
    canonizers: tuple = ()

    def assign(self, graph: Graph, model: torch.nn.Module | None = None) -> dict[str, Any]:
        """Node name -> chosen rule object, for every input-dependent node that has a choice."""
        firsts = first_layers(graph) if self.first is not None else set()
        chosen = {}
        for node in graph.call_nodes():
            if not graph.depends_on_input(node):
                continue
            rule = self._lookup(graph, node, model, node.name in firsts)
            if rule is not None:
                chosen[node.name] = rule
        return chosen

    def _lookup(self, graph: Graph, node: fx.Node, model, is_first: bool):
        info = graph.info(node)
        path = info.module_path or ""
        for pattern, rule in self.by_module_name.items():
            if path and fnmatch.fnmatchcase(path, pattern):
                return rule
        if self.by_module_type and model is not None and path:
            try:
                module = model.get_submodule(path)
            except AttributeError:
                module = None
            for kind, rule in self.by_module_type.items():
                if isinstance(module, kind):
                    return rule
        if is_first:
            return self.first
        return self.by_operator.get(info.op, self.by_operator.get(op_packet_key(info.op)))


def first_layers(graph: Graph) -> set[str]:
    """Weighted linear nodes (convolution, linear) reached from an input through no other such node."""
    firsts, behind = set(), set()
    for node in graph.call_nodes():
        upstream = any(arg.name in behind for arg in node.all_input_nodes)
        if graph.info(node).op in WEIGHTED and graph.depends_on_input(node):
            if not upstream:
                firsts.add(node.name)
            behind.add(node.name)
        elif upstream:
            behind.add(node.name)
    return firsts


def _merge_batch_norm():
    from opwise.rules.canonizers import MergeBatchNorm

    return (MergeBatchNorm(),)


def epsilon_plus(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """ZPlus on convolutions, Epsilon on dense layers (Zennit's EpsilonPlus)."""
    return Composite(
        by_operator={CONVOLUTION: ZPlus(stabilizer), **{k: Epsilon(epsilon) for k in DENSE}},
        canonizers=_merge_batch_norm(),
    )


def epsilon_plus_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """EpsilonPlus with Flat on the first layer (Zennit's EpsilonPlusFlat)."""
    return dataclasses.replace(epsilon_plus(epsilon, stabilizer), first=Flat(stabilizer))


def epsilon_alpha2_beta1(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """AlphaBeta(2, 1) on convolutions, Epsilon on dense layers."""
    return Composite(
        by_operator={CONVOLUTION: AlphaBeta(2.0, 1.0, stabilizer), **{k: Epsilon(epsilon) for k in DENSE}},
        canonizers=_merge_batch_norm(),
    )


def epsilon_gamma_box(low=-3.0, high=3.0, epsilon: float = 1e-6, gamma: float = 0.25, stabilizer: float = 1e-6):
    """ZBox on the first convolution, Gamma on the others, Epsilon on dense layers (Zennit's EpsilonGammaBox)."""
    return Composite(
        by_operator={CONVOLUTION: Gamma(gamma, stabilizer), **{k: Epsilon(epsilon) for k in DENSE}},
        first=ZBox(low, high, stabilizer),
        canonizers=_merge_batch_norm(),
    )


def epsilon(epsilon: float = 1e-6) -> Composite:
    """Epsilon everywhere: with epsilon→0 and zero biases, relevance is conserved exactly."""
    return Composite(by_operator={k: Epsilon(epsilon) for k in WEIGHTED}, canonizers=_merge_batch_norm())


def attn_lrp(epsilon: float = 1e-6) -> Composite:
    """AttnLRP (AH-LRP) for transformers: Epsilon on linear layers; softmax, matmul, norms by the registry."""
    return Composite(by_operator={k: Epsilon(epsilon) for k in WEIGHTED})


def cp_lrp(epsilon: float = 1e-6) -> Composite:
    """CP-LRP: as AttnLRP, but attention weights (softmax outputs) are constants, so only values get relevance."""
    base = attn_lrp(epsilon)
    return dataclasses.replace(base, by_operator={**base.by_operator, "aten._softmax": Constant()})


COMPOSITES = {
    "epsilon": epsilon,
    "epsilon-plus": epsilon_plus,
    "epsilon-plus-flat": epsilon_plus_flat,
    "epsilon-alpha2-beta1": epsilon_alpha2_beta1,
    "epsilon-gamma-box": epsilon_gamma_box,
    "attn-lrp": attn_lrp,
    "cp-lrp": cp_lrp,
}

# Names users bring from other tools, after `composite_name`'s normalisation (Zennit's class and snake_case
# names normalise to ours by themselves: EpsilonPlusFlat, epsilon_plus_flat -> epsilon-plus-flat).
COMPOSITE_ALIASES = {
    "attnlrp": "attn-lrp",
    "attention-lrp": "attn-lrp",
    "cplrp": "cp-lrp",
    "epsilon-alpha-2-beta-1": "epsilon-alpha2-beta1",
}


def composite_name(name: str) -> str:
    """The registered name for a composite name as users type it: Zennit's class or snake_case names, any
    case, with a "did you mean" on typos.

    >>> composite_name("EpsilonPlusFlat"), composite_name("epsilon_gamma_box"), composite_name("AttnLRP")
    ('epsilon-plus-flat', 'epsilon-gamma-box', 'attn-lrp')
    >>> composite_name("epsilon-plus-flt")
    Traceback (most recent call last):
    ...
    opwise.errors.InputError: unknown composite 'epsilon-plus-flt' (did you mean 'epsilon-plus-flat'?); choose one of ...
    """
    from opwise.errors import InputError, did_you_mean

    text = str(name).strip()
    normal = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", text).lower().replace("_", "-").replace(" ", "-")
    normal = COMPOSITE_ALIASES.get(normal, normal)
    if normal in COMPOSITES:
        return normal
    if not text:
        raise InputError(f"the composite name is empty; choose one of {', '.join(COMPOSITES)}")
    raise InputError(f"unknown composite {name!r}{did_you_mean(normal, COMPOSITES)}; "
                     f"choose one of {', '.join(COMPOSITES)} or pass a Composite")


def get_composite(composite: str | Composite, **kwargs: Any) -> Composite:
    """A composite by name (`COMPOSITES`) with keyword parameters, or the given one unchanged.

    >>> get_composite("epsilon-plus-flat").first
    Flat(stabilizer=1e-06)
    """
    from opwise.errors import InputError

    if isinstance(composite, Composite):
        if kwargs:
            raise InputError(f"parameters {sorted(kwargs)} apply to composites named by a string; a Composite "
                             "object carries its own (set them on its rules)")
        return composite
    composite = composite_name(composite)
    accepted = inspect.signature(COMPOSITES[composite]).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise InputError(f"composite {composite!r} takes no parameter {', '.join(unknown)}; "
                         f"it takes {', '.join(accepted) or 'none'}")
    return COMPOSITES[composite](**kwargs)
