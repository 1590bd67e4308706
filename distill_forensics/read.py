"""Read API traffic logs (and optionally an accounts table) into one lazy canonical frame.

Inputs are Parquet or CSV files, glob patterns or directories, in any mix. Each
file is scanned lazily with only the canonical columns it provides, converted
to the canonical types of :mod:`distill_forensics.schema`, and stacked; nothing
is collected here except file schemas, so problems with files, columns and
types are raised now, while problems with individual rows are marked and
counted instead (see ``MALFORMED_REASONS``).

Timestamps (``timestamp`` and ``created_at``) are accepted as:

- native Datetime (naive values are taken as UTC; zoned values are converted
  to UTC) or Date (midnight UTC);
- ISO-8601 text: ``2026-03-01``, ``2026-03-01T12:00``, ``2026-03-01 12:00:00.123``,
  with an optional ``Z``, ``UTC`` or ``+HH:MM`` / ``+HHMM`` / ``+HH`` offset;
- epoch numbers or numeric text. The unit is chosen by magnitude: below 1e11
  seconds, below 1e14 milliseconds, below 1e17 microseconds, else nanoseconds.
  For instants between 1973 and 5138 these ranges do not overlap, so every
  value of a real log column falls in the same unit; deciding per value keeps
  the scan streaming and lets files written with different units be mixed.

Text that fits none of these becomes null.

Directories are searched recursively; files and folders whose names start with
``.`` or ``_`` (``_SUCCESS``, ``.crc``) are skipped, and ``key=value`` folders
(hive partitions) supply column ``key`` when it is canonical and the file
lacks it. CSV files are read as text: the cells ``NULL``, ``null``, ``None``,
``NaN``, ``nan`` and ``\\N`` are missing values; bytes that are not UTF-8 are
replaced (U+FFFD) and a row with more cells than the header is cut to the header,
and such rows are counted (``invalid_utf8``, which counts U+FFFD itself too, and
``extra_cells``).
"""

from __future__ import annotations

import glob
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from distill_forensics.cells import short_rows
from distill_forensics.errors import InputError
from distill_forensics.normalize import ip_clean
from distill_forensics.schema import (
    ACCOUNT_COLUMNS,
    ALL_COLUMNS,
    BAD,
    EXTRA_CELLS,
    IP_INVALID,
    MISSING_CELLS,
    REQUIRED,
    ROW_FLAGS,
    SCHEMA,
    TIMESTAMP_COLUMNS,
    TOKEN_COLUMNS,
    TOKENS_INVALID,
    UTF8_INVALID,
)

__all__ = [
    "ACCOUNTS_PREFIX",
    "ACCOUNT_PROBLEMS",
    "MALFORMED_REASONS",
    "SUPPORTED_SUFFIXES",
    "Source",
    "load_config",
    "malformed_counts",
    "malformed_sums",
    "parse_time_bound",
    "read_errors",
    "read_logs",
    "usable_rows",
]

SUPPORTED_SUFFIXES: tuple[str, ...] = (".parquet", ".pq", ".csv", ".csv.gz", ".tsv", ".tsv.gz")

# Why a row was marked. The first two make a row unusable and are stored in
# `_bad` (a row gets the first that applies); the others keep the row and set
# their own boolean column (``ROW_FLAGS``), so they can overlap.
MALFORMED_REASONS: dict[str, str] = {
    "unparseable_timestamp": "timestamp missing, empty, or not a recognised date/time; row skipped",
    "null_account_id": "account_id missing or empty; row skipped",
    "invalid_ip": "ip is not a valid IPv4/IPv6 address; row kept with ip null",
    "invalid_tokens": "a token count is negative or not a whole number; row kept with it null",
    "extra_cells": "CSV row with more cells than the header; row kept, the extra cells ignored",
    "missing_cells": "CSV row with fewer cells than the header (cut short); row kept, the "
    "missing cells empty",
    "invalid_utf8": "CSV text with bytes that are not UTF-8 (read as U+FFFD) or with U+FFFD "
    "itself; row kept",
}

ACCOUNT_PROBLEMS: dict[str, str] = {
    "duplicate_account_rows": "accounts table rows repeating an account_id; each account "
    "keeps the least value of each column, whatever the row order",
    "null_account_rows": "accounts table rows without an account_id; skipped",
    "damaged_account_rows": "accounts table CSV rows with more or fewer cells than the header "
    "or bytes that are not UTF-8; kept as for log rows (extra_cells, missing_cells, "
    "invalid_utf8)",
    "unreadable_created_at": "accounts table rows whose created_at is not a recognised "
    "date/time; kept without it (the signup time signals miss them)",
    "accounts_not_in_table": "accounts in the logs without a row in the accounts table",
}
"""What is counted about the accounts table (``Source.account_problems``, and the last in
extraction's counts)."""

# CSV cells that mean "no value" in common exports (databases, pandas, Python str(None)).
_CSV_NULLS = ["NULL", "null", "None", "NaN", "nan", r"\N"]
_MAX_LISTED_COLUMNS = 20
_SEPARATORS = {"csv": ",", "tsv": "\t"}
_EXTRA = "\x00extra cells"
_ROW = "\x00row"
"""In a CSV file's frame with rows cut short, each row's number (see :func:`_scan`)."""
_CREATED_GIVEN = "\x00created_at given"
"""Whether a row's created_at had a value before it was read as a time (see _frame)."""
_CREATED_UNREADABLE = "\x00created_at unreadable"
"""In a CSV file's frame, a column after the header's last: each row's first cell past it."""
_FILE_FLAGS = (TOKENS_INVALID, EXTRA_CELLS, MISSING_CELLS, UTF8_INVALID)
"""The ``ROW_FLAGS`` columns set file by file (:func:`_frame`); ``ip`` is checked once."""

