"""Compiled kernels: numba, with its machine code cached when the package directory allows,
and the Arrow buffers they read text from."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import polars as pl
import pyarrow as pa


def compiled(func: Callable[..., Any] | None = None, *, parallel: bool = False) -> Any:
    """Compile with numba, caching the machine code next to the source when that is writable."""

    def compile_(f: Callable[..., Any]) -> Any:
        try:
            return numba.njit(cache=True, nogil=True, parallel=parallel)(f)
        except RuntimeError:  # no writable cache directory: compile on first use instead
            return numba.njit(nogil=True, parallel=parallel)(f)

    return compile_ if func is None else compile_(func)


def string_buffers(texts: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The texts' bytes as one Arrow large-string array has them: offsets, bytes, validity."""
    text = texts.cast(pl.String).rechunk().to_arrow().cast(pa.large_string())
    n = len(text)
    _, offsets_buf, data_buf = text.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[text.offset : text.offset + n + 1]
    data = (
        np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    )
    valid = text.is_valid().to_numpy(zero_copy_only=False)
    return offsets, data, valid
