"""`BoundedModel`: a model traced once and bounded many times (methods, input sets, specifications).

Batches of input sets (e.g. branch-and-bound domains) are bounded at once: the graph is specialized per
batch size (`Graph.for_batch`, cached) and a graph that cannot be specialized (an ONNX network that moves
axis 0) is bounded in chunks of its own batch size (`Graph.map_batches`). Every tensor lives on `device`.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
import weakref

import torch

from opwise.bounds.strategies.alpha import AlphaOptions
from opwise.bounds.strategies.alpha_chain import optimize_bounds
from opwise.bounds.engine import BoundPropagation
from opwise.bounds.expand import expand_for_bounds
from opwise.bounds.input_set import InputSet
from opwise.bounds.methods import METHODS, method_name
from opwise.bounds.spec import margin_matrix
from opwise.bounds.transfers.registry import Interval
from opwise.errors import InputError
from opwise.progress import Progress
from opwise.tracing import Graph, trace
from opwise.tracing.fidelity import check_fidelity
from opwise.tracing.graph import model_device
from opwise.tracing.precision import as_float32, bound_dtype, float32_inputs, refuse_narrow_graph

@dataclasses.dataclass
class Bounds:
    """`lower <= C·f(x) <= upper` for every x in the input set; both [batch, specs] (upper None if not asked)."""

    lower: torch.Tensor
    upper: torch.Tensor | None
    method: str

    @property
    def width(self) -> torch.Tensor:
        return self.upper - self.lower


class BoundedModel:
    """Trace `model` (an nn.Module, or an opwise Graph such as an ONNX import) once for bounding.

    `progress` (opwise.progress), if given, is told as every bound pass settles an intermediate bound
    ({"search": method, "layer", "layers", "seconds"}) and after every α-CROWN step (see `maximize` in
    opwise.bounds.strategies.alpha); without it nothing is reported.

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> bounded = BoundedModel(model, torch.zeros(1, 3))
    >>> b = bounded.compute_bounds(torch.zeros(1, 3), eps=0.1)
    >>> bool((b.lower <= model(torch.zeros(1, 3))).all()), tuple(b.lower.shape)
    (True, (1, 2))
    """

    def __init__(self, model: torch.nn.Module | Graph, example_x: torch.Tensor, *, device: str | torch.device | None = None,
                 progress: Progress | None = None):
        self.progress = progress
        self.device = torch.device(device) if device is not None else _device_of(model, example_x)
        if isinstance(model, Graph):
            refuse_narrow_graph(model, "bounds")
            graph = model
        else:
            model = as_float32(model, "bounds")
            example_x = float32_inputs((torch.as_tensor(example_x),))[0]
            model_device = _device_of(model, example_x)
            graph = trace(model, example_x.to(model_device))
        self.dtype = bound_dtype(graph)
        self.example_shape = tuple(example_x.shape)
        self.graph = expand_for_bounds(graph).to(self.device)
        if not isinstance(model, Graph):  # a forward that draws noise (ViT-MAE's masking) would be bounded silently
            check_fidelity(self, model, example_x.to(model_device))
        self._independent: weakref.WeakSet[Graph] = weakref.WeakSet()  # graphs checked to keep samples apart
        self._folds: bool | None = None  # see folds_samples

    @classmethod
    def of_graphs(cls, module: torch.nn.Module, example_x: torch.Tensor, *,
                  device: str | torch.device | None = None) -> "BoundedModel":
        """A module that wraps imported networks (opwise Graphs: a network with its input appended, several networks
        over one input), traced in `example_x`'s dtype. A module is otherwise bounded as a float32 copy, and a wrapped
        DOUBLE network must stay float64 (precision.py).

        >>> class Twice(torch.nn.Module):
        ...     def __init__(self, graph):
        ...         super().__init__()
        ...         self.graph = graph
        ...     def forward(self, x):
        ...         return 2 * self.graph(x)
        >>> double = trace(torch.nn.Linear(2, 1).double(), torch.zeros(1, 2, dtype=torch.float64))
        >>> BoundedModel.of_graphs(Twice(double), torch.zeros(1, 2, dtype=torch.float64)).dtype
        torch.float64
        """
        return cls(trace(module, example_x), example_x, device=device)

    def graph_for(self, batch: int) -> Graph:
        """The graph for `batch` samples (its own batch size where it cannot be specialized: check `batch_size`)."""
        return self.graph.for_batch(batch)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output (through the bounded graph, on `device`)."""
        x = torch.as_tensor(x)
        x = x.to(self.dtype) if x.is_floating_point() else x
        return self.graph.map_batches(lambda graph, chunk: graph(chunk), x.to(self.device))

    # ------------------------------------------------------------------ bounding
    def compute_bounds(
        self,
        x: torch.Tensor | None = None,
        *,
        eps: float | None = None,
        norm: float = math.inf,
        method: str = "crown",
        C: torch.Tensor | None = None,
        target: int | torch.Tensor | None = None,
        x_lower: torch.Tensor | None = None,
        x_upper: torch.Tensor | None = None,
        domain: tuple[float, float] | None = None,
        bound_upper: bool = True,
        alpha: AlphaOptions | None = None,
        splits: dict[str, Interval] | None = None,
        max_batch: int | None = None,
    ) -> Bounds:
        """Bounds of `C·f(x)` over the input set; see `opwise.compute_bounds` for the arguments.

        `splits` (branch-and-bound) maps node names to intervals [batch, *node shape] that narrow those
        nodes' values per batch element (see `BoundPropagation`). `max_batch` pads the batch to a power of
        two up to it (a search whose batch changes every round then specializes the graph a few times, not
        every round); by default the graph is specialized to the batch as it is.
        """
        input_set = self.input_set(x, eps, norm, x_lower, x_upper, domain)
        specs = self._spec_matrix(C, target, input_set.lower.shape[0])
        return self.bound(input_set, specs, method, bound_upper=bound_upper, alpha=alpha, splits=splits, max_batch=max_batch)

    def bound(self, input_set: InputSet, specs: torch.Tensor, method: str = "crown", *, bound_upper: bool = True,
              alpha: AlphaOptions | None = None, splits: dict[str, Interval] | None = None,
              max_batch: int | None = None) -> Bounds:
        """Bounds of `specs · f(x)` ([batch, specs, outputs]) over a checked input set (`input_set(...)`):
        what `compute_bounds` does once it has read its request; see there for the other arguments."""
        method = method_name(method)
        batch = input_set.lower.shape[0]
        specs = specs.to(self.device, self.dtype)
        names = list(splits or {})
        for name in names:
            try:
                self.graph.node(name)
            except KeyError:
                raise InputError(f"splits name a node that is not in the graph: {name}") from None
        lowers = [splits[name].lower.to(self.device) for name in names]
        uppers = [splits[name].upper.to(self.device) for name in names]

        def run(graph: Graph, lower, upper, center, specs, *narrowed):
            chunk = input_set.chunk(lower, upper, center)
            chunk_splits = {name: Interval(lo, up) for name, lo, up in zip(names, narrowed[: len(names)], narrowed[len(names):])}
            return self._bound(graph, chunk, specs, method, bound_upper, alpha, chunk_splits)

        max_batch = max_batch or max(batch, 1)
        if batch > 1 and self.folds_samples():
            # one sample at a time holds for the model run on the whole batch only if it keeps the samples apart
            self.check_samples_independent(self.graph_for(batch))
            max_batch = 1
        lower, upper = self.graph.map_batches(run, input_set.lower, input_set.upper, input_set.center, specs,
                                              *lowers, *uppers, max_batch=max_batch)
        return Bounds(lower, upper, method)

    def _bound(self, graph: Graph, input_set: InputSet, specs: torch.Tensor, method: str, bound_upper: bool,
               alpha: AlphaOptions | None, splits: dict[str, Interval]) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.check_samples_independent(graph)
        intermediate, final = METHODS[method]
        output = graph.output
        count = specs.shape[1]
        shape = graph.info(output).shape
        A = specs.transpose(0, 1)
        if bound_upper:
            A = torch.cat([A, -A])
        A = A.reshape(A.shape[0], *shape)
        engine = BoundPropagation(graph, input_set, intermediate, splits, output_specs=A)
        progress = self._progress_of_pass(bound_upper)
        if progress is not None and intermediate != "ibp":
            settle_intermediate_bounds(engine, output, lambda report: progress({"search": method, **report}))
        if final == "ibp":
            result = engine.backward_to_intervals(output, A)
        elif final == "alpha-crown":
            result = optimize_bounds(engine, output, A, alpha, progress)
        else:
            result = engine.backward(output, A)
        if final != "ibp":
            # linear bounds can be looser than intervals (a layer norm's clamped value over a wide input): the IBP
            # bound of the same specs costs one pass over intervals the linear pass has mostly computed already.
            # fmax: an IBP bound that is NaN (0 · inf where IBP overflowed) leaves the linear bound as it is
            result = torch.fmax(result.detach(), engine.backward_to_intervals(output, A))
        result = _vacuous_where_nan(result.detach().T, method)
        return result[:, :count], -result[:, count:] if bound_upper else None

    def _progress_of_pass(self, bound_upper: bool) -> Progress | None:
        """`progress` for one pass; with upper bounds (optimised as negated lower bounds beside the lower ones)
        the worst bound optimised is not a lower bound of the specifications, so none is reported."""
        if self.progress is None or not bound_upper:
            return self.progress
        return lambda report: self.progress({key: value for key, value in report.items() if key != "lower"})

    def folds_samples(self) -> bool:
        """Whether the graph, at batch 2, moves the samples off the first axis of some input-dependent node in a way
        the engine cannot follow: a first axis that is not a multiple of the batch, as instance norm's [1, N·C, ...]
        view. Attention's [N·heads, ...] is followed; such a graph is bounded one sample at a time (checked once).

        >>> BoundedModel(torch.nn.InstanceNorm1d(2), torch.zeros(1, 2, 4)).folds_samples()
        True
        """
        if self._folds is None:
            graph = self.graph_for(2)
            shapes = [graph.info(node).shape for node in graph.call_nodes() if graph.info(node).depends_on_input]
            self._folds = graph.batch_size > 1 and any(
                shape is not None and len(shape) > 0 and shape[0] % graph.batch_size for shape in shapes)
        return self._folds

    def check_samples_independent(self, graph: Graph) -> None:
        """Refuse a graph whose output for one sample depends on another sample's input (a flip or a sum over
        the batch axis, a scatter of one sample's rows into another's): bounds are computed per sample, over that
        sample's own input set, and would be wrong. Checked once per batch size, in 1 + log2(batch) forward
        passes: pass b changes the samples whose index has bit b set, and every output must follow its own
        sample (changed or not). Any two samples differ in some bit, so a dependence in either direction
        between any two of them shows in some pass.

        >>> class Flip(torch.nn.Module):
        ...     def forward(self, x): return x.flip(0)
        >>> bounded = BoundedModel(Flip(), torch.zeros(1, 2))
        >>> bounded.check_samples_independent(bounded.graph_for(2))
        Traceback (most recent call last):
        ...
        opwise.errors.InputError: the model mixes samples across the batch axis at batch size 2 ...
        """
        if graph.batch_size < 2 or graph in self._independent:
            return
        info = graph.info(graph.explained_inputs[0])
        generator = torch.Generator().manual_seed(0)
        x = torch.rand(info.shape, generator=generator).to(device=self.device, dtype=info.dtype or torch.float32)
        other = torch.rand(info.shape, generator=generator).to(x)
        index = torch.arange(graph.batch_size, device=x.device)
        with torch.no_grad():
            before, after = graph(x), graph(other)
            independent = before.shape[:1] == x.shape[:1]
            for bit in range(max(1, (graph.batch_size - 1).bit_length())):
                if not independent:
                    break
                changed = ((index >> bit) & 1).bool().reshape(-1, *[1] * (x.dim() - 1))
                mixed = graph(torch.where(changed, other, x))
                expected = torch.where(changed.reshape(-1, *[1] * (before.dim() - 1)), after, before)
                independent = torch.allclose(mixed, expected, rtol=1e-5, atol=1e-6)
        if independent:
            self._independent.add(graph)
            return
        raise InputError(f"the model mixes samples across the batch axis at batch size {graph.batch_size} (changing "
                         "some samples changed the output of others, or the output's first axis is not the batch): "
                         "bounds are per sample, so they would not hold; bound one sample at a time (batch 1), or "
                         "make forward treat samples independently")

    # ------------------------------------------------------------------ checking the request
    def input_set(self, x=None, eps=None, norm=math.inf, x_lower=None, x_upper=None, domain=None) -> InputSet:
        """The checked input set of a request (InputError on NaN, negative eps, shape or domain mismatch)."""
        if x is not None:
            x = self._check_shape(torch.as_tensor(x).to(self.device, self.dtype), "x")
            if eps is None:
                raise InputError("eps is required with x (or give x_lower and x_upper instead)")
            if not isinstance(eps, (int, float)) or math.isnan(eps) or eps < 0:
                raise InputError(f"eps must be a nonnegative number, got {eps!r}")
            if not (norm == math.inf or norm >= 1):
                raise InputError(f"norm must be >= 1 or inf, got {norm!r}")
            if domain is not None and ((x < domain[0]).any() or (x > domain[1]).any()):
                raise InputError(f"x lies outside its declared domain [{domain[0]}, {domain[1]}]")
            return InputSet.ball(x, float(eps), norm, domain)
        if x_lower is None or x_upper is None:
            raise InputError("give x and eps, or both x_lower and x_upper")
        lower = self._check_shape(torch.as_tensor(x_lower).to(self.device, self.dtype), "x_lower")
        upper = self._check_shape(torch.as_tensor(x_upper).to(self.device, self.dtype), "x_upper")
        if lower.shape != upper.shape or (lower > upper).any() or torch.isnan(lower).any() or torch.isnan(upper).any():
            raise InputError("x_lower and x_upper must have one shape, no NaN, and x_lower <= x_upper")
        if domain is not None:
            lower, upper = lower.clamp(min=domain[0]), upper.clamp(max=domain[1])
        return InputSet(lower, upper)

    def _check_shape(self, x: torch.Tensor, name: str) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.example_shape[1:]:
            raise InputError(f"{name} has shape {tuple(x.shape)}, the model was traced for (batch, {', '.join(map(str, self.example_shape[1:]))})")
        if torch.isnan(x).any():
            raise InputError(f"{name} contains NaN")
        return x

    def _spec_matrix(self, C, target, batch: int) -> torch.Tensor:
        """[batch, specs, outputs]: C as given, the margins of `target`, or the identity."""
        outputs = math.prod(self.graph.info(self.graph.output).shape[1:])
        if C is not None and target is not None:
            raise InputError("give C or target, not both")
        if target is not None:
            targets = torch.as_tensor(target).reshape(-1).expand(batch)
            if ((targets < 0) | (targets >= outputs)).any():
                raise InputError(f"target {targets.tolist()} is out of range for {outputs} outputs")
            return torch.stack([margin_matrix(outputs, int(t), self.dtype) for t in targets]).to(self.device)
        if C is None:
            return torch.eye(outputs, device=self.device, dtype=self.dtype).expand(batch, outputs, outputs)
        C = torch.as_tensor(C).to(self.device, self.dtype)
        if C.dim() == 2:
            C = C.expand(batch, *C.shape)
        if C.dim() != 3 or C.shape[0] != batch or C.shape[2] != outputs:
            raise InputError(f"C must be [specs, {outputs}] or [batch, specs, {outputs}], got {tuple(C.shape)}")
        return C


