"""Running whole VNN-COMP suites: every instance of an instances CSV in its own worker process (or as a
Ray task), killed when it overruns, with a results CSV and a progress bar."""

from __future__ import annotations

import csv
import io
import multiprocessing
import os
import signal
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable, Sequence, TextIO

import torch

from opwise.bounds.allocator import retain_freed_memory
from opwise.bounds.vnncomp.instance import verify_instance
from opwise.bounds.vnncomp.networks import format_networks, parse_networks, resolve_networks
from opwise.bounds.vnncomp.results import (InstanceResult, failure_reason, is_complete, read_result,
                                           result_file_names, write_atomically, write_result)
from opwise.errors import InputError, SpecError
from opwise.progress import Progress, eta


def read_instances(instances_csv: str | Path, cap: float | None = None) -> list[tuple[str, str, float]]:
    """(onnx, vnnlib, timeout) rows of a VNN-COMP instances CSV, paths resolved against its folder (each path of a
    VNN-LIB 2 instance's network list, `[('f', 'onnx/a.onnx'), ...]`, too).

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
            rows.append((resolve_networks(row[0], folder), str(folder / row[1].strip()), timeout))
    return rows


def run_one(verify: Callable, onnx: str, vnnlib: str, timeout: float, result_path: str | None) -> tuple[str, float]:
    """Verify one instance and write its result file; (status, seconds). Runs inside a worker: whatever
    `verify` raises (a malformed file, RecursionError, MemoryError, ...) is this instance's `error`, with the
    reason on stderr and in the result file, never the suite's."""
    start = time.monotonic()
    try:
        result = verify(onnx, vnnlib, timeout)
    except Exception as error:  # noqa: BLE001 - one instance's failure must not end the suite
        result = InstanceResult("error", time.monotonic() - start, reason=failure_reason(error))
    if result.status == "error":
        print(f"{onnx} {vnnlib}: {result.reason}", file=sys.stderr, flush=True)
    if result_path is not None:
        write_result(result_path, result)
    return result.status, time.monotonic() - start


def run_suite(instances_csv: str | Path, results_csv: str | Path, *, cap: float | None = None, workers: int = 2,
              ray_address: str | None = None, verify: Callable = verify_instance, result_dir: str | Path | None = None,
              grace: float = 10.0, device: str | None = None, resume: bool = False,
              progress: Progress | None = None, only: Sequence[str] = (), threads: int | None = None) -> list[dict]:
    """Run every instance of a VNN-COMP instances CSV, `workers` at a time, and write the results CSV.

    Each instance runs in its own worker process that is killed `grace` seconds after its timeout (capped
    at `cap`), so a hung instance counts as `timeout` and cannot stall the suite; a worker that raises or
    dies (killed, out of memory) makes its instance `error`, with the reason on stderr and in its result
    file, and the rest go on. With `ray_address` the instances run as Ray tasks instead, one CPU each,
    cancelled the same way when they overrun (`pip install opwise[ray]`; `result_dir` must then be a folder
    every node can write). Results CSV columns: onnx, vnnlib (as instances.csv wrote them), status, time,
    result_file; it is rewritten atomically as each instance finishes, so an interrupted run keeps what it
    finished. Result files (VNN-COMP format, named by `result_file_names`) go to `result_dir` when given;
    with `resume`, instances whose result files are complete (`is_complete`) are not run again. `progress`
    (opwise.progress) is told at the start and as each instance finishes: {"search": "suite", "done", "total",
    "counts" (per status), "seconds", "left"}; `suite_bar` draws that as a bar on stderr. Without it nothing
    is drawn. `only` keeps the instances whose onnx or vnnlib path (as written in the CSV) contains one of its strings (a subset to
    study); empty keeps all. `threads`: torch threads per worker process (default: the CPUs shared out among
    the workers; on a machine other jobs load, 1 can be many times faster than 2 for small networks).
    """
    if device is not None:  # every worker verifies on this device ("cuda": one GPU shared by the workers)
        verify = partial(verify, device=device)
    instances = read_instances(instances_csv, cap)
    folder = Path(instances_csv).parent
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads must be a whole number of at least 1, got {threads!r}")
    if only:  # matched on the paths as instances.csv wrote them
        instances = [row for row in instances
                     if any(part in _as_written(row[0], folder) or part in _as_written(row[1], folder) for part in only)]
        if not instances:
            raise InputError(f"no instance of {instances_csv} has a path containing any of {', '.join(map(repr, only))}")
    written = [(_as_written(onnx, folder), _as_written(vnnlib, folder)) for onnx, vnnlib, _ in instances]
    names = result_file_names(written)
    if resume and result_dir is None:
        raise InputError("resume needs result_dir: it skips the instances whose result files are complete")
    directory = Path(result_dir) if result_dir is not None else None
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    paths = [str(directory / name) if directory is not None else None for name in names]
    earlier = _earlier_times(results_csv) if resume else {}
    tally = _Tally(instances, written, names, paths, Path(results_csv), grace, progress)
    if resume:
        for index, path in enumerate(paths):
            if is_complete(path):
                tally.record(index, (read_result(path)[0], earlier.get(written[index], 0.0)))
    todo = [index for index, outcome in enumerate(tally.outcomes) if outcome is None]
    if ray_address is not None:
        _run_with_ray(todo, verify, tally, ray_address)
    else:
        _run_with_processes(todo, verify, tally, max(1, workers), threads)
    tally.write_csv()
    return tally.rows()


