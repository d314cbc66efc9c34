"""Running whole VNN-COMP suites: every instance of an instances CSV in its own worker process (or as a
Ray task), killed when it overruns, with a results CSV and a progress bar."""

from __future__ import annotations

import csv
import multiprocessing
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable

import torch

from opwise.bounds.allocator import retain_freed_memory
from opwise.bounds.vnncomp.instance import verify_instance
from opwise.bounds.vnncomp.results import InstanceResult, result_file_name, write_result
from opwise.errors import OpwiseError, SpecError


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
              grace: float = 10.0, device: str | None = None) -> list[dict]:
    """Run every instance of a VNN-COMP instances CSV, `workers` at a time, and write the results CSV.

    Each instance runs in its own worker process that is killed `grace` seconds after its timeout (capped
    at `cap`), so a hung instance counts as `timeout` and cannot stall the suite. With `ray_address`
    the instances run as Ray tasks instead, one CPU each, cancelled the same way when they overrun
    (`pip install opwise[ray]`; `result_dir` must then be a folder every node can write). Results CSV
    columns: onnx, vnnlib, status, time; result files (VNN-COMP format) go to `result_dir` when given. A progress bar is drawn on stderr.
    """
    if device is not None:  # every worker verifies on this device ("cuda": one GPU shared by the workers)
        verify = partial(verify, device=device)
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
    context.set_forkserver_preload(["torch", "torch._dynamo", "opwise.bounds.vnncomp.runner", "opwise.tracing.onnx"])
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


def _progress(done: int, total: int, counts: dict[str, int], elapsed: float) -> None:
    width = 30
    filled = width * done // max(total, 1)
    summary = " ".join(f"{key}={value}" for key, value in sorted(counts.items()))
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {summary} {elapsed:.0f}s ")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