# Mapping keys with this prefix name columns of the accounts table, not of the logs.
ACCOUNTS_PREFIX = "accounts."

# Config tables -> (canonical names they may map, prefix their keys get in the mapping).
_CONFIG_TABLES: dict[str, tuple[tuple[str, ...], str]] = {
    "columns": (ALL_COLUMNS, ""),
    "accounts_columns": (ACCOUNT_COLUMNS, ACCOUNTS_PREFIX),
}


LONG_TEXT_COLUMNS = frozenset({"prompt"})
"""Free-text columns kept as given (not stripped); only blank values become null."""


@dataclass(frozen=True)
class Source:
    """Logs read into canonical form, with what was found and where it came from.

    ``frame`` holds the canonical columns present, in schema order, then
    ``_bad`` (String: the reason a row cannot be used, null when usable) and
    the Boolean columns of ``ROW_FLAGS`` (``_ip_invalid``, ...).
    """

    frame: pl.LazyFrame
    columns: tuple[str, ...]
    missing: tuple[str, ...]
    files: tuple[Path, ...]
    accounts_file: Path | None
    log_rows: pl.LazyFrame | None = None
    """``frame`` before the accounts table is joined on (same rows, log columns only), set
    when every account column comes from the table alone: per-account work can then
    join the table once per account instead of once per request."""
    account_table: pl.LazyFrame | None = None
    """The accounts table (canonical columns, one row per account) that ``frame`` joins."""
    file_rows: int | None = None
    """Rows in the log files before any time window, when every file's footer says
    (Parquet); None otherwise."""
    account_problems: Mapping[str, int] = field(default_factory=dict)
    """Rows of the accounts table counted under ``ACCOUNT_PROBLEMS`` (those that occur)."""


@dataclass(frozen=True)
class _File:
    path: Path
    fmt: str  # "parquet", "csv" or "tsv"
    hive: Mapping[str, str] = field(default_factory=dict)  # key=value directories above it


# ---------------------------------------------------------------------------
# Public entry points


def read_logs(
    paths: Sequence[str | Path],
    *,
    accounts: str | Path | None = None,
    columns: Mapping[str, str] | None = None,
    time_from: datetime | None = None,
    time_to: datetime | None = None,
) -> Source:
    """Scan log files (and an optional accounts table) into a lazy canonical frame.

    ``columns`` maps canonical names to source column names in the log files,
    and ``accounts.<name>`` keys to column names in the accounts table (as
    ``--column`` and ``load_config`` give them). Canonical names not mapped
    are matched exactly, then ignoring case, spaces and hyphens.
    Rows are kept to ``time_from <= timestamp < time_to``; rows whose timestamp
    could not be read are kept too, so that they are counted as malformed.

    Raises InputError for missing files, unreadable files, missing required
    columns, bad mappings and column types that cannot be converted.

    Example::

        source = read_logs(["logs/"], accounts="accounts.parquet", columns={"ip": "client_ip"})
        usable_rows(source).group_by("account_id").len().collect()
    """
    columns, accounts_columns = _split_mapping(columns)
    window_from, window_to = check_time_window(time_from, time_to)

    if isinstance(paths, str | Path):
        paths = [paths]
    files = _expand(paths)
    if not files:
        raise InputError("no input files given; pass one or more log files, directories or globs")

    # Account-only columns mapped for the logs may instead be found in the accounts table.
    lenient = (
        {c for c in columns if c in ACCOUNT_COLUMNS and c != "account_id"} if accounts else set()
    )
    plans = [
        _plan(f, columns, lenient, required=REQUIRED, how_to_map=_HOW_TO_MAP_LOGS) for f in files
    ]
    present = [c for c in ALL_COLUMNS if any(c in p.sources for p in plans)]
    frame = _stack([_frame(p, present) for p in plans])

    if "ip" in present:
        clean = "__ip_clean"
        frame = frame.with_columns(ip_clean(pl.col("ip")).alias(clean)).with_columns(
            (pl.col("ip").is_not_null() & pl.col(clean).is_null()).alias(IP_INVALID),
            pl.col(clean).alias("ip"),
        )
    if "signup_ip" in present:
        frame = frame.with_columns(ip_clean(pl.col("signup_ip")).alias("signup_ip"))

    if window_from is not None or window_to is not None:
        ts = pl.col("timestamp")
        inside = pl.lit(True)
        if window_from is not None:
            inside = inside & (ts >= window_from)
        if window_to is not None:
            inside = inside & (ts < window_to)
        frame = frame.filter(ts.is_null() | inside)

    accounts_path: Path | None = None
    account_problems: dict[str, int] = {}
    if accounts is not None:
        fallback = {c: s for c, s in columns.items() if c in ACCOUNT_COLUMNS}
        account_frame, account_present, accounts_path, account_problems = _read_accounts(
            accounts, accounts_columns, fallback
        )
        unresolved = [
            c
            for c in lenient
            if c not in present and c not in account_present and c not in accounts_columns
        ]
        if unresolved:
            c = unresolved[0]
            raise InputError(
                f"mapped column {columns[c]!r} (for {c}) not found in the log files or in "
                f"{accounts_path}; fix --column {c}=... or the [columns] table in --config"
            )
    flags = [
        pl.col(IP_INVALID) if "ip" in present else pl.lit(False).alias(IP_INVALID),
        *(pl.col(c) for c in _FILE_FLAGS),
    ]
    frame = frame.with_columns(
        pl.when(pl.col("timestamp").is_null())
        .then(pl.lit("unparseable_timestamp"))
        .when(pl.col("account_id").is_null())
        .then(pl.lit("null_account_id"))
        .otherwise(pl.lit(None, dtype=pl.String))
        .alias(BAD)
    ).select(*present, BAD, *flags)
    log_rows: pl.LazyFrame | None = None
    account_table: pl.LazyFrame | None = None
    if accounts is not None:
        overlap = any(c != "account_id" and c in present for c in account_present)
        if not overlap:
            log_rows, account_table = frame, account_frame
        frame = _join_accounts(frame, account_frame, present, account_present)
        present = [c for c in ALL_COLUMNS if c in present or c in account_present]
        frame = frame.select(*present, BAD, *ROW_FLAGS.values())
    missing = tuple(c for c in ALL_COLUMNS if c not in present and c not in REQUIRED)
    return Source(
        frame=frame,
        columns=tuple(present),
        missing=missing,
        files=tuple(f.path for f in files),
        accounts_file=accounts_path,
        log_rows=log_rows,
        account_table=account_table,
        file_rows=None if any(p.rows is None for p in plans) else sum(p.rows or 0 for p in plans),
        account_problems=account_problems,
    )


