"""The pieces of benchmarks/transformers_lxt.py on tiny GPT-2 and ViT configs.

LXT patches transformers' classes for the whole process, so only the subprocess test (slow) applies it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "transformers_lxt.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("transformers_lxt_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_models_explain_their_own_predictions(bench):
    for name, shape in (("gpt2", (2, 8)), ("vit", (2, 3, 32, 32))):
        model, x, target = bench.build(name, batch=2, tokens=8, small=True)
        assert tuple(x.shape) == shape and target.shape == (2,)
        with torch.no_grad():
            logits = model(x).logits
        expected = (logits[:, -1] if logits.dim() == 3 else logits).argmax(-1)
        assert torch.equal(target, expected)


def test_opwise_and_gradient_pass_give_per_token_and_per_pixel_maps(bench):
    model, ids, target = bench.build("gpt2", batch=2, tokens=8, small=True)
    relevance = bench.opwise_relevance(model, ids, target)
    assert relevance.shape == (2, 8) and torch.isfinite(relevance).all()
    assert bench.gradient_pass(model, ids, target).shape == (2, 8, 32)  # gradient at the token embeddings
    model, pixels, target = bench.build("vit", batch=2, tokens=8, small=True)
    assert bench.opwise_relevance(model, pixels, target).shape == pixels.shape


def test_unpatched_lxt_relevance_is_gradient_times_input(bench):
    # Without LXT's patches the same code is plain gradient x input: a check of the bookkeeping only.
    model, ids, target = bench.build("gpt2", batch=1, tokens=6, small=True)
    embeddings = model.get_input_embeddings()(ids).detach().requires_grad_()
    logit = model(inputs_embeds=embeddings).logits[0, -1, target[0]]
    (gradient,) = torch.autograd.grad(logit, embeddings)
    torch.testing.assert_close(bench.lxt_relevance(model, ids, target), (gradient * embeddings).sum(-1).detach())


def test_pearson_and_patch_sums(bench):
    a = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    assert bench.pearson_per_sample(a, a) == pytest.approx([1.0, 1.0])
    assert bench.pearson_per_sample(a, -a) == pytest.approx([-1.0, -1.0])
    relevance = torch.arange(2 * 3 * 4 * 4, dtype=torch.float).reshape(2, 3, 4, 4)
    sums = bench.patch_sums(relevance, 2)
    assert sums.shape == (2, 2, 2)
    assert sums[1, 0, 1] == relevance[1, :, 0:2, 2:4].sum()


@pytest.mark.slow
def test_subprocess_run_agrees_with_lxt_on_a_small_gpt2(bench):
    pytest.importorskip("lxt")
    report = bench.run_all(["gpt2"], batch=2, tokens=8, repeats=1, small=True)["gpt2"]
    assert report["failures"] == {}
    assert set(report["results"]) == set(bench.METHODS)
    assert min(report["pearson"]) > 0.99
