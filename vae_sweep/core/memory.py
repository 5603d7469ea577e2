"""Handing freed memory back to the operating system between the phases of a job."""

from __future__ import annotations

import ctypes
import functools
import sys


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc's; musl and others lack it
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Return the free blocks of the C heap to the system (glibc's malloc_trim; a no-op elsewhere).

    glibc keeps freed tensors' blocks up to its adaptive mmap threshold (32 MB) for reuse, which keeps loops fast
    but leaves the resident size at each phase's high-water mark; the next phase then starts from there. A call
    between phases costs well under a millisecond.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
