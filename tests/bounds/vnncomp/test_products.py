"""Polynomial constraints (products of variables, VNN-COMP 2026's adaptive cruise control): read as the official
parser evaluates them, decided as brute force says, `sat` files the official check accepts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from opwise.bounds.vnncomp import verify_instance, write_result
from opwise.bounds.vnncomp.products import AppendedColumns, Products
from opwise.bounds.vnncomp.vnnlib import parse_property, violates
from tests.bounds.vnncomp.test_vnnlib2 import (assert_official_check_accepts, double_mlp_onnx, grid, mlp_onnx, query,
                                                run_onnx)

NET = "(declare-network f (declare-input X float32 [1,2]) (declare-output Y float32 [1,2]))"
BOX = "(assert (and (>= X[0,0] -0.5) (<= X[0,0] 0.5) (>= X[0,1] -0.5) (<= X[0,1] 0.5)))\n"


# ------------------------------------------------------------------------------------------------ columns
def test_products_are_computed_level_by_level_as_written():
    """x0*x1*y0 (a chain), (x0 + 2 y0)^2 (a square), and a product of those two (a third level): the columns
    equal the products computed directly, in `positions` order, from values and from the module alike."""
    products = Products()
    chain = products.name(({"X_0": 1.0}, 0.0), ({"X_1": 1.0}, 0.0))
    chain = products.name(({chain: 1.0}, 0.0), ({"Y_0": 1.0}, 0.0))
    square = products.name(({"X_0": 1.0, "Y_0": 2.0}, 0.0), ({"X_0": 1.0, "Y_0": 2.0}, 0.0))
    top = products.name(({chain: 1.0}, 1.0), ({square: -1.0}, 0.5))
    assert products.name(({"X_1": 1.0}, 0.0), ({"X_0": 1.0}, 0.0)) == "P_0"  # either order, one column
    y, x = torch.randn(5, 1, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    direct = {"P_0": x[:, 0] * x[:, 1], chain: x[:, 0] * x[:, 1] * y[:, 0], square: (x[:, 0] + 2 * y[:, 0]) ** 2}
    direct[top] = (direct[chain] + 1.0) * (0.5 - direct[square])
    expected = torch.zeros(5, len(products), dtype=torch.float64)
    for name, position in products.positions().items():
        expected[:, position] = direct[name]
    assert torch.allclose(products.values(y, x, outputs=1, inputs=2), expected)
    network = torch.nn.Linear(2, 1).double()
    module = AppendedColumns(network, products, outputs=1, inputs=2).double()
    assert torch.allclose(module(x), torch.cat([network(x), x, products.values(network(x), x, 1, 2)], dim=1))


# ------------------------------------------------------------------------------------------------ parsing
KINEMATICS = """(assert (and (>= X[0,0] 0.0) (<= X[0,0] 50.0) (>= X[0,1] -30.0) (<= X[0,1] 30.0)))
(assert (and (> X[0,0] 0.0) (>= (* 120.0 X[0,0]) (* X[0,1] X[0,1]))))
(assert (and (>= Y[0,0] -20.0) (<= Y[0,0] 20.0)))
(assert (or (< Y[0,0] -10.0) (== Y[0,1] 0.0)
            (<= (* 120.0 (+ X[0,0] (* 0.2 X[0,1]) (* Y[0,0] 0.02))) (* (+ X[0,1] (* 0.2 Y[0,0])) (+ X[0,1] (* 0.2 Y[0,0]))))
            (and (or (<= Y[0,0] 0.0) (<= (* (* X[0,0] 3.0) Y[0,0]) (* X[0,1] X[0,1] Y[0,1])))
                 (or (>= Y[0,0] 0.0) (!= (- X[0,1]) (* 0.2 Y[0,1]))))))"""


def _official(node, values: dict[str, np.ndarray]):
    """A term or formula of the official parser's tree, evaluated on a batch (values [n, *shape] per tensor)."""
    kind = type(node).__name__
    if kind == "Var":
        return values[node.name][(slice(None), *node.indices)]
    if kind in ("Float", "Int", "IntExpr"):
        return float(node.value)
    children = [_official(c, values) for c in node.children()]
    combine = {"Negate": lambda: -children[0], "Plus": lambda: sum(children),
               "Minus": lambda: children[0] - sum(children[1:]), "Multiply": lambda: np.prod(np.broadcast_arrays(*children), axis=0),
               "And": lambda: np.logical_and.reduce(np.broadcast_arrays(*children)),
               "Or": lambda: np.logical_or.reduce(np.broadcast_arrays(*children))}
    if kind in combine:
        return combine[kind]()
    left, right = children
    return {"LessThan": left < right, "LessEqual": left <= right, "GreaterThan": left > right,
            "GreaterEqual": left >= right, "Equal": left == right, "NotEqual": left != right}[kind]


