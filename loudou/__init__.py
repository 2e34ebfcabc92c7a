"""loudou: nightly sales-funnel pipelines."""

import ctypes
import ctypes.util
import os

import pyarrow as pa

# Prefect gives its temporary server 20 s to start; the first start on a fresh machine (a cold
# venv, the server's database created and migrated) took longer here once and failed the demo.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

# pandas keeps text in Arrow buffers. Arrow's own allocator (jemalloc) keeps freed pages for
# reuse, so a night's transient text frames raise its peak RSS; the system allocator gives
# them back (scale 100, the transform alone: peak 5,971 -> 5,874 MB, 91.6 -> 87.8 s).
pa.set_memory_pool(pa.system_memory_pool())

# ...and glibc gives each thread that allocates an arena of its own, where what the thread
# frees stays: one arena for the whole process, set before any thread starts, lowered the
# scale-20 night's peak with its two lanes of marts on threads by 90 MB (1,647 -> 1,560) at
# no cost in time. -8 is M_ARENA_MAX in glibc's malloc.h; other C libraries have no mallopt.
_mallopt = getattr(ctypes.CDLL(ctypes.util.find_library("c") or None), "mallopt", None)
if _mallopt is not None:
    _mallopt(-8, 1)
