"""Compiled kernels: numba, with its machine code cached when the package directory allows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba


def compiled(func: Callable[..., Any] | None = None, *, parallel: bool = False) -> Any:
    """Compile with numba, caching the machine code next to the source when that is writable."""

    def compile_(f: Callable[..., Any]) -> Any:
        try:
            return numba.njit(cache=True, nogil=True, parallel=parallel)(f)
        except RuntimeError:  # no writable cache directory: compile on first use instead
            return numba.njit(nogil=True, parallel=parallel)(f)

    return compile_ if func is None else compile_(func)
