"""VNN-LIB 2 queries (VNN-COMP 2026's format) -> the Specifications VNN-LIB 1 gives, over one joint input.

A VNN-LIB 2 query opens with `(vnnlib-version <2.0>)`, declares networks with named, typed and shaped tensors

    (declare-network f (declare-input X float32 [1, 5]) (declare-output Y float32 [1, 5]))

and asserts over their elements, `X[0, 3]`, with the operators of VNN-LIB 1 and `==`, `!=`. A query may
declare several networks (`(equal-to f)`: the same network; `(isomorphic-to f)`: one of the same structure)
or several inputs and outputs per network. Every input element gets a coordinate of one joint input vector
and every output element a position in one joint output (networks, then tensors, in declaration order,
elements in C order); the asserts, renamed to those coordinates, go through VNN-LIB 1's reader, so a query
gives exactly the Specifications its VNN-LIB 1 translation gives. Input elements a top-level assert equates,
`(== X_f[1] X_g[1])`, share one coordinate: two copies of a network fed the same value are then one input,
not a constraint between two. Other linear relations between inputs (`(<= X_g[0] X_f[0])`) cut the input box
(linear_constraints.py); constraints relating outputs to inputs are rows over both (the network's input appended
to its output, instance.py), and polynomial constraints (`(* X[0,1] X[0,1])`, outputs times inputs) rows over
their products too (products.py). Hidden-node declarations and element types other than floats are refused with
the declaration named.

`Layout` keeps what a joint model (vnncomp/joint.py) and a `sat` result file (`Layout.assignment`, the
textual assignment of the standard's section 5.3) need.
"""

from __future__ import annotations

import dataclasses
import math
import re

import torch

from opwise.bounds.spec import Specification
from opwise.bounds.vnncomp.products import Products
from opwise.bounds.vnncomp.vnnlib import (COMPARISONS, MAX_DEPTH, Expr, WordComparison, _group_by_box, _show, conjoin,
                                          read_expressions)
from opwise.errors import SpecError

#: an element of a declared tensor, `X[0,3]` (spaces inside the brackets are removed before tokenizing)
ELEMENT = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)\[([0-9,]*)\]$")
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
#: element types a query may declare: VNN-LIB's `Real` and the ONNX float types (any case)
FLOAT_TYPES = {"real", "float16", "float32", "float64", "bfloat16", "float", "double"}
EQUALITIES = {"==", "!="}


@dataclasses.dataclass(frozen=True)
class Declared:
    """A declared tensor: its name, element type as written, shape, and ONNX name if the query gives one."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    onnx_name: str | None = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclasses.dataclass(frozen=True)
class Network:
    """A declared network: `equal_to` names the network it is (the same ONNX file), `isomorphic_to` one of the
    same structure (its own ONNX file)."""

    name: str
    inputs: tuple[Declared, ...]
    outputs: tuple[Declared, ...]
    equal_to: str | None = None
    isomorphic_to: str | None = None


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the declared tensors sit in the joint input and output.

    `coordinates[i]` holds, for each element of the i-th input tensor (networks, then inputs, in declaration
    order), its joint input coordinate; outputs fill the joint output in the same order.
    """

    networks: tuple[Network, ...]
    coordinates: tuple[torch.Tensor, ...]
    inputs: int
    outputs: int

    @property
    def is_plain(self) -> bool:
        """One network with one input and one output, each element its own coordinate: the network itself is
        the joint model (VNN-LIB 1's case)."""
        return (len(self.networks) == 1 and len(self.networks[0].inputs) == 1 and len(self.networks[0].outputs) == 1
                and self.inputs == self.networks[0].inputs[0].size)

    def assignment(self, x: torch.Tensor, y: torch.Tensor) -> str:
        """The textual assignment of a counterexample (VNN-LIB 2, section 5.3): per network, each input and then
        each output as `NAME TYPE [SHAPE]` and its values one per line, in C order.

        >>> layout = parse_query("q", '''(vnnlib-version <2.0>) (declare-network f (declare-input X real [2])
        ...     (declare-output Y real [1])) (assert (and (<= X[0] 1) (>= X[0] 0) (<= X[1] 1) (>= X[1] 0)))
        ...     (assert (<= Y[0] 0))''').layout
        >>> print(layout.assignment(torch.tensor([0.5, 1.0]), torch.tensor([-2.0])))
        X real [2]
        0.5
        1.0
        Y real [1]
        -2.0
        """
        x, y = x.detach().cpu().double().flatten(), y.detach().cpu().double().flatten()
        lines: list[str] = []
        coordinates = iter(self.coordinates)
        offset = 0
        for network in self.networks:
            for tensor in network.inputs:
                lines.append(_header(tensor))
                lines.extend(repr(float(v)) for v in x[next(coordinates)].tolist())
            for tensor in network.outputs:
                lines.append(_header(tensor))
                lines.extend(repr(float(v)) for v in y[offset:offset + tensor.size].tolist())
                offset += tensor.size
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Query:
    """A parsed property: its Specifications over the joint input and output, and their Layout (None for a VNN-LIB 1
    file, whose X_i and Y_i are the network's input and output)."""

    specs: list[Specification]
    layout: Layout | None
    #: the products of variables the constraints hold (products.py): the rows' columns after the outputs and inputs
    products: Products | None = None


