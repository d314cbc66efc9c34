"""VNN-LIB 2 queries (VNN-COMP 2026's format): the same Specifications as their VNN-LIB 1 translation, queries over
two networks decided as brute force says, `sat` files the official parser and onnxruntime accept, gzip files, and
refusals that name what they refuse."""

from __future__ import annotations

import csv
import gzip
import itertools
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from opwise.bounds.vnncomp import read_result, run_suite, verify_instance, write_result
from opwise.bounds.vnncomp.vnnlib import parse_property, parse_vnnlib
from opwise.errors import InputError, SpecError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

REPO = Path(__file__).resolve().parents[3]


def mlp_onnx(path: Path, seed: int, inputs: int = 2, hidden: int = 8, outputs: int = 2,
             input_shape: list[int] | None = None) -> Path:
    """A random ReLU MLP as an ONNX file (input [1, inputs] or `input_shape`, read flat)."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(inputs, hidden)).astype(np.float32)
    b1 = (rng.normal(size=hidden) * 0.3).astype(np.float32)
    w2 = (rng.normal(size=(hidden, outputs)) / np.sqrt(hidden)).astype(np.float32)
    b2 = (rng.normal(size=outputs) * 0.1).astype(np.float32)
    shape = input_shape or [1, inputs]
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["x2"]), helper.make_node("MatMul", ["x2", "w1"], ["h"]),
             helper.make_node("Add", ["h", "b1"], ["hb"]), helper.make_node("Relu", ["hb"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["o"]), helper.make_node("Add", ["o", "b2"], ["y"])]
    initializers = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    initializers.append(numpy_helper.from_array(np.array([1, inputs], dtype=np.int64), "flat"))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, outputs])], initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def double_mlp_onnx(path, seed: int):
    """A random ReLU MLP declared in DOUBLE ([1, 2] -> [1, 2]), which opwise bounds in float64."""
    rng = np.random.default_rng(seed)
    arrays = {"w1": rng.normal(size=(2, 8)), "b1": rng.normal(size=8) * 0.3, "w2": rng.normal(size=(8, 2)) / 3,
              "b2": rng.normal(size=2) * 0.1}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["o"]),
             helper.make_node("Add", ["o", "b2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1, 2])],
                              [numpy_helper.from_array(a.astype(np.float64), name) for name, a in arrays.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path, arrays


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    """The network on a batch x [n, inputs] (float32, or float64 for a DOUBLE network), by the onnx reference
    evaluator (one sample at a time)."""
    from onnx.reference import ReferenceEvaluator

    session = ReferenceEvaluator(str(path))
    declared = onnx.load(str(path)).graph.input[0].type.tensor_type
    shape = [d.dim_value for d in declared.shape.dim]
    dtype = np.float64 if declared.elem_type == TensorProto.DOUBLE else np.float32
    return np.stack([session.run(None, {"x": row.astype(dtype).reshape(shape)})[0].reshape(-1) for row in x])


def query(networks: str, asserts: str) -> str:
    return f"; a test query\n(vnnlib-version <2.0>)\n{networks}\n{asserts}\n"


TWO_COPIES = """(declare-network f (declare-input X_f float32 [1, 2]) (declare-output Y_f float32 [1, 2]))
(declare-network g (equal-to f) (declare-input X_g float32 [1, 2]) (declare-output Y_g float32 [1, 2]))"""
TWO_NETWORKS = """(declare-network f (declare-input X_f float32 [1,2]) (declare-output Y_f float32 [1,2]))
(declare-network g (isomorphic-to f) (declare-input X_g float32 [1,2]) (declare-output Y_g float32 [1,2]))"""


# ------------------------------------------------------------------------------------------------ parsing
def version_2(text: str, shape: tuple[int, ...], outputs: int) -> str:
    """A VNN-LIB 1 property rewritten as VNN-LIB 2, its X_i read as elements of an input of `shape` (C order)."""
    body = "\n".join(line for line in text.splitlines() if "declare-const" not in line)
    body = re.sub(r"\bX_(\d+)\b", lambda m: f"X[{', '.join(map(str, np.unravel_index(int(m[1]), shape)))}]", body)
    body = re.sub(r"\bY_(\d+)\b", lambda m: f"Y[0, {m[1]}]", body)
    return query(f"(declare-network net (declare-input X float32 [{', '.join(map(str, shape))}]) "
                 f"(declare-output Y float32 [1, {outputs}]))", body)


def assert_same_specs(a, b) -> None:
    assert len(a) == len(b)
    for one, other in zip(a, b):
        assert torch.equal(one.x_lower, other.x_lower) and torch.equal(one.x_upper, other.x_upper)
        assert len(one.unsafe) == len(other.unsafe)
        for d, e in zip(one.unsafe, other.unsafe):
            assert torch.equal(d.C, e.C) and torch.equal(d.d, e.d) and torch.equal(d.strict, e.strict)


def test_every_suite_property_reads_the_same_as_its_version_2_translation(benchmarks_dir, tmp_path):
    checked = 0
    for suite in sorted(p for p in benchmarks_dir.iterdir() if (p / "instances.csv").is_file()):
        with open(suite / "instances.csv", newline="") as handle:
            properties = list(dict.fromkeys(row[1].strip() for row in csv.reader(handle) if row))[:2]
        for written in properties:
            source = suite / written
            if source.stat().st_size > 2_000_000:
                continue
            text = source.read_text()
            specs = parse_vnnlib(source, dtype=torch.float64)
            inputs, outputs = specs[0].x_lower.numel(), specs[0].unsafe[0].C.shape[1]
            shape = (1, 3, inputs // 3) if inputs % 3 == 0 else (1, inputs)  # C order over a multi-axis tensor too
            target = tmp_path / f"{suite.name}_{Path(written).stem}.vnnlib"
            target.write_text(version_2(text, shape, outputs))
            assert_same_specs(specs, parse_vnnlib(target, dtype=torch.float64))
            checked += 1
    assert checked >= 8


def test_equalities_merge_inputs_and_the_layout_places_every_element(tmp_path):
    text = query(TWO_COPIES, """(assert (and (>= X_f[0,0] -1.0) (<= X_f[0,0] 1.0) (>= X_f[0,1] 0.0) (<= X_f[0,1] 2.0)))
