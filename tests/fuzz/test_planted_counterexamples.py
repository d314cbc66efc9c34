"""Planted counterexamples: networks whose only violations sit in a tiny region around a known point x0.

The other fuzzers accept an `unsat` when no sampled or attacked point violates the property, which cannot catch an
unsound `unsat` whose violation is hidden (SoundnessBench, Zhou et al. 2024). Here the ground truth is known by
construction. A seeded generator builds the margin

    g(x) = base(x) + C - A s(x)

where base is a random network, C lifts it above `margin0 > 0` on the whole box (an interval bound computed here, in
float64, independently of opwise) and s <= 1 is a narrow spike with s(x0) close to 1, 1e-3..1e-2 of the box wide per
input (one instance in ten down to 1e-4). A `planted` instance takes A so that g(x0) < 0 (checked on the network as
written, run in float64 and in float32): the answer must never be `unsat` / `verified`. A `control` has A < margin0
(or no spike): it is unsat, and a `sat` there would mean the generator is wrong.

Spike families, each exercising other bound rules: ReLU hats (L1: relu(1 - sum |u_i|); L-inf: relu(1 - max |u_i|)
with max(a, b) = b + relu(a - b); min of triangles with min(a, b) = a - relu(a - b)), sigmoid and tanh bumps
(sigma(k(u + 1)) - sigma(k(u - 1)), gated by a sigmoid/tanh of their sum), GELU, SiLU and softplus hats
(|u| ~ (f(Ku) + f(-Ku)) / K), Abs with Clip, leaky ReLU, and products (Mul) of a 1-D hat and a hat of the other
inputs; here u = (x - x0) / w. The spike's units are mixed into the base's layers (one dense layer over both, units
permuted, base units reading spike units), sometimes behind a Conv stem. The margin is y0 - y1 of a 2-3 output
network, decided on one of three paths: `opwise.verify` (robustness of class 0 on an L-inf, L2 or L1 ball, sometimes
clipped to a domain, bab=True), `verify_specification` on a box, and `verify_instance` on FLOAT or DOUBLE ONNX and
VNN-LIB files (replayed with onnxruntime; the box sometimes cut into several boxes). x0 sometimes lies on the box's
faces; the unsafe set sometimes has a row that always holds or a disjunct that never does.

How often the planted counterexample is found (`sat`) rather than `unknown`/`timeout` is a measurement, printed by
`python -m tests.fuzz.test_planted_counterexamples FIRST LAST [TIMEOUT]`; the tests assert soundness (no `unsat` on a
planted instance, every `sat` replays in the input set, no exception), and `sat` only where opwise found every
planted counterexample so far (`must_find`). 18 chosen instances by default (about 15-25 s on one core);
`--run-slow` adds 200 more.
"""

from __future__ import annotations

import dataclasses
import math
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import opwise  # noqa: E402
from opwise.bounds import BoundedModel  # noqa: E402
from opwise.bounds.spec import Disjunct, Specification  # noqa: E402
from opwise.bounds.verify import verify_specification  # noqa: E402
from opwise.bounds.vnncomp import verify_instance  # noqa: E402

#: chosen to cover every family, path and variant (conv stem, pieces, extra rows, faces, domains, controls), each fast
FAST_SEEDS = (1, 20, 22, 27, 51, 62, 69, 76, 84, 127, 143, 144, 155, 161, 174, 178, 189, 211)
SLOW_SEEDS = range(1000, 1200)
TIMEOUT = 2.0
FAMILIES = ("relu_l1", "relu_linf", "relu_min", "sigmoid", "tanh", "gelu", "silu", "mul_relu", "mul_sigmoid",
            "abs_clip", "leaky", "softplus")
PATHS = ("verify", "box", "onnx")
RELU_HATS = ("relu_l1", "relu_linf", "relu_min")
#: the time limit of the instances opwise must decide (`must_find`)
FIND_TIMEOUT = 10.0
#: how far past its timeout an answer may come: the first instance of a process also warms up tracing (2-3 s)
SLACK = 5.0
#: the spike's width per input, as a fraction of the box's: log-uniform between the second and the third, one
#: instance in ten from the first
WIDTHS = (1e-4, 1e-3, 1e-2)
#: how far outside the box (absolute) a counterexample may lie: VNN-LIB bounds are written in decimal, balls in float32
BOX_TOLERANCE = 1e-6
#: every spike is built with s <= S_MAX everywhere (module docstring), which the controls' ground truth relies on
S_MAX = 1.0
LEAKY_SLOPE = 0.1
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "gelu": F.gelu, "silu": F.silu,
    "abs": torch.abs, "clip": lambda h: torch.clamp(h, 0.0, 1.0), "leaky": lambda h: F.leaky_relu(h, LEAKY_SLOPE),
    "softplus": F.softplus,
}
#: (where the minimum is, its value) of the activations that are not monotone, for the interval bound
MINIMA = {"gelu": (-0.7517916243, -0.1699712527), "silu": (-1.2784645428, -0.2784645428), "abs": (0.0, 0.0)}


# ------------------------------------------------------------------------------------------------ networks
@dataclasses.dataclass
class Stage:
    """One layer over the whole state h [B, k]: `activation(h W + b)`, or for activation "mul" the product
    `(h W + b) * (h V + c)` with `right = (V, c)`."""

    weight: np.ndarray  # [k_in, k_out]
    bias: np.ndarray  # [k_out]
    activation: str
    right: tuple[np.ndarray, np.ndarray] | None = None


@dataclasses.dataclass
class Spike:
    """A spike: stages over its own units (the first reads the inputs x), and its value s = h · readout + offset on
    the last stage's units h."""

    stages: list[Stage]
    readout: np.ndarray
    offset: float


@dataclasses.dataclass
class Network:
    """The stages over the inputs x (flat, n) and the readout to the outputs: y = h R + r."""

    stages: list[Stage]
    readout: np.ndarray  # [k, m]
    readout_bias: np.ndarray  # [m]
    input_shape: tuple[int, ...]  # without batch axis: (n,) or (1, h, w) behind a Conv stem
    conv_stem: bool


