"""LSTM, GRU and RNN, unrolled over their (static) sequence length at import time.

opwise graphs are shape-specialized and its engines know elementwise activations, products and
`aten.linear`, not recurrent kernels, so each recurrent node becomes one `aten.linear(X, W, Wb)` per
direction over the whole sequence and then, per time step, `aten.select` of that step,
`aten.linear(H, R, Rb)` of the previous state (the constant Rb while H is zero), `aten.slice` per gate, the
gate activations (`aten.sigmoid` / `aten.tanh` / `aten.relu`) and `aten.mul` / `aten.add` for the state updates. Steps run first to last (forward), last to
first (reverse) or both (bidirectional); the outputs Y, Y_h and Y_c are `aten.stack`s of the step states,
built only when some node reads them. An omitted initial state is zero and its terms are left out.
Wb stays with the input's map and Rb with the state's, as in the ONNX equations and in what opwise traces from
torch.nn.LSTM / GRU / RNN: rules that do not split a layer's relevance in proportion to its terms (flat, z⁺,
α-β) then explain a torch module and its ONNX export alike.

Supported: `direction` forward / reverse / bidirectional, optional B, initial_h, initial_c (constants or
input-dependent), LSTM peepholes P, GRU `linear_before_reset` 0 and 1, `layout` 0 (sequence-first) and 1
(batch-first, opset 14), `activations` Sigmoid, Tanh and Relu. Refused with ModelLoadError naming the
node: `clip`, LSTM `input_forget=1`, other activations, input-dependent weights (W, R, B, P), input-dependent
`sequence_lens` or one shorter than the sequence, and a sequence length the import does not know (layout 0
with X a graph input whose leading axis is symbolic). With layout 0 the leading axis of X is the sequence,
so a re-import at another batch size (which resizes the leading axis) is refused as well.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import fx

from opwise.errors import ModelLoadError
from opwise.tracing.onnx.registry import converter

aten = torch.ops.aten

_ACTIVATIONS = {"sigmoid": aten.sigmoid.default, "tanh": aten.tanh.default, "relu": aten.relu.default}
_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}


@dataclasses.dataclass
class _Recurrence:
    """What LSTM, GRU and RNN share: the checked attributes, weights per direction, and the unrolling steps."""

    builder: Any
    node: Any
    layout: int
    directions: int
    hidden: int
    length: int
    batch: int  # X's batch size (axis 1 of X with layout 0, axis 0 with layout 1)
    weights: list[torch.Tensor]  # W per direction, [gates * hidden, input]
    recurrent: list[torch.Tensor]  # R per direction, [gates * hidden, hidden]
    biases: list[torch.Tensor | None]  # B per direction, [2 * gates * hidden] (Wb then Rb)
    activations: list[list[Any]]  # ATen ops per direction

    def error(self, what: str, hint: str) -> ModelLoadError:
        return _refusal(self.node, what, hint)

    def reversed_steps(self, direction: int) -> bool:
        return self.node.attr("direction", "forward") == "reverse" or direction == 1

    def steps(self, direction: int) -> list[int]:
        order = list(range(self.length))
        return order[::-1] if self.reversed_steps(direction) else order

    def projection(self, x, direction: int, bias):
        """X·Wᵀ + bias for every step at once ([seq, batch, gates·hidden] or batch-first)."""
        return self.builder.call(aten.linear.default, x, self.weights[direction], bias)

    def step(self, projected, t: int):
        return self.builder.call(aten.select.int, projected, self.layout, t)

    def state(self, value, direction: int, name: str):
        """Direction `direction` of an initial state ([batch or 1, hidden]); None for an omitted (zero) one."""
        if value is None:
            return None
        builder = self.builder
        if isinstance(value, fx.Node) and self.layout == 0:
            builder.require_batch_kept([0], 3, f"{name} with layout=0 (direction-first) reads axis 0 as the direction")
        state = builder.call(aten.select.int, value, 1 if self.layout else 0, direction)
        if isinstance(state, fx.Node) or state.shape[0] in (1, self.batch):
            return state
        if bool((state == state[:1]).all()):  # one state for every sample: it holds for any batch size
            return state[:1]
        if builder.rebatched and self.layout == 1:
            raise builder.batch_error(f"its constant {name} holds a different state per sample of the declared batch")
        raise self.error(f"its constant {name} holds states for {state.shape[0]} samples, not X's batch of "
                         f"{self.batch}", "give one state per sample of X (or one for all)")

    def gates(self, projected_step, h, weight: torch.Tensor, bias: torch.Tensor | None = None):
        """projected_step + H·weightᵀ + bias; while H is zero (None) only the constant bias is added."""
        if h is None:
            return _add(self.builder, projected_step, bias)
        return _add(self.builder, projected_step, self.builder.call(aten.linear.default, h, weight, bias))

    def chunk(self, gates, start: int, stop: int | None = None):
        """Gates `start` up to `stop` (default just `start`) of a [batch, gates·hidden] value."""
        stop = start + 1 if stop is None else stop
        return self.builder.call(aten.slice.Tensor, gates, 1, start * self.hidden, stop * self.hidden)

    def activate(self, direction: int, which: int, value):
        return self.builder.call(self.activations[direction][which], value)

    def outputs(self, per_step: list[list[Any]], last: list[list[Any]]) -> tuple:
        """(Y, then one final state per kind) from states per direction: `per_step[d][t]`, `last[kind][d]`.

        An output no node reads is None, so no unused stack nodes are left in the graph.
        """
        builder, node = self.builder, self.node
        used = [output_used(builder, node, index) for index in range(1 + len(last))]
        y = None
        if used[0]:
            # per direction [seq, batch, H] (layout 0) or [batch, seq, H] (layout 1), then the direction axis
            sequences = [_stack(builder, states, self.layout) for states in per_step]
            y = _stack(builder, sequences, 1 if self.layout == 0 else 2)
        finals = [_stack(builder, states, self.layout) if used[1 + k] else None for k, states in enumerate(last)]
        return (y, *finals)


def _refusal(node, what: str, hint: str) -> ModelLoadError:
    """The error for what opwise does not import: which node, what in it, and what opwise supports instead."""
    return ModelLoadError(f"ONNX node '{node.name}' ({node.op_type}, opset {node.opset}): {what}; {hint}")


def output_used(builder, node, index: int) -> bool:
    """Whether some node (or the graph output) reads output `index` of `node`."""
    name = node.outputs[index] if index < len(node.outputs) else ""
    return bool(name) and builder.use_counts.get(name, 0) > 0


def _stack(builder, values: list[Any], dim: int):
    if len(values) == 1:
        return builder.call(aten.unsqueeze.default, values[0], dim)
    return builder.call(aten.stack.default, list(values), dim)


def _add(builder, a, b):
    """a + b where either may be None (a zero term): the other is returned unchanged."""
    if a is None or b is None:
        return b if a is None else a
    if isinstance(a, torch.Tensor) and isinstance(b, fx.Node):
        a, b = b, a
    return builder.call(aten.add.Tensor, a, b)


def _sub(builder, a, b):
    return builder.call(aten.sub.Tensor, a, b)


def _mul(builder, a, b):
    """a ⊙ b, None when either factor is None (zero)."""
    if a is None or b is None:
        return None
    if isinstance(a, torch.Tensor) and isinstance(b, fx.Node):
        a, b = b, a
    return builder.call(aten.mul.Tensor, a, b)


def _read(builder, node, x, w, r, b, sequence_lens, gates: int, defaults: tuple[str, ...]) -> _Recurrence:
    """Check the attributes and inputs shared by LSTM, GRU and RNN, refusing what cannot be unrolled."""

    def error(what: str, hint: str) -> ModelLoadError:
        return _refusal(node, what, hint)

    direction = node.attr("direction", "forward")
    if direction not in _DIRECTIONS:
        raise error(f"attribute direction='{direction}' is not an ONNX direction",
                    "use forward, reverse or bidirectional")
    directions = _DIRECTIONS[direction]
    if node.attr("clip") is not None:
        raise error(f"attribute clip={node.attr('clip')} clips the gate inputs, which opwise does not import",
                    "export the model without clip (opwise supports recurrent nodes without cell clipping)")
    for name, value in (("W", w), ("R", r), ("B", b)):
        if isinstance(value, fx.Node):
            raise error(f"input {name} depends on the model input",
                        "opwise imports recurrent weights W, R, B and P only as constants (initializers)")
    layout = int(node.attr("layout", 0))
    if layout not in (0, 1):
        raise error(f"attribute layout={layout} is not an ONNX layout", "use 0 (sequence-first) or 1 (batch-first)")
    if w.dim() != 3 or r.dim() != 3 or w.shape[0] != directions or r.shape[0] != directions:
        raise error(f"W {list(w.shape)} and R {list(r.shape)} do not hold {directions} direction(s) of weights",
                    f"W must be [{directions}, {gates}·hidden, input] and R [{directions}, {gates}·hidden, hidden]")
    hidden = int(r.shape[-1])
    declared = node.attr("hidden_size")
    if w.shape[1] != gates * hidden or r.shape[1] != gates * hidden or declared not in (None, hidden):
        raise error(f"W {list(w.shape)}, R {list(r.shape)} and hidden_size={declared} disagree",
                    f"R must be [directions, {gates}·hidden_size, hidden_size]")
    if b is not None and list(b.shape) != [directions, 2 * gates * hidden]:
        raise error(f"B {list(b.shape)} is not [{directions}, {2 * gates * hidden}]", "fix B or leave it out")

    if isinstance(sequence_lens, fx.Node):
        raise error("input sequence_lens depends on the model input",
                    "opwise unrolls every batch row over the full sequence: leave sequence_lens out or make it a "
                    "constant equal to seq_length")
    shape = builder.shape(x)
    if len(shape) != 3:
        raise error(f"X has shape {shape}",
                    "X must be [seq_length, batch, input] (layout 0) or [batch, seq_length, input] (layout 1)")
    length = shape[1] if layout else shape[0]
    if isinstance(x, fx.Node) and layout == 0:
        if x.op == "placeholder" and builder.declared_batch is None:
            raise error(
                "the sequence length is not known at import: X is a graph input whose leading axis (the sequence, "
                "with layout=0) the file leaves symbolic, so opwise would set it to the batch size",
                "opwise unrolls over a fixed sequence length: fix that dimension in the ONNX file "
                "(onnx.tools.update_model_dims) or export with layout=1 (batch-first)")
        if builder.rebatched:
            raise builder.batch_error("with layout=0 the leading axis of X is the sequence, which the recurrence runs "
                                      "along (export with layout=1, batch-first, to import at other batch sizes)")
    if length < 1:
        raise error(f"X has an empty sequence (shape {shape})", "opwise imports recurrent nodes over 1 or more steps")
    if sequence_lens is not None and bool((sequence_lens != length).any()):
        raise error(f"input sequence_lens {sequence_lens.tolist()} is not seq_length={length} for every batch row",
                    "opwise supports only full-length sequences: leave sequence_lens out or pad every row to the "
                    "full length")

    names = node.attr("activations")
    if names is None:
        names = list(defaults)
    names = [name.decode() if isinstance(name, bytes) else str(name) for name in names]
    if len(names) == len(defaults) and directions == 2:
        names = names * 2
    if len(names) != len(defaults) * directions:
        raise error(f"attribute activations={names} does not name {len(defaults)} function(s) per direction",
                    f"list {len(defaults) * directions} activations (defaults {list(defaults)} per direction)")
    unknown = [name for name in names if name.lower() not in _ACTIVATIONS]
    if unknown:
        raise error(f"attribute activations names {unknown}, which opwise does not import in recurrent nodes",
                    "opwise supports Sigmoid, Tanh and Relu there (ATen ops with relevance and bound rules)")
    ops = [_ACTIVATIONS[name.lower()] for name in names]
    per_direction = [ops[d * len(defaults) : (d + 1) * len(defaults)] for d in range(directions)]

    def split(value):
        return [None] * directions if value is None else [_direction(builder, value, d) for d in range(directions)]

    batch = shape[0] if layout else shape[1]
    return _Recurrence(builder, node, layout, directions, hidden, length, batch, split(w), split(r), split(b),
                       per_direction)


def _direction(builder, constant: torch.Tensor, direction: int) -> torch.Tensor:
    """One direction of a weight; through `builder.call` so the get_attr names its initializer."""
    return builder.call(aten.select.int, constant, 0, direction)


def _rows(builder, constant: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """constant[start:stop], remembered as the same initializer."""
    return builder.call(aten.slice.Tensor, constant, 0, start, stop)


def _split_bias(builder, bias: torch.Tensor | None, size: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(Wb, Rb) from B = [Wb, Rb] (each `size` entries); (None, None) without B."""
    if bias is None:
        return None, None
    return _rows(builder, bias, 0, size), _rows(builder, bias, size, 2 * size)


