"""Reading logs: file discovery, column mapping, type conversion, row marking and errors."""

from __future__ import annotations

import gzip
import os
import threading
import zlib
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import hypothesis
import polars as pl
import pytest
from hypothesis import strategies as st

from distill_forensics import read as read_module
from distill_forensics.errors import InputError
from distill_forensics.read import (
    MALFORMED_REASONS,
    SUPPORTED_SUFFIXES,
    load_config,
    malformed_counts,
    parse_time_bound,
    read_logs,
    usable_rows,
)
from distill_forensics.schema import ACCOUNT_COLUMNS, ALL_COLUMNS, LOG_COLUMNS, SCHEMA

NOON = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SUPPORTED = ", ".join(SUPPORTED_SUFFIXES)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def rows(source, *columns: str) -> list[tuple]:
    return source.frame.select(columns).collect().rows()


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in tmp_path so that messages name files as the user typed them."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- errors, with their exact messages ------------------------------------


def test_missing_required_column(in_tmp: Path) -> None:
    write(in_tmp / "logs.csv", "timestamp,user,ip\n2026-03-01,u1,1.2.3.4\n")
    with pytest.raises(InputError) as err:
        read_logs(["logs.csv"])
    assert str(err.value) == (
        "logs.csv: required column 'account_id' not found (columns: timestamp, user, ip); "
        "map it with --column account_id=<name> or a [columns] table in --config"
    )


def test_a_csv_split_by_another_separator_is_named(in_tmp: Path) -> None:
    write(in_tmp / "logs.csv", "timestamp;account_id\n2026-03-01;u1\n")
    with pytest.raises(InputError) as err:
        read_logs(["logs.csv"])
    assert str(err.value) == (
        "logs.csv: required column 'timestamp' not found (columns: timestamp;account_id); "
        "the header seems separated by ';'; write the file with commas"
    )


def test_missing_file(in_tmp: Path) -> None:
    with pytest.raises(InputError) as err:
        read_logs(["nope.parquet"])
    assert str(err.value) == "nope.parquet: file not found"


def test_empty_glob(in_tmp: Path) -> None:
    (in_tmp / "logs").mkdir()
    with pytest.raises(InputError) as err:
        read_logs(["logs/*.parquet"])
    assert str(err.value) == (
        f"no files match 'logs/*.parquet'; check the pattern (looked for {SUPPORTED})"
    )


def test_empty_directory(in_tmp: Path) -> None:
    write(in_tmp / "logs" / "README.txt", "not data")
    with pytest.raises(InputError) as err:
        read_logs(["logs"])
    assert (
        str(err.value) == f"logs: directory holds no Parquet or CSV files (looked for {SUPPORTED})"
    )


def test_unsupported_extension(in_tmp: Path) -> None:
    write(in_tmp / "logs.xlsx", "")
    with pytest.raises(InputError) as err:
        read_logs(["logs.xlsx"])
    assert str(err.value) == f"logs.xlsx: unsupported file type; use one of {SUPPORTED}"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")
@pytest.mark.parametrize("given", ["logs.csv", "*.csv"])
def test_a_named_pipe_is_refused_before_it_is_opened(in_tmp: Path, given: str) -> None:
    fifo = in_tmp / "logs.csv"
    os.mkfifo(fifo)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            read_logs([given])
        except BaseException as exc:  # noqa: BLE001 (handed to the test thread)
            raised.append(exc)

    # Opening a pipe that has no writer blocks: read in a thread, so that a read that
    # opens it fails the test instead of hanging it.
    reader = threading.Thread(target=run, daemon=True)
    reader.start()
    reader.join(timeout=30)
    if reader.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # end of file: it returns
        pytest.fail("read_logs opened the pipe")
    assert len(raised) == 1 and isinstance(raised[0], InputError)
    assert str(raised[0]) == (
        "logs.csv: not a regular file (a pipe, socket or device); the input is read more "
        "than once, so save it to a file first (a .csv.gz file is read as it is)"
    )


def test_a_broken_link_matched_by_a_glob_is_not_found(in_tmp: Path) -> None:
    (in_tmp / "logs.csv").symlink_to(in_tmp / "gone.csv")
    for given in ("logs.csv", "*.csv"):
        with pytest.raises(InputError) as err:
            read_logs([given])
        assert str(err.value) == "logs.csv: file not found"


def test_empty_csv(in_tmp: Path) -> None:
    write(in_tmp / "logs.csv", "")
    with pytest.raises(InputError) as err:
        read_logs(["logs.csv"])
    assert str(err.value) == "logs.csv: file is empty"


