"""Write result tables as CSV, JSON, JSON lines or Parquet, atomically.

A report is written to a temporary file beside its destination and renamed
over it only once complete, so a crash or a full disk never leaves a
half-written report under the final name.

CSV cells are made safe to open in a spreadsheet: text starting with ``=``,
``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'`` so it is
not run as a formula (OWASP "CSV Injection"). Log fields such as prompts and
user agents are attacker-controlled, so this matters for a forensic report.
Text starting with ``'`` gets one more, so that :func:`read_table` gives back
the values as they were. JSON and Parquet keep values exactly as they are.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import IO

import polars as pl

from distill_forensics.errors import InputError

__all__ = [
    "FORMATS",
    "FORMULA_PREFIXES",
    "LIST_SEPARATOR",
    "to_csv_text",
    "to_json_text",
    "write_table",
]

# Output file name ending -> format name.
FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".csv.gz": "csv.gz",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
_FORMAT_NAMES = {*FORMATS.values(), "ndjson"}

# Leading characters a spreadsheet may treat as the start of a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
LIST_SEPARATOR = "; "

_QUOTE_START = r"^['=+\-@\t\r]"  # (FORMULA_PREFIXES, and ')
"""Text written with a leading ``'``: a formula's start, or a ``'`` of its own (so that
:func:`read_table` can take exactly one off again)."""


def _neutralised(text: pl.Expr) -> pl.Expr:
    return pl.when(text.str.contains(_QUOTE_START)).then(pl.lit("'") + text).otherwise(text)


def _restored(text: pl.Expr) -> pl.Expr:
    """The text of a CSV cell :func:`_neutralised` wrote, as it was."""
    quoted = text.str.starts_with("'") & text.str.slice(1).str.contains(_QUOTE_START)
    return pl.when(quoted).then(text.str.slice(1)).otherwise(text)


def _iso_utc(col: pl.Expr) -> pl.Expr:
    """Datetime -> ISO-8601 text in UTC with a Z; naive values are taken to be UTC already.

    Whole seconds when every value of the column is, else microseconds for all: one
    width per column, so its text sorts as its times do.
    """
    fraction = (col.dt.nanosecond() != 0).any()
    return (
        pl.when(fraction)
        .then(col.dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"))
        .otherwise(col.dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    )


def _utc(col: pl.Expr, dtype: pl.Datetime) -> pl.Expr:
    if dtype.time_zone is None:
        return col
    return col.dt.convert_time_zone("UTC")


def _json_text(col: pl.Expr) -> pl.Expr:
    """A nested cell as compact JSON text (null stays null)."""
    encoded = pl.struct(col.alias("v")).struct.json_encode()
    return pl.when(col.is_not_null()).then(encoded.str.slice(5).str.head(-1))


def _inner(dtype: pl.List | pl.Array) -> pl.DataType:
    inner = dtype.inner
    if inner is None:
        return pl.String()
    return inner if isinstance(inner, pl.DataType) else inner()


def _as_text(col: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """One CSV cell's text for any column type (before neutralisation).

    A list of scalars becomes its items joined with "; "; deeper nesting and
    structs become JSON text.
    """
    if isinstance(dtype, pl.Datetime):
        return _iso_utc(_utc(col, dtype))
    if isinstance(dtype, pl.List | pl.Array):
        inner = _inner(dtype)
        if inner.is_nested():
            return _json_text(col)
        items = col if isinstance(dtype, pl.List) else col.arr.to_list()
        return items.list.eval(_as_text(pl.element(), inner)).list.join(LIST_SEPARATOR)
    if isinstance(dtype, pl.Struct):
        return _json_text(col)
    return col.cast(pl.String)


def _holds_text(dtype: pl.DataType) -> bool:
    """Whether a column's cells can carry arbitrary text (numbers and dates cannot)."""
    return dtype.is_nested() or isinstance(dtype, pl.String | pl.Categorical | pl.Enum | pl.Object)


def _csv_ready(df: pl.DataFrame) -> pl.DataFrame:
    """Every column as text: timestamps in ISO UTC, lists joined, text formulas neutralised.

    Numeric columns are left alone: ``-1`` in a number column is a number, not a formula.
    """
    cells = []
    for name, dtype in df.schema.items():
        text = _as_text(pl.col(name), dtype)
        cells.append((_neutralised(text) if _holds_text(dtype) else text).alias(name))
    return df.select(cells)