def parse_query(path: str, text: str, dtype: torch.dtype = torch.float32,
                input_shape: tuple[int, ...] | None = None) -> Query:
    """The Specifications (one per distinct input box) and Layout of the VNN-LIB 2 query `text` (from `path`).

    `input_shape` (batch included) shapes the boxes, as parse_vnnlib's; without it they are [1, joint inputs].

    >>> query = parse_query("q.vnnlib", '''(vnnlib-version <2.0>)
    ... (declare-network f (declare-input X float32 [1, 2]) (declare-output Y float32 [1, 2]))
    ... (assert (and (>= X[0, 0] -1) (<= X[0, 0] 1) (== X[0, 1] 0.5)))
    ... (assert (or (> Y[0, 1] Y[0, 0]) (>= Y[0, 0] 3)))''')
    >>> [spec] = query.specs
    >>> spec.x_lower.tolist(), spec.x_upper.tolist(), query.layout.is_plain
    ([[-1.0, 0.5]], [[1.0, 0.5]], True)
    >>> [(d.C.tolist(), d.d.tolist()) for d in spec.unsafe]
    [([[1.0, -1.0]], [0.0]), ([[-1.0, 0.0]], [-3.0])]
    """
    text = re.sub(r"\[([^\[\]()]*)\]", lambda m: "[" + "".join(m[1].split()) + "]", text)
    expressions = read_expressions(path, text)
    networks, asserts = _declarations(path, expressions)
    names = _ElementNames(path, networks, asserts)
    renamed = [_renamed_assert(path, expression, names) for expression in asserts]
    try:
        products = Products()
        conjunctions = conjoin(path, renamed, names.inputs, names.outputs, products)
        specs = _group_by_box(path, conjunctions, names.inputs, names.outputs, input_shape, dtype, products)
    except SpecError as error:
        raise names.translated(error) from None
    layout = Layout(tuple(networks), names.coordinates, names.inputs, names.outputs)
    return Query(specs, layout, products)


def _header(tensor: Declared) -> str:
    return f"{tensor.name} {tensor.dtype} [{','.join(map(str, tensor.shape))}]"


