"""Einsum as the matrix products opwise already bounds and explains: each pair of operands becomes one MatMul
(so a constant right side is an `aten.linear`), with permutes and views around it.

Letters of a pair are sorted into batch letters (in both operands and still needed), left and right letters
(in one operand, still needed), and contracted letters (in both, no longer needed); a letter only one operand
has and nothing needs is summed first. More than two operands are multiplied left to right. "..." stands for
the same leading axes in every operand (numpy broadcasting). A letter repeated within one operand takes that
operand's diagonal first (`aten.diagonal`, a copy of elements: "bii->bi", a trace "bii->b"), except on the batch
axis of an input-dependent operand, which is refused (it would pair samples).
"""

from __future__ import annotations

import math
import string

import torch
from torch import fx

from opwise.errors import ModelLoadError
from opwise.tracing.onnx.ops.linear import matmul
from opwise.tracing.onnx.registry import converter

aten = torch.ops.aten


@converter("Einsum", since=12)
def _einsum(builder, node, *operands):
    equation = node.attr("equation")
    equation = (equation.decode() if isinstance(equation, bytes) else equation).replace(" ", "")
    terms, output = _parse(node, equation, [len(builder.shape(operand)) for operand in operands])
    values = [_diagonals(builder, node, operand, term) for operand, term in zip(operands, terms)]
    # axis 0 of an input-dependent operand is the batch: views keep it free (-1), so the graph runs at any batch
    batch = next((term[0] for operand, term in values if isinstance(operand, fx.Node) and term), None)
    if batch is not None and batch not in output:
        builder.require_batch_kept([0], 1, f"Einsum {equation!r} sums over the batch axis")
    value, letters = values[0]
    for index, (other, other_letters) in enumerate(values[1:], start=1):
        later = set(output).union(*(term for _, term in values[index + 1 :]))
        value, letters = _pair(builder, node, value, letters, other, other_letters, later, batch)
    value, letters = _sum_unneeded(builder, value, letters, set(output))
    return builder.call(aten.permute.default, value, [letters.index(letter) for letter in output]) \
        if letters != output else value


def _parse(node, equation: str, ranks: list[int]) -> tuple[list[str], str]:
    """Each operand's letters and the output's, with "..." spelled out as letters the equation does not use."""
    inputs, arrow, output = equation.partition("->")
    terms = inputs.split(",")
    if len(terms) != len(ranks):
        raise ModelLoadError(f"Einsum '{node.name}': equation {equation!r} names {len(terms)} operands, the node has {len(ranks)}")
    spare = [letter for letter in string.ascii_letters if letter not in equation]
    widest = max((rank - len(term.replace("...", "")) for term, rank in zip(terms, ranks) if "..." in term), default=0)
    ellipsis = "".join(spare[:widest])
    terms = [term.replace("...", ellipsis[widest - (rank - len(term.replace("...", ""))):]) for term, rank in zip(terms, ranks)]
    if not arrow:  # implicit output: the ellipsis, then the letters seen once, in alphabetical order
        counts = {letter: "".join(terms).count(letter) for letter in "".join(terms)}
        output = ellipsis + "".join(sorted(letter for letter, count in counts.items() if count == 1 and letter not in ellipsis))
    else:
        output = output.replace("...", ellipsis)
    for term, rank in zip(terms, ranks):
        if len(term) != rank:
            raise ModelLoadError(f"Einsum '{node.name}': term {term!r} of {equation!r} does not match an operand of rank {rank}")
    return terms, output


def _diagonals(builder, node, value, letters: str):
    """(the operand, its letters) with every letter it repeats reduced to one axis, the diagonal's (moved last, as
    `aten.diagonal` puts it)."""
    for letter in dict.fromkeys(letters):
        while letters.count(letter) > 1:
            first = letters.index(letter)
            second = letters.index(letter, first + 1)
            if first == 0 and isinstance(value, fx.Node):
                raise ModelLoadError(f"Einsum '{node.name}': letter {letter!r} repeats on the batch axis of an input-"
                                     "dependent operand (a diagonal across samples), which opwise does not import")
            value = builder.call(aten.diagonal.default, value, 0, first, second)
            letters = letters[:first] + letters[first + 1 : second] + letters[second + 1 :] + letter
    return value, letters


