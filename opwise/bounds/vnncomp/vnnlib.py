"""VNN-LIB properties -> Specifications: input boxes and the unsafe output set.

A VNN-LIB file declares inputs `X_i` and outputs `Y_i` and asserts constraints that together describe a
*violation*. Every assert is brought to disjunctive normal form and the asserts are conjoined; each
resulting conjunction splits into simple bounds on X (its input box) and linear rows over Y. Conjunctions
with the same box share one Specification, whose unsafe set is the disjunction of their Y rows. The
tokenizer is a regex over lines and the s-expression reader uses an explicit stack, so the 1,600-assert
ERAN files parse in milliseconds.

Strict `<`/`>` are read as `<=`/`>=` (the competition's convention: bounds cannot tell them apart), but
each output row remembers whether it was strict (`StrictDisjunct.strict`), so a counterexample is only
claimed where the strict rows hold strictly (`violates`). Constants must be finite numbers. Distributing
`and` over `or` is refused past `MAX_DISJUNCTS` (`SpecTooLarge`, checked before expanding; an `or` the file
writes out is read whatever its length), and
nesting past `MAX_DEPTH` is a SpecError rather than a RecursionError.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import gzip
import itertools
import math
import re
from pathlib import Path

import torch

from opwise.bounds.input_set import InputSet
from opwise.bounds.linear_constraints import LinearConstraints
from opwise.bounds.spec import Disjunct, Specification
from opwise.bounds.vnncomp.products import Products
from opwise.errors import SpecError, SpecTooLarge

#: a token: a comparison of two words, `(<= X_3 0.5)`, read whole (head, left, right; mscn's files hold 3.3 million,
#: read token by token in 40 s), else a parenthesis or a word (the fourth group)
TOKEN = re.compile(r"\(\s*(<=|>=|<|>)\s+([^\s()]+)\s+([^\s()]+)\s*\)|(\(|\)|[^\s()]+)")
VARIABLE = re.compile(r"^([XY])_(\d+)$")
COMPARISONS = {"<=", ">=", "<", ">"}
#: a variable declared as a function of no arguments, `(declare-fun X_0 () Real)`: a constant
DECLARE_FUN = re.compile(r"\(\s*declare-fun\s+([^\s()]+)\s*\(\s*\)\s*([^\s()]+)\s*\)")
#: VNN-LIB 2's first expression
VERSION = re.compile(r"\(\s*vnnlib-version\b")

#: most disjuncts the asserts may expand to (one Specification row block each); more is refused, not expanded
MAX_DISJUNCTS = 10_000
#: deepest parenthesis nesting read (the formula walkers recurse once per level)
MAX_DEPTH = 100


@dataclasses.dataclass
class StrictDisjunct(Disjunct):
    """A Disjunct whose rows came from `<`/`>` where `strict` ([rows], bool) is set: bounds treat them as
    non-strict, a counterexample must meet them strictly."""

    strict: torch.Tensor | None = None

    def margin(self, y: torch.Tensor) -> torch.Tensor:
        """Disjunct.margin, where a strict row at exactly 0 does not hold (its value counts as the smallest positive
        number): a search then looks on for a point that violates it strictly, as the competition's check needs.

        >>> StrictDisjunct(torch.eye(2), torch.zeros(2), torch.tensor([True, False])).margin(torch.tensor([[0.0, -1.0]])) > 0
        tensor([True])
        """
        if self.strict is None:
            return super().margin(y)
        exact = not y.is_floating_point()
        C, d = (self.C.double(), self.d.double()) if exact else (self.C, self.d)
        values = (y.double() if exact else y) @ C.T - d
        strict = self.strict.to(values.device)
        values = torch.where(strict & (values >= 0), values.clamp(min=torch.finfo(values.dtype).tiny), values)
        return values.amax(dim=-1).to(self.C.dtype)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "StrictDisjunct":
        """The same rows (and strictness) on `device`, in `dtype` if given."""
        strict = None if self.strict is None else self.strict.to(device)
        return StrictDisjunct(self.C.to(device=device, dtype=dtype), self.d.to(device=device, dtype=dtype), strict)


class Expr(list):
    """A parenthesised s-expression, remembering the line it started on (for error messages)."""

    line: int = 0


class WordComparison(Expr):
    """A comparison of two words, [head, left, right], as the tokenizer reads it whole."""


Atom = tuple[dict[str, float], float, int, bool]  # sum(coef * var) + constant <= 0 (< 0 if strict), line, strict


def parse_vnnlib(path: str | Path, input_shape: tuple[int, ...] | None = None,
                 dtype: torch.dtype = torch.float32) -> list[Specification]:
    """Parse a VNN-LIB file into one Specification per distinct input box.

    `input_shape` (batch included, e.g. (1, 1, 28, 28)) shapes the boxes and is checked against the
    number of declared `X_i`; without it the boxes are [1, n].

    >>> import tempfile, os
    >>> text = '''(declare-const X_0 Real) (declare-const X_1 Real)
    ... (declare-const Y_0 Real) (declare-const Y_1 Real)
    ... (assert (<= X_0 1)) (assert (>= X_0 -1)) (assert (<= X_1 2)) (assert (>= X_1 0))
    ... (assert (or (and (<= Y_0 Y_1)) (and (>= Y_0 0.5))))'''
    >>> with tempfile.NamedTemporaryFile("w", suffix=".vnnlib", delete=False) as f: _ = f.write(text)
    >>> [spec] = parse_vnnlib(f.name); os.unlink(f.name)
    >>> spec.x_lower.tolist(), spec.x_upper.tolist()
    ([[-1.0, 0.0]], [[1.0, 2.0]])
    >>> [(d.C.tolist(), d.d.tolist()) for d in spec.unsafe]
    [([[1.0, -1.0]], [0.0]), ([[-1.0, 0.0]], [-0.5])]
    """
    with _collector_paused():
        query = _read_property(str(path), input_shape, dtype)
    if query.products:
        raise SpecError(str(path), query.products.lines[0], "constrains products of variables: its rows are over the "
                                                            "outputs, the inputs and those products, which only "
                                                            "parse_property describes (verify_instance decides it)")
    return query.specs


@contextlib.contextmanager
def _collector_paused():
    """Pause Python's cyclic garbage collector: parsing makes millions of small lists and tuples that all stay
    alive until the end, and the collections their allocations set off scan them again and again (mscn's
    960-box file: 5.0 s to parse with it, 1.9 s without). Nothing parsing makes holds a reference cycle."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def parse_property(path: str | Path, dtype: torch.dtype = torch.float32):
    """A property file of either version as a vnnlib2.Query: its Specifications over the (joint) input, flat
    ([1, n]), and for VNN-LIB 2 the Layout of the declared networks and tensors (None for VNN-LIB 1).

    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile("w", suffix=".vnnlib", delete=False) as f:
    ...     _ = f.write("(declare-const X_0 Real) (declare-const Y_0 Real) (assert (<= X_0 1)) (assert (>= X_0 0))"
    ...                 " (assert (<= Y_0 0))")
    >>> query = parse_property(f.name); os.unlink(f.name)
    >>> len(query.specs), query.layout is None
    (1, True)
    """
    with _collector_paused():
        return _read_property(str(path), None, dtype)