def _json_value(col: pl.Expr, dtype: pl.DataType) -> pl.Expr | None:
    """Timestamps (also inside lists) as ISO-8601 UTC text; None when nothing needs changing."""
    if isinstance(dtype, pl.Datetime):
        return _iso_utc(_utc(col, dtype))
    if isinstance(dtype, pl.List):
        inner = _json_value(pl.element(), _inner(dtype))
        return col.list.eval(inner) if inner is not None else None
    return None


def _json_ready(df: pl.DataFrame) -> pl.DataFrame:
    """Timestamps as ISO-8601 UTC text with a Z; everything else as polars encodes it."""
    converted = [
        value.alias(name)
        for name, dtype in df.schema.items()
        if (value := _json_value(pl.col(name), dtype)) is not None
    ]
    return df.with_columns(converted) if converted else df


def to_csv_text(df: pl.DataFrame) -> str:
    """The table as CSV text, with the same rules as a written CSV file.

    >>> print(to_csv_text(pl.DataFrame({"ua": ["=HYPERLINK(1)"], "n": [-1]})), end="")
    ua,n
    '=HYPERLINK(1),-1
    """
    return _csv_ready(df).write_csv()


def to_json_text(df: pl.DataFrame) -> str:
    """The table as a JSON array of objects, one object per line, timestamps ISO-8601 UTC.

    >>> print(to_json_text(pl.DataFrame({"a": [1, 2]})), end="")
    [
    {"a":1},
    {"a":2}
    ]
    """
    if df.height == 0:
        return "[]\n"
    lines = _json_ready(df).write_ndjson().rstrip("\n").split("\n")
    return "[\n" + ",\n".join(lines) + "\n]\n"


def _format_for(path: Path, fmt: str | None) -> str:
    endings = ", ".join(FORMATS)
    if fmt is not None:
        name = fmt.lower().lstrip(".")
        if name not in _FORMAT_NAMES:
            valid = ", ".join(sorted(_FORMAT_NAMES))
            raise InputError(f"{path}: unknown output format {fmt!r}; use one of {valid}")
        return "jsonl" if name == "ndjson" else name
    lower = path.name.lower()
    for ending in sorted(FORMATS, key=len, reverse=True):
        if lower.endswith(ending):
            return FORMATS[ending]
    ending = "".join(path.suffixes[-2:]) or "(none)"
    raise InputError(f"{path}: unknown output file type {ending!r}; name it with one of {endings}")