(assert (== X_f[0, 1] X_g[0, 1]))
(assert (and (>= X_g[0,0] 3.0) (<= X_g[0,0] 4.0)))
(assert (or (Y_f[0,0] < Y_g[0,0]) (!= Y_f[0,1] 7.0)))""")
    path = tmp_path / "q.vnnlib"
    path.write_text(text)
    parsed = parse_property(path, torch.float64)
    layout = parsed.layout
    assert layout.inputs == 3 and layout.outputs == 4 and not layout.is_plain
    assert [c.tolist() for c in layout.coordinates] == [[0, 1], [2, 1]]  # X_g[0,1] is X_f[0,1]
    [spec] = parsed.specs
    assert spec.x_lower.tolist() == [[-1.0, 0.0, 3.0]] and spec.x_upper.tolist() == [[1.0, 2.0, 4.0]]
    rows = [(d.C.tolist(), d.d.tolist(), d.strict.tolist()) for d in spec.unsafe]
    assert rows == [([[1.0, 0.0, -1.0, 0.0]], [0.0], [True]),        # Y_f[0,0] < Y_g[0,0]
                    ([[0.0, 1.0, 0.0, 0.0]], [7.0], [True]),         # Y_f[0,1] < 7
                    ([[0.0, -1.0, 0.0, 0.0]], [-7.0], [True])]       # Y_f[0,1] > 7


@pytest.mark.parametrize("asserts, expected", [
    ("(assert (<= X[0,2] 1.0))", r"'X\[0,2\]' is not an element of X, shape \[1, 2\]"),
    ("(assert (<= Z[0] 1.0))", "'Z\\[0\\]' is neither a number nor an element"),
    ("(assert (<= Y[0,0] 1.0))", "input X\\[0,0\\] has no finite lower and upper bound"),
])
def test_what_cannot_be_read_is_refused_naming_the_query_s_elements(tmp_path, asserts, expected):
    path = tmp_path / "q.vnnlib"
    path.write_text(query("(declare-network f (declare-input X real [1,2]) (declare-output Y real [1,1]))", asserts))
    with pytest.raises(SpecError, match=expected):
        parse_vnnlib(path)


@pytest.mark.parametrize("networks, expected", [
    ("(declare-network f (declare-input X int32 [2]) (declare-output Y real [1]))", "element type int32"),
    ("(declare-network f (declare-input X real [2]) (declare-hidden H real [2] \"h\") (declare-output Y real [1]))",
     "hidden"),
    ("(declare-network f (declare-input X real [2]))", "at least one input and one output"),
    ("(declare-network f (equal-to h) (declare-input X real [2]) (declare-output Y real [1]))", "does not declare"),
])
def test_declarations_that_cannot_be_handled_are_refused(tmp_path, networks, expected):
    path = tmp_path / "q.vnnlib"
    path.write_text(query(networks, "(assert (<= X[0] 1.0))"))
    with pytest.raises(SpecError, match=expected):
        parse_vnnlib(path)


def test_relations_between_inputs_cut_the_box_and_bound_what_the_file_leaves_open(tmp_path):
    path = tmp_path / "q.vnnlib"
    path.write_text(query(TWO_COPIES, """(assert (and (>= X_f[0,0] -1.0) (<= X_f[0,0] 1.0) (>= X_f[0,1] 0.0) (<= X_f[0,1] 2.0)))