class PlantedNet(nn.Module):
    """The network as a torch module (Linear or a full-image Conv2d first, activations, products), its weights
    rounded to `dtype`."""

    def __init__(self, network: Network, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.activations = [stage.activation for stage in network.stages]
        self.left, self.right = nn.ModuleList(), nn.ModuleList()
        for index, stage in enumerate(network.stages):
            image = network.input_shape if index == 0 and network.conv_stem else None
            self.left.append(_layer(stage.weight, stage.bias, image, dtype))
            if stage.right is not None:
                self.right.append(_layer(*stage.right, image, dtype))
        self.head = _layer(network.readout, network.readout_bias, None, dtype)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's units [B, k]."""
        h, products = x, iter(self.right)
        for activation, layer in zip(self.activations, self.left):
            pre = layer(h).flatten(1)
            if activation == "mul":
                pre = pre * next(products)(h).flatten(1)
            h = pre if activation == "mul" else ACTIVATIONS[activation](pre)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _layer(weight: np.ndarray, bias: np.ndarray, image: tuple[int, ...] | None, dtype: torch.dtype) -> nn.Module:
    """x W + b as nn.Linear, or as a Conv2d whose kernel covers the whole `image` (channels, h, w)."""
    fan_in, width = weight.shape
    if image is None:
        layer = nn.Linear(fan_in, width, dtype=dtype)
        layer.weight.data = torch.tensor(weight.T, dtype=dtype)
    else:
        layer = nn.Conv2d(image[0], width, image[1:], dtype=dtype)
        layer.weight.data = torch.tensor(weight.T.reshape(width, *image), dtype=dtype)
    layer.bias.data = torch.tensor(bias, dtype=dtype)
    return layer


def interval(stages: list[Stage], lower: np.ndarray, upper: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Interval bounds (float64) of the last stage's units over the box [lower, upper] (flat inputs)."""
    low, high = torch.tensor(lower, dtype=torch.float64), torch.tensor(upper, dtype=torch.float64)
    for stage in stages:
        pre = _affine_interval(low, high, stage.weight, stage.bias)
        if stage.activation == "mul":
            left, right = pre, _affine_interval(low, high, *stage.right)
            corners = torch.stack([a * b for a in left for b in right])
            low, high = corners.amin(0), corners.amax(0)
        else:
            low, high = _activation_interval(stage.activation, *pre)
    return low, high


def _affine_interval(low: torch.Tensor, high: torch.Tensor, weight: np.ndarray, bias: np.ndarray
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    w, b = torch.tensor(weight, dtype=torch.float64), torch.tensor(bias, dtype=torch.float64)
    positive, negative = w.clamp(min=0), w.clamp(max=0)
    return low @ positive + high @ negative + b, high @ positive + low @ negative + b


def _activation_interval(activation: str, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """f([low, high]): monotone activations at the ends; GELU, SiLU and abs also at their one minimum."""
    function = ACTIVATIONS[activation]
    at_low, at_high = function(low), function(high)
    if activation not in MINIMA:
        return at_low, at_high
    where, value = MINIMA[activation]
    inside = (low <= where) & (where <= high)
    least = torch.where(inside, torch.full_like(low, value), torch.minimum(at_low, at_high))
    return least, torch.maximum(at_low, at_high)


# ------------------------------------------------------------------------------------------------ spikes
def _normalized(x0: np.ndarray, width: np.ndarray, signs: list[float], shift: float = 0.0, gain: float = 1.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """A first stage's weight and bias over x whose units are gain * (sign * u_i + shift), for each sign in turn,
    u = (x - x0) / width: units [sign 0: inputs 0..n-1, sign 1: ...]."""
    n = len(x0)
    weight = np.concatenate([np.diag(sign * gain / width) for sign in signs], axis=1)
    bias = np.concatenate([gain * (-sign * x0 / width + shift) for sign in signs])
    return weight.reshape(n, -1), bias


def _absolute_values(n: int, scale: float = 1.0) -> np.ndarray:
    """[2n, n]: a_i = scale * (unit i + unit n + i), |u_i| from relu(u_i) and relu(-u_i)."""
    return scale * np.concatenate([np.eye(n), np.eye(n)])


def _pairs(values: np.ndarray, combine: str) -> tuple[Stage, np.ndarray]:
    """One ReLU stage of a max or min tree over nonnegative values, and the next level's values. `values` [k + 1, v]
    is an affine map of the previous stage's k units (last row: the bias) per value; the result maps the new stage's
    units the same way. max(a, b) = relu(b) + relu(a - b), min(a, b) = relu(a) - relu(a - b); an odd value is
    passed through relu."""
    count = values.shape[1]
    units: list[np.ndarray] = []
    sign = 1.0 if combine == "max" else -1.0
    pieces: list[list[tuple[int, float]]] = []  # per next value: (unit, coefficient)
    for first in range(0, count - 1, 2):
        a, b = values[:, first], values[:, first + 1]
        units += [b if combine == "max" else a, a - b]
        pieces.append([(len(units) - 2, 1.0), (len(units) - 1, sign)])
    if count % 2:
        units.append(values[:, -1])
        pieces.append([(len(units) - 1, 1.0)])
    columns = np.stack(units, axis=1)
    mapped = np.zeros((len(units) + 1, len(pieces)))
    for j, terms in enumerate(pieces):
        for unit, coefficient in terms:
            mapped[unit, j] = coefficient
    return Stage(columns[:-1], columns[-1], "relu"), mapped


def relu_spike(family: str, x0: np.ndarray, width: np.ndarray, rng: random.Random) -> Spike:
    """ReLU hats: L1 (relu(1 - sum |u|)), L-inf (relu(1 - max |u|)) or min of per-input triangles."""
    n = len(x0)
    first = Stage(*_normalized(x0, width, [1.0, -1.0]), "relu")
    absolute = np.concatenate([_absolute_values(n), np.zeros((1, n))])  # [2n + 1, n]: |u_i| with a bias row
    if family == "relu_l1":
        return Spike([first, Stage(-np.ones((2 * n, 1)), np.ones(1), "relu")], np.ones(1), 0.0)
    stages = [first]
    if family == "relu_linf":
        values = absolute
    else:  # triangles relu(1 - |u_i|) first
        triangles = -absolute
        triangles[-1] = 1.0
        stages.append(Stage(triangles[:-1], triangles[-1], "relu"))
        values = np.concatenate([np.eye(n), np.zeros((1, n))])
    combine = "max" if family == "relu_linf" else "min"
    while values.shape[1] > 1:
        stage, values = _pairs(values, combine)
        stages.append(stage)
    if family == "relu_linf":  # s = relu(1 - max)
        stages.append(Stage(-values[:-1], 1.0 - values[-1], "relu"))
        return Spike(stages, np.ones(1), 0.0)
    return Spike(stages, values[:-1, 0], float(values[-1, 0]))


def smooth_spike(family: str, x0: np.ndarray, width: np.ndarray, rng: random.Random) -> Spike:
    """Sigmoid or tanh bumps f(k(u + 1)) - f(k(u - 1)) gated by f(K (sum of bumps - n + 1/2)); GELU or SiLU hats
    relu-like: |u| ~ (f(Ku) + f(-Ku)) / K, s = f(K' (1 - sum |u|)) / K'."""
    n = len(x0)
    if family in ("sigmoid", "tanh"):
        k, gate = rng.uniform(6.0, 10.0), rng.uniform(15.0, 25.0)
        rising = _normalized(x0, width, [1.0], 1.0, k)
        falling = _normalized(x0, width, [1.0], -1.0, k)
        first = Stage(np.concatenate([rising[0], falling[0]], 1), np.concatenate([rising[1], falling[1]]), family)
        half = 0.5 if family == "tanh" else 1.0  # a tanh bump is (t+ - t-) / 2
        bumps = half * np.concatenate([np.ones((n, 1)), -np.ones((n, 1))])
        second = Stage(gate * bumps, gate * np.array([-(n - 0.5)]), family)
        if family == "tanh":  # s = (1 + tanh) / 2
            return Spike([first, second], np.array([0.5]), 0.5)
        return Spike([first, second], np.ones(1), 0.0)
    k, gate = rng.uniform(3.0, 6.0), rng.uniform(6.0, 10.0)
    first = Stage(*_normalized(x0, width, [1.0, -1.0], 0.0, k), family)
    second = Stage(-gate * _absolute_values(n, 1.0 / k).sum(1, keepdims=True), np.array([gate]), family)
    return Spike([first, second], np.array([1.0 / gate]), 0.0)


def product_spike(family: str, x0: np.ndarray, width: np.ndarray, rng: random.Random) -> Spike:
    """s = hat_j(u_j) * hat(u of the other inputs): ReLU triangles, or a sigmoid bump times (sum of the other
    bumps - (n - 2))."""
    n = len(x0)
    j = rng.randrange(n)
    others = np.ones(n)
    others[j] = 0.0
    if family == "mul_relu":
        first = Stage(*_normalized(x0, width, [1.0, -1.0]), "relu")
        absolute = _absolute_values(n)
        hats = Stage(-np.stack([absolute[:, j], absolute @ others], 1), np.ones(2), "relu")
        product = Stage(np.array([[1.0], [0.0]]), np.zeros(1), "mul", (np.array([[0.0], [1.0]]), np.zeros(1)))
        return Spike([first, hats, product], np.ones(1), 0.0)
    k = rng.uniform(6.0, 10.0)
    rising = _normalized(x0, width, [1.0], 1.0, k)
    falling = _normalized(x0, width, [1.0], -1.0, k)
    first = Stage(np.concatenate([rising[0], falling[0]], 1), np.concatenate([rising[1], falling[1]]), "sigmoid")
    bumps = np.concatenate([np.eye(n), -np.eye(n)])  # [2n, n]
    product = Stage(bumps[:, [j]], np.zeros(1), "mul", (bumps @ others[:, None], np.array([-(n - 2.0)])))
    return Spike([first, product], np.ones(1), 0.0)


def piecewise_spike(family: str, x0: np.ndarray, width: np.ndarray, rng: random.Random) -> Spike:
    """abs_clip: clip(1 - sum |u_i|, 0, 1) with Abs; leaky: leaky(1 - sum |u_i|) with |u| = (leaky(u) + leaky(-u)) /
    (1 - slope); softplus: sigmoid(G (1/2 - sum a_i)), a = (sp(Ku) + sp(-Ku) - 2 log 2) / K >= 0 (0 at u = 0)."""
    n = len(x0)
    if family == "abs_clip":
        first = Stage(*_normalized(x0, width, [1.0]), "abs")
        return Spike([first, Stage(-np.ones((n, 1)), np.ones(1), "clip")], np.ones(1), 0.0)
    if family == "leaky":
        first = Stage(*_normalized(x0, width, [1.0, -1.0]), "leaky")
        second = Stage(-np.ones((2 * n, 1)) / (1 - LEAKY_SLOPE), np.ones(1), "leaky")
        return Spike([first, second], np.ones(1), 0.0)
    k, gate = rng.uniform(3.0, 6.0), rng.uniform(15.0, 25.0)
    first = Stage(*_normalized(x0, width, [1.0, -1.0], 0.0, k), "softplus")
    second = Stage(-gate / k * np.ones((2 * n, 1)), np.array([gate * (0.5 + 2 * n * math.log(2) / k)]), "sigmoid")
    return Spike([first, second], np.ones(1), 0.0)


SPIKES: dict[str, Callable[[str, np.ndarray, np.ndarray, random.Random], Spike]] = {
    "relu_l1": relu_spike, "relu_linf": relu_spike, "relu_min": relu_spike, "sigmoid": smooth_spike,
    "tanh": smooth_spike, "gelu": smooth_spike, "silu": smooth_spike, "mul_relu": product_spike,
    "mul_sigmoid": product_spike, "abs_clip": piecewise_spike, "leaky": piecewise_spike, "softplus": piecewise_spike,
}


# ------------------------------------------------------------------------------------------------ instances
@dataclasses.dataclass
class Instance:
    """A network with its margin y0 - y1, the input set, and the planted point x0 (for a control, the centre of a
    spike too shallow to cross 0, or of none)."""

    seed: int
    family: str
    path: str
    planted: bool
    network: Network
    lower: np.ndarray  # the box (flat); on the verify path the ball's bounding box
    upper: np.ndarray
    x0: np.ndarray
    width: np.ndarray  # the spike's half width per input
    centre: np.ndarray | None = None  # the verify path's ball
    eps: float = 0.0
    norm: float = math.inf
    domain: tuple[float, float] | None = None  # the verify path's clipping of the ball
    pieces: int = 1  # the ONNX path: the box written as a disjunction of this many boxes, cut along one input
    #: a row y_j <= t that always holds, added to the unsafe conjunction, or a disjunct y_j >= t that never does
    #: (j >= 2, t beyond the interval bound of y_j), or None
    extra: tuple[str, int, float] | None = None
    double: bool = False  # the ONNX path: a DOUBLE network (else FLOAT; the Python paths are float32)
    description: str = ""

    @property
    def inputs(self) -> int:
        return len(self.x0)


def hide(spike: Spike, lower: np.ndarray, upper: np.ndarray, rng: random.Random
         ) -> tuple[list[Stage], list[int], list[int]]:
    """The spike's stages merged with a random base network of the same activations: each stage one layer over
    both, units permuted, base units also reading the previous stage's spike units (weights scaled by the units'
    interval). Returns the stages and the positions of the base and the spike units in the last one."""
    stages: list[Stage] = []
    base: list[int] = []
    spiked: list[int] = []
    fan_in = len(lower)
    for index, part in enumerate(spike.stages):
        base_width, spike_width = rng.randint(2, 6), part.weight.shape[1]
        order = rng.sample(range(base_width + spike_width), base_width + spike_width)
        new_base, new_spiked = order[:base_width], order[base_width:]
        scale = None
        if index:
            low, high = interval(stages, lower, upper)
            scale = 1.0 / torch.maximum(low.abs(), high.abs()).clamp(min=1.0).numpy()

        def place(weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            full, offset = np.zeros((fan_in, len(order))), np.zeros(len(order))
            if index == 0:
                full[:, new_spiked] = weight
                full[:, new_base] = _gauss(rng, (fan_in, base_width)) / math.sqrt(fan_in)
            else:
                full[np.ix_(spiked, new_spiked)] = weight
                full[np.ix_(base, new_base)] = _gauss(rng, (len(base), base_width)) / math.sqrt(len(base))
                cross = _gauss(rng, (len(spiked), base_width)) * (np.array([rng.random() < 0.5 for _ in spiked]
                                                                          )[:, None])
                full[np.ix_(spiked, new_base)] = 0.5 * cross * scale[spiked][:, None]
            offset[new_spiked] = bias
            offset[new_base] = _gauss(rng, (base_width,)) * 0.3
            return full, offset

        right = None if part.right is None else place(*part.right)
        stages.append(Stage(*place(part.weight, part.bias), part.activation, right))
        base, spiked, fan_in = new_base, new_spiked, len(order)
    return stages, base, spiked


def _gauss(rng: random.Random, shape: tuple[int, ...]) -> np.ndarray:
    return np.array([rng.gauss(0, 1) for _ in range(math.prod(shape))]).reshape(shape)


def _input_set(rng: random.Random, path: str, n: int) -> dict:
    """The box (on the verify path the ball, sometimes clipped to a domain) and a point x0 inside it: away from
    the edge, or on a box's faces."""
    if path == "verify":
        centre = np.array([round(rng.uniform(-1, 1), 3) for _ in range(n)])
        eps, norm = rng.choice([0.05, 0.2, 0.5]), rng.choices([math.inf, 2.0, 1.0], weights=[6, 3, 1])[0]
        direction = np.array([rng.uniform(-1, 1) for _ in range(n)])
        if norm < math.inf:
            direction *= rng.uniform(0, 0.9) / np.linalg.norm(direction, ord=norm)
        else:
            direction *= 0.9
        x0 = centre + eps * direction
        lower, upper, domain = centre - eps, centre + eps, None
        if rng.random() < 0.25:  # a domain that clips the ball on some side, x0 and the centre inside
            inner = np.concatenate([x0, centre])
            domain = (round(float(inner.min()) - rng.uniform(0, eps), 3), round(float(inner.max()) + rng.uniform(0, eps), 3))
            lower, upper = np.maximum(lower, domain[0]), np.minimum(upper, domain[1])
        return dict(lower=lower, upper=upper, x0=x0, centre=centre, eps=eps, norm=norm, domain=domain)
    centre = np.array([round(rng.uniform(-1, 1), 3) for _ in range(n)])
    base = rng.choice([0.05, 0.2, 0.5, 1.0])
    radius = np.array([round(base * rng.uniform(0.5, 1.0), 4) for _ in range(n)])
    lower, upper = np.round(centre - radius, 4), np.round(centre + radius, 4)
    x0 = np.round(lower + (upper - lower) * np.array([rng.uniform(0.05, 0.95) for _ in range(n)]), 6)
    if rng.random() < 0.2:  # on the box's boundary: part of the spike lies outside
        for i in rng.sample(range(n), rng.randint(1, n)):
            x0[i] = rng.choice([lower[i], upper[i]])
    return dict(lower=lower, upper=upper, x0=x0)


def random_instance(seed: int) -> Instance:
    """The instance of `seed`: family by seed (round robin), the rest drawn (module docstring)."""
    rng = random.Random(seed)
    family = FAMILIES[seed % len(FAMILIES)]
    path = rng.choice(PATHS)
    planted = rng.random() < 0.75
    n = rng.choice([2, 2, 3, 3, 4, 5, 6, 8, 10, 12, 16, 20])
    region = _input_set(rng, path, n)
    narrowest, widest = WIDTHS[0] if rng.random() < 0.1 else WIDTHS[1], WIDTHS[2]
    fraction = np.exp(np.array([rng.uniform(math.log(narrowest), math.log(widest)) for _ in range(n)]))
    width = (region["upper"] - region["lower"]) * fraction
    spike = SPIKES[family](family, region["x0"], width, rng)
    stages, base, spiked = hide(spike, region["lower"], region["upper"], rng)
    conv_stem = rng.random() < 0.25
    height = rng.choice([h for h in range(1, n + 1) if n % h == 0 and max(h, n // h) <= 8])
    image = (1, height, n // height) if conv_stem else (n,)
    network = Network(stages, np.zeros((len(base) + len(spiked), 2)), np.zeros(2), image, conv_stem)
    margin0, outputs = rng.uniform(0.1, 0.5), 2 if path == "verify" else rng.randint(2, 3)
    lift, depth = _margin(network, spike, base, spiked, region, margin0, planted, rng)
    network.readout, network.readout_bias = _readout(rng, base, spiked, spike, lift, depth, outputs)
    extra = _extra(rng, network, region) if outputs > 2 and rng.random() < 0.5 else None
    pieces = rng.choice([2, 3, 8, 12]) if path == "onnx" and rng.random() < 0.3 else 1
    # DOUBLE where onnxruntime runs every operator in it (no Conv, Gelu, LeakyRelu, Softplus on the CPU)
    double = path == "onnx" and not conv_stem and family not in ("gelu", "silu", "leaky", "softplus") \
        and rng.random() < 0.25
    stem = f"Conv{list(image)} stem, " if conv_stem else ""
    where = f"L{region['norm']:g} ball eps {region['eps']}" if path == "verify" else "box"
    where += f" in {region['domain']}" if region.get("domain") else ""
    where += f" as {pieces} boxes" if pieces > 1 else ""
    where += ", DOUBLE" if double else ""
    where += f", x0 on {int(((region['x0'] == region['lower']) | (region['x0'] == region['upper'])).sum())} faces" \
        if path != "verify" else ""
    description = (f"{family} {'planted' if planted else 'control'} on {path}: {n} inputs, {stem}"
                   f"{len(stages)} stages, {where}, width/box {fraction.min():.1e}..{fraction.max():.1e}, "
                   f"margin0 {margin0:.2f}, depth {depth:.3g}" + (f", extra {extra[0]} on y{extra[1]}" if extra else ""))
    return Instance(seed, family, path, planted, network, region["lower"], region["upper"], region["x0"], width,
                    region.get("centre"), region.get("eps", 0.0), region.get("norm", math.inf), region.get("domain"),
                    pieces, extra, double, description)


def _extra(rng: random.Random, network: Network, region: dict) -> tuple[str, int, float]:
    """A row that always holds or a disjunct that never does, on an output y_j (j >= 2), from its interval bound."""
    low, high = interval(network.stages, region["lower"], region["upper"])
    weight, bias = torch.tensor(network.readout, dtype=torch.float64), torch.tensor(network.readout_bias)
    y_high = high @ weight.clamp(min=0) + low @ weight.clamp(max=0) + bias
    j = rng.randrange(2, network.readout.shape[1])
    kind = rng.choice(["row", "disjunct"])
    beyond = round(float(y_high[j]) + rng.uniform(0.01, 1.0), 4)  # above every value of y_j
    return kind, j, beyond


def _margin(network: Network, spike: Spike, base: list[int], spiked: list[int], region: dict, margin0: float,
            planted: bool, rng: random.Random) -> tuple[tuple[np.ndarray, float], float]:
    """The base margin q·h_base + C (q drawn, C from the interval bound so that it is >= margin0 on the box) and the
    spike depth A: planted, g(x0) = -rho (q·h_base(x0) + C) < 0; a control, A < margin0 (sometimes 0)."""
    q = _gauss(rng, (len(base),)) / math.sqrt(len(base))
    low, high = interval(network.stages, region["lower"], region["upper"])
    low, high = low.numpy()[base], high.numpy()[base]
    lowest = float(np.where(q > 0, q * low, q * high).sum())
    lift = margin0 - lowest
    if not planted:
        return (q, lift), (0.0 if rng.random() < 0.3 else margin0 * rng.uniform(0.2, 0.9) / S_MAX)
    with torch.no_grad():
        h = PlantedNet(network, torch.float64).features(_shaped(region["x0"], network)).numpy()[0]
    peak = float(h[spiked] @ spike.readout + spike.offset)
    assert peak > 0.5, f"the spike reaches only {peak} at x0"
    return (q, lift), (float(h[base] @ q) + lift) / peak * (1 + rng.uniform(0.1, 0.5))


def _readout(rng: random.Random, base: list[int], spiked: list[int], spike: Spike, lift: tuple[np.ndarray, float],
             depth: float, outputs: int) -> tuple[np.ndarray, np.ndarray]:
    """Outputs from the base units, y0 = y1 + q·h_base + C - A s."""
    q, constant = lift
    weight = np.zeros((len(base) + len(spiked), outputs))
    weight[base] = _gauss(rng, (len(base), outputs)) / math.sqrt(len(base))
    bias = _gauss(rng, (outputs,)) * 0.3
    weight[:, 0] = weight[:, 1]
    weight[base, 0] += q
    weight[spiked, 0] -= depth * spike.readout
    bias[0] = bias[1] + constant - depth * spike.offset
    return weight, bias


def _shaped(x: np.ndarray, network: Network, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Flat points x [n] or [B, n] as the network's input [B, *input_shape]."""
    flat = torch.tensor(np.atleast_2d(x), dtype=dtype)
    return flat.reshape(len(flat), *network.input_shape)


def margins(module: nn.Module, x: np.ndarray, network: Network) -> np.ndarray:
    """y0 - y1 at flat points x [B, n], the torch module run in its dtype."""
    dtype = next(module.parameters()).dtype
    with torch.no_grad():
        y = module(_shaped(x, network, dtype)).double().numpy()
    return y[:, 0] - y[:, 1]


# ------------------------------------------------------------------------------------------------ ONNX, VNN-LIB
def onnx_model(network: Network, double: bool, rng: random.Random) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """The network as FLOAT or DOUBLE ONNX (MatMul + Add or Gemm, a Conv stem, Gelu at opset 20, SiLU as
    x * Sigmoid(x)), and its input shape: [1, n], [n] or [1, 1, h, w]."""
    nodes, initializers = [], []
    activations = {stage.activation for stage in network.stages}
    dtype = np.float64 if double else np.float32

    def constant(array: np.ndarray) -> str:
        name = f"c{len(initializers)}"
        initializers.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    def node(op: str, inputs: list[str], **attributes) -> str:
        name = f"{op.lower()}{len(nodes)}"
        nodes.append(helper.make_node(op, inputs, [name], **attributes))
        return name

    batch = network.conv_stem or rng.random() < 0.7
    input_shape = (1, *network.input_shape) if batch else network.input_shape

    def affine(h: str, weight: np.ndarray, bias: np.ndarray, first: bool) -> str:
        if first and network.conv_stem:
            kernel = weight.T.reshape(weight.shape[1], *network.input_shape)
            return node("Flatten", [node("Conv", [h, constant(kernel), constant(bias)],
                                         kernel_shape=list(network.input_shape[1:]))], axis=1)
        if batch and rng.random() < 0.3:
            return node("Gemm", [h, constant(weight.T), constant(bias)], transB=1)
        return node("Add", [node("MatMul", [h, constant(weight)]), constant(bias)])

    h = "x"
    for index, stage in enumerate(network.stages):
        pre = affine(h, stage.weight, stage.bias, index == 0)
        if stage.activation == "mul":
            h = node("Mul", [pre, affine(h, *stage.right, index == 0)])
        elif stage.activation == "silu":
            h = node("Mul", [pre, node("Sigmoid", [pre])])
        elif stage.activation == "clip":
            h = node("Clip", [pre, constant(np.array(0.0)), constant(np.array(1.0))])
        elif stage.activation == "leaky":
            h = node("LeakyRelu", [pre], alpha=LEAKY_SLOPE)
        else:
            h = node({"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "gelu": "Gelu", "abs": "Abs",
                      "softplus": "Softplus"}[stage.activation], [pre])
    h = affine(h, network.readout, network.readout_bias, False)
    outputs = network.readout.shape[1]
    gelu = "gelu" in activations
    element = TensorProto.DOUBLE if double else TensorProto.FLOAT
    graph = helper.make_graph(nodes, "planted", [helper.make_tensor_value_info("x", element, list(input_shape))],
                              [helper.make_tensor_value_info(h, element, [1, outputs] if batch else [outputs])],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20 if gelu else 13)])
    model.ir_version = 9 if gelu else 8
    onnx.checker.check_model(model, full_check=True)
    return model, input_shape


def vnnlib_text(instance: Instance, outputs: int, rng: random.Random) -> str:
    """VNN-LIB 1: the box (as `instance.pieces` boxes in a disjunction), and the unsafe set y0 <= y1 (and the extra
    row or disjunct)."""
    lines = [f"(declare-const X_{i} Real)" for i in range(instance.inputs)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(outputs)]
    if instance.pieces == 1:
        for i, (low, high) in enumerate(zip(instance.lower, instance.upper)):
            lines += [f"(assert (>= X_{i} {float(low)!r}))", f"(assert (<= X_{i} {float(high)!r}))"]
    else:
        lines.append("(assert (or " + " ".join(f"(and {' '.join(bounds)})" for bounds in _pieces(instance, rng)) + "))")
    row = rng.choice(["(>= Y_1 Y_0)", "(<= Y_0 Y_1)", "(<= (+ Y_0 (* -1.0 Y_1)) 0.0)"])
    if instance.extra is None:
        lines.append(f"(assert {row})")
    elif instance.extra[0] == "row":
        lines.append(f"(assert (and {row} (<= Y_{instance.extra[1]} {instance.extra[2]!r})))")
    else:
        lines.append(f"(assert (or (and (>= Y_{instance.extra[1]} {instance.extra[2]!r})) (and {row})))")
    return "\n".join(lines) + "\n"


def _pieces(instance: Instance, rng: random.Random) -> list[list[str]]:
    """The box cut along one input into `instance.pieces` boxes (adjacent ones share a face), as VNN-LIB bounds."""
    cut = rng.randrange(instance.inputs)
    low, high = instance.lower[cut], instance.upper[cut]
    points = [float(low)] + [round(float(low + (high - low) * k / instance.pieces), 6)
                            for k in range(1, instance.pieces)]
    points.append(float(high))
    boxes = []
    for start, stop in zip(points, points[1:]):
        bounds = []
        for i, (lo, hi) in enumerate(zip(instance.lower, instance.upper)):
            lo, hi = (start, stop) if i == cut else (float(lo), float(hi))
            bounds += [f"(>= X_{i} {lo!r})", f"(<= X_{i} {hi!r})"]
        boxes.append(bounds)
    return boxes


class Runner:
    """The ONNX file run by onnxruntime in its dtype, one point at a time: y0 - y1 at flat inputs [B, n]."""

    def __init__(self, path: Path, input_shape: tuple[int, ...], dtype: type):
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input_shape, self.dtype = input_shape, dtype

    def __call__(self, x: np.ndarray) -> np.ndarray:
        name = self.session.get_inputs()[0].name
        y = [self.session.run(None, {name: row.astype(self.dtype).reshape(self.input_shape)})[0].reshape(-1)
             for row in np.atleast_2d(x)]
        return np.array([float(row[0]) - float(row[1]) for row in y])


# ------------------------------------------------------------------------------------------------ checks
STATUSES = {"sat", "unsat", "timeout", "unknown"}


@dataclasses.dataclass
class Outcome:
    """One instance's answer, whether a `sat` lay in the spike, and everything found wrong."""

    seed: int
    family: str
    path: str
    planted: bool
    status: str
    seconds: float
    description: str
    findings: list[str]
    reason: str = ""
    in_spike: bool = False


@dataclasses.dataclass
class Decision:
    """opwise's answer: the status in VNN-COMP words, the counterexample (flat) or None, the reason, the seconds of
    the call the timeout applies to, and the replay of y0 - y1 (in the network's dtype) it is checked with."""

    status: str
    x: np.ndarray | None
    reason: str
    seconds: float
    replay: Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass
class Files:
    """The ONNX path's instance as written, and onnxruntime running its network."""

    onnx: Path
    vnnlib: Path
    runner: Runner


def write_files(instance: Instance, folder: Path) -> Files:
    """The instance as net_SEED.onnx and prop_SEED.vnnlib in `folder`."""
    rng = random.Random(instance.seed + 1)
    model, input_shape = onnx_model(instance.network, instance.double, rng)
    onnx_path, vnnlib_path = folder / f"net_{instance.seed}.onnx", folder / f"prop_{instance.seed}.vnnlib"
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(onnx_path))
    vnnlib_path.write_text(vnnlib_text(instance, instance.network.readout.shape[1], rng))
    return Files(onnx_path, vnnlib_path, Runner(onnx_path, input_shape, np.float64 if instance.double else np.float32))


def decide(instance: Instance, module: nn.Module, files: Files | None, timeout: float) -> Decision:
    """Run opwise on the instance's path (module docstring); `files` on the ONNX path."""
    network = instance.network
    replay = lambda x: margins(module, x, network)  # noqa: E731
    if files is not None:
        started = time.monotonic()
        result = verify_instance(str(files.onnx), str(files.vnnlib), timeout)
        x = None if result.x is None else result.x.detach().cpu().double().numpy().reshape(-1)
        return Decision(result.status, x, result.reason, time.monotonic() - started, files.runner)
    if instance.path == "verify":
        centre = _shaped(instance.centre, network, torch.float32)
        started = time.monotonic()
        result = opwise.verify(module, centre, eps=instance.eps, norm=instance.norm, target=0, bab=True,
                               timeout=timeout, domain=instance.domain)
    else:
        box = [_shaped(bound, network, torch.float32) for bound in (instance.lower, instance.upper)]
        spec = Specification(*box, _disjuncts(instance))
        bounded = BoundedModel(module, box[0])  # tracing is not part of verify_specification's time
        started = time.monotonic()
        result = verify_specification(bounded, spec, complete=True, timeout=timeout)
    x = result.counterexample
    x = None if x is None else x.detach().cpu().double().numpy().reshape(-1)
    return Decision(result.vnncomp_status, x, str(result.stats.get("reason", "")), time.monotonic() - started, replay)


def _disjuncts(instance: Instance) -> list[Disjunct]:
    """The unsafe set y0 - y1 <= 0, with the extra row (y_j <= t) or disjunct (-y_j <= -t)."""
    outputs = instance.network.readout.shape[1]
    rows, d = [[1.0, -1.0] + [0.0] * (outputs - 2)], [0.0]
    disjuncts = []
    if instance.extra is not None:
        kind, j, threshold = instance.extra
        sign = 1.0 if kind == "row" else -1.0
        row = [sign if k == j else 0.0 for k in range(outputs)]
        if kind == "row":
            rows, d = rows + [row], d + [threshold]
        else:
            disjuncts.append(Disjunct(torch.tensor([row]), torch.tensor([-threshold])))
    return disjuncts + [Disjunct(torch.tensor(rows), torch.tensor(d))]


def ground_truth(instance: Instance, exact: nn.Module, module32: nn.Module, files: Files | None,
                 generator: torch.Generator) -> list[str]:
    """What the generator promises, checked on the network as written (weights in its dtype): x0 in the input set;
    planted, y0 - y1 < 0 at x0 run in float64, in float32 and by onnxruntime (a spike 1e-6 of the box wide violates
    in float32 only: float32 weights 1e6 apart cancel); a control, y0 - y1 > 0 at x0 and at random points of the
    box (float64)."""
    findings = []
    network = instance.network
    if not _inside(instance, instance.x0[None], 0.0)[0]:
        findings.append(f"x0 = {instance.x0.tolist()} lies outside the input set")
    if instance.planted:
        at64, at32 = margins(exact, instance.x0, network)[0], margins(module32, instance.x0, network)[0]
        at_file = at32 if files is None else files.runner(instance.x0)[0]
        if not (at64 < 0 and at32 < 0 and at_file < 0):
            findings.append(f"x0 does not violate: y0 - y1 = {at64!r} (float64), {at32!r} (float32), "
                            f"{at_file!r} (onnxruntime, where written)")
        return findings
    u = torch.rand(500, instance.inputs, generator=generator, dtype=torch.float64).numpy()
    points = np.concatenate([instance.x0[None], instance.lower + (instance.upper - instance.lower) * u])
    worst = margins(exact, points, network).min()
    if worst <= 0:
        findings.append(f"a control violates at a sampled point: y0 - y1 = {worst!r}")
    return findings


def _inside(instance: Instance, x: np.ndarray, tolerance: float) -> np.ndarray:
    """Whether flat points x [B, n] lie in the box (and the L1 or L2 ball), widened by `tolerance`."""
    inside = ((x >= instance.lower - tolerance) & (x <= instance.upper + tolerance)).all(1)
    if instance.norm < math.inf:
        inside &= np.linalg.norm(x - instance.centre, ord=instance.norm, axis=1) <= instance.eps + tolerance
    return inside


def check_instance(seed: int, folder: Path, timeout: float = TIMEOUT) -> Outcome:
    """Draw the instance of `seed`, check its ground truth, decide it and check the answer (module docstring)."""
    instance = random_instance(seed)
    module = PlantedNet(instance.network)
    exact = PlantedNet(instance.network, torch.float64) if instance.double else PlantedNet(instance.network).double()
    files = write_files(instance, folder) if instance.path == "onnx" else None
    findings = ground_truth(instance, exact, module, files, torch.Generator().manual_seed(seed))
    outcome = Outcome(seed, instance.family, instance.path, instance.planted, "not run", 0.0, instance.description,
                      findings)
    if findings:
        return outcome
    timeout = FIND_TIMEOUT if must_find(instance) else timeout
    started = time.monotonic()
    try:
        decision = decide(instance, module, files, timeout)
    except Exception as error:  # noqa: BLE001 - every instance drawn here is meant to be decided
        outcome.seconds = time.monotonic() - started
        trace = "".join(traceback.format_exception(type(error), error, error.__traceback__)[-6:])
        outcome.status = "exception"
        findings.append(f"{type(error).__name__}: {error}\n{trace}")
        return outcome
    status, outcome.status, outcome.seconds, outcome.reason = decision.status, decision.status, decision.seconds, \
        decision.reason
    if status not in STATUSES:
        findings.append(f"status {status!r} is none of {sorted(STATUSES)}")
    if outcome.seconds > timeout + SLACK:
        findings.append(f"took {outcome.seconds:.1f} s with a timeout of {timeout} s")
    if status == "unsat" and instance.planted:
        findings.append(f"UNSOUND: unsat, but x0 = {instance.x0.tolist()} violates: y0 - y1 = "
                        f"{margins(exact, instance.x0, instance.network)[0]!r}")
    if status != "sat" and must_find(instance):
        findings.append(f"{status} where every such instance (must_find) was sat so far")
    if status == "sat":
        findings += _check_counterexample(instance, decision.x, exact, decision.replay)
        x = decision.x
        outcome.in_spike = x is not None and bool((np.abs(x - instance.x0) <= 2 * instance.width).all())
    return outcome


def must_find(instance: Instance) -> bool:
    """The instances opwise found every planted counterexample of (400 seeds at 2 and 6 s, none above 1.1 s):
    ReLU hats over at most 3 inputs, on a box (input splitting). They get `FIND_TIMEOUT`, so that a loaded
    machine does not fail them."""
    return instance.planted and instance.family in RELU_HATS and instance.inputs <= 3 and instance.path != "verify"


def _check_counterexample(instance: Instance, x: np.ndarray | None, exact: nn.Module,
                          replay: Callable[[np.ndarray], np.ndarray]) -> list[str]:
    """A `sat` answer's point: in the input set, y0 - y1 <= 0 when replayed in float32 (onnxruntime or the torch
    module) and, up to float32 rounding, in float64."""
    if x is None or x.shape != (instance.inputs,):
        return [f"sat without a counterexample of {instance.inputs} inputs: {x!r}"]
    findings = []
    if not _inside(instance, x[None], BOX_TOLERANCE)[0]:
        findings.append(f"sat x = {x.tolist()} lies outside the input set")
    at32, at64 = replay(x)[0], margins(exact, x, instance.network)[0]
    if at32 > 0 or at64 > 1e-5:
        findings.append(f"sat x = {x.tolist()} does not violate: y0 - y1 = {at32!r} (float32), {at64!r} (float64)")
    if not instance.planted:
        findings.append(f"sat on a control at x = {x.tolist()} (y0 - y1 = {at32!r}): the generator is wrong")
    return findings


def report(outcome: Outcome) -> str:
    found = " (in the spike)" if outcome.in_spike else ""
    text = f"seed {outcome.seed}: {outcome.status}{found} in {outcome.seconds:.1f} s; {outcome.description}"
    if outcome.reason:
        text += f"\n  reason: {outcome.reason}"
    return text + "".join(f"\n  FINDING: {finding}" for finding in outcome.findings)


def test_planted_counterexamples(tmp_path):
    outcomes = [check_instance(seed, tmp_path / str(seed)) for seed in FAST_SEEDS]
    failures = [report(o) for o in outcomes if o.findings]
    assert not failures, "\n".join(failures)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
def test_more_planted_counterexamples(tmp_path, seed):
    outcome = check_instance(seed, tmp_path)
    assert not outcome.findings, report(outcome)


def summary(outcomes: list[Outcome]) -> str:
    """Counts per family: planted instances by status (and how many `sat` lay in the spike), controls by status."""
    lines = []
    for family in FAMILIES:
        mine = [o for o in outcomes if o.family == family]
        planted = Counter(o.status for o in mine if o.planted)
        controls = Counter(o.status for o in mine if not o.planted)
        in_spike = sum(o.in_spike for o in mine)
        findings = sum(bool(o.findings) for o in mine)
        lines.append(f"{family:12} planted {dict(planted)} (sat in the spike {in_spike}); controls {dict(controls)}; "
                     f"with findings {findings}")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m tests.fuzz.test_planted_counterexamples FIRST LAST [TIMEOUT]
    torch.set_num_threads(1)
    first, last = int(sys.argv[1]), int(sys.argv[2])
    limit = float(sys.argv[3]) if len(sys.argv) > 3 else TIMEOUT
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(first, last):
            results.append(check_instance(seed, Path(folder) / str(seed), limit))
            print(report(results[-1]), flush=True)
    print(summary(results))