def _declarations(path: str, expressions: list[Expr]) -> tuple[list[Network], list[Expr]]:
    """The declared networks and the asserts, in file order; the version must be 2.x and come first."""
    if not expressions or expressions[0][0] != "vnnlib-version":
        raise SpecError(path, expressions[0].line if expressions else None, "a VNN-LIB 2 query must open with (vnnlib-version <2.0>)")
    version = expressions[0][1] if len(expressions[0]) == 2 and isinstance(expressions[0][1], str) else ""
    if not re.fullmatch(r"<?2\.\d+>?", version):
        raise SpecError(path, expressions[0].line, f"VNN-LIB version {version or _show(expressions[0])} is not supported "
                                                   "(2.x and the undeclared 1.0 are)")
    networks: list[Network] = []
    asserts: list[Expr] = []
    for expression in expressions[1:]:
        head = expression[0]
        if head == "declare-network":
            if asserts:
                raise SpecError(path, expression.line, "networks must be declared before the asserts")
            networks.append(_network(path, expression, networks))
        elif head == "assert":
            asserts.append(expression)
        else:
            raise SpecError(path, expression.line, f"expected declare-network or assert, got {_show(expression)[:80]}")
    if not networks:
        raise SpecError(path, None, "declares no network (declare-network NAME (declare-input ...) (declare-output ...))")
    for network in networks:
        related = network.equal_to or network.isomorphic_to
        if related is not None and related not in {n.name for n in networks}:
            raise SpecError(path, None, f"network {network.name} is declared equal or isomorphic to {related}, "
                                        "which the query does not declare")
    return networks, asserts


def _network(path: str, expression: Expr, earlier: list[Network]) -> Network:
    """One `(declare-network NAME ...)`."""
    if len(expression) < 2 or not isinstance(expression[1], str) or not NAME.match(expression[1]):
        raise SpecError(path, expression.line, f"expected (declare-network NAME ...), got {_show(expression)[:80]}")
    name = expression[1]
    taken = {n.name for n in earlier} | {t.name for n in earlier for t in (*n.inputs, *n.outputs)}
    if name in taken:
        raise SpecError(path, expression.line, f"the name {name} is declared twice")
    inputs: list[Declared] = []
    outputs: list[Declared] = []
    relations: dict[str, str] = {}
    for item in expression[2:]:
        if not isinstance(item, Expr) or not item or not isinstance(item[0], str):
            raise SpecError(path, expression.line, f"unexpected '{_show(item)}' in the declaration of network {name}")
        head = item[0]
        if head in ("equal-to", "isomorphic-to"):
            if len(item) != 2 or not isinstance(item[1], str):
                raise SpecError(path, item.line, f"expected ({head} NETWORK), got {_show(item)}")
            relations[head] = item[1]
        elif head == "declare-hidden":
            raise SpecError(path, item.line, f"network {name} declares a hidden tensor ({_show(item)[:60]}): constraints on "
                                             "hidden nodes are not supported; only inputs and outputs may be constrained")
        elif head in ("declare-input", "declare-output"):
            tensor = _tensor(path, item)
            if tensor.name in taken or any(t.name == tensor.name for t in (*inputs, *outputs)) or tensor.name == name:
                raise SpecError(path, item.line, f"the name {tensor.name} is declared twice")
            (inputs if head == "declare-input" else outputs).append(tensor)
        else:
            raise SpecError(path, item.line, f"unexpected '{head}' in the declaration of network {name} (expected "
                                             "declare-input, declare-output, equal-to or isomorphic-to)")
    if not inputs or not outputs:
        raise SpecError(path, expression.line, f"network {name} must declare at least one input and one output")
    return Network(name, tuple(inputs), tuple(outputs), relations.get("equal-to"), relations.get("isomorphic-to"))