_READ_FAILURES = (
    "parquet:",
    "could not parse",
    "end of file",
    "invalid utf-8",
    "gzip",
    "compressed",
    "corrupt",
    "csv malformed",
)
"""Words of the errors polars and the decompressors raise for a damaged or mislabelled file."""


@contextmanager
def read_errors(files: Sequence[Path]) -> Iterator[None]:
    """Inside the block, a file that cannot be decoded as its rows are read (damaged
    Parquet, a CSV row that cannot be parsed, a truncated .gz) raises InputError naming
    it (``files``: the inputs read), not an internal error."""
    try:
        yield
    except (pl.exceptions.ComputeError, OSError, EOFError) as exc:
        text = _reason(exc)
        if not any(word in text.lower() for word in _READ_FAILURES):
            raise
        if len(text) > 160:
            text = text[:157] + "..."
        bad = files[0] if len(files) == 1 else _unreadable(files)
        where = str(bad) if bad is not None else f"one of the {len(files)} input files"
        fix = "check that the file is complete and in the format its name says"
        if "csv malformed" in text.lower():
            # (polars' reader splits a CSV into chunks; a quote left open shifts one's rows)
            fix = "check that every quoted field in it is closed"
        raise InputError(f"{where}: cannot read its rows ({text}); {fix}") from None


def _unreadable(files: Sequence[Path]) -> Path | None:
    """The first of ``files`` whose rows cannot all be decoded: each is read through (and
    let go) in turn, so this costs a pass over the files before it, once a run has failed."""
    for path in files:
        try:
            for f in _expand([path]):
                lf, *_ = _scan(f, find_short=False)  # (polars' reading is what failed)
                lf.sink_batches(lambda _: None)
        except (InputError, pl.exceptions.PolarsError, OSError, EOFError):
            return path
    return None


def usable_rows(source: Source) -> pl.LazyFrame:
    """The rows of ``source`` that can be analysed (``_bad`` is null)."""
    return source.frame.filter(pl.col(BAD).is_null())


def malformed_counts(source: Source) -> dict[str, int]:
    """Rows per reason in ``MALFORMED_REASONS``, computed in one lazy aggregation.

    >>> malformed_counts(source)  # doctest: +SKIP
    {'unparseable_timestamp': 3, 'null_account_id': 0, 'invalid_ip': 12, 'invalid_tokens': 1,
     'extra_cells': 0, 'missing_cells': 0, 'invalid_utf8': 0}
    """
    rows = source.frame if source.log_rows is None else source.log_rows
    row = rows.select(malformed_sums()).collect().row(0, named=True)
    return {reason: int(row[reason] or 0) for reason in MALFORMED_REASONS}


def malformed_sums() -> list[pl.Expr]:
    """Rows per reason in ``MALFORMED_REASONS``, as aggregations of a frame's ``_bad`` and
    ``ROW_FLAGS`` columns."""
    bad = pl.col(BAD)
    return [
        *(
            (bad == reason).sum().alias(reason)
            for reason in MALFORMED_REASONS
            if reason not in ROW_FLAGS
        ),
        *(pl.col(flag).sum().alias(reason) for reason, flag in ROW_FLAGS.items()),
    ]


