"""The evidence store: one folder per day of mergeable evidence, for nightly jobs.

``write_evidence`` extracts a day's (or several days') logs into
``DIR/day=YYYY-MM-DD/`` folders; extracting the same day again replaces that
day only, atomically. ``read_evidence`` merges the days of a window into the
same :class:`~distill_forensics.extract.Evidence` that extracting the raw logs
of that window gives (every table is made of sums, minima, maxima and bottom-k
sketches, so merging is exact), without reading raw logs again.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from contextlib import suppress
from pathlib import Path

import polars as pl

from distill_forensics.errors import InputError
from distill_forensics.extract import (
    ACCOUNT_COUNTERS,
    SLOT_SECONDS,
    USAGE_SCHEMA,
    Evidence,
    Parts,
    RowsRead,
    extract_parts,
    finish,
    merge_parts,
    prompt_hash_mark,
)
from distill_forensics.read import Source, _reason
from distill_forensics.schema import ACCOUNT_SCHEMA

TABLES = ("usage", "activity", "accounts")
_TABLE_COLUMNS = {
    "usage": ("account_id", "kind", "value", "n_requests", "first_seen", "last_seen", "variants"),
    "activity": ("account_id", "slot", "n"),
    "accounts": ("account_id", "n_requests", "first_seen", "last_seen"),
}
"""Columns each table of a day must have (the accounts table has more, by input)."""
_TABLE_TYPES: dict[str, dict[str, pl.DataType]] = {
    "usage": dict(USAGE_SCHEMA),
    "activity": {"account_id": pl.String(), "slot": pl.Int64(), "n": pl.Int32()},
    "accounts": {
        **ACCOUNT_SCHEMA,
        **dict.fromkeys(ACCOUNT_COUNTERS, pl.Int64()),
        "first_seen": USAGE_SCHEMA["first_seen"],
        "last_seen": USAGE_SCHEMA["last_seen"],
        "org_id": pl.String(),
    },
}
"""The type of each column of a day's tables that has one, as ``write_evidence`` writes it."""
PREFIX = "day="
FORMAT_VERSION = 1


