"""VNN-COMP instances: verify one (ONNX + VNN-LIB), write the competition's result file, run whole suites.

The words are VNN-COMP's: `unsat` (the property holds), `sat` (a checked counterexample follows),
`timeout`, `unknown`. Low-dimensional inputs (at most `max_split_inputs` free inputs) are decided by
input-splitting branch-and-bound (bounded by `ReluChain` when the network is an affine–ReLU chain, as ACAS Xu
is; other networks get one α-CROWN pass over the whole box first); otherwise a PGD attack and one bound pass decide what they can.
The ONNX importer and the bound engine are imported only when an instance runs.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import multiprocessing
import os
import re
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from opwise.bounds.allocator import retain_freed_memory
from opwise.bounds.attack import pgd_attack
from opwise.bounds.bab.input_split import BoundFunction, input_split_bab
from opwise.bounds.bab.relu_chain import ReluChain
from opwise.bounds.spec import Disjunct, Specification
from opwise.bounds.vnnlib import parse_vnnlib
from opwise.errors import InputError, OpwiseError, SpecError

STATUS_OF_BAB = {"verified": "unsat", "falsified": "sat", "timeout": "timeout", "unknown": "unknown"}
RESULT_LINE = re.compile(r"\(\s*([XY])_(\d+)\s+(\S+?)\s*\)")


@dataclasses.dataclass
class InstanceResult:
    """status: 'unsat' | 'sat' | 'timeout' | 'unknown'; x and y (flat) only for a confirmed 'sat'."""

    status: str
    time: float
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    stats: dict = dataclasses.field(default_factory=dict)


Loader = Callable[[str], tuple[Callable[[torch.Tensor], torch.Tensor], BoundFunction, tuple[int, ...]]]
"""`load(onnx_path) -> (function, bound_fn, input_shape)`: how verify_instance gets a model."""


class EngineModel:
    """An ONNX network through opwise's importer and bound engine, for any batch size.

    Imported graphs are specialized to one batch size, so one BoundedModel is kept per power-of-two batch
    (up to `max_batch`) and requests are padded to it: a branch-and-bound round never re-imports.
    """

    def __init__(self, onnx_path: str, max_batch: int = 1024):
        try:
            from opwise.bounds import BoundedModel
            from opwise.tracing.onnx import load_onnx
        except ImportError as error:
            raise OpwiseError(f"the ONNX importer or the bound engine is not installed ({error}); "
                              "verify_instance needs opwise.tracing.onnx and opwise.bounds.BoundedModel") from error
        self._load, self._bounded, self.path, self.max_batch = load_onnx, BoundedModel, onnx_path, max_batch
        graph = load_onnx(onnx_path, batch_size=1)
        self.input_shape = tuple(graph.info(graph.explained_inputs[0]).shape)
        self._models = {1: BoundedModel(graph, torch.zeros(self.input_shape))}
        self._folded: dict[int, tuple] = {}  # batch size -> (inputs held fixed, their graph folded), the last used

    def _model(self, batch: int):
        size = min(1 << max(0, batch - 1).bit_length(), self.max_batch)
        if size not in self._models:
            graph = self._load(self.path, batch_size=size)
            self._models[size] = self._bounded(graph, torch.zeros(size, *self.input_shape[1:]))
        return self._models[size], size

    def _padded(self, run, *tensors: torch.Tensor):
        """`run(model, *tensors)` in chunks of the padded batch size; a tensor, or a tuple of tensors (or
        None) when `run` returns one (each batch-first)."""
        batch = tensors[0].shape[0]
        model, size = self._model(batch)
        results = []
        for begin in range(0, batch, size):
            index = torch.arange(begin, begin + size).clamp(max=batch - 1)
            result = run(model, *(t[index] for t in tensors))
            parts = result if isinstance(result, tuple) else (result,)
            results.append([None if part is None else part[: min(size, batch - begin)] for part in parts])
        joined = tuple(None if column[0] is None else torch.cat(column) for column in zip(*results))
        if not isinstance(result, tuple):
            return joined[0]
        return type(result)(*joined) if hasattr(result, "_fields") else joined

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._padded(lambda model, x: model(x), x)

    @property
    def bounded(self):
        """The BoundedModel at batch 1, for neuron-splitting branch-and-bound (which batches by re-importing)."""
        return self._models[1]

    def bound(self, x_lower: torch.Tensor, x_upper: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """CROWN lower bounds of C·f(x) per box, [B, rows] (a BoundFunction)."""
        return self._padded(lambda model, lo, up: model.compute_bounds(
            x_lower=lo, x_upper=up, C=C, method="crown", bound_upper=False).lower, x_lower, x_upper)

    def bound_optimized(self, x_lower: torch.Tensor, x_upper: torch.Tensor, C: torch.Tensor, threshold: torch.Tensor,
                        time_limit: float) -> torch.Tensor:
        """α-CROWN lower bounds of C·f(x) over one box, [1, rows]: CROWN's intermediate bounds, the final bound's
        α optimised until every row exceeds `threshold` [rows] or `time_limit` seconds have passed."""
        from opwise.bounds.alpha import AlphaOptions

        options = AlphaOptions(intermediate=False, stop_above=threshold[:, None], time_limit=time_limit)
        return self.bounded.compute_bounds(x_lower=x_lower, x_upper=x_upper, C=C, method="alpha-crown",
                                           bound_upper=False, alpha=options).lower

    def bound_low_dimensional(self, x_lower: torch.Tensor, x_upper: torch.Tensor, C: torch.Tensor):
        """`LinearLowerBounds` of C·f(x) per box: forward-mode intermediate bounds over the free inputs, CROWN on
        narrow nodes and the rows (`free_input_bounds`), the bound function of input splitting. Inputs fixed
        alike in every box are folded into the first affine layers (`fold_fixed_inputs`) where the network
        reads its input with them, so no pass carries their coefficients."""
        from opwise.bounds.bab.input_split import LinearLowerBounds
        from opwise.bounds.low_dimensional import fold_fixed_inputs, free_input_bounds

        flat_lower, flat_upper = x_lower.reshape(len(x_lower), -1), x_upper.reshape(len(x_upper), -1)
        fixed = ((flat_lower == flat_upper) & (flat_lower == flat_lower[:1])).all(dim=0)
        if not fixed.any() or fixed.all():
            return self._padded(lambda model, lo, up: free_input_bounds(model.graph, lo, up, C), x_lower, x_upper)
        values, free = flat_lower[0], ~fixed

        def run(model, lo, up):
            key = (len(lo), fixed.cpu().numpy().tobytes(), values[fixed].cpu().numpy().tobytes())
            if self._folded.get(len(lo), (None,))[0] != key:
                self._folded[len(lo)] = (key, fold_fixed_inputs(model.graph, fixed, values))
            folded = self._folded[len(lo)][1]
            if folded is None:
                return free_input_bounds(model.graph, lo, up, C)
            lo, up = lo.reshape(len(lo), -1), up.reshape(len(up), -1)
            bounds, reduced, bias, *_ = free_input_bounds(folded, lo[:, free], up[:, free], C)
            coefficients = reduced.new_zeros(*reduced.shape[:2], len(free))
            coefficients[..., free] = reduced
            return LinearLowerBounds(bounds, coefficients, bias)

        return self._padded(run, x_lower, x_upper)


def load_with_engine(onnx_path: str) -> tuple[Callable, BoundFunction, tuple[int, ...]]:
    """The default Loader: opwise's ONNX importer and CROWN bounds from the bound engine."""
    model = EngineModel(onnx_path)
    return model, model.bound, model.input_shape


