"""Every script in examples/ runs in its fast mode (FAST=1), stays short, and writes what it says."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
WRITES = {
    "explain_cnn.py": ["cnn_heatmaps.png"],
    "explain_language_model.py": ["next_token.png"],
    "verify_bab.py": [],
    "compare_composites.py": ["abpc.png"],
    "vnncomp_suite.py": ["results.csv"],
    "explain_counterexample.py": ["counterexample.png"],
    "certified_map.py": ["certified_map.png"],
    "report.py": ["report.html"],
}


def test_every_example_is_listed_and_short():
    scripts = sorted(path.name for path in EXAMPLES.glob("*.py"))
    assert scripts == sorted(WRITES)
    for name in scripts:
        assert len((EXAMPLES / name).read_text().splitlines()) < 60, name


@pytest.mark.parametrize("name", [n for n in WRITES if n != "vnncomp_suite.py"])
def test_example_runs_in_fast_mode(name, tmp_path, monkeypatch, capsys):
    if name == "explain_language_model.py":
        pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAST", "1")
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    out = capsys.readouterr().out
    assert out.strip()
    for written in WRITES[name]:
        assert (tmp_path / written).stat().st_size > 1000
    if name == "verify_bab.py":
        assert "verified" in out and "falsified" in out


def test_vnncomp_suite_example_in_its_own_process(tmp_path):
    """The suite runner starts worker processes that import the script: it runs as a real program."""
    pytest.importorskip("onnx")
    environment = {**os.environ, "FAST": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(EXAMPLES / "vnncomp_suite.py")], cwd=tmp_path, env=environment,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    statuses = [line.split()[2] for line in result.stdout.splitlines() if "vnnlib" in line]
    assert sorted(statuses) == ["sat", "unsat"]
    assert (tmp_path / "results.csv").exists()