def _read_property(path: str, input_shape: tuple[int, ...] | None, dtype: torch.dtype):
    """parse_property's and parse_vnnlib's work: the file's version decides the reader."""
    from opwise.bounds.vnncomp.vnnlib2 import Query, parse_query

    text = read_text(path)
    if is_version_2(text):
        return parse_query(path, text, dtype, input_shape)
    products = Products()
    return Query(_parse_version_1(path, text, input_shape, dtype, products), None, products)


def _parse_version_1(path: str, text: str, input_shape: tuple[int, ...] | None, dtype: torch.dtype,
                     products: Products | None = None) -> list[Specification]:
    """The Specifications of a VNN-LIB 1 file's text (its products of variables named in `products`)."""
    expressions = _read_expressions(path, text)
    inputs, outputs = _declarations(path, expressions)
    if input_shape is not None and math.prod(input_shape) != inputs:
        raise SpecError(path, None, f"declares {inputs} inputs X_i but the model input {tuple(input_shape)} "
                                    f"has {math.prod(input_shape)} values")
    conjunctions = conjoin(path, [e for e in expressions if e[0] == "assert"], inputs, outputs, products)
    return _group_by_box(path, conjunctions, inputs, outputs, input_shape, dtype, products)


def is_version_2(text: str) -> bool:
    """Whether a property's text is VNN-LIB 2 (it opens with `(vnnlib-version <2.0>)`, VNN-COMP 2026's format).

    >>> is_version_2("; a comment\\n(vnnlib-version <2.0>)"), is_version_2("(declare-const X_0 Real)")
    (True, False)
    """
    return VERSION.search(text[:65536]) is not None


def conjoin(path: str, asserts: list[Expr], inputs: int, outputs: int,
            products: Products | None = None) -> list[list[Atom]]:
    """The conjunction of the asserts, in disjunctive normal form over X_i/Y_i atoms: a list of conjunctions.
    Products of variables are named P_k in `products` (a SpecError without it).

    >>> asserts = read_expressions("p", "(assert (or (<= Y_0 0) (>= Y_1 1))) (assert (<= X_0 1))")
    >>> [[(terms, constant) for terms, constant, _, _ in c] for c in conjoin("p", asserts, 1, 2)]
    [[({'Y_0': 1.0}, 0.0), ({'X_0': 1.0}, -1.0)], [({'Y_1': -1.0}, 1.0), ({'X_0': 1.0}, -1.0)]]
    """
    conjunctions: list[list[Atom]] = [[]]
    for expression in asserts:
        if len(expression) != 2:
            raise SpecError(path, expression.line, "assert takes exactly one formula")
        disjunction = _to_dnf(path, expression[1], inputs, outputs, products)
        if len(disjunction) == 1:
            for conjunction in conjunctions:
                conjunction.extend(disjunction[0])
        else:
            _check_size(path, expression.line, len(conjunctions), len(disjunction))
            conjunctions = [a + b for a, b in itertools.product(conjunctions, disjunction)]
    return conjunctions


