"""VNN-COMP instances: verify one (ONNX + VNN-LIB), write the competition's result file, run whole suites.

The words are VNN-COMP's: `unsat` (the property holds), `sat` (a checked counterexample follows),
`timeout`, `unknown`. Low-dimensional inputs (at most `max_split_inputs` free inputs) are decided by
input-splitting branch-and-bound (bounded by `ReluChain` when the network is an affine–ReLU chain, as ACAS Xu
is; other networks get one α-CROWN pass over the whole box first); otherwise a PGD attack and one bound pass decide what they can.
The ONNX importer and the bound engine are imported only when an instance runs.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from functools import partial
from pathlib import Path
from typing import Callable

import torch

from opwise.bounds.attack import pgd_attack
from opwise.bounds.bounded_model import BoundedModel
from opwise.bounds.engine.deadline import deadline
from opwise.bounds.spec import Specification
from opwise.bounds.strategies.input_split import BoundFunction, input_split_bab
from opwise.bounds.strategies.low_dimensional import MAX_BATCH, LowDimensionalBounds
from opwise.bounds.strategies.relu_chain import ReluChain
from opwise.bounds.vnncomp.results import InstanceResult
from opwise.bounds.vnncomp.vnnlib import parse_vnnlib, violates
from opwise.errors import SpecError, SpecTooLarge, TimeLimitReached
from opwise.progress import Progress

STATUS_OF_BAB = {"verified": "unsat", "falsified": "sat", "timeout": "timeout", "unknown": "unknown"}

Loader = Callable[[str], tuple[Callable[[torch.Tensor], torch.Tensor], BoundFunction, tuple[int, ...]]]
"""`load(onnx_path) -> (function, bound_fn, input_shape)`: how verify_instance gets a model."""

#: seconds past its timeout after which verify_instance interrupts whatever runs (a PGD step, a forward pass,
#: an import) when the engine's own deadline checks have not ended it
HARD_STOP_SLACK = 0.25


def load_with_engine(onnx_path: str, device: str | torch.device | None = None) -> tuple[BoundedModel, BoundFunction, tuple[int, ...]]:
    """The default Loader: opwise's ONNX importer (at the declared batch size; other batch sizes come from
    `Graph.for_batch`, or chunks where the network cannot be imported at them) and CROWN bounds, on `device`."""
    from opwise.tracing.onnx import load_onnx

    graph = load_onnx(onnx_path, batch_size=1)
    input_shape = tuple(graph.info(graph.explained_inputs[0]).shape)
    bounded = BoundedModel(graph, torch.zeros(input_shape), device=device)
    return bounded, partial(crown_lower_bounds, bounded), input_shape


def crown_lower_bounds(bounded: BoundedModel, x_lower: torch.Tensor, x_upper: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """CROWN lower bounds of C·f(x) per box, [B, rows] (a BoundFunction)."""
    return bounded.compute_bounds(x_lower=x_lower, x_upper=x_upper, C=C, method="crown", bound_upper=False,
                                  max_batch=MAX_BATCH).lower


def optimized_lower_bounds(bounded: BoundedModel, x_lower: torch.Tensor, x_upper: torch.Tensor, C: torch.Tensor,
                           threshold: torch.Tensor, time_limit: float) -> torch.Tensor:
    """α-CROWN lower bounds of C·f(x) over one box, [1, rows]: CROWN's intermediate bounds, the final bound's
    α optimised until every row exceeds `threshold` [rows] or `time_limit` seconds have passed."""
    from opwise.bounds.strategies.alpha import AlphaOptions

    options = AlphaOptions(intermediate=False, stop_above=threshold[:, None].to(bounded.device), time_limit=time_limit)
    return bounded.compute_bounds(x_lower=x_lower, x_upper=x_upper, C=C, method="alpha-crown",
                                  bound_upper=False, alpha=options).lower


def verify_instance(onnx_path: str | Path, vnnlib_path: str | Path, timeout: float, *,
                    load: Loader | None = None, max_split_inputs: int = 16,
                    device: str | torch.device | None = None, progress: Progress | None = None) -> InstanceResult:
    """Decide one VNN-COMP instance within `timeout` seconds (loading and parsing included).

    `progress` (opwise.progress) is handed to the search that runs (input splitting or GenBaB), once per round.
    `load` (default `load_with_engine` on `device`) gives the model, its bound function and input shape. A property
    with several input boxes (ACAS Xu prop_6) is `sat` when any box has a counterexample and `unsat` only
    when every box is proved. Bound passes check the clock between layers (engine/deadline.py), so the
    answer comes about when the time is up: `timeout` then. A property too large to expand is `unknown`,
    with the reason in `InstanceResult.reason`.

    >>> import tempfile, torch
    >>> text = '(declare-const X_0 Real)(declare-const Y_0 Real)(assert (>= X_0 0))(assert (<= X_0 1))(assert (<= Y_0 -1))'
    >>> with tempfile.NamedTemporaryFile("w", suffix=".vnnlib", delete=False) as f: _ = f.write(text)
    >>> double = lambda x: 2 * x.reshape(len(x), -1)                     # y = 2x >= 0 on [0, 1]
    >>> bounds = lambda lo, up, C: torch.minimum(C.T * 2 * lo, C.T * 2 * up)
    >>> verify_instance("net.onnx", f.name, 10, load=lambda path: (double, bounds, (1, 1))).status
    'unsat'
    """
    start = time.monotonic()
    try:
        with _hard_stop(timeout + HARD_STOP_SLACK), deadline(timeout):
            return _verify(onnx_path, vnnlib_path, timeout, start, load, max_split_inputs, device, progress)
    except TimeLimitReached:
        return InstanceResult("timeout", time.monotonic() - start, reason="the time limit was reached in a bound pass")
    except _OutOfTime:
        return InstanceResult("timeout", time.monotonic() - start, reason="the time limit was reached")
    except SpecTooLarge as error:
        return InstanceResult("unknown", time.monotonic() - start, reason=str(error))


def _verify(onnx_path, vnnlib_path, timeout: float, start: float, load: Loader | None, max_split_inputs: int,
            device, progress: Progress | None) -> InstanceResult:
    """verify_instance's work, run under its deadline."""
    if load is None:  # device only where one is asked for: a replaced loader need not take it
        load = load_with_engine if device is None else partial(load_with_engine, device=device)
    function, bound_fn, input_shape = load(str(onnx_path))
    declared = parse_vnnlib(vnnlib_path, input_shape, dtype=torch.float64)
    bounded = _bounded_of(function)
    device = bounded.device if bounded is not None else torch.device("cpu")
    specs = [spec.to(device, torch.float32) for spec in declared]
    _check_outputs(function, specs[0], str(vnnlib_path))
    outcomes = []
    stats: dict = {"boxes": len(specs)}
    chain: ReluChain | None | bool = False  # found on the first low-dimensional box
    low_dimensional = None
    for spec, exact in zip(specs, declared):
        remaining = timeout - (time.monotonic() - start)
        if remaining <= 0:
            outcomes.append("timeout")
            break
        free = int((spec.x_upper > spec.x_lower).sum())
        if free <= max_split_inputs:
            chain = _relu_chain(function) if chain is False else chain
            if chain is not None:  # a search on the chain's own forward; the answer is checked on `function` below
                result = input_split_bab(chain.bound_and_smear, chain, spec, timeout=remaining, progress=progress)
            elif _proved_at_root(function, spec, remaining / 2):
                result = None
                stats["proved_at_root"] = stats.get("proved_at_root", 0) + 1
            else:
                if _bounded_of(function) is not None and low_dimensional is None:
                    low_dimensional = LowDimensionalBounds(_bounded_of(function))
                result = input_split_bab(low_dimensional or bound_fn, function, spec,
                                         timeout=timeout - (time.monotonic() - start), progress=progress)
            status, counterexample = ("unsat", None) if result is None else (
                STATUS_OF_BAB[result.status], result.counterexample)
            for key, value in ({} if result is None else result.stats).items():
                if isinstance(value, (int, float)):
                    stats[key] = stats.get(key, 0) + value
        else:
            status, counterexample = _attack_then_bound(function, bound_fn, spec, remaining)
            remaining = timeout - (time.monotonic() - start)
            if status == "unknown" and _bounded_of(function) is not None and remaining > 1:
                from opwise.bounds.strategies.genbab.search import branch_and_bound

                result = branch_and_bound(_bounded_of(function), spec, timeout=remaining, progress=progress)
                status, counterexample = STATUS_OF_BAB[result.status], result.counterexample
                stats["domains"] = stats.get("domains", 0) + result.stats.get("domains_visited", 0)
        if status == "sat":
            confirmed = _as_the_competition_checks(function, exact, counterexample)
            if confirmed is not None:
                return InstanceResult("sat", time.monotonic() - start, *confirmed, stats)
            stats["unconfirmed_counterexamples"] = stats.get("unconfirmed_counterexamples", 0) + 1
            status = "unknown"
        outcomes.append(status)
    final = "unsat" if all(s == "unsat" for s in outcomes) and len(outcomes) == len(specs) else (
        "timeout" if "timeout" in outcomes else "unknown")
    return InstanceResult(final, time.monotonic() - start, stats=stats)


