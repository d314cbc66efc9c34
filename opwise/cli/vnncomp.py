"""`opwise verify MODEL.onnx PROP.vnnlib`: one VNN-COMP instance from the command line."""

from __future__ import annotations

import math
import sys
import time

from opwise.bounds.allocator import retain_freed_memory
from opwise.bounds.vnncomp import instance
from opwise.bounds.vnncomp.results import InstanceResult, failure_reason, write_result
from opwise.errors import InputError
from opwise.progress import LiveLine


def main_verify(args, device=None) -> int:
    """`opwise verify MODEL.onnx PROP.vnnlib --timeout S --out RESULT [--device cuda]`: print the status, write the file.

    With `--out`, any failure still writes the result file (`error` and the reason) before it is reported.
    """
    start = time.monotonic()
    try:
        timeout = args.timeout if args.timeout is not None else 60.0
        if not math.isfinite(timeout) or timeout <= 0:
            raise InputError(f"--timeout must be a positive number of seconds, got {args.timeout}")
        retain_freed_memory()
        _import_the_importer()
        line = LiveLine() if sys.stderr.isatty() and not getattr(args, "quiet", False) else None
        try:
            result = instance.verify_instance(args.model, args.vnnlib, timeout, device=device, progress=line)
        finally:
            if line is not None:
                line.close()
    except Exception as error:
        if args.out:
            try:
                write_result(args.out, InstanceResult("error", time.monotonic() - start, reason=failure_reason(error)))
            except OSError:
                pass  # the original error says more than a failure to write about it
        raise
    if args.out:
        write_result(args.out, result)
    print(f"{result.status} ({result.time:.2f} s)" + (f": {result.reason}" if result.reason else ""))
    return 0


def _import_the_importer() -> None:
    """Import the ONNX importer and torch._dynamo (its fake tensors need it) before the instance's clock
    starts: seconds of module loading are the process's start-up, not the instance's time (the suite runner's
    workers preload the same modules)."""
    import torch._dynamo  # noqa: F401

    import opwise.tracing.onnx  # noqa: F401
