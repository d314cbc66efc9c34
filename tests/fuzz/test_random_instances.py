"""Fuzzing the VNN-COMP instance path: random small ONNX networks and VNN-LIB properties, decided end to end.

The unit tests of `verify_instance` each cover one feature (a DOUBLE network, an input without batch axis, a
product of outputs, VNN-LIB 2, a relation between inputs) on a hand-picked network; competition instances combine
them. A seeded generator draws both halves of an instance and writes them as files:

- the network, built with onnx.helper: input [1, n], [n] (no batch axis), [1, c, h, w] (a Conv stem) or [k, n] (a
  leading axis that is no batch, read row by row by MatMul); FLOAT or DOUBLE; 1-3 hidden layers of width 4-16
  (MatMul + Add or Gemm) with Relu, Sigmoid, Tanh, LeakyRelu or the product (Mul) of two branches; output [1, m],
  [m], [k, m] or a scalar [] (ReduceSum), sometimes after a final Relu (outputs exactly 0 on a region). The same
  function is kept as a float64 torch function for the attack;
- the property, VNN-LIB 1 (`X_i`, `Y_j`) or VNN-LIB 2 (`X[0,1]`, types float32/float64): a box around a random
  centre (some inputs fixed, lower == upper; sometimes all), sometimes a relation `X_a <= X_b`, and a disjunction
  of conjunctions of random linear rows over the outputs (`<=`/`>=`, sometimes strict, sometimes with a product
  `Y_a * Y_b`), thresholds drawn from sampled output values so that both answers occur (or 0 after a final Relu: a
  tie on a whole region, which a strict row must not accept).

`verify_instance` then decides the instance within a few seconds, and the answer is checked as the competition
would, independently of opwise's own reading of the files:

- nothing but an answer comes back (no exception: every instance drawn here is meant to be supported);
- `sat`: x lies in the box (1e-6) and meets the relation; onnxruntime, run on x in the network's dtype, gives
  outputs that violate the property as written (every row of some disjunct, strict rows strictly), in float64;
- `unsat`: no violation among random points of the box and the points of a signed-gradient attack on the
  torch function (both run through onnxruntime), beyond a float32 rounding margin.

20 instances by default (about 20 s on one core), which must include both a `sat` and an `unsat`;
`--run-slow` adds 200 more. `python -m tests.fuzz.test_random_instances FIRST LAST` runs a seed range and prints
every status and finding.
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

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from opwise.bounds.vnncomp import verify_instance  # noqa: E402

FAST_SEEDS = range(20)
SLOW_SEEDS = range(1000, 1200)
TIMEOUT = 5.0
STATUSES = {"sat", "unsat", "timeout", "unknown"}
#: how far outside the box (absolute) a `sat` input may lie: the box's bounds are written in decimal
BOX_TOLERANCE = 1e-6
#: relative margin a sampled point must violate the property by to refute an `unsat` (float32 rounding)
ROUNDING = 1e-5


# ------------------------------------------------------------------------------------------------ networks
@dataclasses.dataclass
class Network:
    """A random network: its ONNX model, declared shapes and dtype, and the same function in float64 torch
    (`forward`: flat inputs [B, n] -> flat outputs [B, m])."""

    model: onnx.ModelProto
    dtype: type  # np.float32 or np.float64
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    forward: Callable[[torch.Tensor], torch.Tensor]
    description: str
    nonnegative: bool = False  # a Relu ends it: outputs 0 exactly on a region, where thresholds of 0 are ties

    @property
    def inputs(self) -> int:
        return math.prod(self.input_shape)

    @property
    def outputs(self) -> int:
        return math.prod(self.output_shape)


class _Builder:
    """ONNX nodes and the torch steps that compute the same values, side by side. A torch value is the ONNX value
    with a batch axis B in front (replacing a leading axis of 1 where the network has that batch axis)."""

    def __init__(self, rng: random.Random, dtype: type):
        self.rng, self.dtype = rng, dtype
        self.nodes: list = []
        self.initializers: list = []
        self.constants: dict[str, torch.Tensor] = {}
        self.steps: list[tuple[str, Callable[[dict], torch.Tensor]]] = []
        self.names: list[str] = []  # what each step does, for messages

    def _fresh(self, prefix: str) -> str:
        return f"{prefix}{len(self.nodes) + len(self.initializers)}"

    def constant(self, array: np.ndarray, integer: bool = False) -> str:
        """An initializer in the network's dtype (int64 where `integer`); float ones are also torch constants."""
        name = self._fresh("c")
        value = np.asarray(array, dtype=np.int64 if integer else self.dtype)
        self.initializers.append(numpy_helper.from_array(value, name))
        if not integer:
            self.constants[name] = torch.tensor(value, dtype=torch.float64)
        return name

    def node(self, op: str, inputs: list[str], step: Callable[[dict], torch.Tensor], **attributes) -> str:
        """One ONNX node and its torch step (a function of the values by name)."""
        output = self._fresh(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [output], **attributes))
        self.steps.append((output, step))
        return output

    def dense(self, h: str, fan_in: int, width: int, gemm: bool = False) -> str:
        """h @ W + b (MatMul and Add over the last axis, or a Gemm with transB on a 2-D value)."""
        weight = np.array([[self.rng.gauss(0, 1) for _ in range(width)] for _ in range(fan_in)]) / math.sqrt(fan_in)
        bias = np.array([self.rng.gauss(0, 0.3) for _ in range(width)])
        if gemm:
            w, b = self.constant(weight.T), self.constant(bias)
            return self.node("Gemm", [h, w, b], lambda e: e[h] @ e[w].T + e[b], transB=1)
        w = self.constant(weight)
        product = self.node("MatMul", [h, w], lambda e: e[h] @ e[w])
        b = self.constant(bias)
        return self.node("Add", [product, b], lambda e: e[product] + e[b])

    def activation(self, h: str, kind: str) -> str:
        if kind == "LeakyRelu":
            alpha = round(self.rng.uniform(0.05, 0.3), 2)
            return self.node(kind, [h], lambda e: F.leaky_relu(e[h], alpha), alpha=alpha)
        function = {"Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh}[kind]
        return self.node(kind, [h], lambda e: function(e[h]))

    def reshape(self, h: str, shape: list[int], step: Callable[[torch.Tensor], torch.Tensor]) -> str:
        target = self.constant(np.array(shape), integer=True)
        return self.node("Reshape", [h, target], lambda e: step(e[h]))

    def forward(self, input_name: str, torch_shape: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
        """The torch function: flat inputs [B, n] (float64) -> flat outputs [B, m]."""
        steps, constants = list(self.steps), dict(self.constants)

        def forward(x: torch.Tensor) -> torch.Tensor:
            values = dict(constants)
            values[input_name] = x.reshape(len(x), *torch_shape)
            for name, step in steps:
                values[name] = step(values)
            return values[steps[-1][0]].reshape(len(x), -1)

        return forward


def random_network(rng: random.Random) -> Network:
    """A small random network of the kinds the module docstring lists."""
    kind = rng.choices(["batch", "flat", "conv", "rows"], weights=[4, 2, 2, 2])[0]
    double = kind != "conv" and rng.random() < 0.25  # onnxruntime has no DOUBLE Conv or LeakyRelu on the CPU
    dtype = np.float64 if double else np.float32
    activations = ["Relu", "Sigmoid", "Tanh"] + ([] if double else ["LeakyRelu"])
    b = _Builder(rng, dtype)
    parts = [f"{kind} {'DOUBLE' if double else 'FLOAT'}"]
    if kind == "conv":
        channels, side = rng.randint(1, 2), rng.randint(3, 4)
        input_shape = (1, channels, side, side)
        torch_shape = input_shape[1:]
        out_channels, kernel, pad = rng.randint(2, 3), rng.choice([2, 3]), rng.randint(0, 1)
        weight = np.array([rng.gauss(0, 1) for _ in range(out_channels * channels * kernel * kernel)]).reshape(
            out_channels, channels, kernel, kernel) / kernel
        w, c = b.constant(weight), b.constant(np.array([rng.gauss(0, 0.3) for _ in range(out_channels)]))
        h = b.node("Conv", ["x", w, c], lambda e, w=w, c=c: F.conv2d(e["x"], e[w], e[c], padding=pad),
                   kernel_shape=[kernel, kernel], pads=[pad] * 4)
        act = rng.choice(activations)
        h = b.activation(h, act)
        h = b.node("Flatten", [h], lambda e, h=h: e[h].reshape(len(e[h]), -1), axis=1)
        width = out_channels * (side + 2 * pad - kernel + 1) ** 2
        parts.append(f"input {list(input_shape)} -> Conv {out_channels}x{kernel}x{kernel} pad {pad} -> {act} "
                     "-> Flatten")
    elif kind == "rows":
        rows, width = rng.randint(2, 3), rng.randint(2, 3)
        input_shape, torch_shape, h = (rows, width), (rows, width), "x"
        parts.append(f"input {list(input_shape)} (rows, no batch)")
    else:
        width = rng.randint(2, 6)
        input_shape = (1, width) if kind == "batch" else (width,)
        torch_shape, h = (width,), "x"
        parts.append(f"input {list(input_shape)}")
    two_dimensional = kind in ("batch", "conv")  # a Gemm takes the value
    for _ in range(rng.randint(1, 3)):
        hidden = rng.randint(4, 16)
        gemm = two_dimensional and rng.random() < 0.3
        if rng.random() < 0.2:  # the product of two branches
            left, right = b.dense(h, width, hidden, gemm), b.dense(h, width, hidden, gemm)
            squash = rng.choice(["Tanh", "Sigmoid", None])
            left = b.activation(left, squash) if squash else left
            h = b.node("Mul", [left, right], lambda e, l=left, r=right: e[l] * e[r])
            parts.append(f"{'Gemm' if gemm else 'MatMul'} {hidden} -> {squash or 'identity'}(.) * linear(.)")
        else:
            act = rng.choice(activations)
            h = b.activation(b.dense(h, width, hidden, gemm), act)
            parts.append(f"{'Gemm' if gemm else 'MatMul'} {hidden} -> {act}")
        width = hidden
    outputs = rng.randint(1, 4)
    ending = rng.choice(["keep", "flat", "scalar"])
    if kind == "rows":
        if rng.random() < 0.5:  # mix the rows: [k, h] -> [1, k h]
            h = b.reshape(h, [1, -1], lambda v: v.reshape(len(v), -1))
            width *= input_shape[0]
            parts.append("Reshape [1, -1]")
            h = b.dense(h, width, outputs)
            output_shape = {"keep": (1, outputs), "flat": (outputs,), "scalar": ()}[ending]
            if ending == "flat":
                h = b.reshape(h, [-1], lambda v: v)
        else:  # each row on its own: [k, m]
            outputs = rng.randint(1, 2)
            h = b.dense(h, width, outputs)
            output_shape = () if ending == "scalar" else (input_shape[0], outputs)
    else:
        h = b.dense(h, width, outputs, two_dimensional and rng.random() < 0.3)
        batch = (1,) if kind != "flat" else ()
        output_shape = {"keep": batch + (outputs,), "flat": (outputs,), "scalar": ()}[ending]
        if ending == "flat" and batch:
            h = b.reshape(h, [-1], lambda v: v)
        elif ending == "keep" and not batch and rng.random() < 0.5:
            h = b.reshape(h, [1, -1], lambda v: v)
            output_shape = (1, outputs)
    nonnegative = rng.random() < 0.15
    if nonnegative:
        h = b.activation(h, "Relu")
        parts.append("Relu")
    if output_shape == ():
        h = b.node("ReduceSum", [h], lambda e, h=h: e[h].reshape(len(e[h]), -1).sum(1), keepdims=0)
    parts.append(f"output {list(output_shape)}")
    elem = TensorProto.DOUBLE if double else TensorProto.FLOAT
    graph = helper.make_graph(b.nodes, "fuzz", [helper.make_tensor_value_info("x", elem, list(input_shape))],
                              [helper.make_tensor_value_info(h, elem, list(output_shape))], b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return Network(model, dtype, input_shape, output_shape, b.forward("x", torch_shape), " -> ".join(parts),
                   nonnegative)


class Runner:
    """The ONNX file run by onnxruntime, one point at a time at its declared shape, in its declared dtype."""

    def __init__(self, path: Path, network: Network):
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.network = network

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Outputs [B, m] (float64) at flat inputs x [B, n]."""
        name, shape = self.session.get_inputs()[0].name, self.network.input_shape
        rows = [self.session.run(None, {name: row.astype(self.network.dtype).reshape(shape)})[0].reshape(-1)
                for row in np.asarray(x, dtype=np.float64)]
        return np.stack(rows).astype(np.float64)


# ------------------------------------------------------------------------------------------------ properties
@dataclasses.dataclass
class Row:
    """sum(coefficient * prod(Y[indices])) OP threshold; `indices` of one output (linear) or two (a product)."""

    terms: list[tuple[float, tuple[int, ...]]]
    op: str  # "<=" or ">="
    strict: bool
    threshold: float = 0.0

    def value(self, y: np.ndarray) -> np.ndarray:
        """The left side at outputs y [B, m] (float64)."""
        return sum(c * np.prod(y[:, list(indices)], axis=1) for c, indices in self.terms)

    def slack(self, y: np.ndarray) -> np.ndarray:
        """How far the row is from holding (<= 0: holds, ignoring strictness)."""
        sign = 1.0 if self.op == "<=" else -1.0
        return sign * (self.value(y) - self.threshold)

    def holds(self, y: np.ndarray) -> np.ndarray:
        slack = self.slack(y)
        return slack < 0 if self.strict else slack <= 0


@dataclasses.dataclass
class Property:
    """The input box (flat), relations x[a] <= x[b], and the unsafe set: a disjunction of conjunctions of Rows."""

    lower: np.ndarray
    upper: np.ndarray
    relations: list[tuple[int, int]]
    disjuncts: list[list[Row]]
    version: int
    description: str = ""

    def violated(self, y: np.ndarray, tolerance: float = 0.0) -> np.ndarray:
        """Whether outputs y [B, m] lie in the unsafe set as written ([B] bool, float64): every row of some
        disjunct holds (strict rows strictly); with a tolerance, every row by more than it (relative), or exactly
        at a threshold of 0."""
        found = np.zeros(len(y), dtype=bool)
        for rows in self.disjuncts:
            holds = np.ones(len(y), dtype=bool)
            for row in rows:
                if tolerance:  # an exact tie at 0 (a Relu's off outputs) holds for a non-strict row whatever the dtype
                    value = row.value(y)
                    tie = (not row.strict) & (row.threshold == 0.0) & (value == 0.0)
                    holds &= (row.slack(y) < -tolerance * (1 + abs(row.threshold) + np.abs(value))) | tie
                else:
                    holds &= row.holds(y)
            found |= holds
        return found

    def sample(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """count points of the input set [count, n] (float64), a tenth of them at corners of the box."""
        lower, upper = torch.tensor(self.lower), torch.tensor(self.upper)
        u = torch.rand(count, len(lower), generator=generator, dtype=torch.float64)
        u[: count // 10] = u[: count // 10].round()
        return self.project(lower + (upper - lower) * u)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Points onto the relations: x[a] <= x[b] where both share a box, by ordering the pair."""
        x = x.clone()
        for a, b in self.relations:
            low, high = torch.minimum(x[:, a], x[:, b]), torch.maximum(x[:, a], x[:, b])
            x[:, a], x[:, b] = low, high
        return x


def _number(value: float) -> str:
    return repr(float(value))


def random_property(rng: random.Random, network: Network, generator: torch.Generator) -> Property:
    """A random property over `network`, thresholds chosen from its outputs at sampled points of the box."""
    n, m = network.inputs, network.outputs
    centre = np.array([round(rng.uniform(-1, 1), 3) for _ in range(n)])
    base = rng.choice([0.02, 0.1, 0.3, 1.0])
    radius = np.array([round(base * rng.uniform(0.5, 1.0), 4) for _ in range(n)])
    lower, upper = np.round(centre - radius, 4), np.round(centre + radius, 4)
    notes = [f"radius ~{base}"]
    if rng.random() < 0.04:
        lower, upper = centre.copy(), centre.copy()
        notes.append("every input fixed")
    elif rng.random() < 0.3:
        fixed = rng.sample(range(n), rng.randint(1, max(1, n // 3)))
        lower[fixed] = upper[fixed] = centre[fixed]
        notes.append(f"X{sorted(fixed)} fixed")
    relations = []
    free = [i for i in range(n) if lower[i] < upper[i]]
    if len(free) >= 2 and rng.random() < 0.15:
        a, b = rng.sample(free, 2)
        lower[b], upper[b] = lower[a], upper[a]
        relations.append((a, b))
        notes.append(f"X_{a} <= X_{b}")
    disjuncts: list[list[Row]] = []
    polynomial = rng.random() < 0.15
    for _ in range(rng.choice([1, 1, 2, 3])):
        rows = []
        for _ in range(rng.randint(1, min(3, m + 1))):
            chosen = rng.sample(range(m), rng.randint(1, min(2, m)))
            terms = [(rng.choice([1.0, -1.0, round(rng.gauss(0, 1), 3)]), (j,)) for j in chosen]
            if polynomial:
                terms.append((rng.choice([1.0, round(rng.gauss(0, 1), 3)]), (rng.randrange(m), rng.randrange(m))))
                polynomial = False
            rows.append(Row(terms, rng.choice(["<=", ">="]), rng.random() < 0.25))
        disjuncts.append(rows)
    prop = Property(lower, upper, relations, disjuncts, 2 if rng.random() < 0.3 else 1)
    with torch.no_grad():
        y = network.forward(prop.sample(500, generator)).numpy()
    for rows in disjuncts:
        for row in rows:
            sign = 1.0 if row.op == "<=" else -1.0
            values = sign * row.value(y)  # the row holds where sign * value <= sign * threshold
            if rng.random() < 0.5:
                chosen = np.quantile(values, rng.uniform(0.05, 0.7))
            else:  # at or beyond the sampled extreme: often unreachable
                chosen = values.min() - rng.choice([0.0, 0.05, 0.2]) * (values.max() - values.min() + 1e-3)
            row.threshold = float(f"{sign * chosen:.6g}")
            if network.nonnegative and rng.random() < 0.5:
                row.threshold = 0.0  # attained exactly where the Relu is off: strict rows must fail there
    prop.description = ", ".join(notes) + "; unsafe: " + " or ".join(
        "(" + " and ".join(_row_text(row, lambda j: f"Y_{j}") for row in rows) + ")" for rows in disjuncts)
    return prop


def _row_text(row: Row, name: Callable[[int], str]) -> str:
    """`(<= (+ (* a Y_0) (* b Y_1 Y_2)) t)` with outputs named by `name`."""
    terms = []
    for coefficient, indices in row.terms:
        factors = " ".join(name(j) for j in indices)
        terms.append(f"(* {_number(coefficient)} {factors})" if coefficient != 1.0 else
                     (factors if len(indices) == 1 else f"(* {factors})"))
    left = terms[0] if len(terms) == 1 else f"(+ {' '.join(terms)})"
    op = row.op[0] if row.strict else row.op
    return f"({op} {left} {_number(row.threshold)})"


def vnnlib_text(prop: Property, network: Network, rng: random.Random) -> str:
    """The property as a VNN-LIB 1 file or a VNN-LIB 2 query (`prop.version`)."""
    if prop.version == 1:
        x, y = (lambda i: f"X_{i}"), (lambda j: f"Y_{j}")
        lines = [f"(declare-const X_{i} Real)" for i in range(network.inputs)]
        lines += [f"(declare-const Y_{j} Real)" for j in range(network.outputs)]
    else:
        def element(shape, prefix):
            return lambda i: prefix if not shape else f"{prefix}[{','.join(map(str, np.unravel_index(i, shape)))}]"
        x, y = element(network.input_shape, "X"), element(network.output_shape, "Y")
        kind = "float64" if network.dtype == np.float64 else "float32"
        shape = lambda s: "[" + ",".join(map(str, s)) + "]"  # noqa: E731
        lines = ["; a random query", "(vnnlib-version <2.0>)",
                 f"(declare-network f (declare-input X {kind} {shape(network.input_shape)}) "
                 f"(declare-output Y {kind} {shape(network.output_shape)}))"]
    bounds = []
    for i, (lo, hi) in enumerate(zip(prop.lower, prop.upper)):
        if lo == hi and prop.version == 2 and rng.random() < 0.5:
            bounds.append(f"(== {x(i)} {_number(lo)})")
        else:
            bounds += [f"(>= {x(i)} {_number(lo)})", f"(<= {x(i)} {_number(hi)})"]
    if rng.random() < 0.5:
        lines += [f"(assert {b})" for b in bounds]
    else:
        lines.append(f"(assert (and {' '.join(bounds)}))")
    lines += [f"(assert (<= {x(a)} {x(b)}))" for a, b in prop.relations]
    conjunctions = [[_row_text(row, y) for row in rows] for rows in prop.disjuncts]
    if len(conjunctions) == 1 and rng.random() < 0.5:
        lines += [f"(assert {row})" for row in conjunctions[0]]
    else:
        lines.append("(assert (or " + " ".join(f"(and {' '.join(rows)})" for rows in conjunctions) + "))")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ checks
def attacked_points(network: Network, prop: Property, generator: torch.Generator, steps: int = 30,
                    restarts: int = 4) -> torch.Tensor:
    """Signed-gradient descent on each disjunct's worst row (the torch function, float64), from the centre and
    random points of the box: [disjuncts * restarts, n]."""
    lower, upper = torch.tensor(prop.lower), torch.tensor(prop.upper)
    found = []
    for rows in prop.disjuncts:
        x = torch.cat([((lower + upper) / 2)[None], prop.sample(restarts - 1, generator)])
        x = prop.project(x)
        for step in range(steps):
            x = x.detach().requires_grad_(True)
            y = network.forward(x)
            slacks = []
            for row in rows:
                value = sum(c * torch.prod(y[:, list(indices)], dim=1) for c, indices in row.terms)
                slacks.append((1.0 if row.op == "<=" else -1.0) * (value - row.threshold))
            objective = torch.stack(slacks, 1).amax(1).sum()
            (gradient,) = torch.autograd.grad(objective, x)
            size = 0.1 * (1 - step / steps) + 0.005
            x = prop.project(torch.max(torch.min(x - size * (upper - lower) * gradient.sign(), upper), lower))
        found.append(x.detach())
    return torch.cat(found)


def write_instance(seed: int, folder: Path, generator: torch.Generator | None = None
                   ) -> tuple[Network, Property, Path, Path]:
    """The network and property of `seed`, written to `folder` as net_SEED.onnx and prop_SEED.vnnlib."""
    rng = random.Random(seed)
    generator = generator or torch.Generator().manual_seed(seed)
    network = random_network(rng)
    prop = random_property(rng, network, generator)
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path, vnnlib_path = folder / f"net_{seed}.onnx", folder / f"prop_{seed}.vnnlib"
    onnx.save(network.model, str(onnx_path))
    vnnlib_path.write_text(vnnlib_text(prop, network, rng))
    return network, prop, onnx_path, vnnlib_path


@dataclasses.dataclass
class Outcome:
    """One instance's answer and everything found wrong with it."""

    seed: int
    status: str
    seconds: float
    description: str
    findings: list[str]
    reason: str = ""


def check_instance(seed: int, folder: Path, timeout: float = TIMEOUT, samples: int = 2000,
                   attack_steps: int = 30) -> Outcome:
    """Draw the instance of `seed` into `folder`, decide it, and check the answer (module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    network, prop, onnx_path, vnnlib_path = write_instance(seed, folder, generator)
    description = f"{network.description}; VNN-LIB {prop.version}: {prop.description}"
    findings: list[str] = []
    run = Runner(onnx_path, network)
    centre = (prop.lower + prop.upper)[None] / 2
    with torch.no_grad():
        replica = network.forward(torch.tensor(centre)).numpy()
    assert np.allclose(run(centre), replica, rtol=1e-4, atol=1e-4), f"seed {seed}: the torch function differs"
    started = time.monotonic()
    try:
        result = verify_instance(str(onnx_path), str(vnnlib_path), timeout)
    except Exception as error:  # noqa: BLE001 - every instance drawn here should be decided
        seconds = time.monotonic() - started
        trace = "".join(traceback.format_exception(type(error), error, error.__traceback__)[-6:])
        return Outcome(seed, "exception", seconds, description, [f"{type(error).__name__}: {error}\n{trace}"])
    seconds = time.monotonic() - started
    status = result.status
    if status not in STATUSES:
        findings.append(f"status {status!r} is none of {sorted(STATUSES)}")
    if seconds > timeout + 2:
        findings.append(f"took {seconds:.1f} s with a timeout of {timeout} s")
    if status == "sat":
        x = np.asarray(result.x.detach().cpu().double().reshape(-1))
        if x.shape != (network.inputs,):
            findings.append(f"sat x has shape {x.shape}, expected ({network.inputs},)")
        else:
            outside = np.maximum(prop.lower - x, x - prop.upper).max()
            if outside > BOX_TOLERANCE:
                findings.append(f"sat x lies {outside:.3g} outside the box: x = {x.tolist()}")
            for a, b in prop.relations:
                if x[a] > x[b] + BOX_TOLERANCE:
                    findings.append(f"sat x breaks X_{a} <= X_{b}: {x[a]!r} > {x[b]!r}")
            y = run(x[None])
            if not prop.violated(y)[0]:
                slack = min(max(float(r.slack(y)[0]) for r in rows) for rows in prop.disjuncts)
                findings.append(f"sat x = {x.tolist()} does not violate the property: onnxruntime gives y = "
                                f"{y[0].tolist()} (closest disjunct's worst row slack {slack:.3g}); opwise's y = "
                                f"{result.y.double().reshape(-1).tolist()}")
    elif status == "unsat":
        points = torch.cat([prop.sample(samples, generator), attacked_points(network, prop, generator, attack_steps)])
        y = run(points.numpy())
        bad = np.flatnonzero(prop.violated(y, tolerance=ROUNDING))
        if len(bad):
            i = bad[0]
            findings.append(f"unsat, but {len(bad)} of {len(points)} points violate the property, e.g. x = "
                            f"{points[i].tolist()} with y = {y[i].tolist()}")
    return Outcome(seed, status, seconds, description, findings, result.reason)


def report(outcome: Outcome) -> str:
    text = f"seed {outcome.seed}: {outcome.status} in {outcome.seconds:.1f} s; {outcome.description}"
    if outcome.reason:
        text += f"\n  reason: {outcome.reason}"
    return text + "".join(f"\n  FINDING: {finding}" for finding in outcome.findings)


def test_random_instances(tmp_path):
    outcomes = [check_instance(seed, tmp_path / str(seed)) for seed in FAST_SEEDS]
    failures = [report(o) for o in outcomes if o.findings]
    assert not failures, "\n".join(failures)
    counts = Counter(o.status for o in outcomes)
    assert counts["sat"] and counts["unsat"], f"both answers must occur over the default seeds: {dict(counts)}"


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
def test_more_random_instances(tmp_path, seed):
    outcome = check_instance(seed, tmp_path, samples=4000, attack_steps=50)
    assert not outcome.findings, report(outcome)


if __name__ == "__main__":  # python -m tests.fuzz.test_random_instances FIRST LAST: a seed range, every answer printed
    torch.set_num_threads(1)
    first, last = int(sys.argv[1]), int(sys.argv[2])
    counts: Counter = Counter()
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(first, last):
            outcome = check_instance(seed, Path(folder) / str(seed))
            counts[outcome.status] += 1
            counts["with findings"] += bool(outcome.findings)
            print(report(outcome), flush=True)
    print(dict(counts))