def test_corrupt_parquet(in_tmp: Path) -> None:
    (in_tmp / "logs.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputError, match=r"^logs\.parquet: cannot read as Parquet \(.+\)$"):
        read_logs(["logs.parquet"])


def test_truncated_parquet_is_caught_before_the_run(in_tmp: Path) -> None:
    full = in_tmp / "full.parquet"
    n = 50_000
    frame = pl.DataFrame({"timestamp": [NOON] * n, "account_id": [f"a{i}" for i in range(n)]})
    frame.write_parquet(full, compression="uncompressed")
    data = full.read_bytes()
    (in_tmp / "cut.parquet").write_bytes(data[:100] + data[-2000:])  # footer intact, data gone
    with pytest.raises(
        InputError,
        match=r"^cut\.parquet: cannot read as Parquet \(row group 0 ends past the end of the file",
    ):
        read_logs(["cut.parquet"])


def test_unknown_mapping_name(in_tmp: Path) -> None:
    write(in_tmp / "logs.csv", "timestamp,account_id\n2026-03-01,a\n")
    with pytest.raises(InputError) as err:
        read_logs(["logs.csv"], columns={"acount_id": "user"})
    assert str(err.value) == (
        "unknown column name 'acount_id' in the column mapping; valid names: "
        + ", ".join(ALL_COLUMNS)
        + " (and accounts.<name> for the accounts table)"
    )


def test_mapped_column_missing(in_tmp: Path) -> None:
    write(in_tmp / "logs.csv", "ts,account_id\n2026-03-01,a\n")
    with pytest.raises(InputError) as err:
        read_logs(["logs.csv"], columns={"timestamp": "time"})
    assert str(err.value) == (
        "logs.csv: mapped column 'time' (for timestamp) not found (columns: ts, account_id); "
        "fix --column timestamp=<name> or a [columns] table in --config"
    )


def test_mapped_column_missing_from_one_of_several_files(in_tmp: Path) -> None:
    write(in_tmp / "a.csv", "ts,account_id\n2026-03-01,a\n")
    write(in_tmp / "b.csv", "time,account_id\n2026-03-01,a\n")
    with pytest.raises(InputError, match=r"^b\.csv: mapped column 'ts' \(for timestamp\)"):
        read_logs(["a.csv", "b.csv"], columns={"timestamp": "ts"})


def test_uncastable_timestamp_type(in_tmp: Path) -> None:
    pl.DataFrame({"timestamp": [[1, 2]], "account_id": ["a"]}).write_parquet("logs.parquet")
    with pytest.raises(InputError) as err:
        read_logs(["logs.parquet"])
    assert str(err.value) == (
        "logs.parquet: column 'timestamp' has type List(Int64), which cannot be read as "
        "timestamp; expected a datetime or date, ISO-8601 text, or epoch seconds/ms/us"
    )


def test_uncastable_mapped_columns_name_both_names(in_tmp: Path) -> None:
    frame = pl.DataFrame({"timestamp": [NOON], "user": [{"id": 1}], "n": [True]})
    frame.write_parquet("logs.parquet")
    with pytest.raises(InputError) as err:
        read_logs(["logs.parquet"], columns={"account_id": "user"})
    assert str(err.value) == (
        "logs.parquet: column 'user' (mapped to account_id) has type Struct({'id': Int64}), "
        "which cannot be read as account_id; expected text or numbers"
    )
    with pytest.raises(
        InputError, match="column 'n' \\(mapped to input_tokens\\) has type Boolean"
    ):
        read_logs(["logs.parquet"], columns={"account_id": "timestamp", "input_tokens": "n"})


def test_ambiguous_case_insensitive_match(in_tmp: Path) -> None:
    write(in_tmp / "logs.csv", "Timestamp,TIMESTAMP,account_id\n2026-03-01,2026-03-01,a\n")
    with pytest.raises(InputError) as err:
        read_logs(["logs.csv"])
    assert str(err.value) == (
        "logs.csv: columns 'Timestamp', 'TIMESTAMP' all match timestamp; "
        "pick one with --column timestamp=<name> or a [columns] table in --config"
    )


def test_accounts_without_account_id(in_tmp: Path) -> None:
    write(in_tmp / "logs.csv", "timestamp,account_id\n2026-03-01,a\n")
    write(in_tmp / "accounts.csv", "id,email\na,a@x.com\n")
    with pytest.raises(InputError) as err:
        read_logs(["logs.csv"], accounts="accounts.csv")
    assert str(err.value) == (
        "accounts.csv: required column 'account_id' not found (columns: id, email); map it "
        "with --column accounts.account_id=<name> or an [accounts_columns] table in --config"
    )


def test_mapped_account_column_found_nowhere(in_tmp: Path) -> None:
    write(in_tmp / "logs.csv", "timestamp,account_id\n2026-03-01,a\n")
    write(in_tmp / "accounts.csv", "account_id,mail\na,a@x.com\n")
    with pytest.raises(InputError) as err:
        read_logs(["logs.csv"], accounts="accounts.csv", columns={"email": "e_mail"})
    assert str(err.value) == (
        "mapped column 'e_mail' (for email) not found in the log files or in accounts.csv; "
        "fix --column email=... or the [columns] table in --config"
    )


def test_empty_time_window(in_tmp: Path) -> None:
    write(in_tmp / "logs.csv", "timestamp,account_id\n2026-03-01,a\n")
    with pytest.raises(InputError) as err:
        read_logs(["logs.csv"], time_from=NOON, time_to=NOON)
    assert str(err.value) == (
        "empty time window: from 2026-03-01T12:00:00+00:00 is not earlier than to "
        "2026-03-01T12:00:00+00:00; swap --from and --to"
    )


def test_no_paths() -> None:
    with pytest.raises(InputError, match="^no input files given"):
        read_logs([])


# --- inputs ------------------------------------------------------------------

CSV = "timestamp,account_id,ip\n2026-03-01T12:00:00Z,a1,1.2.3.4\n2026-03-01T13:00:00Z,a2,\n"
EXPECTED = [(NOON, "a1", "1.2.3.4"), (NOON + timedelta(hours=1), "a2", None)]


def test_csv(tmp_path: Path) -> None:
    source = read_logs([write(tmp_path / "logs.csv", CSV)])
    assert rows(source, "timestamp", "account_id", "ip") == EXPECTED
    assert isinstance(source.frame, pl.LazyFrame)
    assert source.files == (tmp_path / "logs.csv",)


def test_csv_gz_and_tsv(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "logs.csv.gz", "wt") as fh:
        fh.write(CSV)
    write(tmp_path / "logs.tsv", CSV.replace(",", "\t"))
    for name in ("logs.csv.gz", "logs.tsv"):
        assert rows(read_logs([tmp_path / name]), "timestamp", "account_id", "ip") == EXPECTED


def test_parquet(tmp_path: Path) -> None:
    frame = pl.read_csv(CSV.encode(), try_parse_dates=True)
    frame.write_parquet(tmp_path / "logs.pq")
    assert rows(read_logs([tmp_path / "logs.pq"]), "timestamp", "account_id", "ip") == EXPECTED


def test_directory_recursive_skips_hidden_and_other_files(tmp_path: Path) -> None:
    write(tmp_path / "d" / "2026" / "a.csv", CSV)
    pl.DataFrame({"timestamp": [NOON], "account_id": ["b1"]}).write_parquet(
        tmp_path / "d" / "b.parquet"
    )
    write(tmp_path / "d" / "_SUCCESS", "")
    write(tmp_path / "d" / ".a.csv.crc", "junk")
    write(tmp_path / "d" / "notes.md", "junk")
    source = read_logs([tmp_path / "d"])
    assert [p.name for p in source.files] == ["a.csv", "b.parquet"]
    assert sorted(rows(source, "account_id")) == [("a1",), ("a2",), ("b1",)]
    assert source.columns == ("timestamp", "account_id", "ip")


def test_hive_partitions_only_canonical_keys_become_columns(tmp_path: Path) -> None:
    frame = pl.DataFrame({"timestamp": [NOON], "account_id": ["a"]})
    for org in ("acme", "b%20co"):
        part = tmp_path / "logs" / "day=2026-03-01" / f"org_id={org}"
        part.mkdir(parents=True)
        frame.write_parquet(part / "part-0.parquet")
    for given in (tmp_path / "logs", str(tmp_path / "logs" / "**" / "*.parquet")):
        source = read_logs([given])
        assert "day" not in source.frame.collect_schema()
        assert sorted(rows(source, "org_id")) == [("acme",), ("b co",)]


def test_file_names_with_glob_characters(tmp_path: Path) -> None:
    path = write(tmp_path / "logs[1].csv", CSV)
    assert rows(read_logs([path]), "account_id") == [("a1",), ("a2",)]


def test_glob_and_mixed_formats(tmp_path: Path) -> None:
    write(tmp_path / "logs" / "a.csv", CSV)
    pl.DataFrame({"timestamp": ["2026-03-02"], "account_id": [7]}).write_parquet(
        tmp_path / "logs" / "b.parquet"
    )
    source = read_logs([str(tmp_path / "logs" / "*")])
    assert sorted(rows(source, "account_id")) == [("7",), ("a1",), ("a2",)]


def test_duplicate_paths_are_read_once(tmp_path: Path) -> None:
    path = write(tmp_path / "logs.csv", CSV)
    source = read_logs([path, str(path), str(tmp_path / "*.csv")])
    assert source.files == (path,)


def test_files_with_different_columns_are_stacked(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", "timestamp,account_id,model\n2026-03-01T12:00:00Z,a,m1\n")
    write(tmp_path / "b.csv", "timestamp,account_id,ip\n2026-03-01T12:00:00Z,b,1.2.3.4\n")
    source = read_logs([tmp_path / "a.csv", tmp_path / "b.csv"])
    assert source.columns == ("timestamp", "account_id", "ip", "model")
    assert rows(source, "account_id", "ip", "model") == [("a", None, "m1"), ("b", "1.2.3.4", None)]


# --- mapping ------------------------------------------------------------------


def test_mapping(tmp_path: Path) -> None:
    write(tmp_path / "logs.csv", "when,user,client ip\n2026-03-01T12:00:00Z,u1,1.2.3.4\n")
    source = read_logs(
        [tmp_path / "logs.csv"],
        columns={"timestamp": "when", "account_id": "user", "ip": "client ip"},
    )
    assert rows(source, "timestamp", "account_id", "ip") == [(NOON, "u1", "1.2.3.4")]


def test_case_insensitive_fallback(tmp_path: Path) -> None:
    write(
        tmp_path / "logs.csv", "\ufeffTimestamp,Account ID,User-Agent\n2026-03-01T12:00:00Z,u,ua\n"
    )
    source = read_logs([tmp_path / "logs.csv"])
    assert rows(source, "timestamp", "account_id", "user_agent") == [(NOON, "u", "ua")]


def test_exact_name_wins_over_case_insensitive(tmp_path: Path) -> None:
    write(tmp_path / "logs.csv", "timestamp,account_id,Account_ID\n2026-03-01,right,wrong\n")
    assert rows(read_logs([tmp_path / "logs.csv"]), "account_id") == [("right",)]


# --- timestamps ---------------------------------------------------------------

SAME_INSTANT = [
    "2026-03-01T12:00:00Z",
    "2026-03-01T12:00:00.000Z",
    "2026-03-01t12:00:00z",
    "2026-03-01 12:00:00",
    "2026-03-01T12:00",
    "2026-03-01T14:00:00+02:00",
    "2026-03-01T07:00:00-0500",
    "2026-03-01T17:30:00+05:30",
    "2026-03-01T13:00:00+01",
    "2026-03-01T12:00:00 UTC",
    "1772366400",
    "1772366400.0",
    "1772366400000",
    "1772366400000000",
    "1772366400000000000",
]


def test_text_timestamps_yield_the_same_instant(tmp_path: Path) -> None:
    body = "\n".join(f"{t},a" for t in SAME_INSTANT)
    source = read_logs([write(tmp_path / "logs.csv", f"timestamp,account_id\n{body}\n")])
    assert [r[0] for r in rows(source, "timestamp")] == [NOON] * len(SAME_INSTANT)


def test_fractional_seconds(tmp_path: Path) -> None:
    body = '2026-03-01T12:00:00.123456789Z,a\n"2026-03-01T12:00:00,5+00:00",a\n1772366400.25,a\n'
    source = read_logs([write(tmp_path / "logs.csv", f"timestamp,account_id\n{body}")])
    got = [r[0] for r in rows(source, "timestamp")]
    assert got == [
        NOON + timedelta(microseconds=123456),  # nanoseconds truncated to microseconds
        NOON + timedelta(seconds=0.5),  # ISO-8601 allows a decimal comma
        NOON + timedelta(seconds=0.25),
    ]


def test_native_timestamps_yield_the_same_instant(tmp_path: Path) -> None:
    naive = datetime(2026, 3, 1, 12)
    berlin = pl.Series([naive + timedelta(hours=1)]).dt.replace_time_zone("Europe/Berlin")
    frames = {
        "naive.parquet": pl.Series([naive]),
        "ms.parquet": pl.Series([naive]).cast(pl.Datetime("ms")),
        "ns_utc.parquet": pl.Series([naive]).cast(pl.Datetime("ns")).dt.replace_time_zone("UTC"),
        "berlin.parquet": berlin,
        "epoch_s.parquet": pl.Series([1772366400]),
        "epoch_ms.parquet": pl.Series([1772366400000]),
        "epoch_float.parquet": pl.Series([1772366400.0]),
    }
    for name, series in frames.items():
        pl.DataFrame({"timestamp": series, "account_id": ["a"]}).write_parquet(tmp_path / name)
    source = read_logs([tmp_path / name for name in frames])
    assert source.frame.collect_schema()["timestamp"] == pl.Datetime("us", "UTC")
    assert [r[0] for r in rows(source, "timestamp")] == [NOON] * len(frames)


def test_date_is_midnight_utc(tmp_path: Path) -> None:
    pl.DataFrame({"timestamp": [date(2026, 3, 1)], "account_id": ["a"]}).write_parquet(
        tmp_path / "logs.parquet"
    )
    got = rows(read_logs([tmp_path / "logs.parquet"]), "timestamp")
    assert got == [(datetime(2026, 3, 1, tzinfo=UTC),)]


@pytest.mark.parametrize(
    "bad",
    [
        "yesterday",
        "2026-02-30",
        "2026-03-01T25:00:00",
        "2026-03-01T12:00:00+25:00",
        "1e5",
        "-9223372036854775808",
    ],
)
def test_unparseable_timestamps_are_marked(tmp_path: Path, bad: str) -> None:
    source = read_logs([write(tmp_path / "logs.csv", f"timestamp,account_id\n{bad},a\n")])
    assert rows(source, "timestamp", "_bad") == [(None, "unparseable_timestamp")]


# --- row-level problems ---------------------------------------------------------

MESSY = """timestamp,account_id,ip,input_tokens,output_tokens
2026-03-01T12:00:00Z,a1, 1.2.3.4 ,10,5
2026-03-01T12:00:00Z,a2,999.1.1.1,-3,7
2026-03-01T12:00:00Z,a3,::ffff:1.2.3.4,1.0,2.5
2026-03-01T12:00:00Z,,2001:DB8::1,x,
2026-03-01T12:00:00Z,  ,,,
garbage,a4,not-an-ip,,
,a5,,NULL,
NULL,,,,
"""


def test_malformed_counts(tmp_path: Path) -> None:
    source = read_logs([write(tmp_path / "logs.csv", MESSY)])
    assert malformed_counts(source) == {
        "unparseable_timestamp": 3,
        "null_account_id": 2,
        "invalid_ip": 2,
        "invalid_tokens": 3,
        "extra_cells": 0,
        "missing_cells": 0,
        "invalid_utf8": 0,
    }
    assert list(malformed_counts(source)) == list(MALFORMED_REASONS)
    assert usable_rows(source).select(pl.len()).collect().item() == 3


# A row with a cell past the header, one with an empty one (a trailing separator: nothing
# lost), bytes that are not UTF-8 in a column read and in one that is not.
RAGGED = (
    b"timestamp,account_id,ip,note\n"
    b"2026-03-01T12:00:00Z,a1,1.2.3.4,x\n"
    b"2026-03-01T12:00:00Z,a2,1.2.3.5,x,spilled,over\n"
    b"2026-03-01T12:00:00Z,a3,1.2.3.6,x,\n"
    b"2026-03-01T12:00:00Z,caf\xe9,1.2.3.7,x\n"
    b"2026-03-01T12:00:00Z,a5,1.2.3.8,\xff\n"
    b"2026-03-01T12:00:00Z,a6\n"
)


@pytest.mark.parametrize("name", ["logs.csv", "logs.tsv.gz"])
def test_extra_cells_and_bytes_not_utf8_are_counted(tmp_path: Path, name: str) -> None:
    data = RAGGED if name.startswith("logs.csv") else RAGGED.replace(b",", b"\t")
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    source = read_logs([path])
    counts = malformed_counts(source)
    assert (counts["extra_cells"], counts["missing_cells"], counts["invalid_utf8"]) == (1, 1, 1)
    # The rows are kept, cut to the header; a short row has nulls.
    assert rows(source, "account_id", "ip", "_extra_cells", "_missing_cells", "_utf8_invalid") == [
        ("a1", "1.2.3.4", False, False, False),
        ("a2", "1.2.3.5", True, False, False),
        ("a3", "1.2.3.6", False, False, False),
        ("caf\ufffd", "1.2.3.7", False, False, True),
        ("a5", "1.2.3.8", False, False, False),
        ("a6", None, False, True, False),
    ]


@pytest.mark.parametrize(
    ("data", "extra"),
    [
        # The widest row first: polars would take its width for the file's.
        (b"timestamp,account_id,ip\nT,a1,1.2.3.4,x,y\nT,a2,1.2.3.5\n", 1),
        # Empty lines before the header, which polars passes over to find it.
        (b"\ntimestamp,account_id,ip\nT,a1,1.2.3.4\nT,a2,1.2.3.5\n", 0),
        (b"\xef\xbb\xbf\r\n\r\ntimestamp,account_id,ip\r\nT,a1,1.2.3.4\r\nT,a2,1.2.3.5\r\n", 0),
        (b"\n" * 70_000 + b"timestamp,account_id,ip\nT,a1,1.2.3.4\nT,a2,1.2.3.5\n", 0),
    ],
)
@pytest.mark.parametrize("compress", [None, gzip.compress, zlib.compress])
def test_csv_rows_start_after_the_header(
    tmp_path: Path, data: bytes, extra: int, compress: Callable[[bytes], bytes] | None
) -> None:
    data = data.replace(b"T,", b"2026-03-01T12:00:00Z,")
    path = tmp_path / ("logs.csv.gz" if compress else "logs.csv")
    path.write_bytes(compress(data) if compress else data)
    source = read_logs([path])
    assert rows(source, "account_id", "ip") == [("a1", "1.2.3.4"), ("a2", "1.2.3.5")]
    counts = {k: v for k, v in malformed_counts(source).items() if v}
    assert counts == ({"extra_cells": extra} if extra else {})


def test_csv_column_named_as_the_extra_cells_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "logs.csv"
    path.write_bytes(b"timestamp,account_id,\x00extra cells\n2026-03-01T12:00:00Z,a1,x\n")
    with pytest.raises(InputError, match="rename it"):
        read_logs([path])


def test_parquet_rows_have_no_extra_cells_or_bad_bytes(tmp_path: Path) -> None:
    pl.DataFrame({"timestamp": [NOON], "account_id": ["caf\ufffd"]}).write_parquet(
        tmp_path / "logs.parquet"
    )
    counts = malformed_counts(read_logs([tmp_path / "logs.parquet"]))
    assert (counts["extra_cells"], counts["invalid_utf8"]) == (0, 0)


def test_bad_values_are_nulled_and_flagged(tmp_path: Path) -> None:
    source = read_logs([write(tmp_path / "logs.csv", MESSY)])
    got = rows(
        source,
        "account_id",
        "ip",
        "input_tokens",
        "output_tokens",
        "_ip_invalid",
        "_tokens_invalid",
    )
    assert got[:4] == [
        ("a1", "1.2.3.4", 10, 5, False, False),
        ("a2", None, None, 7, True, True),
        ("a3", "1.2.3.4", 1, None, False, True),
        (None, "2001:db8::1", None, None, False, True),
    ]
    assert got[4][0] is None  # whitespace-only account_id is missing


def test_canonical_types(tmp_path: Path) -> None:
    pl.DataFrame(
        {
            "timestamp": [NOON],
            "account_id": [42],
            "card_bin": [424242.0],
            "input_tokens": pl.Series([3], dtype=pl.UInt16),
            "output_tokens": [float("nan")],
            "model": pl.Series(["m"], dtype=pl.Categorical),
        }
    ).write_parquet(tmp_path / "logs.parquet")
    source = read_logs([tmp_path / "logs.parquet"])
    schema = source.frame.collect_schema()
    for name in source.columns:
        assert schema[name] == SCHEMA[name], name
    assert rows(source, "account_id", "card_bin", "input_tokens", "output_tokens", "model") == [
        ("42", "424242", 3, None, "m")
    ]
    assert malformed_counts(source)["invalid_tokens"] == 0  # NaN is missing, not invalid


def test_float_ids_with_gaps(tmp_path: Path) -> None:
    frame = pl.DataFrame({"timestamp": [NOON] * 3, "account_id": [7.0, float("nan"), 2.5]})
    frame.write_parquet(tmp_path / "logs.parquet")
    source = read_logs([tmp_path / "logs.parquet"])
    assert rows(source, "account_id", "_bad") == [
        ("7", None),
        (None, "null_account_id"),
        ("2.5", None),
    ]


def test_source_lists_present_and_missing_columns(tmp_path: Path) -> None:
    source = read_logs([write(tmp_path / "logs.csv", CSV)])
    assert source.columns == ("timestamp", "account_id", "ip")
    expected_missing = [c for c in (*LOG_COLUMNS, *ACCOUNT_COLUMNS[1:]) if c not in source.columns]
    assert list(source.missing) == expected_missing
    assert source.accounts_file is None
    assert source.frame.collect_schema().names() == [
        *source.columns,
        "_bad",
        "_ip_invalid",
        "_tokens_invalid",
        "_extra_cells",
        "_missing_cells",
        "_utf8_invalid",
    ]


# --- accounts -------------------------------------------------------------------


def test_accounts_join_denormalised_and_duplicates(tmp_path: Path) -> None:
    write(
        tmp_path / "logs.csv",
        "timestamp,account_id,email\n"
        "2026-03-01T12:00:00Z,a1,logs@x.com\n"
        "2026-03-01T12:00:00Z,a2,\n"
        "2026-03-01T12:00:00Z,a3,\n",
    )
    write(
        tmp_path / "accounts.csv",
        "account_id,email,created_at,signup_ip\n"
        "a1,acct@x.com,2025-01-01,5.6.7.8\n"
        "a2,first@x.com,2025-01-02T00:00:00+01:00,bad-ip\n"
        "a2,second@x.com,2025-01-03,9.9.9.9\n",
    )
    source = read_logs([tmp_path / "logs.csv"], accounts=tmp_path / "accounts.csv")
    assert source.columns == ("timestamp", "account_id", "created_at", "email", "signup_ip")
    assert source.accounts_file == tmp_path / "accounts.csv"
    # An account on two rows keeps the least value of each column (nulls left out), as
    # account columns in the logs do, and the repeat is counted.
    expected = [
        ("a1", "logs@x.com", datetime(2025, 1, 1, tzinfo=UTC), "5.6.7.8"),
        ("a2", "first@x.com", datetime(2025, 1, 1, 23, tzinfo=UTC), "9.9.9.9"),
        ("a3", None, None, None),
    ]
    assert rows(source, "account_id", "email", "created_at", "signup_ip") == expected
    assert source.account_problems == {"duplicate_account_rows": 1}
    # The same rows in another order give the same accounts.
    write(
        tmp_path / "accounts.csv",
        "account_id,email,created_at,signup_ip\n"
        "a2,second@x.com,2025-01-03,9.9.9.9\n"
        ",orphan@x.com,2025-01-05,1.1.1.1\n"
        "a2,first@x.com,2025-01-02T00:00:00+01:00,bad-ip\n"
        "a1,acct@x.com,2025-01-01,5.6.7.8\n",
    )
    source = read_logs([tmp_path / "logs.csv"], accounts=tmp_path / "accounts.csv")
    assert rows(source, "account_id", "email", "created_at", "signup_ip") == expected
    assert source.account_problems == {"duplicate_account_rows": 1, "null_account_rows": 1}
    # Rows cut to the header or with bytes that are not UTF-8 are counted, and read.
    path = tmp_path / "accounts.csv"
    path.write_bytes(
        b"\naccount_id,email\na1,acct@x.com,spilled\na2,caf\xe9@x.com\na3,plain@x.com\n"
    )
    source = read_logs([tmp_path / "logs.csv"], accounts=path)
    assert rows(source, "account_id", "email") == [
        ("a1", "logs@x.com"),
        ("a2", "caf\ufffd@x.com"),
        ("a3", "plain@x.com"),
    ]
    assert source.account_problems == {"damaged_account_rows": 2}
    # A signup time that cannot be read is counted, not dropped unsaid (blank and NULL
    # cells are missing values, not unreadable ones).
    write(
        path,
        "account_id,created_at\na1,22/02/2025\na2,2025-02-22\na3,\na4,NULL\n"
        ",31/12/2024\na5,yesterday\n",
    )
    source = read_logs([tmp_path / "logs.csv"], accounts=path)
    assert source.account_problems == {"unreadable_created_at": 2, "null_account_rows": 1}
    assert rows(source, "account_id", "created_at")[:2] == [
        ("a1", None),
        ("a2", datetime(2025, 2, 22, tzinfo=UTC)),
    ]
    pl.DataFrame(
        {"account_id": ["a1", "a2", "a3"], "created_at": [1.7e9, float("nan"), None]}
    ).write_parquet(tmp_path / "accounts.parquet")
    source = read_logs([tmp_path / "logs.csv"], accounts=tmp_path / "accounts.parquet")
    assert source.account_problems == {}


def test_accounts_mapping_and_log_mapping_fallback(tmp_path: Path) -> None:
    write(tmp_path / "logs.csv", "timestamp,user\n2026-03-01T12:00:00Z,a1\n")
    write(tmp_path / "acct.csv", "id,user_email\na1,a@x.com\n")
    source = read_logs(
        [tmp_path / "logs.csv"],
        accounts=tmp_path / "acct.csv",
        columns={"account_id": "user", "accounts.account_id": "id", "email": "user_email"},
    )
    assert rows(source, "account_id", "email") == [("a1", "a@x.com")]


# --- time window and text clean-up -------------------------------------------------


def test_time_window_is_half_open_and_keeps_unreadable_rows(tmp_path: Path) -> None:
    body = "\n".join(f"2026-03-01T{h:02d}:00:00Z,a{h}" for h in range(10, 15)) + "\nnot-a-time,x\n"
    path = write(tmp_path / "logs.csv", f"timestamp,account_id\n{body}")
    source = read_logs(
        [path],
        time_from=datetime(2026, 3, 1, 13, tzinfo=timezone(timedelta(hours=2))),  # 11:00Z
        time_to=datetime(2026, 3, 1, 13),  # naive = UTC
    )
    assert rows(source, "account_id") == [("a11",), ("a12",), ("x",)]
    assert malformed_counts(source)["unparseable_timestamp"] == 1


def test_text_is_stripped_and_null_markers_read_as_missing(tmp_path: Path) -> None:
    path = write(
        tmp_path / "logs.csv",
        'timestamp,account_id,model,user_agent\n2026-03-01, a ,"  ",NULL\n2026-03-01,b,\\N,None\n',
    )
    assert rows(read_logs([path]), "account_id", "model", "user_agent") == [
        ("a", None, None),
        ("b", None, None),
    ]


def test_text_of_categories_and_numbers_is_stripped_too(tmp_path: Path) -> None:
    path = tmp_path / "logs.parquet"
    pl.DataFrame(
        {
            "timestamp": ["2026-03-01T00:00:00Z"] * 4,
            "account_id": pl.Series([" a ", "b", "  ", "c"], dtype=pl.Categorical()),
            "org_id": pl.Series([7, None, 8, 9], dtype=pl.Int64),
            "model": pl.Series(["m ", "", None, "\tn"], dtype=pl.Categorical()),
        }
    ).write_parquet(path)
    assert rows(read_logs([path]), "account_id", "org_id", "model") == [
        ("a", "7", "m"),
        ("b", None, None),
        (None, "8", None),
        ("c", "9", "n"),
    ]


# --- config and time bounds --------------------------------------------------------


def test_load_config(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.toml",
        '[columns]\ntimestamp = "ts"\naccount_id = "user"\n\n'
        '[accounts_columns]\naccount_id = "id"\n',
    )
    assert load_config(path) == {
        "timestamp": "ts",
        "account_id": "user",
        "accounts.account_id": "id",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[colums]\nts = "x"\n',
            "unknown key 'colums'; the config holds only [columns] and [accounts_columns]",
        ),
        (
            'timestamp = "ts"\n',
            "unknown key 'timestamp'; the config holds only [columns] and [accounts_columns]",
        ),
        (
            '[columns]\nstamp = "ts"\n',
            "unknown column name 'stamp' in [columns]; valid names: " + ", ".join(ALL_COLUMNS),
        ),
        (
            '[accounts_columns]\nip = "x"\n',
            "unknown column name 'ip' in [accounts_columns]; valid names: "
            + ", ".join(ACCOUNT_COLUMNS),
        ),
        (
            "[columns]\ntimestamp = 3\n",
            "[columns] timestamp must be a source column name in quotes, "
            'e.g. timestamp = "timestamp"',
        ),
        (
            "[columns\n",
            "invalid TOML (Expected ']' at the end of a table declaration (at line 1, column 9))",
        ),
    ],
)
def test_load_config_errors(in_tmp: Path, text: str, message: str) -> None:
    write(in_tmp / "c.toml", text)
    with pytest.raises(InputError) as err:
        load_config("c.toml")
    assert str(err.value) == f"c.toml: {message}"


