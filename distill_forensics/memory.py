"""When freed memory goes back to the system: between stages, not between batches."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from functools import cache
from typing import Any

POLARS_ALLOCATOR = "dirty_decay_ms:3000,muzzy_decay_ms:3000"
"""jemalloc options for polars: freed pages are kept for 3 s (polars' own defaults are
0.5 s before pages are marked free to reclaim and 1 s before they are returned)."""


def keep_freed_pages() -> None:
    """Let polars' allocator keep the pages it frees for a few seconds, if polars is not
    loaded yet and ``_RJEM_MALLOC_CONF`` is not set.

    Streaming extraction frees and allocates batch-sized buffers all the time.
    With polars' defaults the pages go back to the system within a second and
    the next batches fault them in again: at 16M requests extraction took
    about 5.3M page faults and 16 s of system time, against about 3.5M and
    11 s with this setting, for about 0.2 GB more at the peak. polars reads
    the variable when it loads (its own options come first, so these win).
    Library users who load polars first, or set ``_RJEM_MALLOC_CONF``
    themselves (even to nothing), keep what they have.
    """
    if "polars" not in sys.modules:
        os.environ.setdefault("_RJEM_MALLOC_CONF", POLARS_ALLOCATOR)


@cache
def _libc() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


@cache
def _malloc_trim() -> Any:
    return getattr(_libc(), "malloc_trim", None)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@cache
def _mallinfo2() -> Any:
    info = getattr(_libc(), "mallinfo2", None)  # glibc 2.33 and later
    if info is not None:
        info.restype = _MallInfo2
    return info


def free_heap_bytes() -> int | None:
    """Bytes in the C heap's free chunks (glibc's ``mallinfo2``), pages already handed back
    to the system included; None where that is unknown."""
    info = _mallinfo2()
    return None if info is None else int(info().fordblks)


def release_freed_memory(keep: int = 0) -> None:
    """Return the C heap's free pages to the system, where the C library can (glibc),
    unless it holds no more than ``keep`` bytes free.

    numpy arrays and compiled kernels' buffers of up to some tens of MB come from
    the C heap, and glibc keeps their pages after they are freed: without this, a
    stage's high-water mark stays resident under the next stage's. Within a stage
    that frees and allocates alike buffers again and again, ``keep`` lets the next
    ones reuse pages still in place instead of faulting in returned ones (glibc's
    count of free bytes includes pages handed back before, so once it passes
    ``keep`` every call hands them back).
    """
    trim = _malloc_trim()
    if trim is None:
        return
    if keep > 0:
        free = free_heap_bytes()
        if free is not None and free <= keep:
            return
    trim(0)