def violates(spec: Specification, y: torch.Tensor) -> bool:
    """Whether the outputs y ([outputs] or [1, outputs]) lie in the unsafe set as written: some disjunct's
    rows all hold, its strict rows (`StrictDisjunct.strict`) strictly.

    >>> spec = Specification(torch.zeros(1, 1), torch.ones(1, 1),
    ...                      [StrictDisjunct(torch.eye(1), torch.zeros(1), torch.tensor([True]))])
    >>> violates(spec, torch.tensor([0.0])), violates(spec, torch.tensor([-0.5]))
    (False, True)
    """
    y = y.reshape(-1).to(spec.unsafe[0].C.dtype)
    for disjunct in spec.unsafe:
        values = disjunct.C @ y - disjunct.d
        strict = getattr(disjunct, "strict", None)
        holds = values <= 0 if strict is None else torch.where(strict.to(values.device), values < 0, values <= 0)
        if bool(holds.all()):
            return True
    return False


def _check_size(path: str, line: int | None, left: int, right: int) -> None:
    """Refuse the distribution of `left` disjuncts over `right` past MAX_DISJUNCTS: the product that grows
    exponentially. A side of one disjunct multiplies nothing, and an `or` only lists what the file writes, so
    neither is limited (lindex's 120,000 written disjuncts are read as such)."""
    disjuncts = left * right
    if left > 1 and right > 1 and disjuncts > MAX_DISJUNCTS:
        raise SpecTooLarge(path, line, f"the asserts expand to {disjuncts:,} disjuncts in disjunctive normal form "
                                       f"(at most {MAX_DISJUNCTS:,} are handled); the property is not decided")


def read_text(path: str | Path) -> str:
    """A property file's text; a gzip file (`prop.vnnlib.gz`, as VNN-COMP's benchmark repositories ship them) is
    read through gzip, and a `prop.vnnlib` that is missing where `prop.vnnlib.gz` exists is read from that.

    >>> import gzip, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "p.vnnlib")
    >>> with gzip.open(path + ".gz", "wt") as file: _ = file.write("(assert (<= Y_0 0))")
    >>> read_text(path)
    '(assert (<= Y_0 0))'
    """
    path = str(existing(path))
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as file:
                return file.read()
        return Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise SpecError(path, None, f"cannot read the file ({error.strerror or error})") from error
    except UnicodeDecodeError as error:
        raise SpecError(path, None, f"not a text file (byte {error.start} is not UTF-8)") from error


def existing(path: str | Path) -> Path:
    """`path`, or `path.gz` where only that exists (instances CSVs name files their repositories ship gzipped).

    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp(); _ = open(os.path.join(folder, "net.onnx.gz"), "wb")
    >>> existing(os.path.join(folder, "net.onnx")).name, existing(os.path.join(folder, "other.onnx")).name
    ('net.onnx.gz', 'other.onnx')
    """
    path = Path(path)
    compressed = path.with_name(path.name + ".gz")
    return compressed if not path.exists() and compressed.is_file() else path


def _read_expressions(path: str, text: str) -> list[Expr]:
    """Top-level s-expressions of a VNN-LIB 1 file, each an Expr of strings and nested Exprs. SMT-LIB's
    `(declare-fun X_0 () Real)`, which the VNN-LIB 1 grammar allows beside declare-const, reads as the same."""
    text = DECLARE_FUN.sub(r"(declare-const \1 \2)", text)
    top = read_expressions(path, text)
    for expression in top:
        if not isinstance(expression[0], str) or expression[0] not in ("declare-const", "assert"):
            raise SpecError(path, expression.line, f"expected declare-const or assert, got {_show(expression)}")
    return top


def read_expressions(path: str, text: str) -> list[Expr]:
    """The top-level s-expressions of `text` (the file at `path`, for messages), each an Expr of strings and
    nested Exprs; comparisons of two words are read whole (WordComparison)."""
    stack: list[Expr] = []
    top: list[Expr] = []
    for number, line in enumerate(text.splitlines(), start=1):
        for head, left, right, token in TOKEN.findall(line.split(";", 1)[0]):
            if head:
                if len(stack) >= MAX_DEPTH:
                    raise SpecError(path, number, f"expressions nested deeper than {MAX_DEPTH} levels")
                comparison = WordComparison((head, left, right))
                comparison.line = number
                (stack[-1] if stack else top).append(comparison)
            elif token == "(":
                expression = Expr()
                expression.line = number
                stack.append(expression)
                if len(stack) > MAX_DEPTH:
                    raise SpecError(path, number, f"expressions nested deeper than {MAX_DEPTH} levels")
            elif token == ")":
                if not stack:
                    raise SpecError(path, number, "unbalanced ')'")
                done = stack.pop()
                if not done:
                    raise SpecError(path, number, "empty expression '()'")
                (stack[-1] if stack else top).append(done)
            elif not stack:
                raise SpecError(path, number, f"'{token}' outside any expression")
            else:
                stack[-1].append(token)
    if stack:
        raise SpecError(path, stack[-1].line, "expression opened here is never closed")
    return top