def test_load_config_missing(in_tmp: Path) -> None:
    with pytest.raises(InputError) as err:
        load_config("none.toml")
    assert str(err.value) == "none.toml: config file not found"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01", datetime(2026, 3, 1, tzinfo=UTC)),
        ("2026-03-01T12:00", NOON),
        ("2026-03-01 12:00:00Z", NOON),
        ("2026-03-01T14:00:00+02:00", NOON),
    ],
)
def test_parse_time_bound(text: str, expected: datetime) -> None:
    got = parse_time_bound(text)
    assert got == expected
    assert got.tzinfo == UTC


def test_parse_time_bound_error() -> None:
    with pytest.raises(InputError) as err:
        parse_time_bound("last tuesday")
    assert str(err.value) == (
        "invalid time 'last tuesday'; use an ISO-8601 date or datetime such as 2026-03-01, "
        "2026-03-01T12:00:00Z or 2026-03-01T12:00:00+02:00"
    )


def test_repeated_csv_header_is_an_input_error_when_read(tmp_path: Path) -> None:
    write(tmp_path / "logs.csv", "timestamp,account_id,account_id\n2026-03-01T12:00:00Z,a1,a2\n")
    with pytest.raises(InputError, match="'account_id' appears more than once"):
        read_logs([tmp_path / "logs.csv"])
    # A repeated column the tool does not read is no concern of it.
    write(tmp_path / "notes.csv", "timestamp,account_id,note,note\n2026-03-01T12:00:00Z,a1,x,y\n")
    assert rows(read_logs([tmp_path / "notes.csv"]), "account_id") == [("a1",)]