def _device_of(model: torch.nn.Module | Graph, example: torch.Tensor) -> torch.device:
    """Where a model computes: its graph's or parameters' device, else the example's."""
    return model_device(model, torch.as_tensor(example).device)


def settle_intermediate_bounds(engine: BoundPropagation, target, progress: Progress) -> None:
    """Compute, in topological order, every intermediate bound the relaxations on the way to `target` need
    (what the pass to `target` would compute first), reporting each: {"layer", "layers", "seconds"}. On a
    large network these CROWN passes are most of the time a bound takes."""
    needed = dict.fromkeys(required for node in engine.ancestors(target) if node is not engine.input_node
                           for required in engine.transfer(node).needs_bounds(engine.step(node)))
    start = time.monotonic()
    for layer, node in enumerate(needed, 1):
        engine.interval(node)
        progress({"layer": layer, "layers": len(needed), "seconds": time.monotonic() - start})


def _vacuous_where_nan(lower: torch.Tensor, method: str) -> torch.Tensor:
    """Lower bounds ([batch, specs], upper ones negated) with NaN replaced by -inf, the only sound value,
    and a warning: a NaN bound means some relaxation met an interval it cannot handle (e.g. infinite ends)."""
    nan = torch.isnan(lower)
    if not bool(nan.any()):
        return lower
    warnings.warn(f"{int(nan.sum())} of {nan.numel()} {method} bounds came out NaN (a relaxation met an infinite "
                  "or degenerate interval) and are reported as unbounded; a smaller eps or method='ibp' may help",
                  RuntimeWarning, stacklevel=3)
    return lower.masked_fill(nan, -math.inf)
