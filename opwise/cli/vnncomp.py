"""`opwise verify MODEL.onnx PROP.vnnlib`: one VNN-COMP instance from the command line."""

from __future__ import annotations

import math

from opwise.bounds.allocator import retain_freed_memory
from opwise.bounds.vnncomp import instance
from opwise.bounds.vnncomp.results import write_result
from opwise.errors import InputError


def main_verify(args) -> int:
    """`opwise verify MODEL.onnx PROP.vnnlib --timeout S --out RESULT`: print the status, write the file."""
    timeout = args.timeout if args.timeout is not None else 60.0
    if not math.isfinite(timeout) or timeout <= 0:
        raise InputError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    retain_freed_memory()
    result = instance.verify_instance(args.model, args.vnnlib, timeout)
    if args.out:
        write_result(args.out, result)
    print(f"{result.status} ({result.time:.2f} s)")
    return 0


