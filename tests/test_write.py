"""Writing reports: formats, atomic replacement, and CSV formula neutralisation."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill_forensics import write as write_module
from distill_forensics.errors import EXIT_INPUT, InputError
from distill_forensics.write import (
    FORMULA_PREFIXES,
    read_table,
    table_file,
    to_csv_text,
    to_json_text,
    write_files,
    write_table,
)

NOON = datetime(2026, 3, 1, 12, tzinfo=UTC)
ENDINGS = ".csv, .csv.gz, .json, .jsonl, .ndjson, .parquet"

SAMPLE = Path(__file__).resolve().parent.parent / "sample_logs"


def table() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "cluster_id": ["c1", "c2"],
            "score": [0.91, -0.5],
            "n": [3, None],
            "first_seen": [NOON, None],
            "day": [date(2026, 3, 1), None],
            "accounts": [["a1", "=a2"], []],
            "note": ["=cmd|' /C calc'!A0", None],
        }
    )


def test_csv(tmp_path: Path) -> None:
    write_table(table(), tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_text() == (
        "cluster_id,score,n,first_seen,day,accounts,note\n"
        "c1,0.91,3,2026-03-01T12:00:00Z,2026-03-01,a1; =a2,'=cmd|' /C calc'!A0\n"
        'c2,-0.5,,,,"",\n'
    )
    assert (tmp_path / "out.csv").read_text() == to_csv_text(table())


def test_csv_gz_is_deterministic(tmp_path: Path) -> None:
    write_table(table(), tmp_path / "a.csv.gz")
    write_table(table(), tmp_path / "b.CSV.GZ")
    assert gzip.decompress((tmp_path / "a.csv.gz").read_bytes()).decode() == to_csv_text(table())
    assert (tmp_path / "a.csv.gz").read_bytes() == (tmp_path / "b.CSV.GZ").read_bytes()


def test_json_is_an_array_of_objects_with_utc_timestamps(tmp_path: Path) -> None:
    berlin = table().with_columns(pl.col("first_seen").dt.convert_time_zone("Europe/Berlin"))
    write_table(berlin, tmp_path / "out.json")
    records = json.loads((tmp_path / "out.json").read_text())
    assert records[0] == {
        "cluster_id": "c1",
        "score": 0.91,
        "n": 3,
        "first_seen": "2026-03-01T12:00:00Z",
        "day": "2026-03-01",
        "accounts": ["a1", "=a2"],
        "note": "=cmd|' /C calc'!A0",  # JSON is not neutralised
    }
    assert records[1]["first_seen"] is None
    assert to_json_text(table().head(0)) == "[]\n"


def test_jsonl_and_ndjson(tmp_path: Path) -> None:
    for name in ("out.jsonl", "out.ndjson"):
        write_table(table(), tmp_path / name)
        lines = (tmp_path / name).read_text().splitlines()
        assert [json.loads(line)["first_seen"] for line in lines] == ["2026-03-01T12:00:00Z", None]


def test_parquet_keeps_types(tmp_path: Path) -> None:
    write_table(table(), tmp_path / "out.parquet")
    assert pl.read_parquet(tmp_path / "out.parquet").equals(table())


def test_fmt_overrides_extension(tmp_path: Path) -> None:
    write_table(table(), tmp_path / "report.txt", fmt="json")
    assert json.loads((tmp_path / "report.txt").read_text())[0]["cluster_id"] == "c1"


def test_unknown_extension(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as err:
        write_table(table(), "report.xlsx")
    assert str(err.value) == (
        f"report.xlsx: unknown output file type '.xlsx'; name it with one of {ENDINGS}"
    )
    with pytest.raises(InputError) as err:
        write_table(table(), "report")
    assert (
        str(err.value)
        == f"report: unknown output file type '(none)'; name it with one of {ENDINGS}"
    )


def test_unknown_fmt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as err:
        write_table(table(), "out.csv", fmt="xml")
    assert str(err.value) == (
        "out.csv: unknown output format 'xml'; use one of csv, csv.gz, json, jsonl, ndjson, parquet"
    )


def test_missing_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as err:
        write_table(table(), "out/report.csv")
    assert str(err.value) == "out/report.csv: directory 'out' does not exist; create it first"


def test_path_is_a_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.csv").mkdir()
    with pytest.raises(InputError) as err:
        write_table(table(), "x.csv")
    assert str(err.value) == "x.csv: is a directory; give a file name, e.g. x.csv/report.csv"


def test_failed_write_leaves_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "report.csv"
    target.write_text("old report\n")

    def half_then_fail(df: pl.DataFrame, kind: str, fh) -> None:
        fh.write(b"cluster_id,sc")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(write_module, "_write", half_then_fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_table(table(), target)
    assert target.read_text() == "old report\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.csv"]


def test_os_error_becomes_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(df: pl.DataFrame, kind: str, fh) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(write_module, "_write", full_disk)
    with pytest.raises(InputError) as err:
        write_table(table(), tmp_path / "r.csv")
    assert str(err.value) == f"{tmp_path / 'r.csv'}: cannot write (No space left on device)"
    assert list(tmp_path.iterdir()) == []


def test_files_written_together_are_all_replaced_or_none(tmp_path: Path) -> None:
    report, members = tmp_path / "report.csv", tmp_path / "members.parquet"
    report.write_text("last night's report\n")
    members.write_text("last night's members\n")

    def full_disk(fh) -> None:
        fh.write(b"PAR1")
        raise OSError(28, "No space left on device")

    with pytest.raises(InputError) as err:
        write_files([table_file(table(), report), (members, full_disk)])
    assert str(err.value) == f"{members}: cannot write (No space left on device)"
    assert report.read_text() == "last night's report\n"
    assert members.read_text() == "last night's members\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["members.parquet", "report.csv"]
    write_files([table_file(table(), report), table_file(table(), members)])
    assert report.read_text() == to_csv_text(table())
    assert pl.read_parquet(members).equals(table())


def _failing_second_rename(
    monkeypatch: pytest.MonkeyPatch, error: BaseException, *, undo_fails: bool = False
) -> list[Path]:
    """Make the second rename of a new file into place raise ``error`` (and with
    ``undo_fails``, every rename and removal after it fail); returns the renames."""
    renames: list[Path] = []
    rename, unlink = os.replace, Path.unlink

    def replace(src, dst) -> None:
        if str(src).endswith(".tmp"):
            renames.append(Path(dst))
            if len(renames) == 2:
                raise error
        elif undo_fails and len(renames) >= 2:
            raise PermissionError(13, "Permission denied")
        rename(src, dst)

    def remove(self: Path, missing_ok: bool = False) -> None:
        if undo_fails and len(renames) >= 2 and not self.name.endswith(".tmp"):
            raise PermissionError(13, "Permission denied")
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(write_module.os, "replace", replace)
    monkeypatch.setattr(Path, "unlink", remove)
    return renames


@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied"), KeyboardInterrupt()])
@pytest.mark.parametrize("report_before", ["last night's report\n", None])
def test_a_rename_that_fails_undoes_the_renames_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, report_before: str | None, error
) -> None:
    report, members = tmp_path / "report.csv", tmp_path / "members.csv"
    if report_before is not None:
        report.write_text(report_before)
    members.write_text("last night's members\n")
    renames = _failing_second_rename(monkeypatch, error)
    with pytest.raises((InputError, KeyboardInterrupt)) as err:
        write_files([table_file(table(), report), table_file(table(), members)])
    if isinstance(error, OSError):
        assert str(err.value) == f"{members}: cannot write (Permission denied)"
    else:
        assert err.type is KeyboardInterrupt
    assert renames == [report, members]
    assert members.read_text() == "last night's members\n"
    if report_before is None:
        assert not report.exists()
    else:
        assert report.read_text() == report_before
    left = ["members.csv", *(["report.csv"] if report_before else [])]
    assert sorted(p.name for p in tmp_path.iterdir()) == left


def test_a_rename_that_cannot_be_undone_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report, members = tmp_path / "report.csv", tmp_path / "members.csv"
    report.write_text("last night's report\n")
    members.write_text("last night's members\n")
    _failing_second_rename(monkeypatch, PermissionError(13, "Permission denied"), undo_fails=True)
    with pytest.raises(InputError) as err:
        write_files([table_file(table(), report), table_file(table(), members)])
    assert str(err.value) == (
        f"{members}: cannot write (Permission denied); already replaced, and could not be "
        f"put back: {report}"
    )
    assert report.read_text() == to_csv_text(table())


def test_the_cluster_report_is_not_replaced_when_the_members_cannot_be_written(
    tmp_path: Path,
) -> None:
    report, members = tmp_path / "report.csv", tmp_path / "members.csv"
    report.write_text("last night's report\n")
    logs, accounts = SAMPLE / "logs.parquet", SAMPLE / "accounts.parquet"
    args = ["cluster", str(logs), "--accounts", str(accounts), "-q", "-o", str(report)]

    def small_files() -> None:  # the report (40 kB) fits, the members table (150 kB) does not
        import resource  # (POSIX only)

        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "from distill_forensics.cli import main; main()",
            *args,
            "--members",
            str(members),
        ],
        capture_output=True,
        text=True,
        preexec_fn=small_files,
        check=False,
    )
    assert run.returncode == EXIT_INPUT, run.stderr
    assert run.stderr.startswith(f"error: {members}: cannot write (File too large)")
    assert report.read_text() == "last night's report\n" and not members.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.csv"]


def test_replaces_existing_file_with_usual_permissions(tmp_path: Path) -> None:
    target = tmp_path / "r.csv"
    target.write_text("old")
    write_table(table(), target)
    assert target.read_text() == to_csv_text(table())
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("prefix", FORMULA_PREFIXES)
def test_every_formula_prefix_is_neutralised(prefix: str) -> None:
    text = to_csv_text(pl.DataFrame({"v": [f"{prefix}SUM(A1)", f"x{prefix}"]}))
    cells = pl.read_csv(text.encode(), infer_schema=False)["v"].to_list()
    assert cells == [f"'{prefix}SUM(A1)", f"x{prefix}"]


def test_numbers_and_nested_values_in_csv() -> None:
    frame = pl.DataFrame(
        {
            "n": [-1],
            "x": [-2.5],
            "pairs": [[[1, 2], [3]]],
            "info": [{"k": "=v"}],
            "when": [[NOON]],
        }
    )
    assert to_csv_text(frame) == (
        'n,x,pairs,info,when\n-1,-2.5,"[[1,2],[3]]","{""k"":""=v""}",2026-03-01T12:00:00Z\n'
    )


# Text that survives a CSV round trip unchanged except for neutralisation.
cells = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=30)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), cells), min_size=1, max_size=10))
def test_csv_round_trip(tmp_path_factory: pytest.TempPathFactory, values: list[str | None]) -> None:
    path = tmp_path_factory.mktemp("rt") / "out.csv"
    write_table(pl.DataFrame({"v": values}, schema={"v": pl.String}), path)
    back = pl.read_csv(path, infer_schema=False)["v"].to_list()
    quoted = (*FORMULA_PREFIXES, "'")
    expected = ["'" + v if v is not None and v.startswith(quoted) else v for v in values]
    assert back == expected
    # Taken off again, the values are as they were.
    restored = pl.read_csv(path, infer_schema=False).select(write_module._restored(pl.col("v")))
    assert restored.to_series().to_list() == values


def test_read_table_gives_back_the_text_written_to_csv(tmp_path: Path) -> None:
    ids = ["-abc", "=1+1", "'quoted", "''twice", "+x", "@y", "plain", "it's"]
    frame = pl.DataFrame({"account_id": ids, "n": range(len(ids))})
    for name in ("m.csv", "m.csv.gz"):
        write_table(frame, tmp_path / name)
        assert read_table(tmp_path / name).equals(frame)


@given(st.sampled_from(FORMULA_PREFIXES), cells)
def test_neutralisation_always_applies(prefix: str, rest: str) -> None:
    value = prefix + rest
    frame = pl.DataFrame({"v": [value], "l": [[value]]})
    back = pl.read_csv(to_csv_text(frame).encode(), infer_schema=False).row(0)
    assert back == ("'" + value, "'" + value)