def _declarations(path: str, expressions: list[Expr]) -> tuple[int, int]:
    """Numbers of declared inputs and outputs; they must be X_0..X_{n-1} and Y_0..Y_{m-1}, type Real."""
    seen: dict[str, set[int]] = {"X": set(), "Y": set()}
    for expression in expressions:
        if expression[0] != "declare-const":
            continue
        if len(expression) != 3 or expression[2] != "Real" or not isinstance(expression[1], str):
            raise SpecError(path, expression.line, f"expected (declare-const NAME Real), got {_show(expression)}")
        match = VARIABLE.match(expression[1])
        if match is None:
            raise SpecError(path, expression.line, f"variable '{expression[1]}' is neither X_i nor Y_i")
        seen[match[1]].add(int(match[2]))
    for kind, indices in seen.items():
        if indices != set(range(len(indices))):
            missing = sorted(set(range(max(indices) + 1)) - indices)
            raise SpecError(path, None, f"{kind} variables must be numbered from 0 without gaps; missing {kind}_{missing[0]}")
    if not expressions:
        raise SpecError(path, None, "holds no expressions (an empty file, or only comments): nothing to verify")
    if not seen["X"] or not seen["Y"]:
        raise SpecError(path, None, "declares no X_i inputs or no Y_i outputs")
    return len(seen["X"]), len(seen["Y"])


def _to_dnf(path: str, formula, inputs: int, outputs: int, products: Products | None) -> list[list[Atom]]:
    """A formula of and/or/comparisons as a list of conjunctions of atoms (DNF)."""
    if not isinstance(formula, Expr):
        raise SpecError(path, None, f"expected a formula, got '{formula}'")
    head = formula[0]
    if head == "and":
        # atoms of one-disjunct parts gather in `pending` and join the product only before a part that
        # branches: copying every conjunction per atom made a 600-atom `and` quadratic (12 s for mscn's 8 MB)
        result: list[list[Atom]] = [[]]
        pending: list[Atom] = []
        for part in formula[1:]:
            if type(part) is WordComparison:  # the common atom, without a call and a list per atom
                pending.append(_word_atom(path, part, inputs, outputs))
                continue
            disjunction = _to_dnf(path, part, inputs, outputs, products)
            if len(disjunction) == 1:
                pending.extend(disjunction[0])
                continue
            _check_size(path, formula.line, len(result), len(disjunction))
            result = [a + pending + b for a, b in itertools.product(result, disjunction)]
            pending = []
        return [a + pending for a in result] if pending else result
    if head == "or":
        if len(formula) < 2:
            raise SpecError(path, formula.line, "(or) needs at least one operand")
        result = []
        for part in formula[1:]:
            result.extend(_to_dnf(path, part, inputs, outputs, products))
        return result
    if head in COMPARISONS:
        if len(formula) != 3:
            raise SpecError(path, formula.line, f"'{head}' takes two operands, got {len(formula) - 1}")
        if isinstance(formula[1], str) and isinstance(formula[2], str):
            return [[_word_atom(path, formula, inputs, outputs)]]
        ball = _ball_atom(path, formula, inputs, outputs)
        if ball is not None:
            return [[ball]]
        left = _linear(path, formula[1], formula.line, inputs, outputs, products)
        right = _linear(path, formula[2], formula.line, inputs, outputs, products)
        atom = _comparison(head, left, right)
        if atom is None:
            raise SpecError(path, formula.line, f"{_show(formula)} has a coefficient or constant that is not a finite number")
        return [[(*atom, formula.line, head in ("<", ">"))]]
    raise SpecError(path, formula.line, f"unsupported operator '{_show(head)}' (expected and, or, <=, >=)")


class SquaredDistance(dict):
    """The terms of an L2 ball's atom, `sum_i (X_i - c_i)^2 + constant <= 0`: {input index: c_i}."""


