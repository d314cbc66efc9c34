"""Each command on each model source: it runs and honours its inputs (or refuses in one line, exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from opwise.cli import main
from tests.cli.sources import SOURCES, spec


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("source", SOURCES)
def test_trace_every_source(sources, capsys, source):
    model, extra = spec(source, sources)
    code, out, err = run(capsys, "trace", model, *extra)
    assert code == 0, err
    assert "-> output" in out.splitlines()[-3] and "relevance rules cover" in out


@pytest.mark.parametrize("source", SOURCES)
def test_explain_every_source_writes_picture_and_relevance(sources, capsys, tmp_path, source):
    model, extra = spec(source, sources)
    picture, saved = tmp_path / "r.png", tmp_path / "r.npy"
    code, out, err = run(capsys, "explain", model, *extra, "--out", picture, "--save", saved)
    assert code == 0, err
    assert picture.stat().st_size > 1000 and "prediction:" in out and "conservation:" in out
    relevance = np.load(saved)
    expected_batch = {"factory-without-inputs": 2, "factory-with-inputs": 3, "pt2": 3}.get(source, 1)
    assert relevance.shape == (expected_batch, 1, 8, 8) and np.isfinite(relevance).all() and np.abs(relevance).sum() > 0


@pytest.mark.parametrize("source", SOURCES)
def test_verify_every_source_writes_one_result_per_sample(sources, capsys, tmp_path, source):
    model, extra = spec(source, sources)
    out = tmp_path / "r.json"
    code, text, err = run(capsys, "verify", model, *extra, "--method", "ibp", "--eps", "0.001", "--out", out,
                          *(["--samples", "2"] if source == "builtin" else []))
    assert code == 0, err
    records = json.loads(out.read_text())
    expected = {"builtin": 2, "factory-with-inputs": 3, "factory-without-inputs": 2, "pt2": 3}.get(source, 1)
    assert [r["sample"] for r in records] == list(range(expected))
    assert all(r["status"] in ("verified", "unknown", "falsified") for r in records)
    assert len([line for line in text.splitlines() if line[:1].isdigit()]) == expected


def test_a_factory_without_inputs_asks_for_them(sources, capsys):
    model = spec("factory-without-inputs", sources)[0]
    for command in ("trace", "explain", "verify"):
        code, _, err = run(capsys, command, model)
        assert code == 2 and "--input-shape" in err and err.count("\n") == 1


def test_weights_are_loaded_over_the_architecture(sources, capsys, tmp_path):
    plain, extra = spec("factory-without-inputs", sources)
    weighted = spec("weights", sources)[0]
    saved = []
    for model in (plain, weighted):
        path = tmp_path / f"{len(saved)}.npy"
        assert run(capsys, "explain", model, "--input-shape", "1,1,8,8", "--save", path, "--out", tmp_path / "r.png")[0] == 0
        saved.append(np.load(path))
    assert not np.allclose(saved[0], saved[1])


def test_onnx_input_shape_must_match_the_imported_shapes(sources, capsys):
    code, _, err = run(capsys, "explain", sources / "net.onnx", "--input-shape", "2,1,8,8")
    assert code == 2 and "fixed input shapes" in err


def test_onnx_with_a_symbolic_batch_takes_another_batch_size(tmp_path, capsys):
    """A file exported with a symbolic batch (dynamic_axes) was refused at any --input-shape but its import's
    batch of 1 ("imported with fixed input shapes"), though verify took any batch; explain and trace now take
    another batch size for such a file, and still refuse other shapes and fixed-batch files."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(2 * 6 * 6, 3)).eval()
    for name, axes in (("dyn.onnx", {"x": {0: "batch"}}), ("fixed.onnx", None)):
        torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(tmp_path / name), dynamo=False, input_names=["x"],
                          dynamic_axes=axes)
    saved = tmp_path / "r.npy"
    code, out, err = run(capsys, "explain", tmp_path / "dyn.onnx", "--input-shape", "3,1,8,8", "--save", saved,
                         "--out", tmp_path / "r.png")
    assert code == 0, err
    relevance = np.load(saved)
    assert relevance.shape == (3, 1, 8, 8) and np.isfinite(relevance).all()
    code, out, err = run(capsys, "trace", tmp_path / "dyn.onnx", "--input-shape", "2,1,8,8")
    assert code == 0 and "inputs x 2x1x8x8 -> output 2x3" in out, err
    code, _, err = run(capsys, "explain", tmp_path / "dyn.onnx", "--input-shape", "2,1,9,9")
    assert code == 2 and "fixed input shapes" in err and "only the leading (batch) size may differ" in err
    code, _, err = run(capsys, "explain", tmp_path / "fixed.onnx", "--input-shape", "2,1,8,8")
    assert code == 2 and "fixed input shapes" in err and "symbolic batch" in err


def test_a_fixed_batch_pt2_program_is_verified_on_its_example_input(tmp_path, capsys):
    """verify refused a program exported for batch 1; the engine re-traces or chunks it, so it verifies."""
    import torch

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    torch.export.save(torch.export.export(model, (torch.rand(1, 1, 2, 2),)), tmp_path / "fixed.pt2")
    code, out, err = run(capsys, "verify", tmp_path / "fixed.pt2")
    assert code == 0 and err == "" and "1 verified" in out