def _two(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.integers(lo, hi).map(lambda v: f"{v:02d}")


_TIME_TEXTS = st.one_of(
    # Near the canonical shape: every field at and past its bounds, every zone form.
    st.builds(
        lambda sign, y, mo, d, sep, h, mi, sec, frac, zone: (
            f"{sign}{y:04d}-{mo}-{d}{sep}{h}:{mi}:{sec}{frac}{zone}"
        ),
        st.sampled_from(["", "", "+"]),
        st.integers(0, 9999),
        _two(0, 13),
        _two(0, 32),
        st.sampled_from(["T", "T", " ", "t"]),
        _two(0, 25),
        _two(0, 61),
        _two(0, 61),
        st.one_of(st.just(""), st.text("0123456789", max_size=12).map(lambda f: "." + f)),
        st.one_of(
            st.sampled_from(["", "Z", "z", "UTC", " +0000"]),
            st.builds(
                lambda sign, hh, mm, colon: f"{sign}{hh}{colon}{mm}",
                st.sampled_from(["+", "-"]),
                _two(0, 26),
                _two(0, 99),
                st.sampled_from(["", ":"]),
            ),
            st.builds(lambda hh: f"+{hh}", _two(0, 26)),
        ),
    ),
    st.integers(-(10**19), 10**19).map(str),
    st.text("0123456789-:T.Z+ ", max_size=32),
)


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(st.lists(_TIME_TEXTS, min_size=1, max_size=300))
def test_times_of_the_common_shape_read_as_the_general_parse_reads_them(texts):
    # The quick path for the shape nearly every export writes must not change a time.
    frame = pl.DataFrame({"t": texts}).lazy()
    quick = frame.select(read_module._stripped_stages("t", pl.col("t"))[0])
    general = quick
    for stage in read_module._text_time_stages("t", pl.col("t"))[1:]:
        quick = quick.with_columns(stage)
    general = general.with_columns(read_module._stripped_stages("t", pl.col("t"))[1])
    for stage in read_module._general_time_stages("t"):
        general = general.with_columns(stage)
    got = quick.select(pl.col("t").dt.epoch("us")).collect().to_series().to_list()
    want = general.select(pl.col("t").dt.epoch("us")).collect().to_series().to_list()
    assert got == want