def _ball_atom(path: str, formula: Expr, inputs: int, outputs: int) -> Atom | None:
    """A comparison bounding a sum of squared input differences by a constant, `(<= (+ (* (- X_0 0.5) (- X_0 0.5))
    ...) 0.01)`: the atom of an L2 ball (SquaredDistance); None for any other comparison."""
    head, left, right = formula
    square_side, constant_side = (left, right) if head in ("<=", "<") else (right, left)
    if not isinstance(square_side, Expr) or not square_side or square_side[0] not in ("+", "*"):
        return None
    squares = square_side[1:] if square_side[0] == "+" else [square_side]
    centers = SquaredDistance()
    for square in squares:
        if not (isinstance(square, Expr) and len(square) == 3 and square[0] == "*"):
            return None
        factors = _linear_or_none(path, square[1:], formula.line, inputs, outputs)
        if factors is None:  # a factor that is itself a product: not a ball (a polynomial, or an error read later)
            return None
        if factors[0] != factors[1] or len(factors[0][0]) != 1:
            return None
        (name, coefficient), = factors[0][0].items()
        if not name.startswith("X") or abs(coefficient) != 1.0 or int(name[2:]) in centers:
            return None
        centers[int(name[2:])] = -factors[0][1] / coefficient  # (x - c)^2 = (coefficient * x + constant)^2
    constant = _linear_or_none(path, [constant_side], formula.line, inputs, outputs)
    if constant is None or constant[0][0]:
        return None
    radius = constant[0][1]
    if not (math.isfinite(radius) and all(map(math.isfinite, centers.values()))):
        raise SpecError(path, formula.line, f"{_show(formula)[:80]} has a centre or radius that is not a finite number")
    return centers, -radius, formula.line, False


def _linear_or_none(path: str, terms: list, line: int, inputs: int, outputs: int) -> list | None:
    """The linear terms, or None where one is not linear (or not a term)."""
    try:
        return [_linear(path, term, line, inputs, outputs) for term in terms]
    except SpecError:
        return None


def _word_atom(path: str, formula: Expr, inputs: int, outputs: int) -> Atom:
    """The atom of a comparison of two words, (<= X_3 0.5): memoised whole but for its line."""
    head, left, right = formula
    atom = _word_comparison(head, left, right, inputs, outputs)
    if isinstance(atom, str):
        raise SpecError(path, formula.line, atom)
    if atom is None:
        raise SpecError(path, formula.line, f"{_show(formula)} has a coefficient or constant that is not a finite number")
    return (*atom, formula.line, head in ("<", ">"))


def _linear(path: str, term, line: int, inputs: int, outputs: int,
            products: Products | None = None) -> tuple[dict[str, float], float]:
    """A linear term (number, variable, +, -, * by a constant) as (coefficients by variable, constant); a product of
    variables is a variable P_k of `products` (a SpecError without it)."""
    if isinstance(term, str):
        value = _word(term, inputs, outputs)
        if isinstance(value, str):
            raise SpecError(path, line, value)
        return value
    line = term.line
    if term[0] not in ("+", "-", "*") or len(term) < 2:
        raise SpecError(path, line, f"unsupported term {_show(term)} (expected a number, a variable, +, - or *)")
    parts = [_linear(path, part, line, inputs, outputs, products) for part in term[1:]]
    if term[0] == "*":
        scale = 1.0
        variable_parts = [part for part in parts if part[0]]
        if len(variable_parts) > 1 and products is None:
            raise SpecError(path, line, f"nonlinear product {_show(term)}")
        for part in parts:
            if not part[0]:
                scale *= part[1]
        terms, constant = variable_parts[0] if variable_parts else ({}, 1.0)
        for factor in variable_parts[1:]:  # x*y*z = (x*y)*z, each product a column of its own
            terms, constant = {products.name((terms, constant), factor, line): 1.0}, 0.0
        return {name: scale * value for name, value in terms.items()}, scale * constant
    signs = [-1.0] if term[0] == "-" and len(parts) == 1 else [1.0] + [(-1.0 if term[0] == "-" else 1.0)] * (len(parts) - 1)
    total: dict[str, float] = {}
    constant = 0.0
    for sign, (terms, value) in zip(signs, parts):
        constant += sign * value
        for name, coefficient in terms.items():
            total[name] = total.get(name, 0.0) + sign * coefficient
    return total, constant


def _comparison(head: str, left: tuple[dict[str, float], float],
                right: tuple[dict[str, float], float]) -> tuple[dict[str, float], float] | None:
    """`left head right` as (coefficients, constant) of `sum(coef * var) + constant <= 0`; None where a
    coefficient or the constant is not finite."""
    if head in ("<=", "<"):
        left, right = right, left
    # now `left >= right`, i.e. right - left <= 0
    terms = dict(right[0])
    for name, coefficient in left[0].items():
        terms[name] = terms.get(name, 0.0) - coefficient
    constant = right[1] - left[1]
    if not (math.isfinite(constant) and all(map(math.isfinite, terms.values()))):
        return None
    return {k: v for k, v in terms.items() if v != 0.0}, constant


