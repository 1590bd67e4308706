"""Polars' allocator options are set when the package loads first, and only then."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from distill_forensics import memory
from distill_forensics.memory import POLARS_ALLOCATOR

_SHOW = "import os; {first}import distill_forensics; print(os.environ.get('_RJEM_MALLOC_CONF'))"


def _conf(first: str = "", **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    out = subprocess.run(
        [sys.executable, "-c", _SHOW.format(first=first)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_the_package_sets_polars_allocator_options():
    assert POLARS_ALLOCATOR in _conf()


def test_a_users_allocator_options_are_kept():
    mine = _conf(_RJEM_MALLOC_CONF="dirty_decay_ms:0")
    assert "dirty_decay_ms:0" in mine and POLARS_ALLOCATOR not in mine
    # Set to nothing: polars' own defaults, not ours.
    assert POLARS_ALLOCATOR not in _conf(_RJEM_MALLOC_CONF="")


def test_nothing_is_set_once_polars_is_loaded():
    assert POLARS_ALLOCATOR not in _conf(first="import polars; ")


def test_free_heap_pages_are_returned_above_what_is_kept(monkeypatch):
    trims: list[int] = []
    monkeypatch.setattr(memory, "_malloc_trim", lambda: trims.append)
    monkeypatch.setattr(memory, "free_heap_bytes", lambda: 100)
    memory.release_freed_memory(keep=100)
    assert trims == []
    memory.release_freed_memory(keep=99)
    memory.release_freed_memory()
    assert trims == [0, 0]
    # Where the free bytes are unknown, pages are always returned.
    monkeypatch.setattr(memory, "free_heap_bytes", lambda: None)
    memory.release_freed_memory(keep=1 << 40)
    assert trims == [0, 0, 0]


def test_free_heap_bytes_reads_the_c_heap():
    # 64 KB blocks come from the C heap; freed below a live one, they stay in it as free.
    blocks = [bytearray(1 << 16) for _ in range(200)]
    guard = bytearray(1 << 16)
    before = memory.free_heap_bytes()
    if before is None:
        pytest.skip("the C library does not report its free heap bytes (glibc 2.33+ does)")
    del blocks
    after = memory.free_heap_bytes()
    assert after is not None and after - before >= 100 << 16
    assert len(guard) == 1 << 16