def load_config(path: str | Path) -> dict[str, str]:
    """Read the column mapping from a TOML file, ready for ``read_logs(columns=...)``.

    ``[columns]`` maps canonical names to log column names; ``[accounts_columns]``
    maps canonical names to accounts-table column names and comes back under
    ``accounts.<name>`` keys. Unknown tables and names raise InputError.

    Example file::

        [columns]
        timestamp = "ts"
        account_id = "user_id"

        [accounts_columns]
        account_id = "id"

    gives ``{"timestamp": "ts", "account_id": "user_id", "accounts.account_id": "id"}``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read config file ({_reason(exc)})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: invalid TOML ({_reason(exc)})") from None

    tables = " and ".join(f"[{t}]" for t in _CONFIG_TABLES)
    mapping: dict[str, str] = {}
    for key, value in data.items():
        if key not in _CONFIG_TABLES:
            raise InputError(f"{path}: unknown key {key!r}; the config holds only {tables}")
        if not isinstance(value, dict):
            raise InputError(f'{path}: {key!r} must be a table ([{key}]) of name = "source"')
        valid, prefix = _CONFIG_TABLES[key]
        for name, source in value.items():
            if name not in valid:
                raise InputError(
                    f"{path}: unknown column name {name!r} in [{key}]; valid names: "
                    + ", ".join(valid)
                )
            if not isinstance(source, str) or not source.strip():
                raise InputError(
                    f"{path}: [{key}] {name} must be a source column name in quotes, "
                    f'e.g. {name} = "{name}"'
                )
            mapping[prefix + name] = source
    return mapping


def parse_time_bound(text: str) -> datetime:
    """Parse a --from/--to value: an ISO-8601 date or datetime; no offset means UTC.

    >>> parse_time_bound("2026-03-01T02:00+02:00")
    datetime.datetime(2026, 3, 1, 0, 0, tzinfo=datetime.timezone.utc)
    """
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(
            f"invalid time {text!r}; use an ISO-8601 date or datetime such as 2026-03-01, "
            "2026-03-01T12:00:00Z or 2026-03-01T12:00:00+02:00"
        ) from None
    return _as_utc(value)


# ---------------------------------------------------------------------------
# Finding files


def _fmt(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith((".tsv", ".tsv.gz")):
        return "tsv"
    return None


def _hidden(path: Path, root: Path) -> bool:
    """Files such as .crc or _SUCCESS that writers leave beside data files."""
    return any(part.startswith((".", "_")) for part in path.relative_to(root).parts)


def _hive(path: Path, root: Path) -> dict[str, str]:
    pairs = (part.split("=", 1) for part in path.relative_to(root).parent.parts if "=" in part)
    return {key: unquote(value) for key, value in pairs}


def _under(root: Path) -> list[_File]:
    found = sorted(p for p in root.rglob("*") if p.is_file() and not _hidden(p, root))
    return [_File(p, fmt, _hive(p, root)) for p in found if (fmt := _fmt(p)) is not None]


def _is_glob(text: str) -> bool:
    return re.search(r"[*?[]", text) is not None


def _glob_root(pattern: str) -> Path:
    """The directory part of a glob before its first wildcard."""
    fixed: list[str] = []
    for part in Path(pattern).parts:
        if _is_glob(part):
            break
        fixed.append(part)
    return Path(*fixed)


def _not_a_file(path: Path) -> InputError:
    """A pipe, socket or device given as input: it is read more than once (its header, its
    schema, then its rows), which a stream cannot be."""
    return InputError(
        f"{path}: not a regular file (a pipe, socket or device); the input is read more than "
        "once, so save it to a file first (a .csv.gz file is read as it is)"
    )


def _expand(paths: Sequence[str | Path]) -> list[_File]:
    supported = ", ".join(SUPPORTED_SUFFIXES)
    files: list[_File] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = _under(path)
            if not found:
                raise InputError(
                    f"{path}: directory holds no Parquet or CSV files (looked for {supported})"
                )
        elif path.exists() or not _is_glob(str(given)):
            if not path.exists():
                raise InputError(f"{path}: file not found")
            if not path.is_file():
                raise _not_a_file(path)
            fmt = _fmt(path)
            if fmt is None:
                raise InputError(f"{path}: unsupported file type; use one of {supported}")
            found = [_File(path, fmt)]
        else:
            root = _glob_root(str(given))
            found = []
            for match in sorted(glob.glob(str(given), recursive=True)):
                m = Path(match)
                if m.is_dir():
                    found.extend(_under(m))
                elif (fmt := _fmt(m)) is not None:
                    if not m.exists():  # a broken link
                        raise InputError(f"{m}: file not found")
                    if not m.is_file():
                        raise _not_a_file(m)
                    found.append(_File(m, fmt, _hive(m, root)))
            if not found:
                raise InputError(
                    f"no files match {str(given)!r}; check the pattern (looked for {supported})"
                )
        files.extend(found)

    seen: set[Path] = set()
    unique: list[_File] = []
    for f in files:
        key = f.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


# ---------------------------------------------------------------------------
# Scanning one file


def _reason(exc: BaseException) -> str:
    """First line of an exception message, for one-line errors."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _check_parquet(path: Path) -> int:
    """Reject a Parquet file whose footer points past its end (a truncated copy).

    Polars would otherwise accept the schema and fail halfway through the run.
    Returns the rows the footer counts.
    """
    size = path.stat().st_size
    meta = pq.read_metadata(path)
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            start = chunk.dictionary_page_offset or chunk.data_page_offset
            if start + chunk.total_compressed_size > size:
                raise ValueError(f"row group {g} ends past the end of the file (truncated?)")
    return int(meta.num_rows)


def _scan(
    f: _File, *, find_short: bool = True
) -> tuple[pl.LazyFrame, pl.Schema, int | None, np.ndarray | None]:
    """The file as a lazy frame, its schema, its rows when the format says so cheaply,
    and for CSV (with ``find_short``), the numbers of its rows with fewer cells than the
    header (the frame then has their numbers, ``_ROW``, when there are any)."""
    rows = None
    try:
        if f.fmt == "parquet":
            rows = _check_parquet(f.path)
            lf = pl.scan_parquet(f.path, hive_partitioning=False, glob=False)
        else:
            with f.path.open("rb") as fh:
                if fh.read(4) == b"PAR1":
                    raise InputError(
                        f"{f.path}: is a Parquet file; name it with .parquet to read it as one"
                    )
            options: dict[str, Any] = {
                "glob": False,  # the path is already expanded; "[" in a name is literal
                "separator": _SEPARATORS[f.fmt],
                "null_values": _CSV_NULLS,
                "encoding": "utf8-lossy",  # one bad byte must not abort a long run: counted
            }
            # Every column as text (parsing below marks bad values), and one more than
            # the header names: a row with more cells fills it and is counted, where
            # polars would otherwise cut it short unseen.
            schema = pl.scan_csv(f.path, infer_schema=False, **options).collect_schema()
            for name in (_EXTRA, _ROW):
                if name in schema:
                    raise InputError(f"{f.path}: a column is named {name!r}; rename it")
            skip = 1 + _empty_lines_before_header(f.path)
            lf = pl.scan_csv(
                f.path,
                has_header=False,
                skip_rows=skip,
                schema={**dict.fromkeys(schema.names(), pl.String()), _EXTRA: pl.String()},
                missing_columns="insert",
                extra_columns="ignore",
                truncate_ragged_lines=True,
                **options,
            )
            if not find_short:
                return lf, schema, rows, None
            # polars reads a row cut short as if its last cells were there and empty.
            short = short_rows(f.path, _SEPARATORS[f.fmt], len(schema), skip)
            if len(short):
                lf = lf.with_row_index(_ROW)
            return lf, schema, rows, short
        return lf, lf.collect_schema(), rows, None
    except FileNotFoundError:
        raise InputError(f"{f.path}: file not found") from None
    except PermissionError:
        raise InputError(f"{f.path}: permission denied; check the file's permissions") from None
    except pl.exceptions.NoDataError:
        raise InputError(f"{f.path}: file is empty") from None
    except (OSError, ValueError, pl.exceptions.PolarsError, pl.exceptions.PanicException) as exc:
        kind = "Parquet" if f.fmt == "parquet" else f.fmt.upper()
        raise InputError(f"{f.path}: cannot read as {kind} ({_reason(exc)})") from None


