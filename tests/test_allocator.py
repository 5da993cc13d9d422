"""The glibc allocator setting the CLI applies (genoformer/allocator.py)."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from genoformer.allocator import mmap_large_tensors

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# In a child process (the setting is process-wide): free a 24 MiB tensor, which raises glibc's
# dynamic mmap threshold to 24 MiB, then report how much RSS freeing a 20 MiB tensor gives back.
FREED_MB = """
import sys, torch
if sys.argv[1] == "set":
    from genoformer.allocator import mmap_large_tensors
    assert mmap_large_tensors()
def rss(): return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2 ** 20
a = torch.ones(6 * 2 ** 20); del a
b = torch.ones(5 * 2 ** 20); before = rss(); del b
print(round(before - rss()))
"""


# Free an 8 MiB block (below the mmap threshold: heap-served, at the heap's top) and report how much
# RSS that gives back: "set" applies the whole setting, "mmap-only" fixes just the mmap threshold,
# which leaves glibc's trim threshold at 128 KiB.  malloc and free straight from libc, so that
# no other allocation lands above the block.
TRIMMED_MB = """
import ctypes, os, sys
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
if sys.argv[1] == "set":
    from genoformer.allocator import mmap_large_tensors
    assert mmap_large_tensors()
else:
    assert libc.mallopt(-3, 16 * 2 ** 20) == 1
statm = os.open("/proc/self/statm", os.O_RDONLY)
def rss(): return int(os.pread(statm, 200, 0).split()[1]) * 4096 / 2 ** 20
block = libc.malloc(8 * 2 ** 20); ctypes.memset(block, 1, 8 * 2 ** 20)
before = rss(); libc.free(block)
print(round(before - rss()))
"""


def freed_mb(setting: str, script: str = FREED_MB) -> int:
    run = subprocess.run([sys.executable, "-c", script, setting], capture_output=True, text=True, check=True)
    return int(run.stdout)


@pytest.mark.skipif(not GLIBC, reason="mallopt's M_MMAP_THRESHOLD is a glibc setting")
def test_large_tensors_go_back_to_the_system_when_freed():
    assert freed_mb("set") >= 19  # mmapped: munmap on free
    assert freed_mb("default") <= 1  # heap-served after glibc raised its threshold: stays resident


@pytest.mark.skipif(GLIBC, reason="off glibc the setting is a no-op")
def test_no_op_off_glibc():
    assert mmap_large_tensors() is False


@pytest.mark.skipif(not GLIBC, reason="mallopt's M_TRIM_THRESHOLD is a glibc setting")
def test_heap_buffers_stay_mapped_for_reuse():
    assert freed_mb("mmap-only", TRIMMED_MB) >= 7  # what the trim threshold is for: 128 KiB gives the 8 MiB back
    assert freed_mb("set", TRIMMED_MB) <= 1  # kept, so the next few-MB buffer costs no page faults
