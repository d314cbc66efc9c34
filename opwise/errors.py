"""Error types. Each message says what failed and what to try; the CLI prints it as one line."""

from __future__ import annotations


class OpwiseError(Exception):
    """Base class of every error opwise raises on purpose (the CLI turns these into exit code 2)."""


class TraceError(OpwiseError):
    """The model could not be turned into a Graph by any tracing strategy."""


class ModelLoadError(OpwiseError):
    """A model spec could not be loaded (unknown builtin, missing file, factory raised, ...)."""


class InputDependentArgument(ModelLoadError):
    """An imported operator needs an argument known at import time (a slice start, a shape, indices, a branch
    condition) that depends on the model input; the importer adds what to do (e.g. fix the input elements it
    is computed from)."""


class InputError(OpwiseError):
    """An input does not fit the model or the request (shape, dtype, NaN, out-of-range target)."""


class UnsupportedOperation(OpwiseError):
    """An operator on the input-dependent path has no rule or transfer registered for an engine.

    Carries the node name, the operator key and the module path so the message can say exactly where.
    """

    def __init__(self, node: str, op: str, module_path: str | None = None, engine: str = "", hint: str = ""):
        self.node, self.op, self.module_path, self.engine = node, op, module_path, engine
        where = f" in module '{module_path}'" if module_path else ""
        what = f" {engine}" if engine else ""
        message = f"node '{node}' ({op}){where} has no{what} rule"
        if hint:
            message += f"; {hint}"
        super().__init__(message)


class SpecError(OpwiseError):
    """A specification file (e.g. VNNLIB) is malformed; names the file and line."""

    def __init__(self, path: str, line: int | None, message: str):
        self.path, self.line = path, line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


class SpecTooLarge(SpecError):
    """A specification is well formed but too large to handle (e.g. its disjunctive normal form); a verifier
    answers `unknown` with this reason instead of running out of memory."""


class TimeLimitReached(OpwiseError):
    """A computation passed the deadline it was given (`opwise.bounds.engine.deadline`); the caller answers
    `timeout`."""


def did_you_mean(name: str, choices) -> str:
    """`" (did you mean 'x'?)"` for the closest of `choices` to a mistyped `name`, else an empty string.

    >>> did_you_mean("epsilon-plus-flt", ["epsilon", "epsilon-plus-flat"])
    " (did you mean 'epsilon-plus-flat'?)"
    >>> did_you_mean("zzz", ["epsilon"])
    ''
    """
    import difflib

    close = difflib.get_close_matches(str(name).lower(), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
