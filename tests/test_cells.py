"""CSV rows with fewer cells than the header, found in the file's bytes."""

from __future__ import annotations

import gzip
import io
import random
import zlib
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

import distill_forensics.cells as cells_module
from distill_forensics.cells import short_rows
from distill_forensics.errors import InputError
from distill_forensics.read import malformed_counts, read_logs


def _cell(rng: random.Random) -> str:
    """A cell that is never empty (so a null last cell in polars' rows means a short
    row), quoted as RFC 4180 has it."""
    return rng.choice(["v", "12", "z z", '"a,b"', '"x\ny"', '"q""q"', '"p\r\nq"'])


def _random_csv(rng: random.Random) -> tuple[bytes, int]:
    width = rng.randint(1, 6)
    rows = []
    for _ in range(rng.randint(0, 30)):
        if rng.random() < 0.05:
            rows.append("")  # an empty line
            continue
        n = rng.choice([width, max(1, width - 1), 1, width + 1]) if rng.random() < 0.5 else width
        rows.append(",".join(_cell(rng) for _ in range(n)))
    eol = rng.choice(["\n", "\r\n"])
    header = ",".join(f"c{i}" for i in range(width))
    text = header + eol + eol.join(rows) + (eol if rng.random() < 0.7 else "")
    return text.encode(), width


def _polars_short_rows(data: bytes, width: int) -> list[int]:
    """The rows polars fills up with nulls (a last cell is never empty here)."""
    frame = pl.read_csv(io.BytesIO(data), infer_schema=False, truncate_ragged_lines=True)
    short = frame.with_row_index("_i").filter(
        pl.col(f"c{width - 1}").is_null() & pl.any_horizontal(pl.all().exclude("_i").is_not_null())
    )
    return short.get_column("_i").to_list()


@pytest.mark.parametrize("window", [64 << 20, 7])
def test_short_rows_are_the_rows_polars_fills_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window: int
) -> None:
    # Small windows split each window into parts scanned on their own; small reads end
    # compressed data and gzip members anywhere.
    monkeypatch.setattr(cells_module, "_WINDOW", window)
    monkeypatch.setattr(cells_module, "_READ", 3 if window < 64 else 1 << 16)
    rng = random.Random(window)
    for _ in range(300 if window > 64 else 80):  # (tiny windows and reads: slow)
        data, width = _random_csv(rng)
        want = _polars_short_rows(data, width)
        level = rng.choice([1, 3, 6, 9])  # zlib headers 78 01, 78 5e, 78 9c, 78 da
        half = len(data) // 2
        for name, body in [
            ("a.csv", data),
            ("a.csv.gz", gzip.compress(data)),
            ("z.csv.gz", zlib.compress(data, level)),
            ("t.csv.gz", zlib.compress(data, level)[:-4]),  # no checksum: polars reads it
            ("s.csv.gz", pa.compress(data, "zstd", asbytes=True)),
            # Two gzip members, as `cat a.gz b.gz` makes.
            ("m.csv.gz", gzip.compress(data[:half]) + gzip.compress(data[half:])),
        ]:
            path = tmp_path / name
            path.write_bytes(body)
            assert short_rows(path, ",", width, 1).tolist() == want, (name, data)


@pytest.mark.parametrize("first", [b"a1", b'"a1"'])
def test_quotes_inside_an_unquoted_cell_are_text_for_the_cells(
    tmp_path: Path, first: bytes
) -> None:
    # As polars reads this row: four cells, the second and third with a quote in them
    # (after a quoted cell too: a separator ends it).
    path = tmp_path / "logs.csv"
    path.write_bytes(b"a,b,c,d\n" + first + b',5"x,6"y,z\na2,q\n')
    assert pl.read_csv(path, infer_schema=False).get_column("d").to_list() == ["z", None]
    assert short_rows(path, ",", 4, 1).tolist() == [1]


def test_rows_cut_short_are_counted_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "logs.csv"
    path.write_bytes(
        b"timestamp,account_id,ip,prompt\n"
        b'2026-03-01T12:00:00Z,a1,1.2.3.4,"a prompt, with a comma\nand a line"\n'
        b"2026-03-01T12:00:00Z,a2,1.2.3.5\n"  # cut short: no prompt cell
        b"2026-03-01T12:00:00Z,a3,1.2.3.6,\n"  # an empty prompt: not short
        b"\n"  # an empty line: a row without a timestamp, not a short one
        b"2026-03-01T12:00:00Z,a4"  # the last line, cut short, without a line end
    )
    source = read_logs([path])
    counts = malformed_counts(source)
    assert (counts["missing_cells"], counts["unparseable_timestamp"]) == (2, 1)
    got = source.frame.select("account_id", "_missing_cells").collect().rows()
    assert got == [("a1", False), ("a2", True), ("a3", False), (None, False), ("a4", True)]


def test_truncated_gzip_is_named(tmp_path: Path) -> None:
    path = tmp_path / "logs.csv.gz"
    data = b"timestamp,account_id\n" + b"2026-03-01T12:00:00Z,a\n" * 999
    path.write_bytes(gzip.compress(data)[:-30])
    with pytest.raises(InputError, match=r"logs\.csv\.gz: cannot read as CSV"):
        read_logs([path])


def test_accounts_rows_cut_short_are_counted_as_damaged(tmp_path: Path) -> None:
    logs = tmp_path / "logs.csv"
    logs.write_bytes(b"timestamp,account_id\n2026-03-01T12:00:00Z,x1\n2026-03-01T12:00:00Z,x2\n")
    accounts = tmp_path / "accounts.csv"
    accounts.write_bytes(b"account_id,org_id,email\nx1,o1,a@b.example\nx2,o2\n")
    source = read_logs([logs], accounts=accounts)
    assert source.account_problems == {"damaged_account_rows": 1}
