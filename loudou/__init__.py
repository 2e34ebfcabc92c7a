"""loudou: nightly sales-funnel pipelines."""

import os

import pyarrow as pa

from loudou.memory import one_malloc_arena

# Prefect gives its temporary server 20 s to start; the first start on a fresh machine (a cold
# venv, the server's database created and migrated) took longer here once and failed the demo.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

# pandas keeps text in Arrow buffers. Arrow's own allocator (jemalloc) keeps freed pages for
# reuse, so a night's transient text frames raise its peak RSS; the system allocator gives
# them back (scale 100, the transform alone: peak 5,971 -> 5,874 MB, 91.6 -> 87.8 s).
pa.set_memory_pool(pa.system_memory_pool())

# ...and glibc's malloc one arena for the whole process (see loudou.memory), set before any
# thread starts
one_malloc_arena()
