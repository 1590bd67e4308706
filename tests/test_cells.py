"""CSV rows with fewer cells than the header, found in the file's bytes."""

from __future__ import annotations

import csv
import gzip
import io
import random
import zlib
from pathlib import Path

import pytest

import distill_forensics.cells as cells_module
from distill_forensics.cells import short_rows
from distill_forensics.errors import InputError
from distill_forensics.read import malformed_counts, read_logs


def _cell(rng: random.Random) -> str:
    if rng.random() < 0.4:
        return '"' + rng.choice(["a,b", "x\ny", 'q""q', "", "p\r\nq", "plain"]) + '"'
    return rng.choice(["", "v", "12", "  ", "z z"])


def _random_csv(rng: random.Random) -> tuple[str, int]:
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
    return header + eol + eol.join(rows) + (eol if rng.random() < 0.7 else ""), width


@pytest.mark.parametrize("window", [64 << 20, 7])
def test_short_rows_agree_with_a_quote_aware_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window: int
) -> None:
    # Small windows split each window into parts scanned on their own.
    monkeypatch.setattr(cells_module, "_WINDOW", window)
    rng = random.Random(window)
    for _ in range(200):
        text, width = _random_csv(rng)
        records = list(csv.reader(io.StringIO(text, newline="")))[1:]
        want = [i for i, cells in enumerate(records) if cells and len(cells) < width]
        data = text.encode()
        for name, body in [
            ("a.csv", data),
            ("a.csv.gz", gzip.compress(data)),
            ("z.csv.gz", zlib.compress(data)),
        ]:
            path = tmp_path / name
            path.write_bytes(body)
            assert short_rows(path, ",", width, 1).tolist() == want, (name, text)


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