@functools.lru_cache(maxsize=65536)
def _word_comparison(head: str, left: str, right: str, inputs: int,
                     outputs: int) -> tuple[dict[str, float], float] | str | None:
    """`_comparison` of two words, or what is wrong with a word; memoised (callers must not change the
    dictionary)."""
    left_term, right_term = _word(left, inputs, outputs), _word(right, inputs, outputs)
    for term in (left_term, right_term):
        if isinstance(term, str):
            return term
    return _comparison(head, left_term, right_term)


@functools.lru_cache(maxsize=65536)
def _word(term: str, inputs: int, outputs: int) -> tuple[dict[str, float], float] | str:
    """A number or variable as (coefficients, constant), or what is wrong with it; memoised, since mscn's files
    repeat a few hundred words 1.2 million times (callers must not change the dictionary)."""
    match = VARIABLE.match(term)
    if match:
        bound = inputs if match[1] == "X" else outputs
        if int(match[2]) >= bound:
            return f"'{term}' is not declared ({match[1]}_0..{match[1]}_{bound - 1})"
        return {term: 1.0}, 0.0
    try:
        value = float(term)
    except ValueError:
        return f"'{term}' is neither a number nor a declared variable"
    if not math.isfinite(value):
        return f"the constant '{term}' is not a finite number"
    return {}, value


def _group_by_box(path: str, conjunctions: list[list[Atom]], inputs: int, outputs: int,
                  input_shape: tuple[int, ...] | None, dtype: torch.dtype,
                  products: Products | None = None) -> list[Specification]:
    """Split each conjunction into its X box, the relations between X_i it states (linear constraints over two or
    more inputs) and its Y rows; conjunctions with equal boxes and relations share a Specification.

    A row that mixes outputs and inputs (`Y_0 >= X_0 + 3`) is a row over the outputs followed by the inputs: every
    row of the property then has `outputs + inputs` columns, and the network is bounded with its input appended to
    its output (instance.py). Where the property has products of variables (`products`), every row has `outputs +
    inputs + products` columns: the outputs, the inputs, then the products (products.py's AppendedColumns).
    A constraint on inputs alone that has a product (`X_0 * 200 >= X_1 * X_1`) is such a row too: the query is
    one conjunction, so it joins every disjunct's rows. Where rows read the inputs, a strict bound on one input
    (`X_0 > 0`) is also a strict row, so a counterexample meets it strictly; elsewhere the closed box states it."""
    boxes: dict[tuple, list[tuple[list[dict[str, float]], list[float], list[bool]]]] = {}
    mixed = False  # whether some row reads inputs too: rows are kept as their terms until the width is known
    # what each distinct terms dict says, by its id: (X index, coefficient), a relation between inputs, or None for
    # output terms (the atoms of word comparisons share their dicts, and every atom stays alive here, so no id is
    # reused)
    kinds: dict[int, tuple[int, float] | dict[int, float] | bool] = {}
    opened: set[int] = set()  # the ids of strict bounds on one input, `X_0 > 0` (the box closes them)
    for conjunction in conjunctions:
        lower, upper = [-math.inf] * inputs, [math.inf] * inputs
        relations: list[tuple[tuple[tuple[int, float], ...], float]] = []
        balls: list[tuple[tuple[tuple[int, float], ...], float]] = []
        rows: list[dict[str, float]] = []
        bounds: list[float] = []
        stricts: list[bool] = []
        for terms, constant, _, strict in conjunction:
            if isinstance(terms, SquaredDistance):
                balls.append((tuple(sorted(terms.items())), -constant))  # sum((x - c)^2) <= -constant
                continue
            key = id(terms)
            if key not in kinds:
                kinds[key] = _input_term(terms)
            kind = kinds[key]
            if isinstance(kind, bool):  # an output row, reading inputs too where True
                mixed = mixed or kind
            elif isinstance(kind, dict):
                relations.append((tuple(sorted(kind.items())), -constant))  # sum(coef * x) <= -constant
                continue
            else:
                index, coefficient = kind
                value = -constant / coefficient  # coefficient * x + constant <= 0
                if coefficient > 0:
                    upper[index] = min(upper[index], value)
                else:
                    lower[index] = max(lower[index], value)
                if strict:  # `X_0 > 0`: also a strict row, kept where the rows read the inputs anyway (below)
                    rows.append(terms)
                    bounds.append(0.0 - constant)
                    stricts.append(True)
                    opened.add(key)
                continue
            if not terms:
                if constant < 0 or (constant == 0 and not strict):
                    continue  # a constraint that always holds
                rows, bounds, stricts = [terms], [-1.0], [False]  # never holds: 0 <= -1 empties the disjunct
                break
            rows.append(terms)
            bounds.append(0.0 - constant)
            stricts.append(strict)
        relations = sorted(set(relations))
        if relations:
            _tighten(lower, upper, relations)
        balls = sorted(set(balls))
        if balls and products is not None and not _ball_fits(balls, relations, lower, upper):
            for terms, constant in _ball_rows(balls, products, lower, upper):  # rows over squares of inputs instead
                rows.append(terms)
                bounds.append(0.0 - constant)
                stricts.append(False)
            mixed, balls = True, []
        ball = _one_ball(path, balls, relations, lower, upper)
        unbounded = [i for i in range(inputs) if math.isinf(lower[i]) or math.isinf(upper[i])]
        if unbounded:
            raise SpecError(path, None, f"input X_{unbounded[0]} has no finite lower and upper bound in some disjunct")
        empty = [i for i in range(inputs) if lower[i] > upper[i]]
        if empty:
            continue  # this conjunction describes no input at all
        boxes.setdefault((tuple(lower), tuple(upper), tuple(relations), ball), []).append((rows, bounds, stricts))
    if not boxes:
        raise SpecError(path, None, "the input constraints are empty (some lower bound exceeds its upper bound)")
    # tensors are made in bulk and shared: lindex_60000's 60,000 boxes made 480,000 small tensors one by one (5 s)
    shape = tuple(input_shape) if input_shape is not None else (1, inputs)
    lowers = torch.tensor([key[0] for key in boxes], dtype=dtype).reshape(len(boxes), *shape).unbind(0)
    uppers = torch.tensor([key[1] for key in boxes], dtype=dtype).reshape(len(boxes), *shape).unbind(0)
    positions = products.positions() if products else {}
    width = outputs + inputs + len(positions) if mixed or positions else outputs
    if opened and width == outputs:  # the box closes strict input bounds: the competition's check tolerates that
        boxes = {key: [_without(opened, *disjunct) for disjunct in disjuncts] for key, disjuncts in boxes.items()}
    # a disjunct without output rows is violated everywhere in its box: the row 0 <= 0 always holds
    written = [[(rows, bounds, stricts) if rows else ([{}], [0.0], [False]) for rows, bounds, stricts in disjuncts]
               for disjuncts in boxes.values()]
    dense: dict[int, tuple[float, ...]] = {}  # each distinct terms dict's row, by its id
    thresholds = torch.tensor([value for disjuncts in written for _, bounds, _ in disjuncts for value in bounds], dtype=dtype)
    thresholds = iter(thresholds.split([len(bounds) for disjuncts in written for _, bounds, _ in disjuncts]))
    matrices: dict[tuple, torch.Tensor] = {}
    strictness: dict[tuple, torch.Tensor] = {}
    specs = []
    for lower, upper, (_, _, relations, ball), disjuncts in zip(lowers, uppers, boxes, written):
        unsafe = []
        for rows, bounds, stricts in disjuncts:
            for terms in rows:
                if id(terms) not in dense:
                    dense[id(terms)] = _row(terms, outputs, inputs, positions, width)
            rows = [dense[id(terms)] for terms in rows]
            key, strict_key = tuple(rows), tuple(stricts)
            if key not in matrices:
                matrices[key] = torch.tensor(rows, dtype=dtype)
            if strict_key not in strictness:
                strictness[strict_key] = torch.tensor(stricts)
            unsafe.append(StrictDisjunct(matrices[key], next(thresholds), strictness[strict_key]))
        if ball is not None:
            center, radius = ball
            ball_set = InputSet(lower, upper, torch.tensor(center, dtype=dtype).reshape(lower.shape), radius, 2.0)
            specs.append(Specification.over(ball_set, unsafe))
            continue
        if not relations:
            specs.append(Specification(lower, upper, unsafe))
            continue
        constraints = _constraints(relations, lower, upper, dtype)
        if constraints is not None:  # else no point of the box meets the relations: this box describes no input
            specs.append(Specification.over(InputSet(lower, upper, constraints=constraints), unsafe))
    if not specs:
        raise SpecError(path, None, "the input constraints are empty (no input meets the relations between inputs)")
    return specs