def _day_of_slot() -> pl.Expr:
    return (pl.col("slot") * SLOT_SECONDS // 86400).cast(pl.Int32).cast(pl.Date)


def write_evidence(
    source: Source,
    out_dir: str | Path,
    on_rows: RowsRead | None = None,
    *,
    summary: dict[str, int] | None = None,
) -> list[dt.date]:
    """Extract ``source`` into one evidence folder per day under ``out_dir``.

    Returns the days written. A day already in the store is replaced whole.
    ``on_rows`` hears how many rows have been read, as extraction goes;
    ``summary``, if given, receives the run's counts: ``rows``, the malformed
    rows per reason, the accounts table's problems (``ACCOUNT_PROBLEMS``) and
    ``accounts``, the accounts in the logs.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file; give a directory for the evidence store")
    # Checked now, created once the evidence is ready: a failed run leaves no empty store.
    base = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        raise InputError(f"{out}: cannot create the evidence directory in {str(base)!r}")
    parts = extract_parts(source, by_day=True, on_rows=on_rows)
    per_day_rows = parts.day_counts
    assert per_day_rows is not None  # (extracted by day)
    if summary is not None:
        summary.update(parts.counts)
        summary["accounts"] = parts.accounts.get_column("account_id").n_unique()
    activity = parts.activity.with_columns(pl.col("account_id").cast(pl.String), day=_day_of_slot())
    days = sorted(set(per_day_rows.get_column("day").to_list()))
    mark = prompt_hash_mark()
    created = bool(days) and not out.exists()
    if days:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                f"{out}: cannot create the evidence directory ({exc.strerror})"
            ) from None
    # Every day is written beside the store first and swapped in once all are:
    # a run that fails leaves the store as it was.
    staged: list[tuple[Path, Path]] = []
    try:
        for day in days:
            # (Rows whose timestamp could not be read have no day: counted by the run alone.)
            counts = (
                per_day_rows.filter(pl.col("day") == day)
                .drop("day", "unparseable_timestamp")
                .row(0, named=True)
            )
            # Sorted, so the same day's logs always give the same bytes.
            tables = {
                "usage": parts.usage.filter(pl.col("day") == day)
                .drop("day")
                .with_columns(pl.col(pl.Categorical).cast(pl.String))
                .sort("kind", "value", "account_id"),
                "activity": activity.filter(pl.col("day") == day)
                .drop("day")
                .sort("account_id", "slot"),
                "accounts": parts.accounts.filter(pl.col("day") == day)
                .drop("day")
                .sort("account_id"),
            }
            meta = {
                "format": FORMAT_VERSION,
                "day": day.isoformat(),
                "columns": list(parts.columns),
                "counts": {k: int(v or 0) for k, v in counts.items()},
                # Sketches of prompt hashes merge only with sketches of the same hash.
                "prompt_hash": mark,
                "polars": pl.__version__,
            }
            final = out / f"{PREFIX}{day.isoformat()}"
            staged.append((_staged_day(final, tables, meta), final))
        _swap_in(staged)
    finally:
        for tmp, _ in staged:
            shutil.rmtree(tmp, ignore_errors=True)
        if created:
            with suppress(OSError):
                out.rmdir()  # (only when empty: nothing was swapped in)
    return days


def _staged_day(final: Path, tables: dict[str, pl.DataFrame], meta: dict) -> Path:
    """A complete folder of the day ``final`` will hold, written beside it."""
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        for name, df in tables.items():
            df.write_parquet(tmp / f"{name}.parquet")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(exc, (OSError, pl.exceptions.PolarsError)):
            raise
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else _reason(exc)
        raise InputError(
            f"{tmp}: cannot write the evidence day ({why}); check the space and "
            f"permissions of {str(final.parent)!r}, then extract again"
        ) from None
    return tmp


def _swap_in(staged: list[tuple[Path, Path]]) -> None:
    """Put each staged folder in place of its day, the replaced days kept until all are
    in: when one cannot be swapped (or the run is interrupted), those already swapped
    are put back."""
    swapped: list[tuple[Path, Path, Path | None]] = []
    try:
        for tmp, final in staged:
            old = None
            if final.exists():
                old = final.with_name(f".{final.name}.old-{os.getpid()}")
                shutil.rmtree(old, ignore_errors=True)  # (left by a killed run of this pid)
                final.rename(old)
            try:
                tmp.rename(final)
            except BaseException:
                if old is not None:
                    old.rename(final)
                raise
            swapped.append((tmp, final, old))
    except BaseException as exc:
        for staged_tmp, day, replaced in reversed(swapped):
            with suppress(OSError):
                day.rename(staged_tmp)
                if replaced is not None:
                    replaced.rename(day)
        if not isinstance(exc, OSError):
            raise
        raise InputError(
            f"{final}: cannot replace the evidence day ({exc.strerror or exc}); check the "
            "permissions of the store, then extract again"
        ) from None
    for _, _, old in swapped:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def evidence_days(store: str | Path) -> list[dt.date]:
    """The days present in an evidence store, oldest first."""
    root = Path(store)
    if not root.is_dir():
        raise InputError(
            f"{root}: no evidence store here; create one with "
            f"`distill-forensics extract LOGS -o {root}`"
        )
    days = []
    # Every day=YYYY-MM-DD entry: one that is not a complete day is reported when read.
    for child in root.iterdir():
        if child.name.startswith(PREFIX):
            try:
                days.append(dt.date.fromisoformat(child.name[len(PREFIX) :]))
            except ValueError:
                continue
    return sorted(days)


def _window_bounds(
    present: list[dt.date],
    window_days: int | None,
    until: dt.date | None,
    since: dt.date | None,
) -> tuple[dt.date, dt.date] | None:
    """The first and last day of a window over the days ``present`` (ascending), None when
    it holds none of them: up to ``until`` (the newest present day without it), the last
    ``window_days`` calendar days, none before ``since``."""
    last = until if until is not None else (present[-1] if present else None)
    if last is None or not present or present[0] > last:
        return None
    first = present[0]
    if window_days is not None and window_days <= (last - first).days:
        first = last - dt.timedelta(days=window_days - 1)
    if since is not None:
        first = max(first, since)
    return (first, last) if first <= last else None


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def days_in_window(
    store: str | Path,
    *,
    window_days: int | None = None,
    until: dt.date | None = None,
    since: dt.date | None = None,
) -> tuple[list[dt.date], list[dt.date]]:
    """The days of the store in a window, oldest first: the last ``window_days`` days up
    to ``until`` (the newest day in the store without it), none before ``since``; and the
    days of that window the store lacks, from its oldest day on (a store begun later than
    the window lacks nothing before it)."""
    root = Path(store)
    present = evidence_days(root)
    bounds = _window_bounds(present, window_days, until, since)
    days = [d for d in present if bounds and bounds[0] <= d <= bounds[1]]
    if bounds is None or not days:
        raise InputError(f"{root}: no evidence days in the window; run `distill-forensics extract`")
    # (Days after today are not missing, only not yet here.)
    first, last = max(bounds[0], present[0]), min(bounds[1], max(_today(), present[-1]))
    every = (first + dt.timedelta(days=k) for k in range((last - first).days + 1))
    have = set(present)
    return days, [d for d in every if d not in have]


def read_evidence(
    store: str | Path,
    *,
    window_days: int | None = None,
    until: dt.date | None = None,
    since: dt.date | None = None,
) -> Evidence:
    """Merge the days of a window (see :func:`days_in_window`) into evidence.

    Without ``until`` the window ends on the newest day in the store; without
    ``window_days`` every day up to ``until`` is used, from ``since`` if given.
    """
    days, _ = days_in_window(store, window_days=window_days, until=until, since=since)
    return read_days(store, days)


def read_days(store: str | Path, days: list[dt.date]) -> Evidence:
    """Merge the given days of the store (see :func:`days_in_window`) into evidence."""
    root = Path(store)
    parts = []
    # Sketches merge only with sketches of the same prompt hash: the first day of
    # each hash mark, and the polars that wrote it.
    hashed_by: dict[str, tuple[Path, str]] = {}
    for day in days:
        folder = root / f"{PREFIX}{day.isoformat()}"
        counts, columns, mark, made_by = _read_meta(folder)
        # (Days written before the mark was recorded have none, and merge as they are.)
        if mark is not None and "prompt" in columns:
            hashed_by.setdefault(mark, (folder, made_by))
            if len(hashed_by) > 1:
                (one, one_by), (other, other_by) = hashed_by.values()
                by = (
                    f"by polars {one_by} and polars {other_by}"
                    if one_by != other_by
                    else f"both by polars {one_by}, on different platforms"
                )
                raise InputError(
                    f"{one} and {other}: the prompts of these days were hashed differently "
                    f"({by}), so their sketches cannot be merged; extract the days of one "
                    "of them again with the other's polars"
                )
        tables = {name: _read_table(folder / f"{name}.parquet", name) for name in TABLES}
        parts.append(
            Parts(
                tables["usage"].with_columns(day=pl.lit(day)),
                tables["activity"],
                tables["accounts"].with_columns(day=pl.lit(day)),
                counts,
                columns,
            )
        )
    return finish(merge_parts(parts))


def _damaged(path: Path, why: str) -> InputError:
    return InputError(
        f"{path}: {why}; the evidence day is damaged: extract that day again "
        "(`distill-forensics extract LOGS -o STORE`)"
    )


def _read_meta(folder: Path) -> tuple[dict[str, int], tuple[str, ...], str | None, str]:
    """A day's counts, input columns, prompt hash mark (see
    :func:`~distill_forensics.extract.prompt_hash_mark`; None when the day has none)
    and the polars version that wrote it, from its ``meta.json``."""
    path = folder / "meta.json"
    if not folder.is_dir():
        raise _damaged(folder, "not a folder")
    if not path.is_file():
        raise _damaged(path, "missing or not a file")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # (bad JSON or text: ValueError)
        raise _damaged(path, f"cannot read it ({_reason(exc)})") from None
    if not isinstance(meta, dict):
        raise _damaged(path, "not an evidence day's metadata")
    version = meta.get("format")
    if type(version) is not int or version != FORMAT_VERSION:
        raise InputError(
            f"{folder}: evidence format {version!r} is not {FORMAT_VERSION}; extract that day again"
        )
    counts, columns = meta.get("counts"), meta.get("columns")
    if not (
        isinstance(counts, dict)
        and all(type(v) is int and v >= 0 for v in counts.values())
        and isinstance(columns, list)
        and all(isinstance(c, str) for c in columns)
    ):
        raise _damaged(path, "its counts or columns are missing or not as written")
    mark, made_by = meta.get("prompt_hash"), meta.get("polars", "?")
    if not (mark is None or isinstance(mark, str)) or not isinstance(made_by, str):
        raise _damaged(path, "its prompt hash mark or polars version is not as written")
    return counts, tuple(columns), mark, made_by


def _read_table(path: Path, name: str) -> pl.DataFrame:
    """One table of a day, with the columns merging needs."""
    if not path.is_file():
        raise _damaged(path, "missing or not a file")
    try:
        table = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise _damaged(path, f"cannot read it as Parquet ({_reason(exc)})") from None
    lacking = [c for c in _TABLE_COLUMNS[name] if c not in table.columns]
    if lacking:
        raise _damaged(path, f"not the {name} table of an evidence day (no column {lacking[0]!r})")
    types = _TABLE_TYPES[name]
    for column, dtype in table.schema.items():
        if column in types and dtype != types[column]:
            raise _damaged(path, f"column {column!r} is {dtype}, not {types[column]}")
    return table
