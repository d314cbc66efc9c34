"""opwise and α,β-CROWN on the same VNN-COMP instances, on this machine, one after the other.

    python -m benchmarks.abcrown_compare oval21_2022 --abcrown ~/alpha-beta-CROWN --python ~/abcrown-env/bin/python
    python -m benchmarks.abcrown_compare mnist_fc_2022 --only 256x4 --cap 60 --abcrown ... --python ...

The published VNN-COMP times (`expected_evidence.csv`, what benchmarks.vnncomp compares with) come from other
machines, most with a GPU and a MIP solver. This runs α,β-CROWN (`--abcrown`: a checkout of
github:Verified-Intelligence/alpha-beta-CROWN with its auto_LiRPA submodule; `--python`: an interpreter of an
environment where its `abcrown.py` runs) here, on the same instances, caps and threads as opwise, so the counts
compare the methods rather than the machines.

Each suite runs first with opwise (benchmarks.vnncomp's runner, one worker), then with α,β-CROWN, one instance at a
time, each with `--threads` threads. α,β-CROWN uses the configuration its authors used for the suite at VNN-COMP
(`CONFIGS`, files of its `complete_verifier/exp_configs`; `--config` gives another) on `--device`, without MIP
refinement and CPLEX cuts unless `--keep-solvers` (they need Gurobi and CPLEX licences). Prints a row per instance,
then per suite the solved counts, the instances only one tool solved, wrong answers against expected.csv and the
median time ratio opwise / α,β-CROWN on the instances both solve. α,β-CROWN's time is the one it reports (loading
included, like opwise's); its `sat` answers are taken as given (only expected.csv can call them wrong).
"""

from __future__ import annotations

import csv
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.vnncomp import find_benchmarks, score, suite_names
from opwise.bounds.vnncomp import run_suite
from opwise.bounds.vnncomp.runner import read_instances
from opwise.cli.options import OneLineParser
from opwise.errors import InputError

#: per suite folder prefix, (text in the network's path, any case; α,β-CROWN's configuration for it), first match wins
CONFIGS = {
    "acasxu": [("", "vnncomp21/acasxu.yaml")],
    "eran": [("sigmoid", "vnncomp21/eran_sigmoid.yaml"), ("", "vnncomp21/eran_mlp.yaml")],
    "mnist_fc": [("256x2", "vnncomp22/mnistfc_small.yaml"), ("", "vnncomp22/mnistfc.yaml")],
    "oval21": [("", "vnncomp22/oval22.yaml")],
    "sri_resnet_a": [("", "vnncomp22/resnet_A.yaml")],
    "vit": [("", "vnncomp23/vit.yaml")],
    "dist_shift": [("", "vnncomp23/dist-shift.yaml")],
    "cgan": [("", "vnncomp23/cgan.yaml")],
}

#: run by α,β-CROWN's interpreter (it has PyYAML): the suite's configuration moved to this machine
ADAPT = """
import sys, yaml
source, target, device, keep_solvers = sys.argv[1:5]
config = yaml.safe_load(open(source)) or {}
config.pop("data", None)  # the instance is given by path, not by the suite's CSV rows
general = config.setdefault("general", {})
for key in ("root_path", "csv_name"):
    general.pop(key, None)
general["device"] = device
if keep_solvers == "0":
    if general.get("complete_verifier") in ("mip", "bab-refine"):  # MIP needs a Gurobi licence
        general["complete_verifier"] = "bab"
    cut = config.get("bab", {}).get("cut")
    if cut:  # CPLEX cuts need a CPLEX licence
        cut["enabled"] = False
yaml.safe_dump(config, open(target, "w"))
"""

#: α,β-CROWN's final line per answer, as benchmarks.vnncomp's statuses
ANSWERS = {"sat": "sat", "unsafe": "sat", "unsat": "unsat", "safe": "unsat", "safe-incomplete": "unsat"}


def reference_config(suite: str, onnx: str, abcrown: Path, given: str | None) -> Path:
    """The α,β-CROWN configuration file for an instance (`given`, else the suite's entry in `CONFIGS`)."""
    if given:
        return Path(given)
    for prefix, choices in CONFIGS.items():
        if suite.startswith(prefix):
            return abcrown / "exp_configs" / next(name for text, name in choices if text in onnx.lower())
    raise InputError(f"no α,β-CROWN configuration known for suite {suite!r}: pass --config FILE")