def _without(opened: set[int], rows: list, bounds: list, stricts: list) -> tuple[list, list, list]:
    """A disjunct's rows without the strict input bounds (`opened`, by id): where no row reads the inputs, the box
    alone states them, closed, and the network's output is not widened by its input for them."""
    kept = [i for i, terms in enumerate(rows) if id(terms) not in opened]
    return [rows[i] for i in kept], [bounds[i] for i in kept], [stricts[i] for i in kept]


def _input_term(terms: dict[str, float]) -> tuple[int, float] | dict[int, float] | bool:
    """(index, coefficient) of terms over one X_i; {index: coefficient} of a relation between several; for an output
    row, whether it reads inputs or products too (False: outputs only)."""
    names = list(terms)
    inputs = [name for name in names if name.startswith("X")]
    if not inputs or len(inputs) != len(names):
        return bool(inputs) or any(name.startswith("P") for name in names)  # a row over outputs, and inputs with them (the network's input appended to its output)
    if len(names) == 1:
        return int(names[0][2:]), terms[names[0]]
    return {int(name[2:]): terms[name] for name in names}


def _row(terms: dict[str, float], outputs: int, inputs: int, positions: dict[str, int],
         width: int) -> tuple[float, ...]:
    """A row of C: Y_j's coefficient in column j, X_i's (where rows read inputs) in column outputs + i, product P_k's
    in column outputs + inputs + its position."""
    row = [0.0] * width
    for name, coefficient in terms.items():
        column = {"Y": 0, "X": outputs}.get(name[0])
        row[int(name[2:]) + column if column is not None else outputs + inputs + positions[name]] = coefficient
    return tuple(row)