def _constant_or_refuse(rnn: _Recurrence, value, name: str):
    if isinstance(value, fx.Node):
        raise rnn.error(f"input {name} depends on the model input",
                        "opwise imports recurrent weights W, R, B and P only as constants (initializers)")
    return value


@converter("LSTM", since=1)
def _lstm(builder, node, x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, p=None):
    """LSTM, gates i, o, f, c (W, R, B in that order; peepholes P in order i, o, f):
    i = f(X·Wiᵀ + H·Riᵀ + Pi⊙C + b), f' likewise with Pf, c̃ = g(X·Wcᵀ + H·Rcᵀ + b), C' = f'⊙C + i⊙c̃,
    o = f(X·Woᵀ + H·Roᵀ + Po⊙C' + b), H' = o⊙h(C')."""
    rnn = _read(builder, node, x, w, r, b, sequence_lens, 4, ("Sigmoid", "Tanh", "Tanh"))
    if node.attr("input_forget", 0):
        raise rnn.error("attribute input_forget=1 couples the input and forget gates, which opwise does not import",
                        "export the LSTM with input_forget=0 (the default), which opwise supports")
    p = _constant_or_refuse(rnn, p, "P")
    size = rnn.hidden
    wants_h = output_used(builder, node, 0) or output_used(builder, node, 1)
    per_step, last_h, last_c = [], [], []
    for d in range(rnn.directions):
        bias, recurrent_bias = _split_bias(builder, rnn.biases[d], 4 * size)
        projected = rnn.projection(x, d, bias)
        h, c = rnn.state(initial_h, d, "initial_h"), rnn.state(initial_c, d, "initial_c")
        peephole = None if p is None else _direction(builder, p, d)
        peep_i, peep_o, peep_f = [None if p is None else _rows(builder, peephole, k * size, (k + 1) * size)
                                  for k in range(3)]
        f, g, h_act = rnn.activations[d]
        states = [None] * rnn.length
        steps = rnn.steps(d)
        for count, t in enumerate(steps):
            gates = rnn.gates(rnn.step(projected, t), h, rnn.recurrent[d], recurrent_bias)
            input_gate = builder.call(f, _add(builder, rnn.chunk(gates, 0), _mul(builder, c, peep_i)))
            forget = None  # no forget gate on a zero cell
            if c is not None:
                forget = builder.call(f, _add(builder, rnn.chunk(gates, 2), _mul(builder, c, peep_f)))
            candidate = builder.call(g, rnn.chunk(gates, 3))
            c = _add(builder, _mul(builder, forget, c), _mul(builder, input_gate, candidate))
            if count == len(steps) - 1 and not wants_h:
                break  # only Y_c is read: the last step's H would be left unused
            output_gate = builder.call(f, _add(builder, rnn.chunk(gates, 1), _mul(builder, c, peep_o)))
            h = builder.call(aten.mul.Tensor, output_gate, builder.call(h_act, c))
            states[t] = h
        per_step.append(states)
        last_h.append(h)
        last_c.append(c)
    return rnn.outputs(per_step, [last_h, last_c])