def _sum_unneeded(builder, value, letters: str, needed: set[str]):
    """Sum the axes whose letters nothing needs any more."""
    dropped = [axis for axis, letter in enumerate(letters) if letter not in needed]
    if not dropped:
        return value, letters
    return builder.call(aten.sum.dim_IntList, value, dropped, False), "".join(l for l in letters if l in needed)


def _pair(builder, node, a, a_letters: str, b, b_letters: str, later: set[str], batch_letter: str | None):
    """The product of two operands as one MatMul: [batch, left, contracted] @ [batch, contracted, right]. An
    input-dependent operand goes left (the letters fix the result's layout, not the operands' order)."""
    if isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
        a, a_letters, b, b_letters = b, b_letters, a, a_letters
    a, a_letters = _sum_unneeded(builder, a, a_letters, later | set(b_letters))
    b, b_letters = _sum_unneeded(builder, b, b_letters, later | set(a_letters))
    batch = [letter for letter in a_letters if letter in b_letters and letter in later]
    contracted = [letter for letter in a_letters if letter in b_letters and letter not in later]
    left = [letter for letter in a_letters if letter not in b_letters]
    right = [letter for letter in b_letters if letter not in a_letters]
    sizes = _sizes(builder, node, (a, a_letters), (b, b_letters))
    if batch_letter in sizes:
        sizes[batch_letter] = -1
    a = _arranged(builder, a, a_letters, batch, left, contracted, sizes)
    b = _arranged(builder, b, b_letters, batch, contracted, right, sizes, b_side=True)
    product = matmul(builder, a, b)
    return _view(builder, product, [[sizes[letter]] for letter in batch + left + right]), "".join(batch + left + right)


def _sizes(builder, node, *pairs) -> dict[str, int]:
    """Each letter's size; a letter of size 1 in one operand broadcasts against the other's."""
    sizes: dict[str, int] = {}
    for value, letters in pairs:
        for letter, size in zip(letters, builder.shape(value)):
            if sizes.get(letter, 1) not in (1, size) and size != 1:
                raise ModelLoadError(f"Einsum '{node.name}': letter {letter!r} has sizes {sizes[letter]} and {size}")
            sizes[letter] = max(sizes.get(letter, 1), size)
    return sizes


def _arranged(builder, value, letters: str, batch: list[str], rows: list[str], columns: list[str], sizes, b_side=False):
    """The operand permuted to [batch, rows, columns] and viewed as [*batch, rows, columns] (the right operand
    without batch letters as a 2-D matrix, so that a constant one becomes a linear layer's weight)."""
    order = [letters.index(letter) for letter in batch + rows + columns]
    if order != list(range(len(order))):
        value = builder.call(aten.permute.default, value, order)
    full = [sizes[letter] for letter in batch + rows + columns]
    if any(have != want for have, want in zip(builder.shape(value), full) if want != -1):
        value = builder.call(aten.expand.default, value, full)
    groups = [[sizes[letter]] for letter in batch] + [[sizes[letter] for letter in rows], [sizes[letter] for letter in columns]]
    return _view(builder, value, groups[-2:] if b_side and not batch else groups)


def _view(builder, value, groups: list[list[int]]):
    """A view with one axis per group of sizes: their product, or -1 for the group holding the batch."""
    shape = [-1 if -1 in group else math.prod(group) for group in groups]
    if len(shape) == len(builder.shape(value)) and all(want in (-1, have) for have, want in zip(builder.shape(value), shape)):
        return value
    return builder.view(value, shape)
