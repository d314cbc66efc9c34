"""The pieces benchmarks/faithfulness.py relies on, on a few held-out digits (fast)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import opwise
from tests.attribution.zennit_setup import import_zennit

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "faithfulness.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("faithfulness_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def digits(bench):
    return bench.held_out_digits(8)


def test_held_out_digits_are_not_the_training_images(bench):
    from opwise.models.digits import load_split

    images, labels = bench.held_out_digits(16)
    split = load_split()
    torch.testing.assert_close(images, split.test_images[:16])
    torch.testing.assert_close(labels, split.test_labels[:16])
    with pytest.raises(SystemExit, match="held-out split"):
        bench.held_out_digits(100000)


def test_methods_cover_every_composite_and_leave_zennit_off_the_transformer(bench):
    cnn = bench.methods_for("cnn")
    assert {f"opwise {c}" for c in bench.CNN_COMPOSITES} <= set(cnn)
    assert {f"zennit {c}" for c in bench.CNN_COMPOSITES} <= set(cnn)
    assert {"gradient x input", "random"} <= set(cnn)
    transformer = bench.methods_for("transformer")
    assert not any(name.startswith("zennit") for name in transformer)
    assert {f"opwise {c}" for c in ("attn-lrp", "cp-lrp", "epsilon")} <= set(transformer)


def test_zennit_explainers_give_the_same_relevance_as_opwise_on_the_digits_cnn(bench, digits):
    import_zennit()
    model = opwise.models.builtin("cnn")
    x, labels = digits
    for composite in bench.CNN_COMPOSITES:
        ours = bench.opwise_explainer(composite)(model, x, labels)
        theirs = bench.zennit_explainer(composite)(model, x, labels)
        for sample in range(len(x)):
            pearson = torch.corrcoef(torch.stack([ours[sample].flatten(), theirs[sample].flatten()]))[0, 1]
            assert pearson >= 0.999, (composite, sample)
        torch.testing.assert_close(ours.sum((1, 2, 3)), theirs.sum((1, 2, 3)), rtol=1e-3, atol=1e-4)


def test_gradient_x_input_equals_epsilon_lrp_on_a_relu_cnn(bench, digits):
    # For piecewise-linear networks LRP-epsilon with epsilon -> 0 is gradient x input (Ancona et al. 2018).
    model = opwise.models.builtin("cnn")
    x, labels = digits
    torch.testing.assert_close(bench.gradient_x_input(model, x, labels), bench.opwise_explainer("epsilon")(model, x, labels),
                               rtol=1e-3, atol=1e-5)


def test_random_relevance_ignores_the_model_and_is_reproducible(bench, digits):
    x, labels = digits
    first = bench.random_relevance(3)(None, x, labels)
    assert first.shape == x.shape
    torch.testing.assert_close(first, bench.random_relevance(3)(torch.nn.Identity(), x, labels))


def test_targets_are_the_prediction_or_the_label(bench, digits):
    model = opwise.models.builtin("cnn")
    x, labels = digits
    assert torch.equal(bench.targets_for(model, x, labels, "true"), labels)
    assert torch.equal(bench.targets_for(model, x, labels, "predicted"), model(x).argmax(1))


def test_score_table_and_plots_on_the_transformer(bench, digits, tmp_path):
    model = opwise.models.builtin("transformer")
    x, labels = digits
    methods = {name: fn for name, fn in bench.methods_for("transformer").items() if name != "opwise epsilon"}
    results = bench.score(model, x, labels, methods, steps=4, patch=2, blur_sigma=1.0)
    assert set(results) == set(methods)
    for name, entry in results.items():
        for baseline in bench.BASELINES:
            mean, error = entry["abpc"][baseline]
            assert torch.isfinite(torch.tensor([mean, error])).all()
            assert entry["curves"][baseline]["most"].shape == (8, 5)  # 16 patches of 2x2, 4 steps
        assert (entry["randomization"] is None) == (name == "random")
    rows = bench.table("transformer", results)
    assert len(rows) == 2 + len(methods) and "n/a (model-blind)" in rows[-1]
    paths = bench.plot("transformer", results, tmp_path)
    assert [p.name for p in paths] == ["abpc_transformer_mean.png", "abpc_transformer_blur.png"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_explanations_of_the_trained_cnn_beat_random_ordering(bench, digits):
    model = opwise.models.builtin("cnn")
    x, labels = digits
    methods = {name: fn for name, fn in bench.methods_for("cnn", with_zennit=False).items()
               if name in ("opwise epsilon-gamma-box", "gradient x input", "random")}
    results = bench.score(model, x, labels, methods, steps=16, patch=1, blur_sigma=1.0, randomize=False)
    for baseline in bench.BASELINES:
        floor = results["random"]["abpc"][baseline][0]
        assert results["opwise epsilon-gamma-box"]["abpc"][baseline][0] > floor + 1.0
        assert results["gradient x input"]["abpc"][baseline][0] > floor + 1.0


def test_paired_difference_rows_name_each_shared_composite(bench):
    values = {"mean": torch.tensor([1.0, 2.0]), "blur": torch.tensor([0.5, 0.5])}
    results = {"opwise epsilon": {"values": values}, "zennit epsilon": {"values": values}, "random": {"values": values}}
    assert bench.against_zennit(results) == ["opwise - zennit ABPC, epsilon: mean +0.00e+00 ± 0.0e+00, blur +0.00e+00 ± 0.0e+00"]