def _as_written(path: str, folder: Path) -> str:
    """A path (or each path of a network list) relative to the instances CSV's folder when it lies inside it, else
    as it is (absolute)."""
    def relative(one: str) -> str:
        try:
            return str(Path(one).relative_to(folder))
        except ValueError:
            return str(one)

    return format_networks([(name, relative(one)) for name, one in parse_networks(path)])


def _earlier_times(results_csv: str | Path) -> dict[tuple[str, str], float]:
    """Seconds per (onnx, vnnlib) from an earlier results CSV, for the instances a resumed run skips."""
    times: dict[tuple[str, str], float] = {}
    try:
        with open(results_csv, newline="") as handle:
            for row in csv.DictReader(handle):
                try:
                    times[(row["onnx"], row["vnnlib"])] = float(row["time"])
                except (KeyError, TypeError, ValueError):
                    continue
    except (OSError, csv.Error, UnicodeDecodeError):
        pass
    return times


def _worker(sender, verify, onnx, vnnlib, timeout, result_path, threads) -> None:
    sender.send("started")  # the instance's clock starts here, not while the process imports torch
    torch.set_num_threads(threads)
    retain_freed_memory()
    sender.send(run_one(verify, onnx, vnnlib, timeout, result_path))
    sender.close()


def _run_with_processes(todo: list[int], verify, tally: "_Tally", workers: int, threads: int | None = None) -> None:
    """One forkserver process per instance, at most `workers` at once, each killed when it overruns; a
    process that dies without an answer (signal, crash) is its instance's `error`."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "torch._dynamo", "opwise.bounds.vnncomp.runner", "opwise.tracing.onnx",
                                    "scipy.optimize"])
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    pending = list(todo)
    running: dict[int, list] = {}  # index -> [process, receiver, launched, began or None]
    while pending or running:
        while pending and len(running) < workers:
            index = pending.pop(0)
            onnx, vnnlib, timeout = tally.instances[index]
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=_worker, args=(sender, verify, onnx, vnnlib, timeout, tally.paths[index],
                                                            threads), daemon=True)
            process.start()
            sender.close()
            running[index] = [process, receiver, time.monotonic(), None]
        for index, state in list(running.items()):
            process, receiver, launched = state[:3]
            outcome, closed = _receive(receiver, state)
            if outcome is None and not closed and not process.is_alive():
                outcome, closed = _receive(receiver, state)  # what it sent just before it ended
            began, now = state[3], time.monotonic()
            if outcome is None and (closed or not process.is_alive()):
                process.join(timeout=5)
                outcome = tally.fail(index, "error", now - (began or launched), _death(process.exitcode))
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


def _receive(receiver, state: list) -> tuple[tuple[str, float] | None, bool]:
    """Read what a worker has sent: (its outcome or None, whether its end of the pipe is closed). A "started"
    message sets the instance's start time, state[3]."""
    while receiver.poll():
        try:
            message = receiver.recv()
        except (EOFError, OSError):  # the worker is gone and its end of the pipe with it
            return None, True
        if message == "started":
            state[3] = time.monotonic()
        else:
            return message, False
    return None, False


