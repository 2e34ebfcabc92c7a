"""Handing memory a phase freed back to the system before the next one begins."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
# glibc only: other C libraries give freed pages back on their own or have no such call
_malloc_trim = getattr(_libc, "malloc_trim", None)


def release_freed_memory() -> None:
    """Collect the garbage in reference cycles and return the heap's free pages.

    Great Expectations leaves its batches (copies of the columns it checked) in reference
    cycles that Python's collector may not reach for a long while; at scale 100 the gate
    left 5.1 GB resident of which 1.7 GB was live, and the transform's peak after it was
    7.1 GB without this call and 5.7 GB with it, in one run each (the call takes 0.5 s)."""
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