def _write(df: pl.DataFrame, kind: str, fh: IO[bytes]) -> None:
    if kind == "parquet":
        df.write_parquet(fh)
    elif kind == "csv":
        fh.write(to_csv_text(df).encode("utf-8"))
    elif kind == "csv.gz":
        # mtime=0: the same table always gives the same bytes.
        with gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
            gz.write(to_csv_text(df).encode("utf-8"))
    elif kind == "json":
        fh.write(to_json_text(df).encode("utf-8"))
    else:  # jsonl
        fh.write(_json_ready(df).write_ndjson().encode("utf-8"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


Writer = Callable[[IO[bytes]], object]
"""Writes a file's bytes to the open handle it is given."""


def write_atomic(path: str | Path, write: Writer) -> None:
    """Write a file through ``write(fh)`` into a temporary file renamed into place.

    Readers see the old file or the whole new one, never a half-written file.
    """
    write_files([(path, write)])


def write_files(files: Sequence[tuple[str | Path, Writer]]) -> None:
    """Write each ``(path, write)`` through ``write(fh)`` into a temporary file beside
    it, then rename them all into place.

    Readers see the old files or the whole new ones. When any cannot be written,
    none is replaced: a nightly job never finds tonight's report beside last
    night's members. The renames come last; should one fail or be interrupted
    after others succeeded (say a file system that turns read-only under the run),
    those are undone where the file system still allows it: the files they
    replaced come back from hard links made beforehand, and files that were not
    there are removed. The error names any that could not be put back. (Where
    hard links cannot be made, a file replaced before the failure stays replaced.)
    """
    done: list[tuple[Path, Path]] = []
    # Each target's file before the run, when several are renamed: None when there was
    # none, else a hard link to it (or the target itself, when no link could be made:
    # it cannot come back).
    before: dict[Path, Path | None] = {}
    try:
        for path, write in files:
            done.append((Path(path), _written(Path(path), write)))
        if len(done) > 1:
            for path, _ in done:
                before[path] = _kept(path)
        for k, (path, tmp) in enumerate(done):
            try:
                os.replace(tmp, path)
            except BaseException as exc:
                stuck = _undo([p for p, _ in done[:k]], before)
                if not isinstance(exc, OSError):
                    raise
                also = f"; already replaced, and could not be put back: {', '.join(stuck)}"
                raise InputError(
                    f"{path}: cannot write ({exc.strerror or exc}){also if stuck else ''}"
                ) from None
    finally:
        for _, tmp in done:
            with suppress(OSError):
                tmp.unlink()
        for path, link in before.items():
            if link is not None and link != path:
                with suppress(OSError):
                    link.unlink()


def _kept(path: Path) -> Path | None:
    """A hard link beside ``path`` to the file there now; None when there is none, and
    ``path`` itself when the file system makes no hard link. (One name per target, so
    a link left by a killed run goes with the next run's.)"""
    if not os.path.lexists(path):
        return None
    link = path.with_name(f".{path.name}.old")
    with suppress(OSError):
        link.unlink()
    try:
        os.link(path, link, follow_symlinks=False)  # (a link to a symbolic link itself)
    except (OSError, NotImplementedError):
        return path
    return link


def _undo(replaced: Sequence[Path], before: dict[Path, Path | None]) -> list[str]:
    """Put back the ``replaced`` files as they were before, their old file or none;
    returns those that could not be."""
    stuck = []
    for path in replaced:
        link = before.get(path, path)
        try:
            if link is None:
                path.unlink()
            elif link != path:
                os.replace(link, path)
            else:
                stuck.append(str(path))
        except OSError:
            stuck.append(str(path))
    return stuck


def _written(path: Path, write: Writer) -> Path:
    """A complete temporary file beside ``path`` holding what ``write(fh)`` writes."""
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"{path}: directory {str(parent)!r} does not exist; create it first")
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give a file name")
    try:
        fd, tmp_name = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise InputError(f"{path}: cannot write here ({exc.strerror or exc})") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates the file private (0600); give it the usual permissions.
        tmp.chmod(0o666 & ~_umask())
    except OSError as exc:
        with suppress(OSError):
            tmp.unlink()
        raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def check_output(
    path: str | Path, *, fmt: str | None = None, inputs: Sequence[str | Path] = ()
) -> str:
    """Check that ``path`` can take a report before any work is done; returns its format.

    Refuses an unknown extension, a missing directory, a directory, and a path
    that is one of the ``inputs`` (a report must never overwrite the evidence).
    """
    path = Path(path)
    kind = _format_for(path, fmt)
    check_place(path, inputs=inputs)
    return kind


def check_place(path: str | Path, *, inputs: Sequence[str | Path] = ()) -> None:
    """Check that a file can be written at ``path`` without overwriting one of ``inputs``:
    its directory exists, it is not a directory, it is not an input."""
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"{path}: directory {str(parent)!r} does not exist; create it first")
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give a file name, e.g. {path / 'report.csv'}")
    if path.exists():
        target = path.resolve()
        for given in inputs:
            if Path(given).exists() and Path(given).resolve() == target:
                raise InputError(f"{path}: is an input file; write the report to another path")


def write_table(df: pl.DataFrame, path: str | Path, *, fmt: str | None = None) -> None:
    """Write ``df`` to ``path`` in the format its name ends with (or ``fmt``), atomically.

    Formats: .csv, .csv.gz, .json (an array of objects), .jsonl/.ndjson, .parquet.

    >>> write_table(clusters, "out/clusters.csv")  # doctest: +SKIP
    """
    write_files([table_file(df, path, fmt=fmt)])


def table_file(
    df: pl.DataFrame, path: str | Path, *, fmt: str | None = None
) -> tuple[Path, Writer]:
    """``df`` as a file for :func:`write_files`: ``path`` (checked) and the writer of the
    format its name ends with (or ``fmt``)."""
    path = Path(path)
    kind = check_output(path, fmt=fmt)
    return path, lambda fh: _write(df, kind, fh)


def read_table(path: str | Path, *, infer_types: bool = True) -> pl.DataFrame:
    """Read back a report this tool wrote (.csv, .csv.gz, .json, .jsonl, .parquet).

    A CSV's column types are guessed from its text, unless ``infer_types`` is False:
    then every column is text as written (ids such as ``007`` stay ids).
    """
    path = Path(path)
    kind = _format_for(path, None)
    if not path.is_file():
        raise InputError(f"{path}: file not found; give a report written by this tool")
    try:
        if kind == "parquet":
            return pl.read_parquet(path)
        if kind in ("csv", "csv.gz"):
            table = pl.read_csv(path, infer_schema=infer_types, infer_schema_length=10_000)
            return table.with_columns(_restored(pl.col(pl.String)))
        if kind == "jsonl":
            return pl.read_ndjson(path)
        return pl.read_json(path)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: cannot read this report ({reason})") from None