def _empty_lines_before_header(path: Path) -> int:
    """Empty lines before a CSV file's header, which polars passes over to find the header
    but counts among the rows to skip before the data. Counted by polars itself (its
    decompression, byte-order mark and line endings) in a one-column read of the first
    lines, with a separator and no quoting: an empty line is a null there."""
    lines = 1024
    while True:
        first = (
            pl.scan_csv(
                path,
                glob=False,
                has_header=False,
                separator="\x1f",
                quote_char=None,
                infer_schema=False,
                truncate_ragged_lines=True,
                encoding="utf8-lossy",
                n_rows=lines,
            )
            .collect()
            .to_series()
        )
        text = first.is_not_null()
        if text.any():
            return int(text.arg_max() or 0)
        if len(first) < lines:
            return len(first)
        lines *= 16


def _printable(name: str, limit: int = 40) -> str:
    """A column name fit for a one-line message: control characters as ``?``, cut short."""
    text = "".join(c if c.isprintable() else "?" for c in name)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(_printable(n) for n in names[:_MAX_LISTED_COLUMNS])
    extra = len(names) - _MAX_LISTED_COLUMNS
    return shown + (f", ... (+{extra} more)" if extra > 0 else "")


def _fold(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lstrip("\ufeff").lower())


_HOW_TO_MAP_LOGS = "--column {c}=<name> or a [columns] table in --config"
_HOW_TO_MAP_ACCOUNTS = "--column accounts.{c}=<name> or an [accounts_columns] table in --config"


@dataclass(frozen=True)
class _Plan:
    """Where each canonical column comes from in one file."""

    file: _File
    frame: pl.LazyFrame
    sources: dict[str, str]  # canonical -> source column (or hive key)
    dtypes: dict[str, pl.DataType]  # source column (or hive key) -> dtype
    in_file: frozenset[str]  # names that are real columns of the file, not hive keys
    rows: int | None  # rows in the file, from a Parquet footer; None for text formats
    short_rows: np.ndarray | None  # CSV rows with fewer cells than the header (see _scan)


def _plan(
    f: _File,
    mapping: Mapping[str, str],
    lenient: set[str] | frozenset[str],
    *,
    required: tuple[str, ...],
    how_to_map: str,
    wanted: tuple[str, ...] = ALL_COLUMNS,
    fallback: Mapping[str, str] | None = None,
) -> _Plan:
    """Resolve canonical columns against one file's schema (and its hive directories)."""
    lf, schema, rows, short = _scan(f)
    dtypes: dict[str, pl.DataType] = dict(schema.items())
    for key in f.hive:
        dtypes.setdefault(key, pl.String())
    names = list(dtypes)
    folded: dict[str, list[str]] = {}
    for name in names:
        folded.setdefault(_fold(name), []).append(name)

    sources: dict[str, str] = {}
    for canonical in wanted:
        if canonical in mapping:
            source = mapping[canonical]
            if source in dtypes:
                sources[canonical] = source
            elif canonical not in lenient:
                raise InputError(
                    f"{f.path}: mapped column {source!r} (for {canonical}) not found "
                    f"(columns: {_listing(names)}); fix {how_to_map.format(c=canonical)}"
                )
            continue
        if canonical in dtypes:
            sources[canonical] = canonical
            continue
        matches = folded.get(canonical, [])
        if len(matches) > 1:
            raise InputError(
                f"{f.path}: columns {', '.join(map(repr, matches))} all match {canonical}; "
                f"pick one with {how_to_map.format(c=canonical)}"
            )
        if matches:
            sources[canonical] = matches[0]
        elif fallback and canonical in fallback and fallback[canonical] in dtypes:
            sources[canonical] = fallback[canonical]

    for canonical in required:
        if canonical not in sources:
            fix = f"map it with {how_to_map.format(c=canonical)}"
            other = [c for c in ";|" if len(names) == 1 and c in names[0]]
            if f.fmt != "parquet" and other:
                # One column whose name holds another separator: the file is not split
                # the way its name says.
                sep = "a tab (.tsv)" if f.fmt == "tsv" else "commas"
                fix = f"the header seems separated by {other[0]!r}; write the file with {sep}"
            raise InputError(
                f"{f.path}: required column {canonical!r} not found "
                f"(columns: {_listing(names)}); {fix}"
            )
    if f.fmt != "parquet":
        # A CSV header may repeat a name: polars renames the repeats (name_duplicated_0),
        # so which cell is read would be a guess. Refused for the columns read.
        for name in names:
            repeated = re.fullmatch(r"(.+)_duplicated_\d+", name)
            if repeated and repeated.group(1) in sources.values():
                raise InputError(
                    f"{f.path}: column {repeated.group(1)!r} appears more than once in the "
                    "header; rename or remove the repeats"
                )
    return _Plan(f, lf, sources, dtypes, frozenset(schema.names()), rows, short)


# ---------------------------------------------------------------------------
# Converting columns to canonical types


