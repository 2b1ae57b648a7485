"""backend/heap.py: 12 MB buffers allocated and freed over and over stop faulting in fresh pages."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from backend.settings import REPO_ROOT

# What a worker does per 12 MP task, 40 times: a few 12 MB buffers alive at once (the result frame,
# the output, the Redis write), then all freed. Prints whether the thresholds were set, and the page
# faults of the 40 rounds.
CHURN = """
import resource, sys
from backend.heap import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "tuned" else False
def round_of_buffers():
    buffers = [bytearray(12_000_000) for _ in range(3)]  # zero-filled: every page touched
    del buffers
round_of_buffers()  # the first round faults its pages in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    round_of_buffers()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def churn(mode: str, **env: str) -> tuple[bool, int]:
    done = subprocess.run(
        [sys.executable, "-c", CHURN, mode],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    applied, faults = done.stdout.split()
    return applied == "True", int(faults)


glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")


@glibc_only
def test_freed_image_buffers_are_reused_without_page_faults():
    _, untuned = churn("default")
    applied, tuned = churn("tuned")
    assert applied
    assert untuned > 40 * 2000  # buffers came fresh from the kernel: ~2,900 pages of 4 KiB each
    assert tuned < untuned / 20


@glibc_only
def test_an_operators_malloc_settings_are_left_alone():
    applied, _ = churn("tuned", MALLOC_TRIM_THRESHOLD_="1000000")
    assert not applied