def _one_ball(path: str, balls, relations, lower: list[float], upper: list[float]) -> tuple[tuple[float, ...], float] | None:
    """The L2 ball a conjunction's input set is (its centre over every input, its radius), with the box narrowed to
    the ball's bounding box; None without a ball. The ball must cover every input the box leaves free (others are
    fixed, and the centre takes their value), and may not come with another ball or relations between inputs."""
    if not balls:
        return None
    if len(balls) > 1 or relations:
        raise SpecError(path, None, "an L2 ball on the inputs together with another ball or relations between inputs "
                                    "is not supported")
    terms, squared = balls[0]
    centers = dict(terms)
    if squared < 0:
        lower[0], upper[0] = 1.0, 0.0  # an empty ball: this conjunction describes no input
        return None
    radius = math.sqrt(squared)
    for index, center in centers.items():
        lower[index], upper[index] = max(lower[index], center - radius), min(upper[index], center + radius)
    loose = [i for i in range(len(lower)) if i not in centers and not lower[i] == upper[i]]
    if loose:
        raise SpecError(path, None, f"an L2 ball on the inputs must cover every input that is not fixed; X_{loose[0]} is "
                                    "free but not in the ball")
    center = tuple(centers.get(i, lower[i]) for i in range(len(lower)))
    return center, radius


def _ball_fits(balls, relations, lower: list[float], upper: list[float]) -> bool:
    """Whether a conjunction's balls make one L2-ball input set (`_one_ball`): one ball, no relations between
    inputs, every input it leaves out fixed."""
    if len(balls) != 1 or relations:
        return False
    centers = dict(balls[0][0])
    return all(i in centers or lower[i] == upper[i] for i in range(len(lower)))


def _ball_rows(balls, products: Products, lower: list[float], upper: list[float]) -> list[tuple[dict[str, float], float]]:
    """Balls that are no input set of their own (several, with relations, or leaving a free input out) as rows
    `sum(X_i*X_i - 2 c_i X_i) + sum(c_i^2) - r^2 <= 0` over products, the box narrowed to each ball's bounding box."""
    rows = []
    for terms, squared in balls:
        if squared < 0:
            lower[0], upper[0] = 1.0, 0.0  # an empty ball: this conjunction describes no input
            return []
        radius = math.sqrt(squared)
        row: dict[str, float] = {}
        for index, center in terms:
            lower[index], upper[index] = max(lower[index], center - radius), min(upper[index], center + radius)
            name = f"X_{index}"
            row[products.name(({name: 1.0}, 0.0), ({name: 1.0}, 0.0))] = 1.0
            row[name] = -2.0 * center
        rows.append(({k: v for k, v in row.items() if v != 0.0}, sum(c * c for _, c in terms) - squared))
    return rows


def _tighten(lower: list[float], upper: list[float], relations) -> None:
    """Narrow the bounds of inputs by the relations (interval propagation through sum(coef * x) <= bound, a few
    rounds): `X_g <= X_f` with X_f <= 0.7 bounds X_g above by 0.7 where the file gives no bound of its own."""
    for _ in range(len(relations) + 2):
        changed = False
        for terms, bound in relations:
            lows = [min(c * lower[i], c * upper[i]) for i, c in terms]
            for position, (i, c) in enumerate(terms):
                rest = sum(low for other, low in enumerate(lows) if other != position)
                if math.isinf(rest):
                    continue  # another input is unbounded on the side that matters: nothing follows for this one
                limit = (bound - rest) / c
                if c > 0 and limit < upper[i]:
                    upper[i], changed = limit, True
                elif c < 0 and limit > lower[i]:
                    lower[i], changed = limit, True
        if not changed:
            return


def _constraints(relations, lower: torch.Tensor, upper: torch.Tensor, dtype: torch.dtype) -> LinearConstraints | None:
    """The relations as LinearConstraints over the flat box, or None where no point of the box meets them."""
    n = lower.numel()
    G = torch.zeros(len(relations), n, dtype=torch.float64)
    h = torch.tensor([bound for _, bound in relations], dtype=torch.float64)
    for row, (terms, _) in enumerate(relations):
        for index, coefficient in terms:
            G[row, index] = coefficient
    constraints = LinearConstraints.within(G, h, lower.flatten(), upper.flatten())
    return None if constraints is None else constraints.to(dtype=dtype)


def _show(expression) -> str:
    if isinstance(expression, str):
        return expression
    return "(" + " ".join(_show(part) for part in expression) + ")"
