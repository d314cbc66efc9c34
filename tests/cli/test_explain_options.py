"""`opwise explain`: every option changes the result or is refused with one line and exit code 2."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import opwise
from opwise.cli import main


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def saved(capsys, tmp_path, *argv) -> np.ndarray:
    path = tmp_path / "saved.npy"
    code, _, err = run(capsys, "explain", *argv, "--save", path, "--out", tmp_path / "r.png")
    assert code == 0, err
    return np.load(path)


@pytest.fixture
def figures(monkeypatch):
    """The figures the command draws (heatmap still renders and writes them)."""
    from opwise.attribution import pictures

    drawn, original = [], pictures.heatmap

    def record(*args, **options):
        drawn.append(original(*args, **options))
        return drawn[-1]

    monkeypatch.setattr(pictures, "heatmap", record)
    return drawn


def test_save_holds_what_the_api_computes(capsys, tmp_path):
    relevance = saved(capsys, tmp_path, "builtin:cnn", "--target", "3")
    images, _ = opwise.models.demo_inputs("cnn", n=1)
    expected = opwise.explain(opwise.models.builtin("cnn"), images, target=3, composite="epsilon-plus-flat").relevance
    np.testing.assert_allclose(relevance, expected.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("first, second", [
    (["--target", "0"], ["--target", "5"]),
    (["--composite", "epsilon"], ["--composite", "epsilon-plus-flat"]),
    (["--composite", "epsilon", "--epsilon", "1e-6"], ["--composite", "epsilon", "--epsilon", "10"]),
    (["--composite", "epsilon-gamma-box", "--gamma", "0"], ["--composite", "epsilon-gamma-box", "--gamma", "2"]),
    (["--composite", "epsilon-gamma-box", "--low", "-1", "--high", "1"],
     ["--composite", "epsilon-gamma-box", "--low", "0", "--high", "1"]),
    (["--composite", "EpsilonPlusFlat"], ["--composite", "epsilon_gamma_box"]),
])
def test_options_change_the_relevance(capsys, tmp_path, first, second):
    assert not np.allclose(saved(capsys, tmp_path, "builtin:cnn", *first), saved(capsys, tmp_path, "builtin:cnn", *second))


def test_zennit_name_is_the_same_composite(capsys, tmp_path):
    np.testing.assert_array_equal(saved(capsys, tmp_path, "--composite", "epsilon_plus_flat"),
                                  saved(capsys, tmp_path, "--composite", "epsilon-plus-flat"))


def test_input_file_and_input_shape_are_what_is_explained(sources, capsys, tmp_path):
    model = f"{sources / 'nets.py'}:without_inputs"
    assert saved(capsys, tmp_path, model, "--input-shape", "3,1,8,8").shape == (3, 1, 8, 8)
    x = np.random.default_rng(0).random((1, 1, 8, 8)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    relevance = saved(capsys, tmp_path, model, "--input", tmp_path / "x.npy")
    from opwise.tracing.loading import load_model

    expected = opwise.explain(load_model(model).model, torch.from_numpy(x)).relevance
    np.testing.assert_allclose(relevance, expected.numpy(), rtol=1e-5, atol=1e-7)


def test_picture_title_clip_and_sign(capsys, tmp_path, figures):
    assert run(capsys, "explain", "--target", "2", "--out", tmp_path / "a.png")[0] == 0
    title = figures[0].get_suptitle()
    assert "builtin:cnn" in title and "epsilon-plus-flat" in title and "prediction 0" in title
    assert "explained output 2" in title
    relevance_axes = [axes for axes in figures[0].axes if axes.get_title() == "relevance"][0]
    low, high = relevance_axes.images[0].get_clim()
    shown = relevance_axes.images[0].get_array()
    assert low == -high and high == pytest.approx(np.percentile(np.abs(shown), 99.5)) and high < np.abs(shown).max()
    assert run(capsys, "explain", "--target", "2", "--clip", "100", "--sign", "positive", "--out", tmp_path / "b.png")[0] == 0
    relevance_axes = [axes for axes in figures[1].axes if axes.get_title() == "relevance"][0]
    low, high = relevance_axes.images[0].get_clim()
    shown = relevance_axes.images[0].get_array()
    assert low == 0.0 and high == pytest.approx(shown.max()) and shown.min() >= 0.0


def test_quiet_prints_nothing_but_writes(capsys, tmp_path):
    code, out, err = run(capsys, "explain", "--quiet", "--out", tmp_path / "q.png")
    assert code == 0 and out == "" and (tmp_path / "q.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["--composite", ""], "empty"),
    (["--composite", "epsilon-plus-flt"], "did you mean 'epsilon-plus-flat'"),
    (["--gamma", "0.5"], "takes no parameter gamma"),
    (["--composite", "epsilon-gamma-box", "--low", "1", "--high", "0"], "--low 1.0 must be below --high"),
    (["--epsilon", "nan"], "finite"),
    (["--epsilon", "-1"], "negative"),
    (["--clip", "0"], "percentile"),
    (["--clip", "101"], "percentile"),
    (["--sign", "both"], "invalid choice"),
    (["--target", "-1"], "at least 0"),
    (["--target", "10"], "target"),
    (["--out", "OUT/relevance.jpg"], "must end in .png"),
    (["--out", "OUT/missing/r.png"], "does not exist"),
    (["--out", "OUT"], "is a directory"),
    (["--save", "OUT/r.txt"], "must end in .npy"),
    (["--device", "cuda:99"], "--device"),
    (["--device", "gpu"], "not a device"),
    (["--input", "OUT/missing.npy"], "does not exist"),
    (["--input-shape", "0,1"], "sizes must be positive"),
])
def test_bad_options_are_one_line_and_exit_2(capsys, tmp_path, argv, message):
    argv = [a.replace("OUT", str(tmp_path)) for a in argv]
    code, out, err = run(capsys, "explain", *argv)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "relevance.png").exists()


@pytest.mark.parametrize("content, message", [
    (b"", "not a readable image"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "not a readable image"),
])
def test_broken_images_are_refused(capsys, tmp_path, content, message):
    (tmp_path / "broken.png").write_bytes(content)
    code, _, err = run(capsys, "explain", "--input", tmp_path / "broken.png", "--out", tmp_path / "r.png")
    assert code == 2 and message in err


def test_string_npy_and_dict_pt_inputs_are_refused(capsys, tmp_path):
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    torch.save({"x": torch.zeros(1)}, tmp_path / "d.pt")
    for path, message in ((tmp_path / "s.npy", "not numbers"), (tmp_path / "d.pt", "not a tensor")):
        code, _, err = run(capsys, "explain", "--input", path, "--out", tmp_path / "r.png")
        assert code == 2 and message in err, err


def test_a_low_conservation_is_explained_not_a_raw_warning(capsys, tmp_path):
    code, out, err = run(capsys, "explain", "builtin:transformer", "--composite", "attn-lrp", "--target", "3",
                         "--out", tmp_path / "t.png")
    assert code == 0
    assert "UserWarning" not in err and "warnings.warn" not in err
    assert all(line.startswith("opwise explain: warning: ") for line in err.splitlines())
    assert "explained output is negative" in out


def test_a_model_ending_in_log_softmax_is_told_why_its_total_differs(capsys, tmp_path):
    """Its explained output is a log-probability (negative): the hint said 'drop --target' though none was given."""
    (tmp_path / "net.py").write_text(
        "import torch\n\ndef make():\n    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3),"
        " torch.nn.LogSoftmax(-1)).eval()\n")
    torch.save(torch.rand(1, 4) * 3, tmp_path / "x.pt")
    code, out, _ = run(capsys, "explain", f"{tmp_path / 'net.py'}:make", "--input", tmp_path / "x.pt",
                       "--out", tmp_path / "r.png")
    assert code == 0
    total, explained = (float(v) for v in re.search(r"sums to (\S+) \((\S+)%", out).groups())
    assert not 50 <= explained <= 150 and "ends in log_softmax" in out and "drop --target" not in out


def test_a_pickle_input_is_refused_and_never_run(capsys, tmp_path):
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (marker.mkdir, ())

    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Payload()))
    for command in ("explain", "verify"):
        extra = ["--out", tmp_path / "r.png"] if command == "explain" else []
        code, _, err = run(capsys, command, "--input", tmp_path / "evil.pt", *extra)
        assert code == 2 and "weights_only=True" in err and err.count("\n") == 1, err
    assert not marker.exists()


def test_vector_inputs_get_one_bar_per_feature_and_the_same_random_input_each_run(sources, capsys, tmp_path):
    onnx = pytest.importorskip("onnx")  # noqa: F841 - the ONNX source needs it
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3)).eval()
    torch.onnx.export(model, (torch.zeros(1, 5),), str(tmp_path / "mlp.onnx"), dynamo=False)
    runs = []
    for index in range(2):
        path = tmp_path / f"{index}.npy"
        code, out, err = run(capsys, "explain", tmp_path / "mlp.onnx", "--composite", "epsilon", "--save", path,
                             "--out", tmp_path / "bars.png")
        assert code == 0, err
        assert "relevance per input feature written" in out
        runs.append(np.load(path))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert (tmp_path / "bars.png").stat().st_size > 1000


def test_an_image_for_a_model_without_examples(sources, capsys, tmp_path):
    import matplotlib.pyplot

    model = f"{sources / 'nets.py'}:without_inputs"  # a one-channel CNN
    matplotlib.pyplot.imsave(tmp_path / "digit.png", np.random.default_rng(0).random((8, 8)), cmap="gray")
    code, _, err = run(capsys, "explain", model, "--input", tmp_path / "digit.png", "--out", tmp_path / "r.png")
    assert code == 2 and "--input-shape" in err and err.count("\n") == 1  # RGB PNG, gray model: says what to do
    relevance = saved(capsys, tmp_path, model, "--input", tmp_path / "digit.png", "--input-shape", "1,1,8,8")
    assert relevance.shape == (1, 1, 8, 8)
