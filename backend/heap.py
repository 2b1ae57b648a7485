"""Image buffers reuse the process's own freed memory instead of fresh pages from the kernel.

glibc serves each allocation past its mmap threshold straight from the kernel and unmaps it on free,
and it gives the top of the heap back once more than its trim threshold is free; both thresholds
start small (128 KiB) and only the first grows by itself. A process that moves 10-30 MB images (a
12 MP result frame, the output blob, the Redis write) then faults in thousands of fresh pages per
image: in the worker, about 40% of its CPU per 12 MP task was that (system time). Fixed thresholds
keep buffers up to glibc's 32 MiB limit in the heap and keep up to 256 MiB of freed heap for the
next image. Peak memory does not grow (the same buffers, reused); what a burst freed stays with the
process instead of going back to the system.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # the most glibc accepts on 64-bit
TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024
# An operator's own malloc settings win.
OPERATOR_KNOBS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_memory() -> bool:
    """Set both thresholds; False, changing nothing, off glibc or when the environment sets malloc's own."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in OPERATOR_KNOBS):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only (musl has a mallopt that does nothing)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied: bool = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    applied = applied and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    if not applied:
        log.debug("mallopt refused the heap thresholds; keeping glibc's defaults")
    return applied