def test_a_polynomial_query_reads_as_the_official_parser_evaluates_it(tmp_path):
    """At 4,000 points (x in the box, some at its corner 0 where only the strict `X[0,0] > 0` fails; y around the
    thresholds, some outputs exactly 0 where `==` and `!=` matter) the property holds, by the official parser's tree, exactly where some Specification's disjunct does on the columns
    [y, x, products]."""
    vnnlib = pytest.importorskip("vnnlib")
    path = tmp_path / "q.vnnlib"
    path.write_text(query(NET, KINEMATICS))
    parsed = parse_property(path, torch.float64)
    assert len(parsed.products) >= 4
    rng = np.random.default_rng(0)
    n = 4000
    x = np.stack([rng.uniform(0.0, 50.0, n), rng.uniform(-30.0, 30.0, n)], axis=1)
    y = rng.uniform(-25.0, 25.0, (n, 2))
    y[rng.random(n) < 0.2, 1] = 0.0
    x[rng.random(n) < 0.1] = 0.0  # only `X[0,0] > 0` fails there
    tree = vnnlib.parse_query_string(path.read_text())
    values = {"X": x.reshape(n, 1, 2), "Y": y.reshape(n, 1, 2)}
    expected = np.logical_and.reduce([_official(a.expr, values) for a in tree.assertions])
    assert 0.05 < expected.mean() < 0.95  # both answers occur
    xs, ys = torch.tensor(x), torch.tensor(y)
    columns = torch.cat([ys, xs, parsed.products.values(ys, xs, outputs=2, inputs=2)], dim=1)
    for i in range(n):
        read = any(bool(spec.region.contains(xs[i:i + 1], tolerance=0.0)) and violates(spec, columns[i])
                   for spec in parsed.specs)
        assert read == bool(expected[i]), (x[i], y[i])


# ------------------------------------------------------------------------------------ deciding, brute force
def _decided_as_the_grid_says(tmp_path, f, constraints: str, value: str, largest: float, spread: float) -> None:
    """`value >= t` under `constraints`, for t on each side of the largest value a dense grid finds (by 5% of the
    values' spread): unsat above, sat below with a counterexample the official check accepts."""
    for threshold, expected in ((largest + 0.05 * spread, "unsat"), (largest - 0.05 * spread, "sat")):
        path = tmp_path / f"q_{expected}.vnnlib"
        path.write_text(query(NET, f"{BOX}{constraints}(assert (>= {value} {threshold!r}))"))
        result = verify_instance(str(f), path, 60)
        assert result.status == expected, (threshold, largest, result)
        if expected == "sat":
            assert result.y.shape == (2,)  # the network's own outputs
            write_result(tmp_path / "r.txt", result)
            assert_official_check_accepts(tmp_path / "r.txt", path, {"f": f})


