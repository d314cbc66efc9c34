"""run_suite under faults: workers that raise anything, run out of memory or are killed; an interrupted runner
resumed; result file names that would collide; absolute paths in instances.csv."""

from __future__ import annotations

import csv
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from opwise.bounds.vnncomp import InstanceResult, is_complete, read_result, run_suite
from opwise.errors import InputError

REPO = Path(__file__).resolve().parents[3]


def _exhaust_memory() -> None:
    """A MemoryError from a real allocation, made safe: the address-space limit is set 256 MiB above what
    the worker already maps, so the 4 GiB request fails at once and nothing is ever allocated."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as handle:
        mapped = int(handle.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (mapped + 2**28, hard))
    try:
        bytearray(2**32)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _recurse(depth: int = 0) -> int:
    return _recurse(depth + 1) + 1


def faulty_verify(onnx: str, vnnlib: str, timeout: float) -> InstanceResult:
    """The answer or the fault is in the ONNX file's stem; `hang` waits unless the folder holds `resume`."""
    folder, kind = Path(onnx).parents[1], Path(onnx).stem
    with open(folder / "calls.txt", "a") as handle:
        handle.write(kind + "\n")
    if kind == "unicode":
        b"\xff\xfe".decode("utf-8")
    if kind == "recursion":
        _recurse()
    if kind == "memory":
        _exhaust_memory()
    if kind == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "exits":
        os._exit(3)
    if kind == "hang":
        if not (folder / "resume").exists():
            time.sleep(600)
        return InstanceResult("unsat", 0.01)
    if kind == "sat":
        return InstanceResult("sat", 0.01, torch.tensor([0.5]), torch.tensor([1.0]))
    return InstanceResult(kind, 0.01)


FAULTS = ["unicode", "recursion", "memory", "killed", "exits"]
REASONS = {"unicode": "UnicodeDecodeError", "recursion": "RecursionError", "memory": "MemoryError",
           "killed": "SIGKILL", "exits": "code 3"}


def _instances(folder: Path, kinds: list[str]) -> Path:
    path = folder / "instances.csv"
    path.write_text("".join(f"onnx/{kind}.onnx,vnnlib/p.vnnlib,100\n" for kind in kinds))
    return path


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_fault_is_its_instances_error_and_the_rest_go_on(tmp_path, capfd):
    kinds = ["unsat", *FAULTS, "sat", "unknown"]
    rows = run_suite(_instances(tmp_path, kinds), tmp_path / "results.csv", workers=2, verify=faulty_verify,
                     result_dir=tmp_path / "files", grace=1.0)
    expected = ["unsat", *["error"] * len(FAULTS), "sat", "unknown"]
    assert [row["status"] for row in rows] == expected
    assert [(row["onnx"], row["status"]) for row in _csv(tmp_path / "results.csv")] == [
        (f"onnx/{kind}.onnx", status) for kind, status in zip(kinds, expected)]
    assert read_result(tmp_path / "files" / "sat__p.txt") == ("sat", [0.5], [1.0])
    err = capfd.readouterr().err
    for kind, reason in REASONS.items():
        text = (tmp_path / "files" / f"{kind}__p.txt").read_text()
        assert text.startswith("error\n") and reason in text, (kind, text)
        if kind in ("killed", "exits"):  # reported by the runner (a worker's own stderr is the forkserver's,
            assert f"{kind}.onnx" in err and reason in err  # which an earlier test in this process may capture)
    assert not list((tmp_path / "files").glob(".*.tmp"))  # no temporary file left behind


def test_an_interrupted_suite_keeps_its_results_and_resume_finishes_the_rest(tmp_path):
    """The runner itself is killed (as the kernel's OOM killer or a cluster's time limit would) while two
    instances hang: results.csv, rewritten as each instance finished, holds the others; resume=True runs only
    the two unfinished ones and leaves the earlier answers as they were."""
    kinds = ["unsat", "unicode", "hang", "killed", "sat", "memory", "hang2"]
    (tmp_path / "onnx").mkdir()
    instances = _instances(tmp_path, kinds)
    instances.write_text(instances.read_text().replace("hang2.onnx", "hang.onnx").replace(
        "onnx/hang.onnx,vnnlib/p.vnnlib,100\nonnx/killed", "onnx/hang.onnx,vnnlib/q.vnnlib,100\nonnx/killed"))
    code = ("import sys; from opwise.bounds.vnncomp import run_suite; "
            "from tests.bounds.vnncomp.test_runner import faulty_verify; "
            f"run_suite({str(instances)!r}, {str(tmp_path / 'results.csv')!r}, workers=2, verify=faulty_verify, "
            f"result_dir={str(tmp_path / 'files')!r})")
    runner = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = _csv(tmp_path / "results.csv") if (tmp_path / "results.csv").exists() else []
            if len(done) == 5:
                break
            assert runner.poll() is None, "the runner ended on its own"
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        os.killpg(runner.pid, signal.SIGKILL)  # the runner, its forkserver and the hung workers
        runner.wait()
    before = {(row["onnx"], row["vnnlib"]): row["status"] for row in _csv(tmp_path / "results.csv")}
    assert before == {("onnx/unsat.onnx", "vnnlib/p.vnnlib"): "unsat", ("onnx/unicode.onnx", "vnnlib/p.vnnlib"): "error",
                      ("onnx/killed.onnx", "vnnlib/p.vnnlib"): "error", ("onnx/sat.onnx", "vnnlib/p.vnnlib"): "sat",
                      ("onnx/memory.onnx", "vnnlib/p.vnnlib"): "error"}
    (tmp_path / "calls.txt").unlink()
    (tmp_path / "resume").touch()
    rows = run_suite(instances, tmp_path / "results.csv", workers=2, verify=faulty_verify,
                     result_dir=tmp_path / "files", resume=True)
    assert sorted((tmp_path / "calls.txt").read_text().split()) == ["hang", "hang"]
    assert [row["status"] for row in rows] == ["unsat", "error", "unsat", "error", "sat", "error", "unsat"]
    assert _csv(tmp_path / "results.csv") == rows
    assert all(is_complete(tmp_path / "files" / row["result_file"]) for row in rows)
    assert read_result(tmp_path / "files" / "sat__p.txt") == ("sat", [0.5], [1.0])