class _OutOfTime(BaseException):
    """Raised by `_hard_stop`'s alarm; a BaseException so no `except Exception` on the way swallows it."""


@contextlib.contextmanager
def _hard_stop(seconds: float):
    """Interrupt the block after `seconds` with _OutOfTime (SIGALRM: Python raises it between bytecodes, so a
    long phase outside the bound engine — loading, a PGD step, a batch of forward passes — ends within one
    torch operation). Only in the main thread and where no one else handles SIGALRM; elsewhere the engine's
    cooperative deadline is what ends a run. The handler restores the default before it raises, so an
    alarm that fires while the block is being left cannot fire twice."""
    if (not math.isfinite(seconds) or threading.current_thread() is not threading.main_thread()
            or not hasattr(signal, "setitimer") or signal.getsignal(signal.SIGALRM) is not signal.SIG_DFL):
        yield
        return

    def stop(signum, frame):
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        raise _OutOfTime()

    signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)


def _as_the_competition_checks(function, declared: Specification, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(x, y) of a counterexample the competition's checker accepts, or None: x in float64 clipped into the
    box as declared (the float32 rounding of a bound can lie just outside it), the network run on x's
    float32 rounding, the output constraints evaluated in float64 (strict ones strictly, `violates`)."""
    point = torch.max(torch.min(x.detach().cpu().double(), declared.x_upper), declared.x_lower)
    bounded = _bounded_of(function)
    with torch.no_grad():
        y = function(point.float().to(bounded.device if bounded is not None else "cpu")).detach().cpu()
    if not violates(declared, y.double()):
        return None
    return point.flatten(), y.flatten()


def _bounded_of(function) -> BoundedModel | None:
    """The BoundedModel a loaded function bounds with (itself, or the one it carries as `bounded`): what the
    root pass, input splitting's low-dimensional bounds, the chain and GenBaB need. A plain function has none."""
    return function if isinstance(function, BoundedModel) else getattr(function, "bounded", None)


def _relu_chain(function) -> ReluChain | None:
    """The engine model's graph as an affine–ReLU chain (fast batched bounds), or None."""
    bounded = _bounded_of(function)
    return ReluChain.of_graph(bounded.graph, dtype=torch.float32) if bounded is not None else None


def _check_outputs(function, spec: Specification, path: str) -> None:
    """The property's Y count must equal the model's output size (a forward pass at the box centre)."""
    with torch.no_grad():
        outputs = function((spec.x_lower + spec.x_upper) / 2).reshape(-1).numel()
    declared = spec.unsafe[0].C.shape[1]
    if declared != outputs:
        raise SpecError(path, None, f"declares {declared} outputs Y_i but the model has {outputs} outputs")


def _attack_then_bound(function, bound_fn, spec: Specification, budget: float) -> tuple[str, torch.Tensor | None]:
    """For high-dimensional inputs: PGD, then one bound pass over the whole box."""
    attack = pgd_attack(function, spec, time_limit=budget / 2)
    if attack.found:
        return "sat", attack.counterexample
    C = torch.cat([d.C for d in spec.unsafe])
    with torch.no_grad():
        lower = bound_fn(spec.x_lower, spec.x_upper, C)[0]
    return ("unsat" if spec.ruled_out(lower) else "unknown"), None


def _proved_at_root(function, spec: Specification, budget: float) -> bool:
    """Low-dimensional inputs through a general network: α-CROWN over the whole box first, as α,β-CROWN starts
    its search. Backward bounds from the few specification rows are far tighter than the forward-mode bounds the
    input-splitting rounds use (the cGAN: proved here, never by splitting), and cost one CROWN pass."""
    optimized = getattr(function, "bound_optimized", None)
    if optimized is None and _bounded_of(function) is not None:
        optimized = partial(optimized_lower_bounds, _bounded_of(function))
    if optimized is None or budget <= 0:
        return False
    C = torch.cat([d.C for d in spec.unsafe])
    try:
        with deadline(budget):  # its share of the time: the search gets the rest
            lower = optimized(spec.x_lower, spec.x_upper, C, torch.cat([d.d for d in spec.unsafe]), budget)
    except TimeLimitReached:
        return False
    return spec.ruled_out(lower.detach()[0])