def _type_error(plan: _Plan, canonical: str, dtype: pl.DataType, expected: str) -> InputError:
    source = plan.sources[canonical]
    what = repr(source) if source == canonical else f"{source!r} (mapped to {canonical})"
    return InputError(
        f"{plan.file.path}: column {what} has type {dtype}, which cannot be read as "
        f"{canonical}; expected {expected}"
    )


def _stripped_stages(name: str, col: pl.Expr) -> _Stages:
    """``col`` as stripped text under ``name``, empty -> null: stripped in one stage, nulled
    where empty in the next (in one expression the strip runs twice, once for the test
    and once for the value)."""
    text = pl.col(name)
    return [
        [col.cast(pl.String).str.strip_chars().alias(name)],
        [pl.when(text != "").then(text).alias(name)],
    ]


def _text_stages(name: str, col: pl.Expr, dtype: pl.DataType) -> _Stages | None:
    """Any scalar column as stripped text (empty -> null) under ``name``; None if the type
    has no text form."""
    if dtype.is_float():
        # Floats are how pandas stores integer ids with gaps: 424242.0 -> "424242", NaN -> null.
        col = col.fill_nan(None)
        as_int = pl.when(col == col.floor()).then(col.cast(pl.Int64, strict=False))
        return [[pl.coalesce(as_int.cast(pl.String), col.cast(pl.String)).alias(name)]]
    if not (
        dtype == pl.String
        or dtype.is_numeric()
        or dtype.is_temporal()
        or isinstance(dtype, pl.Categorical | pl.Enum | pl.Boolean)
    ):
        return None
    return _stripped_stages(name, col)


# Epoch unit by magnitude (see the module docstring): |value| below these bounds is
# seconds, milliseconds, microseconds; anything larger is nanoseconds.
_SECONDS_BELOW, _MILLIS_BELOW, _MICROS_BELOW = 10**11, 10**14, 10**17


def _epoch_to_us(value: pl.Expr, *, integer: bool) -> pl.Expr:
    size = value.abs()
    return (
        pl.when(size < _SECONDS_BELOW)
        .then(value * 1_000_000)
        .when(size < _MILLIS_BELOW)
        .then(value * 1_000)
        .when(size < _MICROS_BELOW)
        .then(value)
        .otherwise(value // 1_000 if integer else value / 1_000)
    )


def _from_epoch_us(us: pl.Expr) -> pl.Expr:
    return us.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def _epoch_from_float(value: pl.Expr) -> pl.Expr:
    us = _epoch_to_us(value, integer=False).round(0)
    return _from_epoch_us(pl.when(value.is_finite()).then(us).cast(pl.Int64, strict=False))


def _epoch_from_int(value: pl.Expr) -> pl.Expr:
    number = value.cast(pl.Int64, strict=False)
    # The least Int64 has no absolute value: it would wrap around to a time in 1970.
    number = pl.when(number != -(2**63)).then(number)
    return _from_epoch_us(_epoch_to_us(number, integer=True))


# ISO-8601 date, optional time (minutes, seconds and fraction optional), optional zone.
_ISO = (
    r"(?i)^(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:[T ](?P<hm>[0-9]{2}:[0-9]{2})(?::(?P<sec>[0-9]{2})(?:[.,](?P<frac>[0-9]{1,9})[0-9]*)?)?)?"
    r"\s*(?P<tz>Z|UTC|GMT|[+-][0-9]{2}(?::?[0-9]{2})?)?$"
)
_NUMBER = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)$"

# A column's conversion as successive lists of expressions: stage 0 selects from
# the file, each later stage adds columns computed from the previous ones. Staging
# computes each intermediate (a regex match, a cast) once per row, where one
# nested expression would repeat it in every branch that uses it.
_Stages = list[list[pl.Expr]]


# The shape nearly every export writes. Text of this shape is read by polars' own
# parser, several times faster than the general parse and giving the same times (the
# parser alone is looser: "+2026-...", one-digit fields; that text goes the general way).
_CANONICAL_TIME = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
    r"(?:Z|[+-][0-9]{2}:?[0-9]{2})$"
)


def _text_time_stages(name: str, col: pl.Expr) -> _Stages:
    """ISO-8601 or epoch text -> Datetime(us, UTC) under ``name``; anything else -> null.

    Text of ``_CANONICAL_TIME``'s shape is parsed at once; the general parse
    (:func:`_general_time_stages`) sees only the rest, the other rows null to it."""
    text = pl.col(name)
    quick, rest = f"__{name}_quick", f"__{name}_rest"
    canonical = text.str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.f%#z", time_unit="us", time_zone="UTC", strict=False
    )
    return [
        *_stripped_stages(name, col),
        [pl.when(text.str.contains(_CANONICAL_TIME)).then(canonical).alias(quick)],
        [pl.when(pl.col(quick).is_null()).then(text).alias(rest)],
        *_general_time_stages(rest),
        [pl.coalesce(quick, rest).alias(name)],
    ]


def _general_time_stages(name: str) -> _Stages:
    """The stripped text ``name`` (ISO-8601 or epoch) -> Datetime(us, UTC) under ``name``;
    anything else -> null."""
    text = pl.col(name)
    parts, as_int, naive, offset = (f"__{name}_{s}" for s in ("parts", "int", "naive", "offset"))
    field = pl.col(parts).struct.field

    tz = field("tz").str.to_uppercase().str.replace_all(":", "", literal=True)
    hours = tz.str.slice(1, 2).cast(pl.Int32, strict=False)
    minutes = tz.str.slice(3, 2).cast(pl.Int32, strict=False).fill_null(0)
    sign = pl.when(tz.str.starts_with("-")).then(-1).otherwise(1)
    offset_minutes = (
        pl.when(tz.is_null() | tz.is_in(["Z", "UTC", "GMT"]))
        .then(0)
        .when((hours <= 23) & (minutes <= 59))
        .then(sign * (hours * 60 + minutes))
    )
    naive_time = pl.concat_str(
        field("date"),
        pl.lit("T"),
        field("hm").fill_null("00:00"),
        pl.lit(":"),
        field("sec").fill_null("00"),
        pl.lit("."),
        field("frac").fill_null("0"),
    ).str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", time_unit="us", strict=False)

    iso = (pl.col(naive) - pl.duration(minutes=pl.col(offset))).dt.replace_time_zone("UTC")
    epoch = (
        pl.when(pl.col(as_int).is_not_null())
        .then(_epoch_from_int(pl.col(as_int)))
        .otherwise(_epoch_from_float(text.cast(pl.Float64, strict=False)))
    )
    return [
        [
            text.str.extract_groups(_ISO).alias(parts),
            text.cast(pl.Int64, strict=False).alias(as_int),
        ],
        [naive_time.alias(naive), offset_minutes.alias(offset)],
        [pl.when(text.str.contains(_NUMBER)).then(epoch).otherwise(iso).alias(name)],
    ]


