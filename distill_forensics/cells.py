"""CSV rows with fewer cells than the header: found in the file's bytes.

polars pads a row cut short with empty cells, the same as cells present and
empty, so such rows would pass unseen. One compiled pass over the bytes (after
decompression, as polars detects it) finds them by their record numbers, which
are polars' row numbers for the same file. Quotes are followed as polars
follows them in RFC 4180 files: rows end at a line end outside quotes, every
quote character opening or closing a quoted stretch; cells end at a separator,
except within a cell that starts with a quote, where quotes open and close
quoted text (a quote inside an unquoted cell is text for the cells, as polars
reads most such rows; it reads some otherwise, so a file quoted that way may
have a row flagged or missed). An empty line is not a short row (it is a row
without a timestamp, counted as such).
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import nullcontext, suppress
from pathlib import Path
from typing import Any, BinaryIO, cast

import numba
import numpy as np
import pyarrow as pa
from isal import isal_zlib

from distill_forensics.jit import compiled

_WINDOW = 64 << 20
"""Bytes scanned at a time: a mapped window of a plain file, or a decompressed piece."""

_READ = 1 << 16
"""Compressed bytes read at a time."""

# The compressions polars' CSV reader recognises by their first bytes.
_GZIP = b"\x1f\x8b"
_ZLIB = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda")
_ZSTD = b"\x28\xb5\x2f\xfd"

_UNREADABLE: tuple[type[BaseException], ...] = (
    cast(type[BaseException], isal_zlib.error),  # (a class; its stub says an instance)
    pa.ArrowInvalid,
)
"""What decompressing data that is not what its first bytes say raises."""

# The scan's state between pieces of a file (see _scan_records).
_IN_QUOTES, _CELLS, _NONEMPTY, _RECORD, _TO_SKIP, _QUOTED_CELL, _IN_CELL_QUOTES, _AT_START = range(
    8
)


def _state(skip: int = 0) -> np.ndarray:
    """The scan's state at the start of a record (``skip`` records yet to pass over)."""
    state = np.zeros(8, dtype=np.int64)
    state[_CELLS] = 1
    state[_TO_SKIP] = skip
    state[_AT_START] = 1
    return state


@compiled
def _scan_records(
    buf: np.ndarray,
    sep: int,
    quote: int,
    wanted: int,
    state: np.ndarray,
    out: np.ndarray,
    n_out: int,
) -> tuple[np.ndarray, int]:
    """Scan one piece of a file, carrying ``state`` from the piece before: whether the
    row is in quotes, the cells of the current record so far, whether it has a byte
    other than a carriage return, its record number, records still to skip, whether
    the current cell started with a quote and is in quotes, and whether a cell has
    just started. Record numbers of the records with fewer than ``wanted`` cells
    are added to ``out[:n_out]`` (grown when full); returns ``out`` and the new
    count."""
    in_quotes = state[_IN_QUOTES]
    cells = state[_CELLS]
    nonempty = state[_NONEMPTY]
    record = state[_RECORD]
    to_skip = state[_TO_SKIP]
    quoted_cell = state[_QUOTED_CELL]
    in_cell_quotes = state[_IN_CELL_QUOTES]
    at_start = state[_AT_START]
    for b in buf:
        if in_cell_quotes and b != quote and in_quotes:
            continue  # (quoted text: most of a prompt's bytes)
        if b == quote:
            in_quotes ^= 1
            nonempty = 1
            if at_start:
                quoted_cell = 1
                at_start = 0
            if quoted_cell:
                in_cell_quotes ^= 1
        elif b == sep:
            nonempty = 1
            if not in_cell_quotes:
                cells += 1
                quoted_cell = 0
                at_start = 1
        elif b == 10 and not in_quotes:
            if to_skip > 0:
                to_skip -= 1
            else:
                if nonempty and cells < wanted:
                    if n_out == len(out):
                        grown = np.empty(2 * len(out), dtype=out.dtype)
                        grown[:n_out] = out[:n_out]
                        out = grown
                    out[n_out] = record
                    n_out += 1
                record += 1
            cells = 1
            nonempty = 0
            quoted_cell = 0
            in_cell_quotes = 0
            at_start = 1
        else:
            if b != 13:
                nonempty = 1
            at_start = 0
    state[_IN_QUOTES] = in_quotes
    state[_CELLS] = cells
    state[_NONEMPTY] = nonempty
    state[_RECORD] = record
    state[_TO_SKIP] = to_skip
    state[_QUOTED_CELL] = quoted_cell
    state[_IN_CELL_QUOTES] = in_cell_quotes
    state[_AT_START] = at_start
    return out, n_out


@compiled
def _next_record(buf: np.ndarray, lo: int, hi: int, quote: int, in_quotes: int) -> int:
    """Where the first record after ``hi`` starts, ``buf[lo]`` being in quotes or not
    (every quote from ``lo`` counts); ``len(buf)`` when none does."""
    quotes = 0
    for b in buf[lo:hi]:  # (a count: compiled to vector instructions)
        quotes += b == quote
    in_quotes ^= quotes & 1
    for p in range(hi, len(buf)):
        b = buf[p]
        if b == quote:
            in_quotes ^= 1
        elif b == 10 and not in_quotes:
            return p + 1
    return len(buf)


