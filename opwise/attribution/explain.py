"""`explain(model, *inputs, target=...)`: layer-wise relevance propagation on the operation-level graph."""

from __future__ import annotations

import collections
import dataclasses
import warnings
import weakref
from typing import Any, Callable, Sequence

import torch

from opwise.attribution.plan import Plan
from opwise.errors import InputError
from opwise.rules import Composite, get_composite
from opwise.tracing import Graph, trace
from opwise.tracing.fidelity import check_fidelity
from opwise.tracing.precision import as_float32, float32_inputs, refuse_narrow_graph

Target = int | Sequence[int] | torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None

#: graphs and plans of the models explained last, by id: (weak reference to the model, its cache). A cached graph
#: holds its model (to retrace it), so the cache keeps at most CACHED_MODELS models alive
_GRAPHS: "collections.OrderedDict[int, tuple[weakref.ref, dict]]" = collections.OrderedDict()
CACHED_MODELS = 4


@dataclasses.dataclass
class Explanation:
    """Relevance of each explained input, the output, the explained target and the conservation check.

    `relevance` has one tensor per explained input (shaped like it; for integer token inputs, one value
    per token), or the tensor itself when there is one explained input.
    """

    relevance: torch.Tensor | tuple[torch.Tensor, ...]
    output: torch.Tensor
    target: torch.Tensor
    explained_output: torch.Tensor
    plan: Plan = dataclasses.field(repr=False)
    _rerun: Callable[[str], torch.Tensor] = dataclasses.field(repr=False)

    @property
    def conservation(self) -> torch.Tensor:
        """Per sample: (sum of input relevance, explained output value), shape (batch, 2)."""
        relevances = self.relevance if isinstance(self.relevance, tuple) else (self.relevance,)
        total = sum(r.reshape(r.shape[0], -1).sum(1) for r in relevances)
        return torch.stack([total, self.explained_output], dim=1)

    def node_relevance(self, name: str) -> torch.Tensor:
        """Relevance arriving at graph node `name` (all its consumers summed), by one more relevance pass."""
        return self._rerun(name)


def explain(
    model: torch.nn.Module | Graph,
    *inputs: torch.Tensor,
    target: Target = None,
    composite: str | Composite = "epsilon-plus-flat",
    output: Any = None,
    keep: str | int = "all",
    internal_batch_size: int | None = None,
    **kwargs: Any,
) -> Explanation:
    """Explain `model(*inputs, **kwargs)` for `target` with LRP under `composite`.

    `target`: a class index, one index per sample, or a callable mapping the output to one scalar per
    sample (e.g. a token logit); default the highest-scoring output per sample. `keep` is the memory
    policy for activations ("all", "checkpoints" or a byte budget). Keyword tensors (masks) are constants.
    `internal_batch_size` (as in Captum) explains the batch that many samples at a time and joins the
    results: relevance is per sample, so the working memory shrinks with the chunk at about the same
    total time (for models that treat samples independently, as any model in eval mode does).

    >>> import torch, opwise
    >>> _ = torch.manual_seed(0); model = torch.nn.Sequential(torch.nn.Linear(4, 3, bias=False))
    >>> x = torch.randn(2, 4)
    >>> e = opwise.explain(model, x, target=1, composite="epsilon")
    >>> e.relevance.shape
    torch.Size([2, 4])
    >>> torch.allclose(e.conservation[:, 0], e.conservation[:, 1], atol=1e-5)
    True
    """
    _check_inputs(inputs)
    if isinstance(model, torch.nn.Module):
        model = as_float32(model, "explanations")
        inputs = float32_inputs(inputs)
        kwargs = dict(zip(kwargs, float32_inputs(tuple(kwargs.values()))))
    if internal_batch_size is not None:
        chunks = _chunks(model, inputs, kwargs, target, internal_batch_size)
        if chunks is not None:
            options = dict(composite=composite, output=output, keep=keep)
            return _joined([explain(model, *i, target=t, **options, **k) for i, t, k in chunks])
    composite_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _COMPOSITE_PARAMETERS}
    plan = _plan(model, inputs, kwargs, output, composite, composite_kwargs, keep)
    graph = plan.graph
    arguments = _arguments(graph, inputs, kwargs)
    explained = [i for i, e in enumerate(graph.explained) if e and arguments[i].is_floating_point()]
    if not explained and not plan.embeddings:
        raise InputError(
            "the explained inputs are integer and reach no nn.Embedding, so relevance has nowhere to land; explain a "
            "float input instead (for nn.EmbeddingBag, its per_sample_weights)")
    for i in explained:
        arguments[i] = arguments[i].detach().requires_grad_()

    def run(observe: frozenset):
        with torch.enable_grad():
            out = plan.run(arguments, observe)
            selected, chosen = _select(out, target)
            sources = [arguments[i] for i in explained] + [plan.taps[n] for n in plan.embeddings]
            watched = [plan.taps[n] for n in sorted(observe)]
            if not selected.requires_grad:
                raise InputError(_cut_message(graph))
            grads = torch.autograd.grad(selected, sources + watched, selected.detach(), allow_unused=True)
        plan.store.clear()
        return out.detach(), selected.detach(), chosen, grads[: len(sources)], grads[len(sources) :]

    out, selected, chosen, grads, _ = run(frozenset())
    if graph.strategy != "export" or not plan.fidelity_checked:
        # the graph's output of this pass against one forward pass of the model: on every call for graphs from
        # the make_fx fallback, once per plan for exported ones (export's guards refuse value-dependent Python)
        check_fidelity(lambda *_: out, model, *inputs, output=output, **kwargs)
        plan.fidelity_checked = True
    relevance = _input_relevance(graph, inputs, explained, plan, grads)
    _warn_if_broken(relevance, selected)

    def rerun(name: str) -> torch.Tensor:
        if name not in {n.name for n in graph.nodes}:
            raise InputError(f"no node named {name!r} in the graph; see `opwise trace` for node names")
        return run(frozenset([name]))[4][0]

    single = relevance[0] if len(relevance) == 1 else tuple(relevance)
    return Explanation(single, out, chosen, selected, plan, rerun)