def _is_text(dtype: pl.DataType) -> bool:
    return dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum)


def _timestamp_stages(plan: _Plan, name: str, col: pl.Expr, dtype: pl.DataType) -> _Stages:
    if _is_text(dtype):
        return _text_time_stages(name, col)
    if isinstance(dtype, pl.Datetime):
        col = col.dt.cast_time_unit("us")
        if dtype.time_zone is None:
            expr = col.dt.replace_time_zone("UTC")
        else:
            expr = col.dt.convert_time_zone("UTC")
    elif dtype == pl.Date:
        expr = col.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    elif dtype.is_integer():
        expr = _epoch_from_int(col)
    elif dtype.is_float() or dtype.is_decimal():
        expr = _epoch_from_float(col.cast(pl.Float64))
    else:
        raise _type_error(
            plan, name, dtype, "a datetime or date, ISO-8601 text, or epoch seconds/ms/us"
        )
    return [[expr.alias(name)]]


def _token_flag(name: str) -> str:
    return f"__{name}_invalid"


def _token_stages(plan: _Plan, name: str, col: pl.Expr, dtype: pl.DataType) -> _Stages:
    """A non-negative Int64 count under ``name`` and a flag for values refused (not missing)."""
    flag = _token_flag(name)
    if dtype.is_integer():
        value = col.cast(pl.Int64, strict=False)
        invalid = col.is_not_null() & (value.is_null() | (value < 0))
        return [[pl.when(value >= 0).then(value).alias(name), invalid.alias(flag)]]
    if dtype.is_float() or dtype.is_decimal():
        number = col.cast(pl.Float64)
        whole = number.is_finite() & (number == number.floor())
        value = pl.when(whole & (number >= 0)).then(number.cast(pl.Int64, strict=False))
        given = number.is_not_null() & number.is_not_nan()  # NaN is pandas' "missing"
        return [[value.alias(name), (given & value.is_null()).alias(flag)]]
    if not _is_text(dtype):
        raise _type_error(plan, name, dtype, "whole numbers (Int64) or numeric text")
    text = pl.col(name)
    as_int, as_float = f"__{name}_int", f"__{name}_float"
    number = pl.col(as_float)
    whole = number.is_finite() & (number == number.floor())
    value = pl.coalesce(pl.col(as_int), pl.when(whole).then(number.cast(pl.Int64, strict=False)))
    return [
        *_stripped_stages(name, col),
        [
            text.cast(pl.Int64, strict=False).alias(as_int),
            text.cast(pl.Float64, strict=False).alias(as_float),
        ],
        [
            pl.when(value >= 0).then(value).alias(name),
            (text.is_not_null() & (value.is_null() | (value < 0))).alias(flag),
        ],
    ]


def _frame(plan: _Plan, present: Sequence[str]) -> pl.LazyFrame:
    """One file as canonical columns (nulls for those only other files have), then the
    flags of ``_FILE_FLAGS``."""
    hive = {k: pl.lit(v, dtype=pl.String) for k, v in plan.file.hive.items()}
    stages: _Stages = [[]]
    flags: list[pl.Expr] = []
    created_given = False
    for canonical in present:
        target = SCHEMA[canonical]
        source = plan.sources.get(canonical)
        dtype = plan.dtypes.get(source) if source is not None else None
        if source is None or dtype is None or dtype == pl.Null:
            stages[0].append(pl.lit(None, dtype=target).alias(canonical))
            continue
        col = pl.col(source) if source in plan.in_file else hive[source]
        if canonical in TIMESTAMP_COLUMNS:
            column = _timestamp_stages(plan, canonical, col, dtype)
            if canonical == "created_at":
                given = col.is_not_null()
                if _is_text(dtype):
                    given &= ~col.cast(pl.String).str.contains(r"^\s*$")
                elif dtype.is_float():
                    given &= col.is_not_nan()  # (pandas' "missing")
                stages[0].append(given.fill_null(False).alias(_CREATED_GIVEN))
                created_given = True
        elif canonical in TOKEN_COLUMNS:
            column = _token_stages(plan, canonical, col, dtype)
            flags.append(pl.col(_token_flag(canonical)).fill_null(False))
        elif canonical in LONG_TEXT_COLUMNS and dtype == pl.String:
            # Long free text: blank -> null without copying every value to strip it.
            column = [[pl.when(~col.str.contains(r"^\s*$")).then(col).alias(canonical)]]
        else:
            text_stages = _text_stages(canonical, col, dtype)
            if text_stages is None:
                raise _type_error(plan, canonical, dtype, "text or numbers")
            column = text_stages
        for i, exprs in enumerate(column):
            if i == len(stages):
                stages.append([])
            stages[i].extend(exprs)

    # Text polars read leniently: extra cells, and bytes not UTF-8 (read as U+FFFD),
    # in the columns used. Parquet text is UTF-8 by the format's rules.
    extra = missing = utf8 = pl.lit(False)
    if plan.file.fmt != "parquet":
        extra = pl.col(_EXTRA).is_not_null()
        if plan.short_rows is not None and len(plan.short_rows):
            missing = pl.col(_ROW).cast(pl.Int64).is_in(pl.Series(plan.short_rows).implode())
        used = sorted({s for s in plan.sources.values() if s in plan.in_file})
        if used:
            replaced = (pl.col(s).str.contains("\ufffd", literal=True) for s in used)
            utf8 = pl.any_horizontal(replaced).fill_null(False)
    stages[0].extend(
        [extra.alias(EXTRA_CELLS), missing.alias(MISSING_CELLS), utf8.alias(UTF8_INVALID)]
    )
    frame = plan.frame.select(stages[0])
    for exprs in stages[1:]:
        frame = frame.with_columns(exprs)
    flag = pl.any_horizontal(flags) if flags else pl.lit(False)
    unreadable = pl.lit(False)
    if created_given:
        unreadable = pl.col(_CREATED_GIVEN) & pl.col("created_at").is_null()
    return frame.select(
        *(pl.col(c).cast(SCHEMA[c]) for c in present),
        flag.alias(TOKENS_INVALID),
        EXTRA_CELLS,
        MISSING_CELLS,
        UTF8_INVALID,
        unreadable.alias(_CREATED_UNREADABLE),
    )


