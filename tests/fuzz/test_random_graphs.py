"""Fuzzing: random small models from the supported op vocabulary, checked end to end.

A seeded generator composes linear and convolution layers, activations (relu, sigmoid, tanh, ELU, SELU, mish,
hardswish, hardsigmoid, GELU, SiLU, softplus, abs, hardshrink, softshrink, threshold, log-sigmoid), sums and products of two
branches, concatenation, slicing, reshapes, in-place slice writes, index_add, scatter and (sometimes) a
Python branch on an input-dependent value. For every model:

- trace fidelity: the graph equals the model on fresh inputs, or tracing refuses the branch clearly (and so
  do compute_bounds and explain);
- bound soundness: every method's bounds (`opwise.compute_bounds`) contain the outputs at sampled points and
  at points a signed-gradient attack pushed toward each bound;
- relevance conservation where the composite promises it: bias-free models whose written constants are
  zeros and whose activations map 0 to 0 (relu, tanh), under the epsilon rule with a tiny ε.

20 models by default (about a minute on one core); `--run-slow` adds 200 more.
"""

from __future__ import annotations

import random
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import opwise
from opwise.bounds import BoundedModel
from opwise.tracing.control_flow import DataDependentControlFlow
from tests.bounds.helpers import METHOD_NAMES, attacked_points, bounds_matrix, sample_box

FAST_SEEDS = range(20)
SLOW_SEEDS = range(1000, 1200)
BATCH = 2



def _hardshrink(h: torch.Tensor) -> torch.Tensor:
    return F.hardshrink(h, 0.3)


def _softshrink(h: torch.Tensor) -> torch.Tensor:
    return F.softshrink(h, 0.3)


def _threshold(h: torch.Tensor) -> torch.Tensor:
    return F.threshold(h, 0.1, -0.4)

class RandomModel(nn.Module):
    """A chain of steps over a [batch, features] state (after an optional convolution stem), each step a
    function of the state and the layers it registered; `describe()` lists them for failure messages."""

    def __init__(self, seed: int):
        super().__init__()
        self.rng = random.Random(seed)
        self.bias = seed % 2 == 1  # even seeds: bias-free, zeros written, so LRP-ε must conserve
        self.layers = nn.ModuleList()
        self.steps: list[tuple[str, object]] = []
        self.branches = False
        if self.rng.random() < 0.3:
            channels = self.rng.randint(1, 2)
            self.input_shape = (channels, 4, 4)
            conv = self._layer(nn.Conv2d(channels, 2, 3, padding=self.rng.randint(0, 1), bias=self.bias))
            side = 4 if conv.padding[0] else 2
            self.steps.append(("conv", lambda h, conv=conv: torch.relu(conv(h)).flatten(1)))
            width = 2 * side * side
        else:
            width = self.rng.randint(2, 5)
            self.input_shape = (width,)
        for _ in range(self.rng.randint(2, 6)):
            width = self._add_step(width)
        head = self._layer(nn.Linear(width, 3, bias=self.bias))
        self.steps.append(("head", head))

    def _layer(self, module: nn.Module) -> nn.Module:
        self.layers.append(module)
        return module

    def _linear(self, width: int, out: int | None = None) -> nn.Linear:
        return self._layer(nn.Linear(width, out or self.rng.randint(2, 6), bias=self.bias))

    def _constant(self) -> float:
        return self.rng.choice([-0.5, 1.5]) if self.bias else 0.0

    def _add_step(self, width: int) -> int:
        """Append one random step to a state of `width` features; returns the new width."""
        rng = self.rng
        kind = rng.choice(["linear", "activation", "sum", "product", "cat", "slice", "reshape", "slice_write",
                           "element_write", "index_add", "scatter", "branch"])
        if kind == "branch" and rng.random() < 0.5:
            kind = "activation"  # branches end the checks early: keep them to about one model in ten
        if kind == "linear":
            layer = self._linear(width)
            self.steps.append((kind, layer))
            return layer.out_features
        if kind == "activation":
            # sigmoid(0) = 1/2 acts as a bias on exact zeros (relu's, written ones), so bias-free models keep to f(0) = 0
            zero_at_zero = [torch.relu, torch.tanh, F.elu, F.selu, F.mish, F.hardswish, F.gelu, F.silu, _hardshrink,
                            _softshrink]
            function = rng.choice(zero_at_zero + [torch.sigmoid, F.softplus, F.hardsigmoid, torch.abs, _threshold,
                                                  F.logsigmoid] if self.bias else zero_at_zero)
            self.steps.append((getattr(function, "__name__", str(function)), function))
            return width
        if kind in ("sum", "product"):
            first, second = self._linear(width), None
            second = self._linear(width, first.out_features)
            if kind == "sum":
                self.steps.append((kind, lambda h, a=first, b=second: a(h) + torch.relu(b(h))))
            else:
                self.steps.append((kind, lambda h, a=first, b=second: torch.tanh(a(h)) * b(h)))
            return first.out_features
        if kind == "cat":
            layer = self._linear(width)
            self.steps.append((kind, lambda h, layer=layer: torch.cat([h, torch.relu(layer(h))], 1)))
            return width + layer.out_features
        if kind == "slice" and width > 1:
            start = rng.randint(0, width - 1)
            stop = rng.randint(start + 1, width)
            self.steps.append((f"slice {start}:{stop}", lambda h, a=start, b=stop: h[:, a:b]))
            return stop - start
        if kind == "reshape" and width % 2 == 0:
            self.steps.append((kind, lambda h: h.reshape(h.shape[0], 2, -1).transpose(1, 2).flatten(1)))
            return width
        if kind == "slice_write" and width > 1:
            start = rng.randint(0, width - 2)
            value = self._constant()

            def slice_write(h, start=start, value=value):
                written = h.clone()
                written[:, start:start + 2] = value
                written += h
                return written

            self.steps.append((kind, slice_write))
            return width
        if kind == "element_write" and width > 1:
            target, source = rng.sample(range(width), 2)

            def element_write(h, target=target, source=source):
                written = h.clone()
                written[:, target] = h[:, source]
                return written

            self.steps.append((kind, element_write))
            return width
        if kind == "index_add":
            size = rng.randint(1, width + 1)
            index = torch.tensor([rng.randrange(size) for _ in range(width)])
            self.steps.append((kind, lambda h, size=size, index=index: torch.zeros(h.shape[0], size).index_add(1, index, h)))
            return size
        if kind == "scatter":
            size = rng.randint(width, width + 2)
            index = torch.tensor([rng.randrange(size) for _ in range(width)])  # repeats: one write wins
            value = self._constant()
            self.steps.append((kind, lambda h, size=size, index=index, value=value:
                               torch.full((h.shape[0], size), value).scatter(1, index.expand(h.shape[0], -1), h)))
            return size
        if kind == "branch":
            self.branches = True
            self.steps.append((kind, _branch))
            return width
        return self._add_step(width)  # the kind did not fit this width: draw again

    def forward(self, x):
        h = x
        for _, step in self.steps:
            h = step(h)
        return h

    def describe(self) -> str:
        return " -> ".join(name for name, _ in self.steps)