@pytest.mark.parametrize("seed", [21, 22])
def test_a_polynomial_of_outputs_and_inputs_is_decided_as_a_dense_grid_says(tmp_path, seed):
    """Y0·X0 − Y1² + X0·X1 on the box: products of outputs with inputs, of outputs with themselves, of inputs."""
    f = mlp_onnx(tmp_path / "f.onnx", seed=seed)
    x = grid([-0.5, -0.5], [0.5, 0.5])
    y = run_onnx(f, x)
    values = y[:, 0] * x[:, 0] - y[:, 1] ** 2 + x[:, 0] * x[:, 1]
    _decided_as_the_grid_says(tmp_path, f, "", "(+ (- (* Y[0,0] X[0,0]) (* Y[0,1] Y[0,1])) (* X[0,0] X[0,1]))",
                              float(values.max()), float(np.ptp(values)))


def test_a_region_bounded_by_a_parabola_is_decided_as_a_dense_grid_says(tmp_path):
    """Output 0 over {x in the box : x1² <= x0 + 0.1}, a region that is no box, ball or polytope."""
    f = mlp_onnx(tmp_path / "f.onnx", seed=23)
    x = grid([-0.5, -0.5], [0.5, 0.5])
    x = x[x[:, 1] ** 2 <= x[:, 0] + 0.1]
    y = run_onnx(f, x)[:, 0]
    _decided_as_the_grid_says(tmp_path, f, "(assert (<= (* X[0,1] X[0,1]) (+ X[0,0] 0.1)))\n", "Y[0,0]",
                              float(y.max()), float(np.ptp(y)))


def test_a_ball_that_leaves_an_input_free_is_decided_as_a_dense_grid_says(tmp_path):
    """(x0 − 0.2)² <= 0.04 with x1 free in its box: no L2-ball input set (it leaves x1 out), read as a row over x0²."""
    f = mlp_onnx(tmp_path / "f.onnx", seed=24)
    x = grid([0.0, -0.5], [0.4, 0.5])
    y = run_onnx(f, x)[:, 1]
    _decided_as_the_grid_says(tmp_path, f, "(assert (<= (* (- X[0,0] 0.2) (- X[0,0] 0.2)) 0.04))\n", "Y[0,1]",
                              float(y.max()), float(np.ptp(y)))


def test_a_strict_input_bound_is_met_strictly_where_rows_read_the_inputs(tmp_path):
    """X0 > 0 on [0, 0.5] with a row that is smallest at X0 = 0: the attack is drawn to the box's closed edge, which
    the strict row rules out; the counterexample has X0 > 0 and passes the official check without tolerance."""
    f = mlp_onnx(tmp_path / "f.onnx", seed=25)
    path = tmp_path / "q.vnnlib"
    path.write_text(query(NET, "(assert (and (>= X[0,0] 0.0) (<= X[0,0] 0.5) (>= X[0,1] 0.5) (<= X[0,1] 1.0)))\n"
                               "(assert (> X[0,0] 0.0))\n(assert (<= (* X[0,0] X[0,1]) 0.0001))"))
    result = verify_instance(str(f), path, 60)
    assert result.status == "sat" and float(result.x[0]) > 0, result
    write_result(tmp_path / "r.txt", result)
    assert_official_check_accepts(tmp_path / "r.txt", path, {"f": f})