(assert (and (>= X_g[0,0] -1.0) (<= X_g[0,0] X_f[0,0])))
(assert (== X_f[0,1] X_g[0,1]))
(assert (< Y_f[0,0] Y_g[0,0]))"""))
    [spec] = parse_property(path, torch.float64).specs
    assert spec.x_upper.tolist() == [[1.0, 2.0, 1.0]]  # X_g[0,0] <= X_f[0,0] <= 1
    region = spec.region
    assert not region.is_box and region.constraints.G.tolist() == [[-1.0, 0.0, 1.0]]
    assert region.contains(torch.tensor([[0.5, 1.0, 0.2]], dtype=torch.float64))
    assert not region.contains(torch.tensor([[0.2, 1.0, 0.5]], dtype=torch.float64))
    path.write_text(path.read_text().replace("(<= X_g[0,0] X_f[0,0])",
                                             "(<= X_g[0,0] X_f[0,0]) (>= X_g[0,0] (+ X_f[0,0] 0.5))"))
    with pytest.raises(SpecError, match="input constraints are empty|no input meets the relations"):
        parse_vnnlib(path)


def test_gzip_files_are_read_where_the_plain_name_is_missing(tmp_path):
    net = mlp_onnx(tmp_path / "net.onnx", seed=1)
    with open(net, "rb") as source, gzip.open(str(net) + ".gz", "wb") as target:
        target.write(source.read())
    net.unlink()
    prop = tmp_path / "prop.vnnlib"
    with gzip.open(str(prop) + ".gz", "wt") as file:
        file.write(query("(declare-network f (declare-input X real [1,2]) (declare-output Y real [1,2]))",
                         "(assert (and (>= X[0,0] -1.0) (<= X[0,0] 1.0) (>= X[0,1] -1.0) (<= X[0,1] 1.0)))\n"
                         "(assert (>= Y[0,0] 1000.0))"))
    result = verify_instance(tmp_path / "net.onnx", prop, 20)
    assert result.status == "unsat"
    from opwise.tracing.loading import load_model

    loaded = load_model(str(net) + ".gz")  # a model spec may name the gzipped file itself (opwise trace, verify)
    graph = loaded.model
    assert tuple(graph.info(graph.explained_inputs[0]).shape) == (1, 2)


# ------------------------------------------------------------------------------------ deciding, brute force
def grid(lower, upper, points=201) -> np.ndarray:
    axes = [np.linspace(lo, hi, points) for lo, hi in zip(lower, upper)]
    return np.array(list(itertools.product(*axes)))


def test_a_network_against_a_pruned_copy_is_decided_as_a_dense_grid_says(tmp_path):
    """Equivalence of two networks (isomorphic-to): |f(x) - g(x)| <= eps on a box, for an eps on each side of the
    largest difference a dense grid finds."""
    f, g = mlp_onnx(tmp_path / "f.onnx", seed=3), mlp_onnx(tmp_path / "g.onnx", seed=4)
    x = grid([-0.5, -0.5], [0.5, 0.5])
    gap = float(np.abs(run_onnx(f, x)[:, 0] - run_onnx(g, x)[:, 0]).max())
    field = f"f={f},g={g}"
    for eps, expected in ((gap * 1.3 + 1e-3, "unsat"), (gap * 0.7, "sat")):
        text = query(TWO_NETWORKS, f"""(assert (and (>= X_f[0,0] -0.5) (<= X_f[0,0] 0.5) (>= X_f[0,1] -0.5) (<= X_f[0,1] 0.5)))