def verify_instance(onnx_path: str | Path, vnnlib_path: str | Path, timeout: float, *,
                    load: Loader | None = None, max_split_inputs: int = 16) -> InstanceResult:
    """Decide one VNN-COMP instance within `timeout` seconds (loading included).

    `load` (default `load_with_engine`) gives the model, its bound function and input shape. A property
    with several input boxes (ACAS Xu prop_6) is `sat` when any box has a counterexample and `unsat` only
    when every box is proved.

    >>> import tempfile, torch
    >>> text = '(declare-const X_0 Real)(declare-const Y_0 Real)(assert (>= X_0 0))(assert (<= X_0 1))(assert (<= Y_0 -1))'
    >>> with tempfile.NamedTemporaryFile("w", suffix=".vnnlib", delete=False) as f: _ = f.write(text)
    >>> double = lambda x: 2 * x.reshape(len(x), -1)                     # y = 2x >= 0 on [0, 1]
    >>> bounds = lambda lo, up, C: torch.minimum(C.T * 2 * lo, C.T * 2 * up)
    >>> verify_instance("net.onnx", f.name, 10, load=lambda path: (double, bounds, (1, 1))).status
    'unsat'
    """
    start = time.monotonic()
    function, bound_fn, input_shape = (load or load_with_engine)(str(onnx_path))
    declared = parse_vnnlib(vnnlib_path, input_shape, dtype=torch.float64)
    specs = [_to_dtype(spec, torch.float32) for spec in declared]
    _check_outputs(function, specs[0], str(vnnlib_path))
    outcomes = []
    stats: dict = {"boxes": len(specs)}
    chain: ReluChain | None | bool = False  # found on the first low-dimensional box
    for spec, exact in zip(specs, declared):
        remaining = timeout - (time.monotonic() - start)
        if remaining <= 0:
            outcomes.append("timeout")
            break
        free = int((spec.x_upper > spec.x_lower).sum())
        if free <= max_split_inputs:
            chain = _relu_chain(function) if chain is False else chain
            if chain is not None:  # a search on the chain's own forward; the answer is checked on `function` below
                result = input_split_bab(chain.bound_and_smear, chain, spec, timeout=remaining)
            elif _proved_at_root(function, spec, remaining / 2):
                result = None
                stats["proved_at_root"] = stats.get("proved_at_root", 0) + 1
            else:
                low_dimensional = getattr(function, "bound_low_dimensional", bound_fn)
                result = input_split_bab(low_dimensional, function, spec,
                                         timeout=timeout - (time.monotonic() - start))
            status, counterexample = ("unsat", None) if result is None else (
                STATUS_OF_BAB[result.status], result.counterexample)
            for key, value in ({} if result is None else result.stats).items():
                if isinstance(value, (int, float)):
                    stats[key] = stats.get(key, 0) + value
        else:
            status, counterexample = _attack_then_bound(function, bound_fn, spec, remaining)
            remaining = timeout - (time.monotonic() - start)
            bounded = getattr(function, "bounded", None)
            if status == "unknown" and bounded is not None and remaining > 1:
                from opwise.bounds.bab.genbab import branch_and_bound

                result = branch_and_bound(bounded, spec, timeout=remaining)
                status, counterexample = STATUS_OF_BAB[result.status], result.counterexample
                stats["domains"] = stats.get("domains", 0) + result.stats.get("domains_visited", 0)
        if status == "sat":
            confirmed = _as_the_competition_checks(function, exact, counterexample)
            if confirmed is not None:
                return InstanceResult("sat", time.monotonic() - start, *confirmed, stats)
            status = "unknown"
        outcomes.append(status)
    final = "unsat" if all(s == "unsat" for s in outcomes) and len(outcomes) == len(specs) else (
        "timeout" if "timeout" in outcomes else "unknown")
    return InstanceResult(final, time.monotonic() - start, stats=stats)