def _stack(frames: list[pl.LazyFrame]) -> pl.LazyFrame:
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical")


# ---------------------------------------------------------------------------
# Accounts


def _read_accounts(
    accounts: str | Path, mapping: Mapping[str, str], fallback: Mapping[str, str]
) -> tuple[pl.LazyFrame, list[str], Path, dict[str, int]]:
    """The accounts table, one row per account_id, canonical columns only, and its
    problems (see ``ACCOUNT_PROBLEMS``).

    An account on several rows keeps the least value of each column, as
    account columns carried by the logs do: the same whatever the row order.
    The table is read here, once (it has a row per account, not per request).
    """
    files = _expand([accounts])
    plans = [
        _plan(
            f,
            mapping,
            frozenset(),
            required=("account_id",),
            how_to_map=_HOW_TO_MAP_ACCOUNTS,
            wanted=ACCOUNT_COLUMNS,
            fallback=fallback,
        )
        for f in files
    ]
    present = [c for c in ACCOUNT_COLUMNS if any(c in p.sources for p in plans)]
    frame = _stack([_frame(p, present) for p in plans])
    if "signup_ip" in present:
        frame = frame.with_columns(ip_clean(pl.col("signup_ip")).alias("signup_ip"))
    where = files[0].path if len(files) == 1 else Path(accounts)
    with read_errors([where]):
        table = frame.collect()
    rows = table.height
    damaged = table.select(
        (pl.col(EXTRA_CELLS) | pl.col(MISSING_CELLS) | pl.col(UTF8_INVALID)).sum()
    ).item()
    table = table.filter(pl.col("account_id").is_not_null())
    unreadable = table.get_column(_CREATED_UNREADABLE).sum()
    table = table.drop(*_FILE_FLAGS, _CREATED_UNREADABLE)
    ids = table.get_column("account_id")
    problems = {
        "duplicate_account_rows": ids.len() - ids.n_unique(),
        "null_account_rows": rows - ids.len(),
        "damaged_account_rows": damaged,
        "unreadable_created_at": unreadable,
    }
    if problems["duplicate_account_rows"]:
        table = (
            table.group_by("account_id")
            .agg(pl.exclude("account_id").min())
            .select(table.columns)
            .sort("account_id")
        )
    return table.lazy(), present, where, {k: int(v) for k, v in problems.items() if v}


def _join_accounts(
    logs: pl.LazyFrame, accounts: pl.LazyFrame, log_present: list[str], account_present: list[str]
) -> pl.LazyFrame:
    """Left-join account columns; where the logs already carry one, their non-null values win."""
    suffix = "__accounts"
    joined = logs.join(accounts, on="account_id", how="left", suffix=suffix, maintain_order="left")
    overlap = [c for c in account_present if c != "account_id" and c in log_present]
    if overlap:
        joined = joined.with_columns(
            pl.coalesce(pl.col(c), pl.col(c + suffix)).alias(c) for c in overlap
        ).drop([c + suffix for c in overlap])
    return joined


# ---------------------------------------------------------------------------
# Arguments


def _split_mapping(mapping: Mapping[str, str] | None) -> tuple[dict[str, str], dict[str, str]]:
    """Validate a column mapping and split it into (logs, accounts table) parts."""
    logs: dict[str, str] = {}
    accounts: dict[str, str] = {}
    for key, source in (mapping or {}).items():
        name = key.removeprefix(ACCOUNTS_PREFIX)
        target, valid = (
            (accounts, ACCOUNT_COLUMNS) if key.startswith(ACCOUNTS_PREFIX) else (logs, ALL_COLUMNS)
        )
        if name not in valid:
            raise InputError(
                f"unknown column name {key!r} in the column mapping; valid names: "
                f"{', '.join(ALL_COLUMNS)} (and {ACCOUNTS_PREFIX}<name> for the accounts table)"
            )
        if not isinstance(source, str) or not source.strip():
            raise InputError(
                f"the column mapping for {key} names no source column; "
                f"give one as --column {key}=<name>"
            )
        target[name] = source
    return logs, accounts


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def check_time_window(
    time_from: datetime | None, time_to: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """The --from/--to bounds in UTC; refused when they leave no time between them."""
    start = _as_utc(time_from) if time_from is not None else None
    end = _as_utc(time_to) if time_to is not None else None
    if start is not None and end is not None and start >= end:
        raise InputError(
            f"empty time window: from {start.isoformat()} is not earlier than to "
            f"{end.isoformat()}; swap --from and --to"
        )
    return start, end
