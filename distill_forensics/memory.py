"""Handing the memory a stage freed back to the system before the next stage starts."""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache
from typing import Any


@cache
def _malloc_trim() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)


def release_freed_memory() -> None:
    """Return the C heap's free pages to the system, where the C library can (glibc).

    numpy arrays and compiled kernels' buffers of up to some tens of MB come from
    the C heap, and glibc keeps their pages after they are freed: without this, a
    stage's high-water mark stays resident under the next stage's.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