(assert (and (== X_f[0,0] X_g[0,0]) (== X_f[0,1] X_g[0,1])))
(assert (or (> (- Y_f[0,0] Y_g[0,0]) {eps!r}) (< (- Y_f[0,0] Y_g[0,0]) {-eps!r})))""")
        path = tmp_path / f"eq_{expected}.vnnlib"
        path.write_text(text)
        result = verify_instance(field, path, 60)
        assert result.status == expected, (eps, gap, result)
        if expected == "sat":
            write_result(tmp_path / "r.txt", result)
            assert_official_check_accepts(tmp_path / "r.txt", path, {"f": f, "g": g})


def test_two_copies_of_one_network_sharing_one_input_are_decided_as_a_dense_grid_says(tmp_path):
    """f(a, c) against f(b, c) (equal-to, the second input shared), a in [0, 0.5] and b in [0.2, 0.7]: the largest
    rise of output 0 from the first copy to the second, brute force per shared c, decides the threshold either way."""
    f = mlp_onnx(tmp_path / "f.onnx", seed=5)
    shared = np.linspace(-0.5, 0.5, 201)
    rise = -np.inf
    for c in shared:
        first = run_onnx(f, np.stack([np.linspace(0.0, 0.5, 201), np.full(201, c)], axis=1))[:, 0]
        second = run_onnx(f, np.stack([np.linspace(0.2, 0.7, 201), np.full(201, c)], axis=1))[:, 0]
        rise = max(rise, float(second.max() - first.min()))
    for threshold, expected in ((rise + 0.05, "unsat"), (rise - 0.05, "sat")):
        path = tmp_path / f"shared_{expected}.vnnlib"
        path.write_text(query(TWO_COPIES, f"""(assert (and (>= X_f[0,0] 0.0) (<= X_f[0,0] 0.5) (>= X_f[0,1] -0.5) (<= X_f[0,1] 0.5)))