def test_resume_needs_the_result_folder(tmp_path):
    with pytest.raises(InputError, match="result_dir"):
        run_suite(_instances(tmp_path, ["unsat"]), tmp_path / "results.csv", verify=faulty_verify, resume=True)


def test_instances_with_the_same_stems_get_their_own_result_files(tmp_path):
    """`a/net.onnx,a/prop.vnnlib` and `b/net.onnx,b/prop.vnnlib` both wrote `net__prop.txt`: a `sat` was
    overwritten and scored wrong."""
    (tmp_path / "instances.csv").write_text("a/sat.onnx,a/prop.vnnlib,100\nb/sat.onnx,b/prop.vnnlib,100\n"
                                            "c/unsat.onnx,c/prop.vnnlib,100\n")
    rows = run_suite(tmp_path / "instances.csv", tmp_path / "results.csv", workers=2, verify=_by_folder,
                     result_dir=tmp_path / "files")
    names = [row["result_file"] for row in rows]
    assert len(set(names)) == 3 and names[2] == "unsat__prop.txt"
    assert all(name.startswith("sat__prop__") for name in names[:2])
    assert [read_result(tmp_path / "files" / name) for name in names] == [
        ("sat", [1.0], [1.0]), ("sat", [2.0], [2.0]), ("unsat", None, None)]


def _by_folder(onnx: str, vnnlib: str, timeout: float) -> InstanceResult:
    """`sat` with x = y = 1 for folder a, 2 for folder b; the stem's word otherwise."""
    if Path(onnx).stem == "sat":
        value = {"a": 1.0, "b": 2.0}[Path(onnx).parent.name]
        return InstanceResult("sat", 0.01, torch.tensor([value]), torch.tensor([value]))
    return InstanceResult(Path(onnx).stem, 0.01)


def test_absolute_paths_in_instances_csv(tmp_path):
    """Absolute paths ran every instance, then `relative_to` raised and results.csv was lost."""
    elsewhere = tmp_path / "elsewhere"
    (tmp_path / "suite").mkdir()
    (tmp_path / "suite" / "instances.csv").write_text(
        f"{elsewhere}/sat.onnx,{elsewhere}/p.vnnlib,100\n{tmp_path}/suite/onnx/unsat.onnx,vnnlib/p.vnnlib,100\n")
    (elsewhere / "onnx").mkdir(parents=True)
    rows = run_suite(tmp_path / "suite" / "instances.csv", tmp_path / "results.csv", workers=1, verify=faulty_verify,
                     result_dir=tmp_path / "files")
    assert [(row["onnx"], row["vnnlib"], row["status"]) for row in _csv(tmp_path / "results.csv")] == [
        (f"{elsewhere}/sat.onnx", f"{elsewhere}/p.vnnlib", "sat"), ("onnx/unsat.onnx", "vnnlib/p.vnnlib", "unsat")]
    assert read_result(tmp_path / "files" / rows[0]["result_file"])[0] == "sat"


def test_only_runs_the_instances_whose_paths_contain_one_of_the_strings(tmp_path):
    instances = _instances(tmp_path, ["sat", "unsat", "unknown"])
    rows = run_suite(instances, tmp_path / "results.csv", workers=1, verify=faulty_verify, only=["uns", "unk"])
    assert [row["status"] for row in rows] == ["unsat", "unknown"]
    assert (tmp_path / "calls.txt").read_text().split() == ["unsat", "unknown"]


def thread_counting_verify(onnx: str, vnnlib: str, timeout: float) -> InstanceResult:
    """Writes the worker's torch thread count next to the instances."""
    (Path(onnx).parents[1] / "threads.txt").write_text(str(torch.get_num_threads()))
    return InstanceResult("unsat", 0.01)


@pytest.mark.parametrize("threads", [1, 3])
def test_threads_sets_each_workers_torch_threads(tmp_path, threads):
    """`threads` overrides the CPUs shared out among the workers (1 on a machine other jobs load)."""
    instances = _instances(tmp_path, ["unsat"])
    run_suite(instances, tmp_path / "results.csv", workers=1, verify=thread_counting_verify, threads=threads)
    assert (tmp_path / "threads.txt").read_text() == str(threads)


def test_only_matching_nothing_and_threads_below_one_are_refused(tmp_path):
    """Both ran: an empty suite scored as 0 of 0, and 0 threads per worker."""
    instances = _instances(tmp_path, ["sat", "unsat"])
    with pytest.raises(InputError, match="no instance .* 'nothing'"):
        run_suite(instances, tmp_path / "results.csv", verify=faulty_verify, only=["nothing"])
    with pytest.raises(InputError, match="threads must be"):
        run_suite(instances, tmp_path / "results.csv", verify=faulty_verify, threads=0)
    assert not (tmp_path / "calls.txt").exists()