@converter("GRU", since=1)
def _gru(builder, node, x, w, r, b=None, sequence_lens=None, initial_h=None):
    """GRU, gates z, r, h: z = f(X·Wzᵀ + H·Rzᵀ + b), r likewise, h̃ = g(X·Whᵀ + (r⊙H)·Rhᵀ + Rbh + Wbh) or, with
    linear_before_reset=1, g(X·Whᵀ + r⊙(H·Rhᵀ + Rbh) + Wbh); H' = (1 − z)⊙h̃ + z⊙H, emitted as h̃ + z⊙(H − h̃)."""
    rnn = _read(builder, node, x, w, r, b, sequence_lens, 3, ("Sigmoid", "Tanh"))
    size = rnn.hidden
    before_reset = bool(node.attr("linear_before_reset", 0))
    per_step, last_h = [], []
    for d in range(rnn.directions):
        bias, recurrent_bias = _split_bias(builder, rnn.biases[d], 3 * size)
        projected = rnn.projection(x, d, bias)
        gate_bias, candidate_bias = (None, None) if recurrent_bias is None else (
            _rows(builder, recurrent_bias, 0, 2 * size), _rows(builder, recurrent_bias, 2 * size, 3 * size))
        h = rnn.state(initial_h, d, "initial_h")
        f, g = rnn.activations[d]
        gate_weight = _rows(builder, rnn.recurrent[d], 0, 2 * size)
        candidate_weight = _rows(builder, rnn.recurrent[d], 2 * size, 3 * size)
        states = [None] * rnn.length
        for t in rnn.steps(d):
            step = rnn.step(projected, t)
            update_reset = rnn.gates(rnn.chunk(step, 0, 2), h, gate_weight, gate_bias)
            update = builder.call(f, rnn.chunk(update_reset, 0))
            # r multiplies H (or H·Rhᵀ + Rbh): on a zero H without Rbh it is not needed
            needs_reset = h is not None or (before_reset and candidate_bias is not None)
            reset = builder.call(f, rnn.chunk(update_reset, 1)) if needs_reset else None
            candidate_input = rnn.chunk(step, 2)
            if before_reset:  # r ⊙ (H·Rhᵀ + Rbh)
                recurrent = candidate_bias if h is None else builder.call(aten.linear.default, h, candidate_weight,
                                                                          candidate_bias)
                candidate = builder.call(g, _add(builder, candidate_input, _mul(builder, reset, recurrent)))
            else:  # (r ⊙ H)·Rhᵀ + Rbh
                gated = _mul(builder, reset, h)
                recurrent = candidate_bias if gated is None else builder.call(aten.linear.default, gated,
                                                                              candidate_weight, candidate_bias)
                candidate = builder.call(g, _add(builder, candidate_input, recurrent))
            if h is None:  # H' = (1 − z) ⊙ h̃
                h = builder.call(aten.sub.Tensor, candidate, builder.call(aten.mul.Tensor, update, candidate))
            else:
                h = _add(builder, candidate, builder.call(aten.mul.Tensor, update, _sub(builder, h, candidate)))
            states[t] = h
        per_step.append(states)
        last_h.append(h)
    return rnn.outputs(per_step, [last_h])


@converter("RNN", since=1)
def _rnn(builder, node, x, w, r, b=None, sequence_lens=None, initial_h=None):
    """Simple RNN: H' = f(X·Wᵀ + H·Rᵀ + Wb + Rb), f Tanh by default."""
    rnn = _read(builder, node, x, w, r, b, sequence_lens, 1, ("Tanh",))
    size = rnn.hidden
    per_step, last_h = [], []
    for d in range(rnn.directions):
        bias, recurrent_bias = _split_bias(builder, rnn.biases[d], size)
        projected = rnn.projection(x, d, bias)
        h = rnn.state(initial_h, d, "initial_h")
        states = [None] * rnn.length
        for t in rnn.steps(d):
            h = rnn.activate(d, 0, rnn.gates(rnn.step(projected, t), h, rnn.recurrent[d], recurrent_bias))
            states[t] = h
        per_step.append(states)
        last_h.append(h)
    return rnn.outputs(per_step, [last_h])