def _tensor(path: str, item: Expr) -> Declared:
    """One `(declare-input NAME TYPE [SHAPE] ["onnx name"])` (or declare-output)."""
    parts = item[1:]
    if len(parts) not in (3, 4) or not all(isinstance(p, str) for p in parts) or not NAME.match(parts[0]):
        raise SpecError(path, item.line, f"expected ({item[0]} NAME TYPE [SHAPE]), got {_show(item)}")
    name, dtype, shape = parts[:3]
    if dtype.lower() not in FLOAT_TYPES:
        raise SpecError(path, item.line, f"{name} has element type {dtype}: only real and float types are supported")
    if not re.fullmatch(r"\[(\d+(,\d+)*)?\]", shape):
        raise SpecError(path, item.line, f"the shape of {name} must be a list of sizes such as [1,5], got {shape}")
    sizes = tuple(int(s) for s in shape[1:-1].split(",") if s)
    if any(s == 0 for s in sizes):
        raise SpecError(path, item.line, f"{name} has an empty shape {shape}")
    onnx_name = parts[3].strip('"') if len(parts) == 4 else None
    return Declared(name, dtype, sizes, onnx_name)


class _ElementNames:
    """Joint names of declared tensor elements: `X_k` for the input coordinate k (elements a top-level assert
    equates share one), `Y_k` for the k-th joint output; and the way back, for messages."""

    def __init__(self, path: str, networks: list[Network], asserts: list[Expr]):
        self.path = path
        self._words: dict[str, str] = {}
        self.tensors: dict[str, tuple[str, Declared, int]] = {}  # name -> (kind, tensor, first flat id)
        ids = {"input": 0, "output": 0}
        for network in networks:
            for kind, tensors in (("input", network.inputs), ("output", network.outputs)):
                for tensor in tensors:
                    self.tensors[tensor.name] = (kind, tensor, ids[kind])
                    ids[kind] += tensor.size
        parent = list(range(ids["input"]))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for expression in asserts:
            for left, right in _top_level_equalities(expression[1] if len(expression) == 2 else None):
                a, b = self.element(left, expression.line), self.element(right, expression.line)
                if a is not None and b is not None and a[0] == "input" and b[0] == "input":
                    parent[root(a[1])] = root(b[1])
        roots = [root(i) for i in range(ids["input"])]
        number: dict[int, int] = {}
        for r in roots:
            number.setdefault(r, len(number))
        self.joint = [number[r] for r in roots]
        self.inputs, self.outputs = len(number), ids["output"]
        self.coordinates = tuple(torch.tensor(self.joint[first:first + tensor.size], dtype=torch.long)
                                 for kind, tensor, first in self.tensors.values() if kind == "input")
        self.display: dict[str, str] = {}
        for name, (kind, tensor, first) in self.tensors.items():
            for offset in range(min(tensor.size, 4096)):  # messages name the first elements; more are rare and large
                joint = f"X_{self.joint[first + offset]}" if kind == "input" else f"Y_{first + offset}"
                index = ",".join(map(str, _unravel(offset, tensor.shape)))
                self.display.setdefault(joint, f"{name}[{index}]" if tensor.shape else name)

    def element(self, word, line: int) -> tuple[str, int] | None:
        """(kind, flat id) of a tensor element word (`X[0,3]`, or a scalar tensor's bare name), None for a number;
        a SpecError for anything else."""
        if not isinstance(word, str):
            return None
        match = ELEMENT.match(word)
        name, index = (match[1], match[2]) if match else (word, None)
        if name not in self.tensors:
            if match is None and _is_number(word):
                return None
            raise SpecError(self.path, line, f"'{word}' is neither a number nor an element of a declared tensor")
        kind, tensor, first = self.tensors[name]
        indices = [int(i) for i in index.split(",") if i] if index is not None else []
        if len(indices) != len(tensor.shape) or any(i >= s for i, s in zip(indices, tensor.shape)):
            raise SpecError(self.path, line, f"'{word}' is not an element of {name}, shape {list(tensor.shape)}")
        flat = 0
        for i, s in zip(indices, tensor.shape):
            flat = flat * s + i
        return kind, first + flat

    def word(self, word: str, line: int) -> str:
        """The VNN-LIB 1 word for a VNN-LIB 2 one: a joint `X_k`/`Y_k`, or the number as written (memoised: large
        properties repeat a few hundred words a million times)."""
        known = self._words.get(word)
        if known is not None:
            return known
        element = self.element(word, line)
        if element is None:
            renamed = word
        else:
            kind, flat = element
            renamed = f"X_{self.joint[flat]}" if kind == "input" else f"Y_{flat}"
        self._words[word] = renamed
        return renamed

    def translated(self, error: SpecError) -> SpecError:
        """`error` with joint names put back as the query writes them."""
        where = f"{error.path}:{error.line}" if error.line is not None else str(error.path)
        message = str(error)[len(where) + 2:]
        message = re.sub(r"\b[XY]_\d+\b", lambda m: self.display.get(m[0], m[0]), message)
        return type(error)(error.path, error.line, message)


