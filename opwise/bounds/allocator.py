"""Keep freed memory in the process for reuse: what long batched bounding runs on CPU need from glibc.

Branch-and-bound bounds batch after batch of domains with the same large temporaries (coefficient tensors
of [specs, boxes, inputs]). By default glibc serves every allocation above a dynamic threshold (at most
32 MiB) with a fresh kernel mapping and unmaps it when freed, so each round pays the kernel again for
zeroed pages: on VNN-COMP's dist_shift index3363 (8 of 792 inputs free), 45% of the wall time was spent
in the kernel this way, and the instance took 152 s instead of 53 s. PyTorch keeps no CPU cache of its
own, so opwise asks glibc to serve large blocks from its heap and to keep what is freed. The memory high-water
mark is then held until the process ends, which suits the one-process-per-instance runners that call this
(`opwise verify`, `run_suite`'s workers); a script may call it too.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_applied = False


def retain_freed_memory(top_pad: int = 256 << 20) -> bool:
    """Have glibc's malloc keep freed memory for reuse (no per-allocation mappings, no trimming): True when
    applied or already applied, False where the C library is not glibc (nothing changes there).

    >>> retain_freed_memory() in (True, False)
    True
    """
    global _applied
    if _applied:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; the trim threshold is a C int, so 2 GiB - 1 is "never" in practice
    _applied = all(mallopt(option, value) == 1 for option, value in
                   ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, top_pad)))
    return _applied
