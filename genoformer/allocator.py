"""Keep large tensors out of glibc's heap, so the peak RSS of a long window stays near its live tensors.

glibc serves allocations below its mmap threshold from the heap, and raises that threshold on
its own (up to 32 MiB) as large blocks are freed.  Training on long windows churns through
tensors of a few to tens of MB (per-head projections, per-block attention buffers): once they
are heap-served, freed blocks stay resident between longer-lived ones and the peak grows.  A
fixed threshold of 16 MiB keeps the few-MB per-block buffers in the heap, where reusing them
costs no page faults, and returns every larger tensor to the system the moment it is freed.

Fixing the mmap threshold also freezes glibc's trim threshold at its 128 KiB default (its
dynamic rule keeps it at twice the mmap threshold): every free at the top of the heap would then
give the pages back, and the next few-MB buffer fault them in again.  So the trim threshold is
set to twice the mmap threshold, as glibc's own rule would.  The measured effect of both is in
docs/benchmarks.md.

The setting is process-wide, so the library never applies it on import: the `genoformer`
command calls it for its own process, and a notebook or script may call it once at start.
"""
from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers, from glibc's malloc.h
DEFAULT_THRESHOLD = 16 * 2 ** 20


def mmap_large_tensors(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes and its trim threshold at twice that; True if
    applied (False off glibc, e.g. macOS, musl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:  # glibc's soname: ctypes.util.find_library would spawn ldconfig on every start-up
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, threshold) == 1 and mallopt(M_TRIM_THRESHOLD, 2 * threshold) == 1