def run_reference(python: str, abcrown: Path, config: Path, onnx: Path, vnnlib: Path, timeout: float,
                  threads: int) -> tuple[str, float]:
    """(status, seconds) of one α,β-CROWN run: its `Result:` and `Time:` lines ('error' without them)."""
    environment = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    try:
        done = subprocess.run([python, "abcrown.py", "--config", str(config), "--onnx_path", str(onnx),
                               "--vnnlib_path", str(vnnlib), "--timeout", str(timeout)], cwd=abcrown,
                              capture_output=True, text=True, env=environment, timeout=2 * timeout + 120)
    except subprocess.TimeoutExpired:
        return "timeout", 2 * timeout + 120
    answers = re.findall(r"^Result: (\S+)", done.stdout, re.MULTILINE)
    times = re.findall(r"^Time: ([\d.]+)", done.stdout, re.MULTILINE)
    if not answers:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        print(f"  α,β-CROWN error on {vnnlib.name}: {tail[0][:200]}", file=sys.stderr)
        return "error", float("nan")
    status = ANSWERS.get(answers[-1], answers[-1])
    return status, float(times[-1]) if times else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="abcrown_compare", description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="+", help="suite folder names")
    parser.add_argument("--abcrown", required=True, help="the alpha-beta-CROWN checkout (or its complete_verifier)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter α,β-CROWN runs with")
    parser.add_argument("--cap", type=float, default=60.0, help="cap on each instance's timeout, seconds")
    parser.add_argument("--threads", type=int, default=1, help="threads for each tool")
    parser.add_argument("--device", default="cpu", help="α,β-CROWN's device (opwise runs on the CPU)")
    parser.add_argument("--config", default=None, help="α,β-CROWN configuration for every suite given")
    parser.add_argument("--keep-solvers", action="store_true", help="keep α,β-CROWN's MIP refinement and CPLEX cuts")
    parser.add_argument("--only", nargs="+", default=(), metavar="TEXT",
                        help="run only the instances whose onnx or vnnlib path contains one of these strings")
    parser.add_argument("--benchmarks", default=None, help="the benchmarks folder (default ../shared/benchmarks)")
    parser.add_argument("--out", default="abcrown_compare", help="folder for opwise's results")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.cap <= 0:
        print("abcrown_compare: error: --threads must be at least 1 and --cap positive", file=sys.stderr)
        return 2
    abcrown = Path(args.abcrown).expanduser()
    abcrown = abcrown / "complete_verifier" if (abcrown / "complete_verifier" / "abcrown.py").is_file() else abcrown
    if not (abcrown / "abcrown.py").is_file():
        print(f"abcrown_compare: error: no abcrown.py in {args.abcrown} or its complete_verifier folder", file=sys.stderr)
        return 2
    root = find_benchmarks(args.benchmarks)
    summary = []
    with tempfile.TemporaryDirectory() as scratch:
        for suite in suite_names(root, args.suites):
            suite_dir = root / suite
            out = Path(args.out) / suite
            out.mkdir(parents=True, exist_ok=True)
            try:
                ours = run_suite(suite_dir / "instances.csv", out / "results.csv", cap=args.cap, workers=1,
                                 result_dir=out / "files", only=args.only, threads=args.threads)
            except InputError as error:
                print(f"{suite}: skipped: {error}", file=sys.stderr)
                continue
            timeouts = {(Path(o).resolve(), Path(v).resolve()): t
                        for o, v, t in read_instances(suite_dir / "instances.csv", args.cap)}
            expected = _expected(suite_dir)
            ours_scored = score(suite_dir, ours, out / "files")
            theirs = []
            for row in ours:
                onnx, vnnlib = ((suite_dir / row[key]).resolve() for key in ("onnx", "vnnlib"))
                source = reference_config(suite, row["onnx"], abcrown, args.config)
                config = Path(scratch) / f"{suite}_{source.stem}.yaml"
                if not config.exists():
                    subprocess.run([args.python, "-c", ADAPT, str(source), str(config), args.device,
                                    "1" if args.keep_solvers else "0"], check=True)
                status, seconds = run_reference(args.python, abcrown, config, onnx, vnnlib,
                                                timeouts[(onnx, vnnlib)], args.threads)
                theirs.append((status, seconds))
                known = expected.get((row["onnx"], row["vnnlib"]), "")
                print(f"{suite} {Path(row['onnx']).stem}/{Path(row['vnnlib']).stem}: expected {known or '?'}, "
                      f"opwise {row['status']} {float(row['time']):.1f} s, α,β-CROWN {status} {seconds:.1f} s", flush=True)
            summary.append((suite, _compare(ours, theirs, expected, ours_scored["wrong"])))
    if not summary:
        print("abcrown_compare: error: no instance to run (see the lines above)", file=sys.stderr)
        return 2
    print(f"\ncap {args.cap} s, {args.threads} thread(s) each, α,β-CROWN on {args.device}"
          f"{'' if args.keep_solvers else ', without MIP refinement or CPLEX cuts'}")
    print(f"{'suite':<22}{'inst':>6}{'opwise':>8}{'α,β':>6}{'only opwise':>13}{'only α,β':>10}{'wrong':>7}{'wrong α,β':>11}"
          f"{'time ratio':>12}")
    for suite, c in summary:
        ratio = f"{c['ratio']:.2f}" if c["ratio"] is not None else "-"
        print(f"{suite:<22}{c['instances']:>6}{c['ours']:>8}{c['theirs']:>6}{c['only_ours']:>13}{c['only_theirs']:>10}"
              f"{c['wrong']:>7}{c['wrong_theirs']:>11}{ratio:>12}")
    return 1 if any(c["wrong"] for _, c in summary) else 0


def _expected(suite_dir: Path) -> dict[tuple[str, str], str]:
    """expected.csv's answer per (onnx, vnnlib) as written there."""
    path = suite_dir / "expected.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as handle:
        return {(row["onnx"], row["vnnlib"]): row["expected"] for row in csv.DictReader(handle)}


def _compare(ours: list[dict], theirs: list[tuple[str, float]], expected: dict, wrong: int) -> dict:
    """Counts for one suite: solved by each, by one only, α,β-CROWN's wrong answers, median time ratio."""
    solved = ("sat", "unsat")
    pairs = [(row, status, seconds, expected.get((row["onnx"], row["vnnlib"]))) for row, (status, seconds) in zip(ours, theirs)]
    both = [(float(row["time"]), seconds) for row, status, seconds, _ in pairs
            if row["status"] in solved and status in solved and seconds > 0]
    return {
        "instances": len(ours),
        "ours": sum(row["status"] in solved for row in ours),
        "theirs": sum(status in solved for status, _ in theirs),
        "only_ours": sum(row["status"] in solved and status not in solved for row, status, _, _ in pairs),
        "only_theirs": sum(row["status"] not in solved and status in solved for row, status, _, _ in pairs),
        "wrong_theirs": sum(status in solved and known in solved and status != known for _, status, _, known in pairs),
        "wrong": wrong,
        "ratio": statistics.median(a / b for a, b in both) if both else None,
    }


if __name__ == "__main__":
    sys.exit(main())