def _to_dtype(spec: Specification, dtype: torch.dtype) -> Specification:
    return Specification(spec.x_lower.to(dtype), spec.x_upper.to(dtype),
                         [Disjunct(d.C.to(dtype), d.d.to(dtype)) for d in spec.unsafe])


def _as_the_competition_checks(function, declared: Specification, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(x, y) of a counterexample the competition's checker accepts, or None: x in float64 clipped into the
    box as declared (the float32 rounding of a bound can lie just outside it), the network run on x's
    float32 rounding, the output constraints evaluated in float64."""
    point = torch.max(torch.min(x.detach().double(), declared.x_upper), declared.x_lower)
    with torch.no_grad():
        y = function(point.float()).detach()
    if float(declared.margin(y.double().reshape(1, -1)).min()) > 0:
        return None
    return point.flatten(), y.flatten()


def _relu_chain(function) -> ReluChain | None:
    """The engine model's graph as an affine–ReLU chain (fast batched bounds), or None."""
    bounded = getattr(function, "bounded", None)
    chain = None if bounded is None else ReluChain.of_graph(bounded.graph)
    if chain is not None:
        chain.dtype = torch.float32
    return chain


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
    if optimized is None or budget <= 0:
        return False
    C = torch.cat([d.C for d in spec.unsafe])
    lower = optimized(spec.x_lower, spec.x_upper, C, torch.cat([d.d for d in spec.unsafe]), budget)
    return spec.ruled_out(lower.detach()[0])


def write_result(path: str | Path, result: InstanceResult) -> None:
    """Write the VNN-COMP result file: the status word, and for `sat` the assignment of every X_i and Y_i.

    >>> import tempfile, torch
    >>> path = tempfile.mktemp()
    >>> write_result(path, InstanceResult("sat", 0.1, torch.tensor([0.5, -1.0]), torch.tensor([2.0])))
    >>> print(open(path).read())
    sat
    ((X_0 0.5)
     (X_1 -1.0)
     (Y_0 2.0))
    <BLANKLINE>
    """
    lines = [result.status]
    if result.status == "sat":
        if result.x is None or result.y is None:
            raise InputError("a 'sat' result needs its counterexample x and output y")
        pairs = [f"(X_{i} {float(v)!r})" for i, v in enumerate(result.x.tolist())]
        pairs += [f"(Y_{i} {float(v)!r})" for i, v in enumerate(result.y.tolist())]
        lines.append("(" + "\n ".join(pairs) + ")")
    Path(path).write_text("\n".join(lines) + "\n")


def read_result(path: str | Path) -> tuple[str, list[float] | None, list[float] | None]:
    """(status, x, y) from a VNN-COMP result file; x and y are None unless the status is sat.

    >>> import tempfile
    >>> path = tempfile.mktemp(); _ = open(path, "w").write("sat\\n((X_0 0.5)\\n (Y_0 2))\\n")
    >>> read_result(path)
    ('sat', [0.5], [2.0])
    """
    text = Path(path).read_text()
    status = text.split(None, 1)[0] if text.strip() else ""
    if status not in ("sat", "unsat", "timeout", "unknown", "violated", "holds", "error"):
        raise SpecError(str(path), 1, f"unknown result word {status!r}")
    if status not in ("sat", "violated"):
        return status, None, None
    values: dict[str, dict[int, float]] = {"X": {}, "Y": {}}
    for kind, index, value in RESULT_LINE.findall(text):
        values[kind][int(index)] = float(value)
    x = [values["X"][i] for i in range(len(values["X"]))] if values["X"] else None
    y = [values["Y"][i] for i in range(len(values["Y"]))] if values["Y"] else None
    return "sat", x, y


def main_verify(args) -> int:
    """`opwise verify MODEL.onnx PROP.vnnlib --timeout S --out RESULT`: print the status, write the file."""
    timeout = args.timeout if args.timeout is not None else 60.0
    if not math.isfinite(timeout) or timeout <= 0:
        raise InputError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    retain_freed_memory()
    result = verify_instance(args.model, args.vnnlib, timeout)
    if args.out:
        write_result(args.out, result)
    print(f"{result.status} ({result.time:.2f} s)")
    return 0


def result_file_name(onnx: str, vnnlib: str) -> str:
    """A file name unique per instance: `<onnx stem>__<vnnlib stem>.txt`.

    >>> result_file_name("onnx/net_1.onnx", "vnnlib/prop_2.vnnlib")
    'net_1__prop_2.txt'
    """
    return f"{Path(onnx).stem}__{Path(vnnlib).stem}.txt"


def _progress(done: int, total: int, counts: dict[str, int], elapsed: float) -> None:
    width = 30
    filled = width * done // max(total, 1)
    summary = " ".join(f"{key}={value}" for key, value in sorted(counts.items()))
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {summary} {elapsed:.0f}s ")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def read_instances(instances_csv: str | Path, cap: float | None = None) -> list[tuple[str, str, float]]:
    """(onnx, vnnlib, timeout) rows of a VNN-COMP instances CSV, paths resolved against its folder.

    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp(); path = os.path.join(folder, "instances.csv")
    >>> _ = open(path, "w").write("onnx/a.onnx,vnnlib/p.vnnlib,116\\n")
    >>> [(Path(o).name, Path(v).name, t) for o, v, t in read_instances(path, cap=30)]
    [('a.onnx', 'p.vnnlib', 30.0)]
    """
    folder = Path(instances_csv).parent
    rows = []
    with open(instances_csv, newline="") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 3:
                raise SpecError(str(instances_csv), number, f"expected onnx,vnnlib,timeout, got {len(row)} fields")
            try:
                timeout = float(row[2])
            except ValueError:
                raise SpecError(str(instances_csv), number, f"timeout {row[2]!r} is not a number") from None
            timeout = min(timeout, float(cap)) if cap is not None else timeout
            rows.append((str(folder / row[0].strip()), str(folder / row[1].strip()), timeout))
    return rows


def run_one(verify: Callable, onnx: str, vnnlib: str, timeout: float, result_dir: str | None) -> tuple[str, float]:
    """Verify one instance and write its result file; (status, seconds). Runs inside a worker."""
    start = time.monotonic()
    try:
        result = verify(onnx, vnnlib, timeout)
    except OpwiseError as error:
        print(f"{onnx} {vnnlib}: {error}", file=sys.stderr)
        result = InstanceResult("error", time.monotonic() - start)
    if result_dir is not None:
        write_result(Path(result_dir) / result_file_name(onnx, vnnlib), result)
    return result.status, time.monotonic() - start


def run_suite(instances_csv: str | Path, results_csv: str | Path, *, cap: float | None = None, workers: int = 2,
              ray_address: str | None = None, verify: Callable = verify_instance, result_dir: str | Path | None = None,
              grace: float = 10.0) -> list[dict]:
    """Run every instance of a VNN-COMP instances CSV, `workers` at a time, and write the results CSV.

    Each instance runs in its own worker process that is killed `grace` seconds after its timeout (capped
    at `cap`), so a hung instance counts as `timeout` and cannot stall the suite. With `ray_address`
    the instances run as Ray tasks instead, one CPU each, cancelled the same way when they overrun
    (`pip install opwise[ray]`; `result_dir` must then be a folder every node can write). Results CSV
    columns: onnx, vnnlib, status, time; result files (VNN-COMP format) go to `result_dir` when given. A progress bar is drawn on stderr.
    """
    instances = read_instances(instances_csv, cap)
    directory = str(result_dir) if result_dir is not None else None
    if directory is not None:
        Path(directory).mkdir(parents=True, exist_ok=True)
    if ray_address is not None:
        outcomes = _run_with_ray(instances, verify, directory, ray_address, grace)
    else:
        outcomes = _run_with_processes(instances, verify, directory, max(1, workers), grace)
    folder = Path(instances_csv).parent
    rows = [{"onnx": str(Path(onnx).relative_to(folder)), "vnnlib": str(Path(vnnlib).relative_to(folder)),
             "status": status, "time": f"{seconds:.3f}"}
            for (onnx, vnnlib, _), (status, seconds) in zip(instances, outcomes)]
    with open(results_csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["onnx", "vnnlib", "status", "time"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _worker(sender, verify, onnx, vnnlib, timeout, result_dir, threads) -> None:
    sender.send("started")  # the instance's clock starts here, not while the process imports torch
    torch.set_num_threads(threads)
    retain_freed_memory()
    sender.send(run_one(verify, onnx, vnnlib, timeout, result_dir))
    sender.close()


def _run_with_processes(instances, verify, result_dir, workers: int, grace: float,
                        startup_limit: float = 300.0) -> list[tuple[str, float]]:
    """One forkserver process per instance, at most `workers` at once, each killed when it overruns."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "torch._dynamo", "opwise.bounds.vnncomp", "opwise.tracing.onnx"])
    threads = max(1, (os.cpu_count() or 1) // workers)
    tally = _Tally(instances, result_dir, grace, startup_limit)
    pending = list(range(len(instances)))
    running: dict[int, list] = {}  # index -> [process, receiver, launched, began or None]
    while pending or running:
        while pending and len(running) < workers:
            index = pending.pop(0)
            onnx, vnnlib, timeout = instances[index]
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=_worker, args=(sender, verify, onnx, vnnlib, timeout, result_dir, threads),
                                      daemon=True)
            process.start()
            sender.close()
            running[index] = [process, receiver, time.monotonic(), None]
        for index, state in list(running.items()):
            process, receiver, launched, began = state
            outcome = None
            while outcome is None and receiver.poll():
                message = receiver.recv()
                if message == "started":
                    state[3] = began = time.monotonic()
                else:
                    outcome = message
            now = time.monotonic()
            if outcome is None and not process.is_alive():
                outcome = receiver.recv() if receiver.poll() else ("error", now - (began or launched))
            elif outcome is None:
                outcome = tally.overrun(index, launched, began, now)
                if outcome is not None:
                    process.kill()
            if outcome is None:
                continue
            process.join()
            receiver.close()
            del running[index]
            tally.record(index, outcome)
        time.sleep(0.02)
    return tally.outcomes


def _ray_task(started, index: int, verify, onnx: str, vnnlib: str, timeout: float, result_dir) -> tuple[str, float]:
    """One instance on a Ray worker: announce the start (the driver's clock for this instance begins then,
    not while Ray schedules the task or the worker imports torch), then verify it on one thread."""
    started.put(index)
    torch.set_num_threads(1)
    retain_freed_memory()
    return run_one(verify, onnx, vnnlib, timeout, result_dir)


def _run_with_ray(instances, verify, result_dir, address: str, grace: float,
                  startup_limit: float = 300.0) -> list[tuple[str, float]]:
    """Ray tasks, no more in flight than the cluster has CPUs; a task that overruns its timeout by `grace`
    is cancelled (its worker killed) and counts as `timeout`, as in the process runner."""
    import ray
    from ray.util.queue import Queue

    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    task = ray.remote(num_cpus=1, max_retries=0)(_ray_task)
    started = Queue()
    slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
    tally = _Tally(instances, result_dir, grace, startup_limit)
    pending = list(range(len(instances)))
    running: dict = {}  # reference -> [index, submitted, began or None]
    while pending or running:
        while pending and len(running) < slots:
            index = pending.pop(0)
            onnx, vnnlib, timeout = instances[index]
            reference = task.remote(started, index, verify, onnx, vnnlib, timeout, result_dir)
            running[reference] = [index, time.monotonic(), None]
        done, _ = ray.wait(list(running), num_returns=1, timeout=0.2)
        now = time.monotonic()
        for index in started.get_nowait_batch(started.qsize()):
            for state in running.values():
                if state[0] == index and state[2] is None:
                    state[2] = now
        finished = {}
        for reference in done:
            index, submitted, began = running[reference]
            try:
                finished[reference] = tuple(ray.get(reference))
            except Exception as error:  # noqa: BLE001 - a crashed worker is this instance's `error`, not the suite's
                print(f"{instances[index][0]} {instances[index][1]}: {error}", file=sys.stderr)
                finished[reference] = ("error", now - (began or submitted))
        for reference, (index, submitted, began) in running.items():
            overrun = None if reference in finished else tally.overrun(index, submitted, began, now)
            if overrun is not None:
                ray.cancel(reference, force=True)
                finished[reference] = overrun
        for reference, outcome in finished.items():
            tally.record(running.pop(reference)[0], outcome)
    started.shutdown()
    return tally.outcomes


class _Tally:
    """What both suite runners share: when a running instance has overrun (its start, or its timeout plus
    `grace`), the outcomes in instance order, and the progress bar."""

    def __init__(self, instances, result_dir, grace: float, startup_limit: float):
        self.instances, self.result_dir, self.grace, self.startup_limit = instances, result_dir, grace, startup_limit
        self.outcomes: list[tuple[str, float] | None] = [None] * len(instances)
        self.counts: dict[str, int] = {}
        self.start = time.monotonic()
        _progress(0, len(instances), self.counts, 0.0)

    def overrun(self, index: int, launched: float, began: float | None, now: float) -> tuple[str, float] | None:
        """The outcome of an instance to stop now (`error` if it never started, `timeout`, whose result file
        is written here since its worker cannot), or None while it may run on."""
        if began is None:
            return ("error", 0.0) if now - launched > self.startup_limit else None
        if now - began <= self.instances[index][2] + self.grace:
            return None
        if self.result_dir is not None:
            onnx, vnnlib, _ = self.instances[index]
            write_result(Path(self.result_dir) / result_file_name(onnx, vnnlib), InstanceResult("timeout", now - began))
        return ("timeout", now - began)

    def record(self, index: int, outcome: tuple[str, float]) -> None:
        self.outcomes[index] = outcome
        self.counts[outcome[0]] = self.counts.get(outcome[0], 0) + 1
        _progress(sum(self.counts.values()), len(self.instances), self.counts, time.monotonic() - self.start)
