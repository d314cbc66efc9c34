"""parse_vnnlib: every VNN-COMP form, every benchmark file, witnesses checked against the parsed sets."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from opwise.bounds.vnncomp.vnnlib import parse_vnnlib
from opwise.errors import SpecError

HEADER = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
BOX = "(assert (<= X_0 1))\n(assert (>= X_0 -1))\n(assert (<= X_1 2.5e-1))\n(assert (>= X_1 0))\n"


def write(tmp_path, text: str):
    path = tmp_path / "prop.vnnlib"
    path.write_text(text)
    return path


def rows(spec):
    return [(d.C.tolist(), d.d.tolist()) for d in spec.unsafe]


def test_box_and_conjunction_of_output_asserts(tmp_path):
    [spec] = parse_vnnlib(write(tmp_path, HEADER + BOX + "(assert (<= Y_0 Y_1))\n(assert (>= Y_1 0.5))\n"))
    assert spec.x_lower.tolist() == [[-1.0, 0.0]] and spec.x_upper.tolist() == [[1.0, 0.25]]
    assert rows(spec) == [([[1.0, -1.0], [0.0, -1.0]], [0.0, -0.5])]


def test_constants_on_either_side_scientific_notation_and_comments(tmp_path):
    text = HEADER + "; a comment line\n(assert (>= 1E0 X_0)) ; trailing comment\n(assert (<= -1 X_0))\n" \
        "(assert (<= 0 X_1))\n(assert (>= 2.5e-1 X_1))\n(assert (<= 3 Y_0))\n"
    [spec] = parse_vnnlib(write(tmp_path, text))
    assert spec.x_upper.tolist() == [[1.0, 0.25]] and spec.x_lower.tolist() == [[-1.0, 0.0]]
    assert rows(spec) == [([[-1.0, 0.0]], [-3.0])]


def test_linear_terms_over_outputs(tmp_path):
    [spec] = parse_vnnlib(write(tmp_path, HEADER + BOX + "(assert (<= (+ Y_0 (* 2 Y_1)) (- 1 Y_1)))\n"))
    assert rows(spec) == [([[1.0, 3.0]], [1.0])]


def test_eran_style_disjunction_over_outputs(tmp_path):
    text = HEADER + BOX + "(assert (or\n\t(and (>= Y_0 Y_1))\n\t(and (>= Y_1 0.5) (<= Y_0 2))\n))\n"
    [spec] = parse_vnnlib(write(tmp_path, text))
    assert rows(spec) == [([[-1.0, 1.0]], [0.0]), ([[0.0, -1.0], [1.0, 0.0]], [-0.5, 2.0])]


def test_disjunction_of_input_boxes_gives_one_spec_per_box(tmp_path):
    text = HEADER + "(assert (or\n (and (<= X_0 1) (>= X_0 0) (<= X_1 1) (>= X_1 0))\n" \
        " (and (<= X_0 0) (>= X_0 -1) (<= X_1 1) (>= X_1 0))))\n(assert (or (and (<= Y_1 Y_0)) (and (<= Y_0 -1))))\n"
    specs = parse_vnnlib(write(tmp_path, text), input_shape=(1, 1, 2))
    assert [s.x_lower.tolist() for s in specs] == [[[[0.0, 0.0]]], [[[-1.0, 0.0]]]]
    assert all(rows(s) == [([[-1.0, 1.0]], [0.0]), ([[1.0, 0.0]], [-1.0])] for s in specs)


def test_mixed_input_output_disjuncts_are_grouped_by_box(tmp_path):
    text = HEADER + "(assert (or (and (<= X_0 1) (>= X_0 0) (<= X_1 1) (>= X_1 0) (<= Y_0 0))\n" \
        " (and (<= X_0 1) (>= X_0 0) (<= X_1 1) (>= X_1 0) (<= Y_1 0))))\n"
    [spec] = parse_vnnlib(write(tmp_path, text))
    assert rows(spec) == [([[1.0, 0.0]], [0.0]), ([[0.0, 1.0]], [0.0])]


def test_missing_output_constraint_means_every_input_violates(tmp_path):
    [spec] = parse_vnnlib(write(tmp_path, HEADER + BOX))
    assert float(spec.margin(torch.tensor([[5.0, -3.0]]))) <= 0


@pytest.mark.parametrize("text, line, words", [
    (HEADER + BOX + "(assert (<= Y_0 Y_1)\n", 9, "never closed"),
    (HEADER + BOX + "(assert (<= Y_0 Y_1)))\n", 9, "unbalanced"),
    (HEADER + BOX + "(assert (<= Y_0 Y_7))\n", 9, "Y_7"),
    (HEADER + BOX + "(assert (<= Y_0 banana))\n", 9, "banana"),
    (HEADER + BOX + "(assert (xor (<= Y_0 1)))\n", 9, "xor"),
    (HEADER + BOX + "(assert (<= Y_0 1 2))\n", 9, "two operands"),
    (HEADER + BOX + "(assert (<= (* Y_0 Y_1) 1))\n", 9, "products of variables"),  # parse_property reads it
    (HEADER + "(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= Y_0 1))\n", None, "X_1"),
    (HEADER + "(define-fun f Real)\n" + BOX, 5, "declare-const"),
    ("(declare-const X_0 Real)\n(declare-const X_2 Real)\n(declare-const Y_0 Real)\n", None, "X_1"),
    ("(declare-const X_0 Int)\n(declare-const Y_0 Real)\n", 1, "Real"),
])
def test_malformed_files_name_the_line(tmp_path, text, line, words):
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as error:
        parse_vnnlib(path)
    assert error.value.line == line and words in str(error.value) and str(path) in str(error.value)


def test_smt_lib_function_declarations_read_as_constants(tmp_path):
    text = HEADER + BOX + "(assert (<= Y_0 Y_1))\n"
    declared_as_functions = text.replace("(declare-const X_0 Real)", "(declare-fun X_0 () Real)").replace(
        "(declare-const Y_1 Real)", "(declare-fun Y_1 ( ) Real)")
    [expected], [spec] = parse_vnnlib(write(tmp_path, text)), parse_vnnlib(write(tmp_path, declared_as_functions))
    assert torch.equal(spec.x_lower, expected.x_lower) and torch.equal(spec.unsafe[0].C, expected.unsafe[0].C)


def test_a_row_over_outputs_and_inputs_reads_the_inputs_after_the_outputs(tmp_path):
    [spec] = parse_vnnlib(write(tmp_path, HEADER + BOX + "(assert (<= (+ X_0 Y_1) 1))\n(assert (<= Y_0 1))\n"))
    rows = [(d.C.tolist(), d.d.tolist()) for d in spec.unsafe]
    assert rows == [([[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]], [1.0, 1.0])]  # columns Y_0, Y_1, X_0, X_1


def test_a_relation_between_inputs_cuts_the_box(tmp_path):
    [spec] = parse_vnnlib(write(tmp_path, HEADER + BOX + "(assert (<= (+ X_0 X_1) 0.5))\n(assert (<= Y_0 1))\n"))
    assert spec.x_lower.tolist() == [[-1.0, 0.0]] and spec.x_upper.tolist() == [[0.5, 0.25]]  # X_0 <= 0.5 - X_1
    assert spec.region.constraints.G.tolist() == [[1.0, 1.0]] and spec.region.constraints.h.tolist() == [0.5]
    assert not spec.contains(torch.tensor([[0.4, 0.2]])) and spec.contains(torch.tensor([[0.2, 0.2]]))


def test_declared_inputs_must_match_the_model(tmp_path):
    with pytest.raises(SpecError, match="declares 2 inputs"):
        parse_vnnlib(write(tmp_path, HEADER + BOX + "(assert (<= Y_0 1))\n"), input_shape=(1, 3))


def test_missing_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        parse_vnnlib(tmp_path / "absent.vnnlib")


@pytest.mark.parametrize("text", ["", "; only a comment\n"])
def test_an_empty_file_says_it_is_empty(tmp_path, text):
    """A truncated download (0 bytes) names its cause, not a missing X_i declaration."""
    with pytest.raises(SpecError, match="holds no expressions"):
        parse_vnnlib(write(tmp_path, text))


def _declared(path) -> tuple[int, int]:
    text = path.read_text()
    return text.count("(declare-const X_"), text.count("(declare-const Y_")


def test_every_benchmark_file_parses_with_matching_counts(benchmarks_dir):
    files = sorted(benchmarks_dir.glob("*/vnnlib/*.vnnlib"))
    listed = {(instances.parent / row[1].strip()).resolve() for instances in benchmarks_dir.glob("*/instances.csv")
              for row in csv.reader(instances.open()) if row}
    assert {path.resolve() for path in files} == listed  # every suite's files, as its instances.csv lists them
    for path in files:
        inputs, outputs = _declared(path)
        specs = parse_vnnlib(path)
        assert len(specs) == (2 if path.name == "prop_6.vnnlib" else 1), path
        for spec in specs:
            assert spec.x_lower.shape == (1, inputs) and (spec.x_lower <= spec.x_upper).all(), path
            assert all(d.C.shape[1] == outputs for d in spec.unsafe), path


def test_sat_witnesses_lie_in_a_box_and_violate_the_parsed_property(benchmarks_dir):
    onnxruntime = pytest.importorskip("onnxruntime")
    checked = 0
    for witnesses in sorted(benchmarks_dir.glob("*/sat_witnesses.json")):
        suite = witnesses.parent
        for witness in json.loads(witnesses.read_text())["witnesses"]:
            x = torch.tensor([witness["x"]], dtype=torch.float64)
            specs = [s for s in parse_vnnlib(suite / witness["vnnlib"], dtype=torch.float64) if s.contains(x, 1e-7)]
            assert specs, witness["vnnlib"]
            spec = specs[0]
            clipped = torch.max(torch.min(x, spec.x_upper), spec.x_lower)
            session = onnxruntime.InferenceSession(str(suite / witness["onnx"]))
            declared = session.get_inputs()[0]
            shape = [1 if not isinstance(n, int) else n for n in declared.shape]
            (y,) = session.run(None, {declared.name: clipped.numpy().astype(np.float32).reshape(shape)})
            assert float(spec.margin(torch.tensor(y, dtype=torch.float64).reshape(1, -1))) <= 0, witness["vnnlib"]
            checked += 1
    sat_rows = sum(row["expected"] == "sat" for expected in benchmarks_dir.glob("*/expected.csv")
                   for row in csv.DictReader(expected.open()))
    assert checked == sat_rows > 0


@pytest.mark.parametrize("assertion, line", [
    ("(assert (>= X_0 nan))", 5), ("(assert (<= Y_0 nan))", 9), ("(assert (<= Y_0 NaN))", 9),
    ("(assert (<= X_1 inf))", 5), ("(assert (>= Y_1 -inf))", 9), ("(assert (<= (* 1e308 1e308 Y_0) 1))", 9),
])
def test_non_finite_constants_are_refused_with_the_line(tmp_path, assertion, line):
    """`(>= X_0 nan)` used to be dropped (answer sat), `(<= Y_0 nan)` kept (answer unsat); infinite bounds and
    overflowing products are refused the same way."""
    lines = BOX.splitlines()
    text = HEADER + ("\n".join(lines[:0]) + assertion + "\n" + BOX if line == 5 else BOX + assertion + "\n")
    path = write(tmp_path, text)
    with pytest.raises(SpecError, match="not a finite number") as error:
        parse_vnnlib(path)
    assert error.value.line == line and f"{path}:{line}" in str(error.value)


def test_strict_rows_are_remembered_and_checked_strictly(tmp_path):
    """`<` and `>` bound like `<=`/`>=` (the competition's convention), but `violates` holds them strictly."""
    from opwise.bounds.vnncomp.vnnlib import violates

    [spec] = parse_vnnlib(write(tmp_path, HEADER + BOX + "(assert (< Y_0 Y_1))\n(assert (>= Y_1 0.5))\n"))
    assert rows(spec) == [([[1.0, -1.0], [0.0, -1.0]], [0.0, -0.5])]
    assert spec.unsafe[0].strict.tolist() == [True, False]
    assert not violates(spec, torch.tensor([1.0, 1.0]))           # Y_0 == Y_1 meets `<` only with equality
    assert violates(spec, torch.tensor([0.9, 1.0]))
    assert violates(spec, torch.tensor([0.4, 0.5]))                # `>=` holds with equality
    assert not violates(spec, torch.tensor([0.4, 0.45]))


def test_a_strict_constant_comparison_that_fails_with_equality_empties_its_disjunct(tmp_path):
    [spec] = parse_vnnlib(write(tmp_path, HEADER + BOX + "(assert (or (and (< 0 0)) (and (<= Y_0 1))))\n"))
    from opwise.bounds.vnncomp.vnnlib import violates

    assert not violates(spec, torch.tensor([2.0, 0.0])) and violates(spec, torch.tensor([1.0, 0.0]))


def test_twenty_two_way_ors_are_refused_before_expanding(tmp_path):
    """20 asserts `(or A B)` conjoined expand to 2^20 disjuncts: this took 62 s and then a MemoryError."""
    import time

    from opwise.errors import SpecTooLarge

    ors = "".join(f"(assert (or (<= Y_0 {i}) (>= Y_1 {i})))\n" for i in range(20))
    started = time.monotonic()
    with pytest.raises(SpecTooLarge, match="16,384 disjuncts in disjunctive normal form") as error:
        parse_vnnlib(write(tmp_path, HEADER + BOX + ors))  # refused at the 14th `or`, before expanding it
    assert time.monotonic() - started < 1.0 and error.value.line == 8 + 14
    # the same inside one formula: (and (or ..) (or ..) ...)
    nested = "(assert (and " + " ".join(f"(or (<= Y_0 {i}) (>= Y_1 {i}))" for i in range(20)) + "))\n"
    with pytest.raises(SpecTooLarge):
        parse_vnnlib(write(tmp_path, HEADER + BOX + nested))
    # a few ors still expand: 2^3 disjuncts
    [spec] = parse_vnnlib(write(tmp_path, HEADER + BOX + "".join(ors.splitlines(True)[:3])))
    assert len(spec.unsafe) == 8


def test_a_written_out_or_longer_than_the_expansion_limit_is_read_not_refused(tmp_path):
    """lindex_60000's one `or` lists 120,000 boxes with one output row each: nothing is distributed, so the limit
    on expansions does not apply (it was refused as 'unknown'). Its `and`s are read in linear time."""
    from opwise.bounds.vnncomp.vnnlib import MAX_DISJUNCTS

    count = MAX_DISJUNCTS + 5
    header = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
    terms = "".join(f"(and (>= X_0 {i}) (<= X_0 {i + 0.5}) (<= Y_0 {i}))\n" for i in range(count))
    specs = parse_vnnlib(write(tmp_path, header + "(assert (or\n" + terms + "))\n"))
    assert len(specs) == count
    assert specs[7].x_lower.item() == 7 and specs[7].x_upper.item() == 7.5 and rows(specs[7]) == [([[1.0]], [7.0])]
    # an `and` of one-disjunct parts around an `or` keeps the atoms' order and distributes once
    [spec] = parse_vnnlib(write(tmp_path, HEADER + "(assert (and (<= X_0 1) (>= X_0 -1) (<= Y_0 1) (or (<= Y_1 2) "
                                "(<= Y_1 3)) (>= X_1 0) (<= X_1 1) (<= Y_0 4)))\n"))
    assert rows(spec) == [([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], [1.0, 2.0, 4.0]),
                          ([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], [1.0, 3.0, 4.0])]


@pytest.mark.parametrize("depth", [150, 100_000])
def test_deep_nesting_is_a_spec_error_not_a_recursion_error(tmp_path, depth):
    formula = "(+ " * depth + "Y_0" + ")" * depth
    path = write(tmp_path, HEADER + BOX + f"(assert (<= {formula} 1))\n")
    with pytest.raises(SpecError, match="nested deeper") as error:
        parse_vnnlib(path)
    assert error.value.line == 9


def test_binary_files_are_a_spec_error(tmp_path):
    path = tmp_path / "prop.vnnlib"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(SpecError, match="not a text file"):
        parse_vnnlib(path)


def test_comparisons_read_whole_or_token_by_token_give_the_same_property(tmp_path):
    """A comparison of two words on one line is read as one token (mscn_128d_dual's 49 MB file took 41 s token by
    token); split over lines, or around a nested term, it is read token by token. Both give the same boxes and
    rows, and a bad word still names its line."""
    whole = HEADER + "(assert (or (and (>= X_0 -1) (<= X_0 1) (>= X_1 0) (<= X_1 0.5) (<= Y_0 Y_1))\n" \
        "(and (>= X_0 2) (<= X_0 3) (>= X_1 0) (<= X_1 0.5) (< Y_1 4))))\n"
    split = HEADER + "(assert (or (and (>=\nX_0 -1) ( <= X_0 1 ) (>= X_1 (+ 0)) (<= X_1 0.5) (<= Y_0\nY_1))\n" \
        "(and (>= X_0 2) (<= X_0 3) (>= X_1 0) (<= X_1 0.5) (< Y_1 4))))\n"
    parsed = [[(spec.x_lower.tolist(), spec.x_upper.tolist(), rows(spec), [d.strict.tolist() for d in spec.unsafe])
               for spec in parse_vnnlib(write(tmp_path, text))] for text in (whole, split)]
    assert parsed[0] == parsed[1] and len(parsed[0]) == 2 and parsed[0][1][3] == [[True]]
    with pytest.raises(SpecError, match="banana") as error:
        parse_vnnlib(write(tmp_path, HEADER + BOX + "\n(assert (<= Y_0 banana))\n"))
    assert error.value.line == 10
    with pytest.raises(SpecError, match="nested deeper"):
        parse_vnnlib(write(tmp_path, HEADER + BOX + "(assert " + "(and " * 99 + "(<= Y_0 1)" + ")" * 100 + "\n"))


@pytest.mark.parametrize("enabled", [True, False])
def test_parsing_leaves_the_garbage_collector_as_it_found_it(tmp_path, enabled):
    import gc

    path = write(tmp_path, HEADER + BOX + "(assert (<= Y_0 1))\n")
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        parse_vnnlib(path)
        assert gc.isenabled() == enabled
        with pytest.raises(SpecError):
            parse_vnnlib(write(tmp_path, HEADER + BOX + "(assert (<= Y_0 banana))\n"))
        assert gc.isenabled() == enabled
    finally:
        (gc.enable if was else gc.disable)()
