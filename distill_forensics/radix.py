"""Sorting of integer keys by their digits (least significant first), on all cores.

Linking sorts tens of millions of pair keys to make them distinct, and
extraction sorts packed group keys; numpy's comparison sort took about 80 ns
a key on them, against about 10 for a radix sort of their few dozen bits.
"""

from __future__ import annotations

import numba
import numpy as np

from distill_forensics.jit import compiled

_DIGIT_BITS = 11
"""Bits per pass at most: the per-block counts (2,048 of them) stay in the fastest cache."""

_BLOCK_MIN = 1 << 16
"""Keys per block at least: smaller blocks cost more in counting than they save."""


@compiled(parallel=True)
def _radix_sort(keys: np.ndarray, bits: int, blocks: int, dst: np.ndarray) -> np.ndarray:
    """uint64 ``keys`` (below ``2**bits``) sorted, counted and moved in ``blocks`` blocks
    at once between ``keys`` and ``dst`` (as long, not overlapping it); the result
    is one of the two buffers, and both are overwritten."""
    n = len(keys)
    passes = max(1, (bits + _DIGIT_BITS - 1) // _DIGIT_BITS)
    digit = (bits + passes - 1) // passes
    size = 1 << digit
    mask = np.uint64(size - 1)
    src = keys
    # Each block's first position for each digit value: blocks scatter at once,
    # each into its own slots, and equal digits keep their order (stable).
    start = np.zeros((blocks, size), np.int64)
    for p in range(passes):
        shift = np.uint64(p * digit)
        for blk in numba.prange(blocks):
            here = start[blk]
            here[:] = 0
            for t in range(blk * n // blocks, (blk + 1) * n // blocks):
                here[(src[t] >> shift) & mask] += 1
        total = 0
        for v in range(size):
            for blk in range(blocks):
                count = start[blk, v]
                start[blk, v] = total
                total += count
        for blk in numba.prange(blocks):
            here = start[blk]
            for t in range(blk * n // blocks, (blk + 1) * n // blocks):
                key = src[t]
                v = (key >> shift) & mask
                dst[here[v]] = key
                here[v] += 1
        src, dst = dst, src
    return src


def _blocks(n: int) -> int:
    return max(1, min(2 * numba.get_num_threads(), n // _BLOCK_MIN))


_SIGN = np.uint64(1 << 63)


def _unsigned(keys: np.ndarray) -> tuple[np.ndarray, bool]:
    """int64 ``keys`` as uint64 in the same order (overwriting ``keys``): the same bits
    when none is negative, else with the sign bit flipped; and whether it was flipped."""
    flip = bool(keys.min() < 0)
    unsigned = keys.view(np.uint64)
    if flip:
        unsigned ^= _SIGN
    return unsigned, flip


def sort_keys(keys: np.ndarray, spare: np.ndarray | None = None) -> np.ndarray:
    """``np.sort(keys)`` for int64 keys, by their digits (as many passes as the largest
    key has bits: non-negative keys of a few dozen bits sort fastest). ``keys`` is
    overwritten and its buffer may be the result's.

    ``spare``, an int64 array at least as long as ``keys`` and apart from it, is
    used as the second buffer (and may hold the result) instead of a new one:
    callers that sort one large array after another save faulting in fresh memory.
    """
    if keys.dtype != np.int64:
        raise TypeError(f"sort_keys takes int64 keys, not {keys.dtype}")
    if len(keys) < 2:
        return keys
    n = len(keys)
    if spare is None or len(spare) < n:
        spare = np.empty(n, dtype=np.int64)
    elif spare.dtype != np.int64 or np.may_share_memory(spare[:n], keys):
        raise ValueError("sort_keys needs a spare int64 buffer apart from the keys")
    unsigned, flip = _unsigned(keys)
    out = _radix_sort(
        unsigned, max(1, int(unsigned.max()).bit_length()), _blocks(n), spare[:n].view(np.uint64)
    )
    if flip:
        out ^= _SIGN
    return out.view(np.int64)


def argsort_keys(keys: np.ndarray) -> np.ndarray:
    """``np.argsort(keys, kind="stable")`` for integer keys: each key packed with its
    position in one 64-bit word and those sorted by their digits, when they fit."""
    return sort_with_order(keys)[1]


def sort_with_order(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.sort(keys)`` as int64 and ``np.argsort(keys, kind="stable")``, from one sort:
    each key packed with its position in one 64-bit word and those sorted by their
    digits, when they fit (``keys`` stay as they are)."""
    n = len(keys)
    if n < 2:
        return keys.astype(np.int64), np.arange(n, dtype=np.int64)
    unsigned, flip = _unsigned(keys.astype(np.int64))  # a copy: keys stay as they are
    pos_bits = (n - 1).bit_length()
    key_bits = int(unsigned.max()).bit_length()
    if key_bits + pos_bits > 64:
        order = np.argsort(keys, kind="stable")
        return keys[order].astype(np.int64), order
    packed = (unsigned << np.uint64(pos_bits)) | np.arange(n, dtype=np.uint64)
    words = _radix_sort(packed, key_bits + pos_bits, _blocks(n), np.empty_like(packed))
    order = (words & np.uint64((1 << pos_bits) - 1)).view(np.int64)
    words >>= np.uint64(pos_bits)
    if flip:
        words ^= _SIGN
    return words.view(np.int64), order
