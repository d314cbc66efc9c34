"""Pixel flipping, ABPC and the randomization check on models whose answers can be worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from opwise.attribution.faithfulness import abpc, area_between, pixel_flipping, randomization_check
from opwise.errors import InputError


def linear_function(weight: torch.Tensor):
    """f(x) = <w, x> per sample as a [B, 1] logit: relevance w * x ranks features exactly."""
    return lambda inputs: (inputs.flatten(1) * weight.flatten()).sum(1, keepdim=True)


class Recorder:
    """A function that remembers every batch it was called with (to check what pixel flipping replaced)."""

    def __init__(self):
        self.inputs: list[torch.Tensor] = []

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        self.inputs.append(inputs.clone())
        return inputs.flatten(1).sum(1, keepdim=True)


def test_hand_worked_linear_curves_and_abpc():
    # contributions 1, 2, 3: MoRF removes 3, then 2, then 1; LeRF the other way round.
    weight = torch.ones(3)
    x = torch.tensor([[1.0, 2.0, 3.0]])
    score, curves = abpc(linear_function(weight), x, weight * x, 0, steps=3, baseline=0.0)
    assert curves["most"].tolist() == [[6.0, 3.0, 1.0, 0.0]]
    assert curves["least"].tolist() == [[6.0, 5.0, 3.0, 0.0]]
    assert score.tolist() == [1.0]  # mean of (0, 2, 2, 0)


def test_exact_ranking_matches_sorted_contributions():
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(20, generator=generator)
    x = torch.randn(5, 20, generator=generator)
    contributions = (weight * x).numpy()
    curve = pixel_flipping(linear_function(weight), x, weight * x, 0, steps=20, baseline=0.0, order="most")
    for sample in range(5):
        descending = np.sort(contributions[sample])[::-1]
        remaining = contributions[sample].sum() - np.concatenate([[0.0], np.cumsum(descending)])
        np.testing.assert_allclose(curve[sample].numpy(), remaining, atol=1e-5)
    # MoRF drops fastest: every step is at or below every other ordering's value, so ABPC > 0.
    score, curves = abpc(linear_function(weight), x, weight * x, 0, steps=20, baseline=0.0)
    assert (score > 0).all()
    assert (curves["most"] <= curves["least"] + 1e-5).all()


def test_random_relevance_gives_abpc_near_zero_and_reversed_ranking_negates_it():
    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(1, 8, 8, generator=generator)
    x = torch.randn(16, 1, 8, 8, generator=generator)
    function = linear_function(weight)
    exact, _ = abpc(function, x, weight * x, 0, steps=16, baseline=0.0)
    reversed_score, _ = abpc(function, x, -(weight * x), 0, steps=16, baseline=0.0)
    torch.testing.assert_close(reversed_score, -exact)
    random_scores = torch.stack([
        abpc(function, x, torch.randn(x.shape, generator=generator), 0, steps=16, baseline=0.0)[0] for _ in range(20)
    ])
    assert exact.mean() > 2.0
    assert abs(random_scores.mean()) < 0.1 * exact.mean()


def test_patches_of_two_replace_the_most_relevant_block_first_over_all_channels():
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).view(1, 2, 8, 8) + 1.0
    relevance = torch.zeros(1, 8, 8)
    relevance[0, 2:4, 4:6] = 1.0  # the patch at grid position (1, 2)
    recorder = Recorder()
    pixel_flipping(recorder, x, relevance, 0, patch_size=2, steps=16, baseline=0.0)
    assert len(recorder.inputs) == 17
    changed = recorder.inputs[1] != x
    expected = torch.zeros_like(changed)
    expected[0, :, 2:4, 4:6] = True
    assert torch.equal(changed, expected)
    assert (recorder.inputs[-1] == 0).all()


def test_patch_size_that_does_not_divide_the_image():
    # 8x8 with patches of 3: a 3x3 grid of patches, the edge ones 3x2, 2x3 and 2x2.
    x = torch.ones(1, 1, 8, 8)
    relevance = torch.zeros(1, 1, 8, 8)
    relevance[0, 0, 6:, 6:] = 1.0  # the 2x2 corner patch
    recorder = Recorder()
    curve = pixel_flipping(recorder, x, relevance, 0, patch_size=3, steps=100, baseline=0.0)
    assert curve.shape == (1, 10)  # steps capped at 9 patches
    assert curve[0, :2].tolist() == [64.0, 60.0]
    assert curve[0, -1].item() == 0.0


def test_steps_group_patches_evenly():
    x = torch.ones(1, 12)
    curve = pixel_flipping(Recorder(), x, torch.arange(12.0).view(1, 12), 0, steps=4, baseline=0.0)
    assert curve.tolist() == [[12.0, 9.0, 6.0, 3.0, 0.0]]


def test_mean_baseline_uses_each_sample_and_channel_mean():
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(3, 2, 8, 8, generator=generator)
    recorder = Recorder()
    curve = pixel_flipping(recorder, x, torch.rand(3, 8, 8, generator=generator), 0, steps=8, baseline="mean")
    final = recorder.inputs[-1]
    torch.testing.assert_close(final, x.mean(dim=(2, 3), keepdim=True).expand_as(x))
    # replacing by the mean keeps the sum, so a summing function is flat at its ends
    torch.testing.assert_close(curve[:, -1], curve[:, 0])


def test_blur_baseline_keeps_constant_images_and_smooths_a_checkerboard():
    constant = torch.full((1, 1, 8, 8), 0.7)
    recorder = Recorder()
    pixel_flipping(recorder, constant, torch.rand(1, 8, 8), 0, steps=4, baseline="blur")
    torch.testing.assert_close(recorder.inputs[-1], constant)
    checkerboard = ((torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2).float().view(1, 1, 8, 8)
    spread = pixel_flipping(lambda v: v.flatten(1).var(1, keepdim=True), checkerboard, torch.rand(1, 8, 8), 0,
                            steps=4, baseline="blur")
    assert spread[0, -1] < 0.25 * spread[0, 0]


def test_float_baseline_and_leRF_order():
    x = torch.ones(2, 1, 4, 4)
    recorder = Recorder()
    curve = pixel_flipping(recorder, x, torch.rand(2, 1, 4, 4), 0, steps=16, baseline=-1.0, order="least")
    assert curve[:, -1].tolist() == [-16.0, -16.0]
    assert (curve[:, 1:] < curve[:, :-1]).all()


def test_batch_equals_one_sample_at_a_time_with_per_sample_targets():
    generator = torch.Generator().manual_seed(4)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    x = torch.rand(4, 3, 8, 8, generator=generator)
    relevance = torch.randn(4, 3, 8, 8, generator=generator)
    targets = [0, 3, 1, 4]
    options = dict(patch_size=2, steps=7, baseline="blur")
    together, curves = abpc(model, x, relevance, targets, **options)
    for sample, target in enumerate(targets):
        alone, alone_curves = abpc(model, x[sample:sample + 1], relevance[sample:sample + 1], target, **options)
        torch.testing.assert_close(together[sample:sample + 1], alone)
        torch.testing.assert_close(curves["most"][sample:sample + 1], alone_curves["most"])


def test_channel_summed_relevance_equals_full_relevance():
    generator = torch.Generator().manual_seed(5)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 8 * 8, 3))
    x = torch.rand(2, 2, 8, 8, generator=generator)
    relevance = torch.randn(2, 2, 8, 8, generator=generator)
    full = pixel_flipping(model, x, relevance, 1, steps=8)
    summed = pixel_flipping(model, x, relevance.sum(1), 1, steps=8)
    torch.testing.assert_close(full, summed)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda f, x, r: pixel_flipping(f, x, r * float("nan"), 0), "NaN"),
        (lambda f, x, r: pixel_flipping(f, x, r[:, :, :4], 0), "does not fit"),
        (lambda f, x, r: pixel_flipping(f, x, r, 0, baseline="zeros"), "baseline"),
        (lambda f, x, r: pixel_flipping(f, x, r, 7), "out of range"),
        (lambda f, x, r: pixel_flipping(f, x, r, [0, 1, 0]), "targets"),
        (lambda f, x, r: pixel_flipping(f, x, r, 0, order="middle"), "order"),
        (lambda f, x, r: pixel_flipping(f, x, r, 0, patch_size=0), "patch_size"),
        (lambda f, x, r: pixel_flipping(f, x[:, 0, 0], r[:, 0, 0], 0, baseline="blur"), "blur"),
        (lambda f, x, r: abpc(f, x, r, 0, order="most"), "order"),
    ],
)
def test_bad_input_raises_input_error(call, message):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(2))
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(InputError, match=message):
        call(model, x, torch.rand(2, 1, 8, 8))


def test_area_between_rejects_mismatched_curves():
    with pytest.raises(InputError, match="differ"):
        area_between(torch.zeros(3), torch.zeros(4))


def gradient_times_input(model: torch.nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    inputs = x.clone().requires_grad_(True)
    model(inputs)[:, target].sum().backward()
    return (inputs.grad * inputs).detach()


def test_randomization_check_separates_model_dependent_from_model_blind_explanations():
    torch.manual_seed(6)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    before = [p.clone() for p in model.parameters()]
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(7))
    dependent = randomization_check(gradient_times_input, model, x, 2)
    assert dependent < 0.5
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert randomization_check(lambda m, v, t: v * 2.0, model, x, 2, method="pearson") == pytest.approx(1.0)
    assert randomization_check(gradient_times_input, model, x, 2) == dependent  # seeded


def test_randomization_check_redraws_parameters_of_modules_without_reset():
    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.linspace(0.5, 1.5, 32))

        def forward(self, x):
            return (x * self.weight).sum(1, keepdim=True)

    x = torch.randn(4, 32, generator=torch.Generator().manual_seed(8))
    assert randomization_check(gradient_times_input, Scale(), x, 0) < 0.5


def test_randomization_check_errors():
    x = torch.randn(2, 4)
    with pytest.raises(InputError, match="no parameters"):
        randomization_check(gradient_times_input, torch.nn.ReLU(), x, 0)
    with pytest.raises(InputError, match="constant"):
        randomization_check(lambda m, v, t: torch.ones_like(v), torch.nn.Linear(4, 2), x, 0)
    with pytest.raises(InputError, match="method"):
        randomization_check(gradient_times_input, torch.nn.Linear(4, 2), x, 0, method="kendall")


def test_exact_ranking_beats_every_other_ranking_on_a_linear_model():
    # With a zero baseline and one feature per step, the exact ranking's MoRF curve is the lowest any
    # ordering can reach and its LeRF curve the highest, so its ABPC bounds every other relevance's.
    generator = torch.Generator().manual_seed(9)
    for _ in range(10):
        weight = torch.randn(12, generator=generator)
        x = torch.randn(3, 12, generator=generator)
        function = linear_function(weight)
        exact, _ = abpc(function, x, weight * x, 0, steps=12, baseline=0.0)
        noisy = weight * x + 0.5 * torch.randn(3, 12, generator=generator)
        other, _ = abpc(function, x, noisy, 0, steps=12, baseline=0.0)
        assert (exact >= other - 1e-5).all()


def test_all_zero_relevance_warns():
    with pytest.warns(RuntimeWarning, match=r"samples \[1\]"):
        pixel_flipping(Recorder(), torch.ones(2, 4), torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0]]), 0, baseline=0.0)


def test_token_ids_are_replaced_by_an_integer_baseline():
    embedding = torch.nn.EmbeddingBag(10, 2, mode="sum")
    tokens = torch.tensor([[3, 4, 5, 6]])
    recorder_inputs = []

    def model(ids):
        recorder_inputs.append(ids.clone())
        return embedding(ids)

    pixel_flipping(model, tokens, torch.tensor([[0.1, 0.9, 0.5, 0.2]]), 0, steps=4, baseline=0)
    assert recorder_inputs[1].tolist() == [[3, 0, 5, 6]]
    assert recorder_inputs[-1].tolist() == [[0, 0, 0, 0]]
    with pytest.raises(InputError, match="integer baseline"):
        pixel_flipping(model, tokens, torch.ones(1, 4), 0, baseline="mean")


def test_blur_works_on_images_smaller_than_the_kernel():
    x = torch.rand(2, 3, 1, 5, generator=torch.Generator().manual_seed(10))
    curve = pixel_flipping(lambda v: v.flatten(1), x, torch.rand(2, 3, 1, 5), 0, baseline="blur", blur_sigma=3.0)
    assert curve.shape == (2, 6) and torch.isfinite(curve).all()