def test_the_suite_benchmark_checks_a_polynomial_counterexample_with_onnxruntime(tmp_path):
    """benchmarks/vnncomp.py recomputes the products from onnxruntime's outputs: the `sat` opwise writes passes,
    the same file with an input moved out of the parabola's region does not."""
    pytest.importorskip("onnxruntime")
    from benchmarks.vnncomp import score
    from opwise.bounds.vnncomp import run_suite

    mlp_onnx(tmp_path / "f.onnx", seed=26)
    region = "(assert (<= (* X[0,1] X[0,1]) (+ X[0,0] 0.1)))\n"
    (tmp_path / "sat.vnnlib").write_text(query(NET, BOX + region + "(assert (<= (* Y[0,0] X[0,0]) 1000.0))"))
    (tmp_path / "unsat.vnnlib").write_text(query(NET, BOX + region + "(assert (>= (* Y[0,0] X[0,0]) 1000.0))"))
    (tmp_path / "instances.csv").write_text("f.onnx,sat.vnnlib,30\nf.onnx,unsat.vnnlib,30\n")
    (tmp_path / "expected.csv").write_text("onnx,vnnlib,expected\nf.onnx,sat.vnnlib,sat\nf.onnx,unsat.vnnlib,unsat\n")
    rows = run_suite(tmp_path / "instances.csv", tmp_path / "results.csv", workers=1, result_dir=tmp_path / "results")
    counts = score(tmp_path, rows, tmp_path / "results")
    assert (counts["sat"], counts["unsat"], counts["wrong"]) == (1, 1, 0), counts
    lines = (tmp_path / "results" / "f__sat.txt").read_text().splitlines()
    lines[2:4] = ["-0.5", "0.5"]  # x1² = 0.25 > x0 + 0.1 = -0.4: outside the region
    (tmp_path / "results" / "f__sat.txt").write_text("\n".join(lines) + "\n")
    assert score(tmp_path, rows, tmp_path / "results")["wrong"] == 1


@pytest.mark.parametrize("value, of", [("(* Y[0,0] X[0,1])", lambda y, x: y[:, 0] * x[:, 1]),
                                       ("(- Y[0,0] X[0,0])", lambda y, x: y[:, 0] - x[:, 0])])
def test_rows_reading_inputs_and_products_of_a_double_network_are_decided_as_a_dense_grid_says(tmp_path, value, of):
    """A DOUBLE network with its input (and products) appended stays float64: it was traced in float32 and failed
    with a dtype mismatch."""
    pytest.importorskip("onnx")
    path, w = double_mlp_onnx(tmp_path / "f.onnx", seed=27)
    x = grid([-0.5, -0.5], [0.5, 0.5])
    y = np.maximum(x @ w["w1"] + w["b1"], 0) @ w["w2"] + w["b2"]
    values = of(y, x)
    spread = float(np.ptp(values))
    for threshold, expected in ((float(values.max()) + 0.05 * spread, "unsat"), (float(values.max()) - 0.05 * spread, "sat")):
        query_path = tmp_path / f"q_{expected}.vnnlib"
        query_path.write_text(query(NET.replace("float32", "float64"), f"{BOX}(assert (>= {value} {threshold!r}))"))
        result = verify_instance(str(path), query_path, 60)
        assert result.status == expected, (threshold, result)


@pytest.mark.parametrize("rows", [
    "(assert (>= Y[0,0] (+ X[0,0] 3.0)))\n(assert (<= Y[0,0] 1.0))",                    # X[0,0] >= -0.5 in the box
    "(assert (<= (+ Y[0,0] (* Y[0,0] Y[0,0])) -0.12))\n(assert (>= Y[0,0] 0.22))",     # a square is never below 0
])
def test_rows_no_point_meets_given_the_box_and_squares_are_unsat_at_once(tmp_path, rows):
    """Rows that contradict each other once the input columns are held to the box and a square to >= 0: no output
    meets them, whatever the network, though the network (Y0 = 20 X1, in [-10, 10]) meets each row alone (the
    fuzzer's seed 981 timed out). Decided without a search: no domain is bounded."""
    from onnx import TensorProto, helper, numpy_helper, save

    weight = numpy_helper.from_array(np.array([[0.0, 1.0], [20.0, 0.0]], dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "linear",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [weight])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "f.onnx"))
    path = tmp_path / "q.vnnlib"
    path.write_text(query(NET, BOX + rows))
    result = verify_instance(str(tmp_path / "f.onnx"), path, 30)
    assert result.status == "unsat" and not result.stats.get("domains"), result