def _branch(h):
    """A Python branch on a value computed from the input."""
    if h.sum() > 0:
        return -h
    return h


def check_random_model(seed: int, samples: int = 300, attack_steps: int = 15) -> dict:
    """Run every check on the model of `seed`; returns counts of what ran (points, methods, refusals)."""
    torch.manual_seed(seed)
    model = RandomModel(seed).eval()
    where = f"seed {seed}: {model.describe()}"
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, *model.input_shape, generator=generator)
    counts = {"models": 1, "refused": 0, "fidelity_inputs": 0, "bound_points": 0, "bound_methods": 0,
              "conservation_checks": 0}
    if model.branches:
        for call in (lambda: opwise.trace(model, x), lambda: opwise.compute_bounds(model, x, eps=0.1),
                     lambda: opwise.explain(model, x)):
            with pytest.raises(DataDependentControlFlow, match=r"test_random_graphs.py:\d+ \(`if h.sum\(\) > 0:`\)"):
                call()
        counts["refused"] = 1
        return counts
    bounded = BoundedModel(model, x)
    with torch.no_grad():
        for _ in range(3):
            fresh = torch.randn(BATCH, *model.input_shape, generator=generator) * 2
            torch.testing.assert_close(bounded(fresh), model(fresh), rtol=1e-5, atol=1e-5, msg=where)
            counts["fidelity_inputs"] += 1
    eps = [0.05, 0.3][seed % 2]
    lower, upper = x - eps, x + eps
    with torch.no_grad():
        points = sample_box(lower, upper, samples, generator)
        outputs = torch.stack([model(p) for p in points]).flatten(2)
    matrix = bounds_matrix(None, BATCH, outputs.shape[-1])
    found = attacked_points(model, lower, upper, matrix, steps=attack_steps)
    with torch.no_grad():
        outputs = torch.cat([outputs, torch.stack([model(p) for p in found]).flatten(2)])
    for method in METHOD_NAMES:
        bounds = opwise.compute_bounds(bounded, x_lower=lower, x_upper=upper, method=method)
        slack = 1e-4 * (1 + outputs.abs())
        assert (outputs >= bounds.lower - slack).all(), f"{method} lower bound above an output, {where}"
        assert (outputs <= bounds.upper + slack).all(), f"{method} upper bound below an output, {where}"
        counts["bound_methods"] += 1
    counts["bound_points"] = outputs.shape[0] * BATCH
    if not model.bias:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            explanation = opwise.explain(model, x, target=0, composite="epsilon", epsilon=1e-9)
        total, explained = explanation.conservation.unbind(1)
        torch.testing.assert_close(total, explained, rtol=1e-3, atol=1e-5, msg=f"relevance not conserved, {where}")
        counts["conservation_checks"] = 1
    return counts


@pytest.mark.parametrize("seed", FAST_SEEDS)
def test_random_models(seed):
    check_random_model(seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
def test_more_random_models(seed):
    check_random_model(seed, samples=1000, attack_steps=30)