def _scan_window(
    piece: np.ndarray,
    sep: int,
    quote: int,
    wanted: int,
    state: np.ndarray,
    pool: Executor | None,
    parts: int,
) -> np.ndarray:
    """:func:`_scan_records` over one window, in ``parts`` parts scanned on ``pool``'s
    threads (the kernels let go of the GIL; ``pool`` is None for one part): each part
    after the first starts at a record start, found by counting the quotes before
    it, and its record numbers are shifted by the records before it once those are
    known. The header's window is scanned in one part."""
    parts = parts if state[_TO_SKIP] == 0 else 1
    cuts = [0]
    in_quotes = state[_IN_QUOTES]
    for k in range(1, parts):
        hi = max(cuts[-1], len(piece) * k // parts)
        start = _next_record(piece, cuts[-1], hi, quote, in_quotes)
        if start == len(piece):  # no record starts after hi
            break
        cuts.append(start)
        in_quotes = 0  # (a record starts outside quotes)
    cuts.append(len(piece))
    states = [state] + [_state() for _ in cuts[2:]]

    def scan(k: int) -> np.ndarray:
        out, n_out = _scan_records(
            piece[cuts[k] : cuts[k + 1]], sep, quote, wanted, states[k], np.empty(16, np.int64), 0
        )
        return out[:n_out]

    found = list(pool.map(scan, range(len(states)))) if pool and parts > 1 else [scan(0)]
    for k in range(1, len(states)):
        found[k] += states[k - 1][_RECORD]
        states[k][_RECORD] += states[k - 1][_RECORD]
    state[:] = states[-1]
    return np.concatenate(found)


def _inflated(fh: BinaryIO, wbits: int, *, members: bool) -> Iterator[bytes]:
    """A zlib or gzip stream's bytes (with ``members``, gzip members one after another,
    as concatenated .gz files are), about a window at a time. Whether the data is
    complete is polars' to say as it reads the rows."""
    held: list[bytes] = []
    size = 0
    for piece in _inflated_pieces(fh, wbits, members=members):
        held.append(piece)
        size += len(piece)
        if size >= _WINDOW:
            yield b"".join(held)
            held, size = [], 0
    yield b"".join(held)


def _inflated_pieces(fh: BinaryIO, wbits: int, *, members: bool) -> Iterator[bytes]:
    """:func:`_inflated`'s bytes as the decompressor gives them, from reads of ``_READ``
    bytes: small, so the bytes after a member's end (copied at each member) stay few
    however many members there are."""
    inflate = isal_zlib.decompressobj(wbits)
    data = b""
    while True:
        if not data:
            data = fh.read(_READ)
            if not data:
                break
        yield inflate.decompress(data, _WINDOW)
        data = inflate.unconsumed_tail
        if inflate.eof:
            if not members:
                return
            yield inflate.flush()
            # The bytes after this member start the next (read on when it ends here).
            data = inflate.unused_data + data
            inflate = isal_zlib.decompressobj(wbits)
    yield inflate.flush()


def _ahead(pieces: Iterator[Any]) -> Iterator[Any]:
    """``pieces``, each one decompressed in a thread of its own while the one before is
    scanned (the decompressors let go of the GIL)."""
    with ThreadPoolExecutor(max_workers=1) as ahead:
        upcoming = ahead.submit(next, pieces, None)
        while (piece := upcoming.result()) is not None:
            upcoming = ahead.submit(next, pieces, None)
            yield piece


def _pieces(path: Path) -> Iterator[np.ndarray]:
    """The file's bytes, decompressed as polars would, a window at a time (never the
    whole file in memory)."""
    with path.open("rb") as fh:
        head = fh.read(4)
        fh.seek(0)
        if head.startswith(_ZSTD):
            stream = pa.CompressedInputStream(pa.PythonFile(fh, mode="r"), "zstd")
            for piece in _ahead(iter(lambda: stream.read(_WINDOW), b"")):
                yield np.frombuffer(piece, dtype=np.uint8)
            return
        if head[:2] == _GZIP or head[:2] in _ZLIB:
            gzip = head[:2] == _GZIP
            for piece in _ahead(_inflated(fh, 31 if gzip else 15, members=gzip)):
                yield np.frombuffer(piece, dtype=np.uint8)
            return
        size = path.stat().st_size
        if size == 0:
            return
        view = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        whole = np.frombuffer(view, dtype=np.uint8)
        for start in range(0, size, _WINDOW):
            yield whole[start : start + _WINDOW]
            # The window's pages leave this process once scanned (they stay cached):
            # memory holds one window, not the file.
            if hasattr(mmap, "MADV_DONTNEED") and start % mmap.PAGESIZE == 0:
                view.madvise(mmap.MADV_DONTNEED, start, min(_WINDOW, size - start))
        del whole
        with suppress(BufferError):  # an array still held: the mapping goes with it
            view.close()


def short_rows(path: Path, separator: str, cells: int, skip: int) -> np.ndarray:
    """Row numbers (from 0, after the ``skip`` lines that end at the header) of the rows of
    the CSV file at ``path`` with fewer than ``cells`` cells, ascending.

    Raises OSError for a file that cannot be read and ValueError for one that
    cannot be decompressed.
    """
    state = _state(skip)
    found: list[np.ndarray] = []
    sep, quote = ord(separator), ord('"')
    threads = numba.get_num_threads()
    try:
        with ThreadPoolExecutor(max_workers=threads) if threads > 1 else nullcontext() as pool:
            for piece in _pieces(path):
                found.append(_scan_window(piece, sep, quote, cells, state, pool, threads))
    except _UNREADABLE as exc:
        raise ValueError(f"cannot decompress: {exc}") from None
    # A last row without a line end.
    if state[_TO_SKIP] == 0 and state[_NONEMPTY] and state[_CELLS] < cells:
        found.append(state[_RECORD : _RECORD + 1].copy())
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