def _death(exitcode: int | None) -> str:
    """Why a worker ended without an answer, from its exit code."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (the kernel's out-of-memory killer sends it)" if name == "SIGKILL" else ""
        return f"the worker was killed by {name}{hint} before it answered"
    return f"the worker exited with code {exitcode} before it answered"


def _ray_task(started, index: int, verify, onnx: str, vnnlib: str, timeout: float, result_path) -> tuple[str, float]:
    """One instance on a Ray worker: announce the start (the driver's clock for this instance begins then,
    not while Ray schedules the task or the worker imports torch), then verify it on one thread."""
    started.put(index)
    torch.set_num_threads(1)
    retain_freed_memory()
    return run_one(verify, onnx, vnnlib, timeout, result_path)


def _run_with_ray(todo: list[int], verify, tally: "_Tally", address: str) -> None:
    """Ray tasks, no more in flight than the cluster has CPUs; a task that overruns its timeout by `grace`
    is cancelled (its worker killed) and counts as `timeout`, as in the process runner; a task whose worker
    dies is `error`."""
    import ray
    from ray.util.queue import Queue

    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    task = ray.remote(num_cpus=1, max_retries=0)(_ray_task)
    started = Queue()
    slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
    pending = list(todo)
    running: dict = {}  # reference -> [index, submitted, began or None]
    while pending or running:
        while pending and len(running) < slots:
            index = pending.pop(0)
            onnx, vnnlib, timeout = tally.instances[index]
            reference = task.remote(started, index, verify, onnx, vnnlib, timeout, tally.paths[index])
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
                finished[reference] = tally.fail(index, "error", now - (began or submitted), failure_reason(error))
        for reference, (index, submitted, began) in running.items():
            overrun = None if reference in finished else tally.overrun(index, submitted, began, now)
            if overrun is not None:
                ray.cancel(reference, force=True)
                finished[reference] = overrun
        for reference, outcome in finished.items():
            tally.record(running.pop(reference)[0], outcome)
    started.shutdown()


class _Tally:
    """What both suite runners share: when a running instance has overrun (its start, or its timeout plus
    `grace`), the outcomes in instance order, the results CSV (rewritten as each instance finishes) and the
    progress reports."""

    def __init__(self, instances, written, names, paths, results_csv: Path, grace: float,
                 progress: Progress | None = None, startup_limit: float = 300.0):
        self.instances, self.written, self.names, self.paths = instances, written, names, paths
        self.results_csv, self.grace, self.startup_limit = results_csv, grace, startup_limit
        self.outcomes: list[tuple[str, float] | None] = [None] * len(instances)
        self.counts: dict[str, int] = {}
        self.progress = progress
        self.start = time.monotonic()
        self.report()

    def overrun(self, index: int, launched: float, began: float | None, now: float) -> tuple[str, float] | None:
        """The outcome of an instance to stop now (`error` if it never started, `timeout`), whose result file
        is written here since its worker cannot, or None while it may run on."""
        if began is None:
            if now - launched <= self.startup_limit:
                return None
            return self.fail(index, "error", 0.0, f"the worker did not start within {self.startup_limit:.0f} s")
        timeout = self.instances[index][2]
        if now - began <= timeout + self.grace:
            return None
        return self.fail(index, "timeout", now - began, f"stopped {self.grace:.0f} s after its {timeout:g} s timeout")

    def fail(self, index: int, status: str, seconds: float, reason: str) -> tuple[str, float]:
        """The outcome of an instance whose worker could not answer: the reason on stderr (for `error`) and in
        its result file."""
        onnx, vnnlib, _ = self.instances[index]
        if status == "error":
            print(f"\n{onnx} {vnnlib}: {reason}", file=sys.stderr, flush=True)
        if self.paths[index] is not None:
            write_result(self.paths[index], InstanceResult(status, seconds, reason=reason))
        return status, seconds

    def record(self, index: int, outcome: tuple[str, float]) -> None:
        self.outcomes[index] = outcome
        self.counts[outcome[0]] = self.counts.get(outcome[0], 0) + 1
        self.write_csv()
        self.report()

    def report(self) -> None:
        """Tell `progress` how far the suite is."""
        if self.progress is None:
            return
        done, total, elapsed = sum(self.counts.values()), len(self.instances), time.monotonic() - self.start
        self.progress({"search": "suite", "done": done, "total": total, "counts": dict(self.counts),
                       "seconds": elapsed, "left": None if done == total else eta(done, total, elapsed)})

    def rows(self) -> list[dict]:
        """The results CSV's rows of the finished instances, in instance order."""
        return [{"onnx": onnx, "vnnlib": vnnlib, "status": outcome[0], "time": f"{outcome[1]:.3f}", "result_file": name}
                for (onnx, vnnlib), name, outcome in zip(self.written, self.names, self.outcomes) if outcome is not None]

    def write_csv(self) -> None:
        """Rewrite the results CSV with every finished instance (temporary file, then rename)."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["onnx", "vnnlib", "status", "time", "result_file"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows())
        write_atomically(self.results_csv, buffer.getvalue())


def suite_bar(report: dict, stream: TextIO | None = None) -> None:
    """Draw a suite's progress report as a bar rewritten in place (a newline once every instance is done).

    >>> import io
    >>> stream = io.StringIO()
    >>> suite_bar({"done": 1, "total": 3, "counts": {"unsat": 1}, "seconds": 4.0, "left": 8.0}, stream)
    >>> stream.getvalue()
    '\\r[##########....................] 1/3 unsat=1 4s ~8s left '
    """
    stream = stream or sys.stderr
    width, done, total = 30, report["done"], report["total"]
    filled = width * done // max(total, 1)
    summary = " ".join(f"{key}={value}" for key, value in sorted(report["counts"].items()))
    remaining = "" if report.get("left") is None else f" ~{report['left']:.0f}s left"
    stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {summary} {report['seconds']:.0f}s{remaining} ")
    if done == total:
        stream.write("\n")
    stream.flush()