def _top_level_equalities(formula) -> list[tuple[str, str]]:
    """The (left, right) word pairs of `==` comparisons that hold wherever the formula does (its top-level
    `and`s)."""
    if not isinstance(formula, Expr) or not formula:
        return []
    if formula[0] == "and":
        return [pair for part in formula[1:] for pair in _top_level_equalities(part)]
    parts = _prefix(formula)
    if parts is not None and parts[0] == "==" and isinstance(parts[1], str) and isinstance(parts[2], str):
        return [(parts[1], parts[2])]
    return []


def _prefix(formula: Expr) -> list | None:
    """A comparison as [operator, left, right], also where it is written infix, `(Y[1] < Y[3])`; None if the
    formula is not a comparison."""
    if len(formula) == 3 and isinstance(formula[1], str) and formula[1] in COMPARISONS | EQUALITIES \
            and not (isinstance(formula[0], str) and formula[0] in COMPARISONS | EQUALITIES):
        return [formula[1], formula[0], formula[2]]
    if isinstance(formula[0], str) and formula[0] in COMPARISONS | EQUALITIES:
        return list(formula)
    return None


def _renamed_assert(path: str, expression: Expr, names: _ElementNames) -> Expr:
    """An assert with its elements renamed to joint X_k/Y_k, `==` as `<=` and `>=`, `!=` as `<` or `>`."""
    renamed = Expr(["assert", *(_renamed(path, part, names, expression.line, 0) for part in expression[1:])])
    renamed.line = expression.line
    return renamed


def _renamed(path: str, formula, names: _ElementNames, line: int, depth: int):
    """_renamed_assert's walk over one formula or term."""
    if isinstance(formula, str):
        return names.word(formula, line)
    if depth > MAX_DEPTH:
        raise SpecError(path, formula.line, f"expressions nested deeper than {MAX_DEPTH} levels")
    line = formula.line
    comparison = _prefix(formula)
    if comparison is not None:
        head, left, right = comparison[0], *(_renamed(path, p, names, line, depth + 1) for p in comparison[1:])
        if head == "==":
            return _expression(line, "and", _comparison(line, "<=", left, right), _comparison(line, ">=", left, right))
        if head == "!=":
            return _expression(line, "or", _comparison(line, "<", left, right), _comparison(line, ">", left, right))
        return _comparison(line, head, left, right)
    return _expression(line, *(_renamed(path, p, names, line, depth + 1) if i else p for i, p in enumerate(formula)))


def _comparison(line: int, head: str, left, right) -> Expr:
    """A comparison, read whole (WordComparison) where both sides are words, as VNN-LIB 1's tokenizer does."""
    if isinstance(left, str) and isinstance(right, str) and head in COMPARISONS:
        comparison = WordComparison((head, left, right))
        comparison.line = line
        return comparison
    return _expression(line, head, left, right)


def _expression(line: int, *parts) -> Expr:
    expression = Expr(parts)
    expression.line = line
    return expression


def _unravel(flat: int, shape: tuple[int, ...]) -> list[int]:
    indices = []
    for size in reversed(shape):
        indices.append(flat % size)
        flat //= size
    return indices[::-1]


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True