(assert (and (>= X_g[0,0] 0.2) (<= X_g[0,0] 0.7)))
(assert (== X_f[0,1] X_g[0,1]))
(assert (>= (- Y_g[0,0] Y_f[0,0]) {threshold!r}))"""))
        result = verify_instance(str(f), path, 60)  # one file: g is f (equal-to)
        assert result.status == expected, (threshold, rise, result)
        if expected == "sat":
            write_result(tmp_path / "r.txt", result)
            assert_official_check_accepts(tmp_path / "r.txt", path, {"f": f, "g": f})
            lines = (tmp_path / "r.txt").read_text().splitlines()
            assert lines[3] == lines[9]  # X_f[0,1] and X_g[0,1] take one value
            _, x, y = read_result(tmp_path / "r.txt", parse_property(path).layout)  # back to the joint input
            assert torch.equal(torch.tensor(x, dtype=torch.float64), result.x.double()) and len(y) == 4


def test_a_monotonicity_query_relating_two_copies_inputs_is_decided_as_a_dense_grid_says(tmp_path):
    """f(b, c) − f(a, c) over a in [-0.5, 0.5] and b <= a (a relation between the copies' inputs, not a box): its
    largest value, brute force over feasible pairs, decides a threshold on each side."""
    f = mlp_onnx(tmp_path / "f.onnx", seed=11)
    values = np.linspace(-0.5, 0.5, 101)
    largest = -np.inf
    for c in np.linspace(-0.5, 0.5, 41):
        y = run_onnx(f, np.stack([values, np.full(len(values), c)], axis=1))[:, 0]
        rise = y[None, :] - y[:, None]                    # [a, b]: f(b, c) − f(a, c)
        largest = max(largest, float(np.where(np.tril(np.ones_like(rise)) > 0, rise, -np.inf).max()))  # b <= a
    assert largest > 0.05  # the network is not monotone here: both answers occur
    for threshold, expected in ((largest + 0.05, "unsat"), (largest - 0.05, "sat")):
        path = tmp_path / f"mono_{expected}.vnnlib"
        path.write_text(query(TWO_COPIES, f"""(assert (and (>= X_f[0,0] -0.5) (<= X_f[0,0] 0.5) (>= X_f[0,1] -0.5) (<= X_f[0,1] 0.5)))
(assert (and (>= X_g[0,0] -0.5) (<= X_g[0,0] X_f[0,0])))
(assert (== X_f[0,1] X_g[0,1]))
(assert (> (- Y_g[0,0] Y_f[0,0]) {threshold!r}))"""))
        result = verify_instance(str(f), path, 60)
        assert result.status == expected, (threshold, largest, result)
        if expected == "sat":
            write_result(tmp_path / "r.txt", result)
            assert_official_check_accepts(tmp_path / "r.txt", path, {"f": f, "g": f})
            lines = (tmp_path / "r.txt").read_text().splitlines()
            assert float(lines[8]) <= float(lines[2])  # X_g[0,0] <= X_f[0,0], as written


def test_an_l2_ball_written_as_a_sum_of_squares_is_decided_as_a_dense_grid_says(tmp_path):
    """Output 0 over the disk of radius 0.3 around (0.1, -0.2), written as the sum of squared differences bounded by
    0.09: its largest value on a dense grid of the disk decides a threshold on each side; a counterexample lies in the
    disk (the official check evaluates the quadratic assert)."""
    f = mlp_onnx(tmp_path / "f.onnx", seed=13)
    points = grid([-0.2, -0.5], [0.4, 0.1], points=241)
    points = points[((points - np.array([0.1, -0.2])) ** 2).sum(1) <= 0.09]
    largest = float(run_onnx(f, points)[:, 0].max())
    ball = "(<= (+ (* (- X[0,0] 0.1) (- X[0,0] 0.1)) (* (- X[0,1] -0.2) (- X[0,1] -0.2))) 0.09)"
    for threshold, expected in ((largest + 0.02, "unsat"), (largest - 0.02, "sat")):
        path = tmp_path / f"ball_{expected}.vnnlib"
        path.write_text(query("(declare-network f (declare-input X float32 [1,2]) (declare-output Y float32 [1,2]))",
                              f"(assert {ball})\n(assert (>= Y[0,0] {threshold!r}))"))
        [spec] = parse_vnnlib(path)
        assert spec.region.is_ball and spec.region.eps == pytest.approx(0.3)
        result = verify_instance(str(f), path, 60)
        assert result.status == expected, (threshold, largest, result)
        if expected == "sat":
            write_result(tmp_path / "r.txt", result)
            assert_official_check_accepts(tmp_path / "r.txt", path, {"f": f})


@pytest.mark.parametrize("offset", [0.05, -0.05])
def test_outputs_compared_with_inputs_are_decided_as_a_dense_grid_says(tmp_path, offset):
    """Y[0,0] >= X[0,0] + X[0,1] + t (a row over outputs and inputs: the network is bounded with its input appended
    to its output), t on each side of the largest Y[0,0] - X[0,0] - X[0,1] on a dense grid; the written output is
    the network's own."""
    f = mlp_onnx(tmp_path / "f.onnx", seed=17)
    x = grid([-0.5, -0.5], [0.5, 0.5])
    largest = float((run_onnx(f, x)[:, 0] - x.sum(1)).max())
    path = tmp_path / "q.vnnlib"
    path.write_text(query("(declare-network f (declare-input X float32 [1,2]) (declare-output Y float32 [1,2]))",
                          "(assert (and (>= X[0,0] -0.5) (<= X[0,0] 0.5) (>= X[0,1] -0.5) (<= X[0,1] 0.5)))\n"
                          f"(assert (>= Y[0,0] (+ X[0,0] X[0,1] {largest + offset!r})))"))
    result = verify_instance(str(f), path, 60)
    assert result.status == ("unsat" if offset > 0 else "sat"), (largest, result)
    if result.status == "sat":
        assert result.y.shape == (2,)
        write_result(tmp_path / "r.txt", result)
        assert_official_check_accepts(tmp_path / "r.txt", path, {"f": f})


def test_a_plain_query_with_a_multi_axis_input_writes_its_counterexample_in_its_names(tmp_path):
    net = mlp_onnx(tmp_path / "net.onnx", seed=7, inputs=4, input_shape=[1, 2, 2])
    path = tmp_path / "p.vnnlib"
    box = " ".join(f"(>= X[0,{i},{j}] -1.0) (<= X[0,{i},{j}] 1.0)" for i in range(2) for j in range(2))
    y = run_onnx(net, grid([-1.0] * 4, [1.0] * 4, points=9))[:, 0]
    path.write_text(query("(declare-network f (declare-input X float32 [1,2,2]) (declare-output Y float32 [1,2]))",
                          f"(assert (and {box}))\n(assert (>= Y[0,0] {float(np.median(y))!r}))"))
    result = verify_instance(str(net), path, 30)
    assert result.status == "sat"
    write_result(tmp_path / "r.txt", result)
    lines = (tmp_path / "r.txt").read_text().splitlines()
    assert lines[0] == "sat" and lines[1] == "X float32 [1,2,2]" and lines[6] == "Y float32 [1,2]"
    assert_official_check_accepts(tmp_path / "r.txt", path, {"f": net})


def two_input_onnx(path: Path) -> Path:
    """A network of two inputs a [1, 2] and b [1, 1] and two outputs: s = relu(a0 - a1 + b0) [1, 1], p = a·2 [1, 2]."""
    nodes = [helper.make_node("Concat", ["a", "b"], ["ab"], axis=1), helper.make_node("MatMul", ["ab", "w"], ["z"]),
             helper.make_node("Relu", ["z"], ["s"]), helper.make_node("Mul", ["a", "two"], ["p"])]
    initializers = [numpy_helper.from_array(np.array([[1.0], [-1.0], [1.0]], dtype=np.float32), "w"),
                    numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")]
    inputs = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 2]), helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 1])]
    outputs = [helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 1]), helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 2])]
    graph = helper.make_graph(nodes, "two", inputs, outputs, initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


@pytest.mark.parametrize("threshold, expected, inputs", [
    (2.9, "sat", '(declare-input A float32 [1,2] "a") (declare-input B float32 [1,1] "b")'),
    (3.1, "unsat", '(declare-input A float32 [1,2] "a") (declare-input B float32 [1,1] "b")'),
    (2.9, "sat", '(declare-input B float32 [1,1] "b") (declare-input A float32 [1,2] "a")'),  # not the ONNX order
])
def test_a_network_with_two_inputs_and_two_outputs_is_one_joint_model(tmp_path, threshold, expected, inputs):
    """s = relu(a0 - a1 + b0) on a in [0, 1]², b in [0, 2] reaches 3 at a = (1, 0), b = 2; the second output is read
    too (p0 = 2·a0 >= 1.5 narrows a0). Inputs declared with ONNX names feed those inputs in any declared order."""
    net = two_input_onnx(tmp_path / "two.onnx")
    path = tmp_path / "q.vnnlib"
    path.write_text(query(f'(declare-network f {inputs} (declare-output S float32 [1,1]) (declare-output P float32 [1,2]))',
                          "(assert (and (>= A[0,0] 0.0) (<= A[0,0] 1.0) (>= A[0,1] 0.0) (<= A[0,1] 1.0)))\n"
                          "(assert (and (>= B[0,0] 0.0) (<= B[0,0] 2.0)))\n"
                          f"(assert (and (>= S[0,0] {threshold}) (>= P[0,0] 1.5)))"))
    result = verify_instance(str(net), path, 30)
    assert result.status == expected, result
    if expected == "sat":
        write_result(tmp_path / "r.txt", result)
        lines = (tmp_path / "r.txt").read_text().splitlines()
        blocks = {line.split()[0]: i for i, line in enumerate(lines) if "float32" in line}
        assert sorted(blocks) == ["A", "B", "P", "S"] and blocks["S"] < blocks["P"]
        a, b = [float(v) for v in lines[blocks["A"] + 1:blocks["A"] + 3]], float(lines[blocks["B"] + 1])
        assert max(a[0] - a[1] + b, 0) >= threshold and 2 * a[0] >= 1.5


def test_a_file_for_every_network_of_its_own_is_required(tmp_path):
    f = mlp_onnx(tmp_path / "f.onnx", seed=3)
    path = tmp_path / "q.vnnlib"
    path.write_text(query(TWO_NETWORKS, "(assert (and (>= X_f[0,0] 0.0) (<= X_f[0,0] 1.0) (>= X_f[0,1] 0.0) (<= X_f[0,1] 1.0)"
                                        " (>= X_g[0,0] 0.0) (<= X_g[0,0] 1.0) (>= X_g[0,1] 0.0) (<= X_g[0,1] 1.0)))\n"
                                        "(assert (>= Y_f[0,0] Y_g[0,0]))"))
    with pytest.raises(InputError, match="name a file for each"):
        verify_instance(str(f), path, 10)
    with pytest.raises(InputError, match="network h, which the query does not declare"):
        verify_instance(f"f={f},h={f}", path, 10)


# ------------------------------------------------------------------------------------ suites and the CLI
def test_a_suite_of_version_2_instances_runs_with_network_lists(tmp_path):
    f, g = mlp_onnx(tmp_path / "f.onnx", seed=3), mlp_onnx(tmp_path / "g.onnx", seed=4)
    (tmp_path / "q.vnnlib").write_text(query(TWO_NETWORKS, """(assert (and (>= X_f[0,0] -0.5) (<= X_f[0,0] 0.5) (>= X_f[0,1] -0.5) (<= X_f[0,1] 0.5)))
(assert (and (== X_f[0,0] X_g[0,0]) (== X_f[0,1] X_g[0,1])))
(assert (>= (- Y_f[0,0] Y_g[0,0]) 1000.0))"""))
    (tmp_path / "instances.csv").write_text(f"\"[('f', '{f.name}'), ('g', '{g.name}')]\",q.vnnlib,30\n")
    rows = run_suite(tmp_path / "instances.csv", tmp_path / "results.csv", workers=1, result_dir=tmp_path / "results")
    assert [(r["onnx"], r["status"]) for r in rows] == [("[('f', 'f.onnx'), ('g', 'g.onnx')]", "unsat")]
    assert (tmp_path / "results" / "f_g__q.txt").read_text().startswith("unsat")


def test_the_suite_benchmark_checks_a_version_2_counterexample_with_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    from benchmarks.vnncomp import score

    mlp_onnx(tmp_path / "f.onnx", seed=3), mlp_onnx(tmp_path / "g.onnx", seed=4)
    box = "(assert (and (>= X_f[0,0] -0.5) (<= X_f[0,0] 0.5) (>= X_f[0,1] -0.5) (<= X_f[0,1] 0.5)))\n" \
          "(assert (and (== X_f[0,0] X_g[0,0]) (== X_f[0,1] X_g[0,1])))\n"
    (tmp_path / "sat.vnnlib").write_text(query(TWO_NETWORKS, box + "(assert (>= (- Y_f[0,0] Y_g[0,0]) -1000.0))"))
    (tmp_path / "unsat.vnnlib").write_text(query(TWO_NETWORKS, box + "(assert (>= (- Y_f[0,0] Y_g[0,0]) 1000.0))"))
    field = "[('f', 'f.onnx'), ('g', 'g.onnx')]"
    (tmp_path / "instances.csv").write_text(f'"{field}",sat.vnnlib,30\n"{field}",unsat.vnnlib,30\n')
    (tmp_path / "expected.csv").write_text(f'onnx,vnnlib,expected\n"{field}",sat.vnnlib,sat\n"{field}",unsat.vnnlib,unsat\n')
    rows = run_suite(tmp_path / "instances.csv", tmp_path / "results.csv", workers=1, result_dir=tmp_path / "results")
    counts = score(tmp_path, rows, tmp_path / "results")
    assert (counts["sat"], counts["unsat"], counts["wrong"]) == (1, 1, 0), counts
    (tmp_path / "results" / "f_g__sat.txt").write_text("sat\nX_f float32 [1,2]\n0.0\n0.0\nY_f float32 [1,2]\n0\n0\n"
                                                       "X_g float32 [1,2]\n0.4\n0.0\nY_g float32 [1,2]\n0\n0\n")
    assert score(tmp_path, rows, tmp_path / "results")["wrong"] == 1  # inputs the query equates must be equal


def test_the_command_line_takes_named_networks_and_says_what_is_missing(tmp_path):
    f, g = mlp_onnx(tmp_path / "f.onnx", seed=3), mlp_onnx(tmp_path / "g.onnx", seed=4)
    path = tmp_path / "q.vnnlib"
    path.write_text(query(TWO_NETWORKS, """(assert (and (>= X_f[0,0] -0.5) (<= X_f[0,0] 0.5) (>= X_f[0,1] -0.5) (<= X_f[0,1] 0.5)))
(assert (and (== X_f[0,0] X_g[0,0]) (== X_f[0,1] X_g[0,1])))
(assert (<= (- Y_f[0,0] Y_g[0,0]) -1000.0))"""))
    command = [sys.executable, "-m", "opwise", "verify"]
    done = subprocess.run([*command, f"f={f},g={g}", str(path), "--timeout", "30", "--out", str(tmp_path / "r.txt")],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0 and done.stdout.startswith("unsat"), done.stderr
    missing = subprocess.run([*command, f"f={f},g={tmp_path / 'nothing.onnx'}", str(path)], capture_output=True,
                             text=True, cwd=REPO)
    assert missing.returncode == 2 and "nothing.onnx does not exist" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- the official check, rebuilt
def assert_official_check_accepts(result_file: Path, query_file: Path, networks: dict[str, Path]) -> None:
    """A `sat` file checked as VNN-COMP 2026 checks one, rebuilt from the standard (section 5.3) on the official
    parser (the `vnnlib` package): the assignment names every declared tensor in order with its shape, each
    network run by the onnx reference evaluator on its inputs' values, and every assert, evaluated on those
    outputs, holds."""
    vnnlib = pytest.importorskip("vnnlib")
    # the official checker types constants: a float32 tensor is compared with 1.0, not 1 (opwise reads both)
    parsed = vnnlib.parse_query_string(re.sub(r"(?<=\s)(-?\d+)(?=[\s)])", r"\1.0", query_file.read_text()))
    lines = [line.strip() for line in result_file.read_text().splitlines() if line.strip()]
    assert lines.pop(0) == "sat"
    values: dict[str, np.ndarray] = {}
    for network in parsed.networks:
        for tensor in (*network.inputs, *network.outputs):
            name, _, shape = lines.pop(0).split(" ", 2)
            assert name == tensor.name and shape == "[" + ",".join(map(str, tensor.shape)) + "]"
            count = int(np.prod(tensor.shape))
            values[name] = np.array([float(v) for v in lines[:count]]).reshape(tensor.shape)
            del lines[:count]
    assert not lines
    for network in parsed.networks:
        [tensor_in], [tensor_out] = network.inputs, network.outputs
        values[tensor_out.name] = run_onnx(networks[network.name], values[tensor_in.name].reshape(1, -1)).reshape(
            tensor_out.shape).astype(np.float64)
    for assertion in parsed.assertions:
        assert _holds(assertion.expr, values), str(assertion)


def _value(node, values):
    kind = type(node).__name__
    if kind == "Var":
        return values[node.name][tuple(node.indices)]
    if kind in ("Float", "Int", "IntExpr"):
        return float(node.value)
    children = [_value(c, values) for c in node.children()]
    if kind == "Negate":
        return -children[0]
    if kind == "Plus":
        return sum(children)
    if kind == "Minus":
        return children[0] - sum(children[1:])
    if kind == "Multiply":
        return float(np.prod(children))
    raise AssertionError(f"unexpected term {kind}")


def _holds(node, values) -> bool:
    kind = type(node).__name__
    if kind == "And":
        return all(_holds(c, values) for c in node.children())
    if kind == "Or":
        return any(_holds(c, values) for c in node.children())
    left, right = (_value(c, values) for c in node.children())
    return {"LessThan": left < right, "LessEqual": left <= right, "GreaterThan": left > right,
            "GreaterEqual": left >= right, "Equal": left == right, "NotEqual": left != right}[kind]


@pytest.mark.parametrize("kinds", [("double", "double"), ("float", "double")])
def test_networks_declared_in_double_are_compared_as_a_dense_grid_says(tmp_path, kinds):
    """Equivalence of two networks one or both of which are DOUBLE: each runs in its own dtype, the joint model in
    float64 (it was traced in float32 and failed with a dtype mismatch)."""
    f, _ = double_mlp_onnx(tmp_path / "f.onnx", seed=7)
    g = double_mlp_onnx(tmp_path / "g.onnx", seed=8)[0] if kinds[0] == "double" else mlp_onnx(tmp_path / "g.onnx", seed=8)
    x = grid([-0.5, -0.5], [0.5, 0.5])
    gap = float(np.abs(run_onnx(f, x)[:, 0] - run_onnx(g, x)[:, 0]).max())
    for eps, expected in ((gap * 1.3 + 1e-3, "unsat"), (gap * 0.7, "sat")):
        path = tmp_path / f"eq_{expected}.vnnlib"
        path.write_text(query(TWO_NETWORKS, f"""(assert (and (>= X_f[0,0] -0.5) (<= X_f[0,0] 0.5) (>= X_f[0,1] -0.5) (<= X_f[0,1] 0.5)))
(assert (and (== X_f[0,0] X_g[0,0]) (== X_f[0,1] X_g[0,1])))
(assert (or (> (- Y_f[0,0] Y_g[0,0]) {eps!r}) (< (- Y_f[0,0] Y_g[0,0]) {-eps!r})))"""))
        result = verify_instance(f"f={f},g={g}", path, 60)
        assert result.status == expected, (eps, gap, result)