def _chunks(model, inputs, kwargs, target: Target, size: int) -> list | None:
    """(inputs, target, kwargs) per chunk of `size` samples; None when the batch fits in one chunk.

    Tensors whose first axis is the batch are sliced (positional inputs, keyword masks), as are per-sample
    targets; a class index or a callable target applies to every chunk as it is.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InputError(f"internal_batch_size must be a positive integer, got {size!r}")
    batch = inputs[0].shape[0] if inputs[0].dim() else 1
    if batch <= size:
        return None
    if isinstance(model, Graph):
        raise InputError("internal_batch_size needs the model, not a traced Graph (each chunk size is traced once)")
    per_sample = None
    if target is not None and not callable(target):
        per_sample = torch.as_tensor(target).reshape(-1)
        per_sample = per_sample if per_sample.numel() == batch else None

    def cut(value: Any, start: int) -> Any:
        batched = isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == batch
        return value[start : start + size] if batched else value

    return [
        (
            [cut(t, start) for t in inputs],
            target if per_sample is None else per_sample[start : start + size],
            {k: cut(v, start) for k, v in kwargs.items()},
        )
        for start in range(0, batch, size)
    ]


def _joined(parts: list[Explanation]) -> Explanation:
    """One Explanation from those of consecutive chunks of the batch (the first chunk's plan)."""

    def cat(values: list) -> Any:
        if isinstance(values[0], tuple):
            return tuple(torch.cat(group) for group in zip(*values))
        return torch.cat(values)

    def rerun(name: str) -> torch.Tensor:
        return torch.cat([part.node_relevance(name) for part in parts])

    return Explanation(
        cat([p.relevance for p in parts]), cat([p.output for p in parts]), cat([p.target for p in parts]),
        cat([p.explained_output for p in parts]), parts[0].plan, rerun,
    )


_COMPOSITE_PARAMETERS = ("epsilon", "stabilizer", "gamma", "low", "high")


def _plan(model, inputs, kwargs, output, composite, composite_kwargs, keep) -> Plan:
    """The Graph and Plan for these input shapes, built once and cached on the model."""
    key_composite = composite if isinstance(composite, str) else id(composite)
    shapes = tuple((tuple(t.shape), t.dtype) for t in inputs) + tuple(
        (k, tuple(v.shape)) for k, v in kwargs.items() if isinstance(v, torch.Tensor)
    )
    if isinstance(model, Graph):
        refuse_narrow_graph(model, "explanations")
        cache, graph_key = model.__dict__.setdefault("_relevance_plans", {}), None
        graph = model
    elif isinstance(model, torch.nn.Module):
        cache = _model_cache(model)
        state = _model_state(model)
        if cache.get("state") != state:  # moved, weights or modules changed: trace and plan again
            cache.clear()
            cache["state"] = state
        graph_key = ("graph", shapes, repr(output))
        if graph_key not in cache:
            cache[graph_key] = trace(model, *inputs, output=output, **kwargs)
        graph = cache[graph_key]
    else:
        raise InputError(f"expected a torch.nn.Module or an opwise Graph, got {type(model).__name__}")
    key = ("plan", graph_key, key_composite, tuple(sorted(composite_kwargs.items(), key=str)), repr(keep))
    if key not in cache:
        chosen = get_composite(composite, **composite_kwargs)
        cache[key] = Plan(graph, chosen, model if isinstance(model, torch.nn.Module) else None, keep)
    return cache[key]


def _model_cache(model: torch.nn.Module) -> dict:
    """The cache of `model`'s graphs and plans (a new one for a model not among the last CACHED_MODELS)."""
    entry = _GRAPHS.get(id(model))
    if entry is None or entry[0]() is not model:  # new, or another model that reused a freed model's id
        entry = _GRAPHS[id(model)] = (weakref.ref(model), {})
    _GRAPHS.move_to_end(id(model))
    while len(_GRAPHS) > CACHED_MODELS:
        _GRAPHS.popitem(last=False)
    return entry[1]


#: values of a module's own attributes that change what it computes (slopes, eps, dims, flags)
_PLAIN = (bool, int, float, str, type(None))


def _model_state(model: torch.nn.Module) -> tuple:
    """What a cached graph and plan of `model` depend on, as far as it can be read without running the model:
    every parameter's and buffer's device, storage and in-place version counter (`model.to(...)`,
    `load_state_dict`, a training step), and every submodule's identity, class, mode, hooks and plain attributes
    (a swapped layer, `leaky_relu.negative_slope = 0.2`, `model.train()`). A change inside `forward`'s code or in
    global state is not seen: explain a fresh model object then."""
    tensors = tuple((t.device, t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers()))
    modules = tuple(
        (name, id(module), type(module), module.training, len(module._forward_hooks), len(module._forward_pre_hooks),
         tuple((key, value) for key, value in vars(module).items()
               if isinstance(value, _PLAIN) or (isinstance(value, tuple) and all(isinstance(v, _PLAIN) for v in value))))
        for name, module in model.named_modules())
    return tensors, modules


def _cut_message(graph: Graph) -> str:
    """Why the explained output does not depend differentiably on the explained inputs: the integer-valued nodes."""
    cuts = [node.name for node in graph.call_nodes() if graph.depends_on_input(node)
            and isinstance(node.meta.get("val"), torch.Tensor) and not node.meta["val"].is_floating_point()]
    where = f" (integer-valued on the way: {', '.join(cuts[:3])})" if cuts else ""
    return ("the explained output does not depend differentiably on the explained inputs" + where + ", so no "
            "relevance reaches them; explain a model whose path from input to output stays floating point")


def _check_inputs(inputs: Sequence[Any]) -> None:
    if not inputs:
        raise InputError("explain needs at least one input tensor")
    for index, tensor in enumerate(inputs):
        if not isinstance(tensor, torch.Tensor):
            raise InputError(f"input {index} is a {type(tensor).__name__}, expected a torch.Tensor")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise InputError(f"input {index} contains NaN or infinite values; clean or clip the input first")


def _arguments(graph: Graph, inputs, kwargs) -> list[torch.Tensor]:
    """The graph's placeholders in order: positional inputs, then keyword tensors (as traced)."""
    values = list(inputs) + [v for v in kwargs.values() if isinstance(v, torch.Tensor)]
    if len(values) != len(graph.input_nodes):
        raise InputError(f"the graph takes {len(graph.input_nodes)} tensor inputs, got {len(values)}")
    for node, value in zip(graph.input_nodes, values):
        expected = graph.info(node).shape
        if expected is not None and tuple(value.shape) != expected:
            hint = "pass the model instead of the graph, or retrace it with graph.retrace(...)"
            if graph.strategy == "onnx":
                hint = "import the file at these shapes (load_onnx(path, batch_size=N) or graph.for_batch(N))"
            raise InputError(
                f"input '{node.name}' has shape {tuple(value.shape)} but the graph was traced for {expected}; {hint}"
            )
    return [v.detach() for v in values]


def _select(out: torch.Tensor, target: Target) -> tuple[torch.Tensor, torch.Tensor]:
    """One explained scalar per sample (with autograd), and the target used."""
    if callable(target):
        selected = target(out)
        if selected.shape != (out.shape[0],):
            raise InputError(f"target callable must return one value per sample, shape ({out.shape[0]},)")
        return selected, torch.arange(0, device=out.device)
    flat = out.reshape(out.shape[0], -1)
    if target is None:
        chosen = flat.detach().argmax(1)
    else:
        chosen = torch.as_tensor(target, dtype=torch.long, device=out.device).reshape(-1)
        if chosen.numel() == 1:
            chosen = chosen.expand(out.shape[0]).clone()
        if chosen.numel() != out.shape[0] or (chosen < 0).any() or (chosen >= flat.shape[1]).any():
            raise InputError(
                f"target {target!r} is out of range for an output with {flat.shape[1]} values per sample "
                f"(batch {out.shape[0]}); use indices in [0, {flat.shape[1] - 1}]"
            )
    return flat.gather(1, chosen[:, None])[:, 0], chosen


def _input_relevance(graph: Graph, inputs, explained: list[int], plan: Plan, grads) -> list[torch.Tensor]:
    """Float inputs: their relevance; integer token inputs: embedding-output relevance summed per token."""
    relevance = {
        i: g if g is not None else torch.zeros_like(inputs[i], dtype=torch.float) for i, g in zip(explained, grads)
    }
    for name, grad in zip(plan.embeddings, grads[len(explained) :]):
        node = next(n for n in graph.call_nodes() if n.name == name)
        source = _token_input(graph, node)
        if source is None or grad is None:
            continue
        per_token = grad.sum(-1)
        relevance[source] = relevance.get(source, 0) + per_token.reshape(inputs[source].shape)
    ordered = []
    for index, flag in enumerate(graph.explained):
        if flag and index < len(inputs):
            ordered.append(relevance.get(index, torch.zeros(inputs[index].shape, device=inputs[index].device)).detach())
    return ordered


def _token_input(graph: Graph, node) -> int | None:
    """Which placeholder an embedding's indices come from (through routing ops)."""
    current = node.args[1]
    while current.op != "placeholder":
        tensors = [a for a in current.all_input_nodes if graph.depends_on_input(a)]
        if not tensors:
            return None
        current = tensors[0]
    return graph.input_nodes.index(current)


#: warn when the input relevance is below this share of the explained output (absorbed by biases or ε)
ABSORBED = 0.01


def _warn_if_broken(relevance: list[torch.Tensor], selected: torch.Tensor) -> None:
    total = sum(r.reshape(r.shape[0], -1).sum(1) for r in relevance)
    magnitude = sum(r.reshape(r.shape[0], -1).abs().sum(1) for r in relevance)
    if not all(torch.isfinite(r).all() for r in relevance):
        warnings.warn("relevance contains NaN or infinite values; try a larger epsilon/stabilizer", stacklevel=3)
    elif ((magnitude == 0) & (selected != 0)).any():
        warnings.warn(
            "relevance vanished (all zero) for some samples although the explained output is not zero; "
            "check that the input reaches the output through ops with rules", stacklevel=3
        )
    elif ((total - selected).abs() > selected.abs() + 1e-6).any():
        warnings.warn(
            "relevance is not conserved: input relevance differs from the explained output by more than its size "
            "for some samples (biases and epsilon absorb some, but not that much; consider another composite)",
            stacklevel=3,
        )
    elif (absorbed := (total.abs() < ABSORBED * selected.abs())).any():
        # an all-but-empty map is legitimate LRP, but rarely what the user wants to look at: say why
        index = int(absorbed.nonzero()[0, 0])
        warnings.warn(
            f"input relevance is below {ABSORBED:.0%} of the explained output for some samples (sample {index}: "
            f"{float(total[index]):.3g} of {float(selected[index]):.3g}): biases or stabilizers took the rest. "
            "Where activations are tiny (e.g. untrained weights) the stabilizers (1e-6 by default; pooling and sums "
            "keep theirs) dominate: explain a trained model, or pass a smaller epsilon, e.g. epsilon=1e-12",
            stacklevel=3,
        )
