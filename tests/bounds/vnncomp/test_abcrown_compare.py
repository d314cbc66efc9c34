"""benchmarks/abcrown_compare.py: α,β-CROWN's answers are read, its configuration moved to this machine, and the
two tools' counts compared per instance (a stand-in abcrown.py: α,β-CROWN itself is not installed here)."""

import json
import sys

import pytest

from benchmarks.abcrown_compare import _compare, main, reference_config

#: answers like α,β-CROWN's last lines; records the configuration it was given
STAND_IN = """
import json, sys, yaml
args = sys.argv
config = yaml.safe_load(open(args[args.index("--config") + 1]))
json.dump(config, open("seen.json", "w"))
vnnlib = args[args.index("--vnnlib_path") + 1]
print("Result: safe" if "prop_3" in vnnlib else "Result: timeout")
print("Time: 2.5")
"""


def test_each_tool_is_run_on_the_same_instances_and_compared(benchmarks_dir, tmp_path, capsys):
    pytest.importorskip("yaml")  # the stand-in reads its configuration as α,β-CROWN does
    acas = benchmarks_dir / "acasxu"
    suite = tmp_path / "bench" / "mini"
    suite.mkdir(parents=True)
    rows = [(acas / "onnx/ACASXU_run2a_1_1_batch_2000.onnx", acas / "vnnlib/prop_3.vnnlib", "unsat"),
            (acas / "onnx/ACASXU_run2a_1_2_batch_2000.onnx", acas / "vnnlib/prop_2.vnnlib", "sat")]
    (suite / "instances.csv").write_text("".join(f"{o},{v},116\n" for o, v, _ in rows))
    (suite / "expected.csv").write_text("onnx,vnnlib,expected\n" + "".join(f"{o},{v},{e}\n" for o, v, e in rows))
    verifier = tmp_path / "abc" / "complete_verifier"
    verifier.mkdir(parents=True)
    (verifier / "abcrown.py").write_text(STAND_IN)
    config = tmp_path / "suite.yaml"
    config.write_text("general:\n  complete_verifier: bab-refine\n  root_path: elsewhere\n"
                      "data:\n  start: 30\nbab:\n  cut:\n    enabled: true\n    cplex_cuts: true\n")

    code = main(["mini", "--benchmarks", str(tmp_path / "bench"), "--abcrown", str(tmp_path / "abc"),
                 "--python", sys.executable, "--config", str(config), "--cap", "20", "--out", str(tmp_path / "out")])

    out = capsys.readouterr().out
    assert code == 0
    seen = json.loads((verifier / "seen.json").read_text())
    assert seen["general"] == {"complete_verifier": "bab", "device": "cpu"}  # no MIP, no suite CSV, this device
    assert "data" not in seen and seen["bab"]["cut"]["enabled"] is False
    assert "opwise unsat" in out and "α,β-CROWN unsat 2.5 s" in out  # prop_3: its "safe" read as unsat
    assert "opwise sat" in out and "α,β-CROWN timeout" in out  # prop_2 on 1_2: a counterexample only opwise found
    summary = out.splitlines()[-1].split()
    assert summary[:8] == ["mini", "2", "2", "1", "1", "0", "0", "0"]


def test_the_comparison_counts_what_each_solved_and_calls_wrong_only_against_expected():
    ours = [{"onnx": "a", "vnnlib": "p", "status": "unsat", "time": "2.0"},
            {"onnx": "a", "vnnlib": "q", "status": "timeout", "time": "60"},
            {"onnx": "a", "vnnlib": "r", "status": "sat", "time": "1.0"}]
    theirs = [("unsat", 4.0), ("unsat", 30.0), ("unsat", 5.0)]
    expected = {("a", "p"): "unsat", ("a", "q"): "unknown", ("a", "r"): "sat"}
    counts = _compare(ours, theirs, expected, wrong=0)
    assert (counts["ours"], counts["theirs"], counts["only_ours"], counts["only_theirs"]) == (2, 3, 0, 1)
    assert counts["wrong_theirs"] == 1  # r: unsat where a counterexample is known; q: no known answer, not wrong
    assert counts["ratio"] == pytest.approx(0.35)  # median of 2/4 and 1/5


def test_a_suite_without_a_known_configuration_asks_for_one(tmp_path):
    assert reference_config("oval21_2022", "onnx/cifar_base_kw.onnx", tmp_path, None).name == "oval22.yaml"
    assert reference_config("eran_2021", "onnx/mnist_relu_9_200.onnx", tmp_path, None).name == "eran_mlp.yaml"
    assert reference_config("eran_2021", "onnx/ffnnSIGMOID__Point_6x200.onnx", tmp_path, None).name == "eran_sigmoid.yaml"
    with pytest.raises(Exception, match="--config"):
        reference_config("my_suite", "net.onnx", tmp_path, None)


def test_an_unknown_suite_or_folder_is_a_usage_error_naming_what_is_there(tmp_path, capsys):
    from benchmarks.vnncomp import find_benchmarks, suite_names

    (tmp_path / "acasxu").mkdir()
    (tmp_path / "acasxu" / "instances.csv").write_text("")
    (tmp_path / "notes").mkdir()
    assert suite_names(tmp_path, ["all"]) == ["acasxu"]
    with pytest.raises(SystemExit) as ended:
        suite_names(tmp_path, ["acasxu", "nosuch"])
    message = capsys.readouterr().err
    assert ended.value.code == 2 and "no suite 'nosuch'" in message
    assert message.rstrip().endswith("the suites there: acasxu")
    with pytest.raises(SystemExit) as ended:
        find_benchmarks(str(tmp_path / "absent"))
    assert ended.value.code == 2 and str(tmp_path / "absent") in capsys.readouterr().err
