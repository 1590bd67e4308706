"""Nightly workflow: the evidence store, ids carried across nights, and diff."""

from __future__ import annotations

import importlib
import json
import os
import shutil
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from polars.testing import assert_frame_equal

from distill_forensics.cli import main
from distill_forensics.diff import DIFF_COLUMNS, carry_ids, diff_members, read_members
from distill_forensics.errors import EXIT_FINDINGS, EXIT_INPUT
from distill_forensics.extract import prompt_hash_mark
from distill_forensics.score import rerank

# (The package exports the function ``extract`` under the module's name.)
extract_module = importlib.import_module("distill_forensics.extract")
SAMPLE = Path(__file__).resolve().parent.parent / "sample_logs"
LOGS = str(SAMPLE / "logs.parquet")
ACCOUNTS = str(SAMPLE / "accounts.parquet")


def _run(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("evidence")
    result = _run("extract", LOGS, "--accounts", ACCOUNTS, "-o", str(out), "-q")
    assert result.exit_code == 0
    return out


def test_store_has_one_folder_per_day(store):
    days = sorted(p.name for p in store.iterdir())
    assert days[0] == "day=2026-03-01" and days[-1] == "day=2026-03-30" and len(days) == 30
    assert sorted(p.name for p in (store / "day=2026-03-05").iterdir()) == [
        "accounts.parquet",
        "activity.parquet",
        "meta.json",
        "usage.parquet",
    ]


def test_evidence_window_equals_raw_logs_of_that_window(store, tmp_path):
    a, b = tmp_path / "evidence.parquet", tmp_path / "raw.parquet"
    ma, mb = tmp_path / "m_evidence.parquet", tmp_path / "m_raw.parquet"
    assert (
        _run(
            "cluster",
            "--evidence",
            str(store),
            "--window",
            "12d",
            "-o",
            str(a),
            "--members",
            str(ma),
            "-q",
        ).exit_code
        == 0
    )
    assert (
        _run(
            "cluster",
            LOGS,
            "--accounts",
            ACCOUNTS,
            "--from",
            "2026-03-19",
            "--to",
            "2026-03-31",
            "-o",
            str(b),
            "--members",
            str(mb),
            "-q",
        ).exit_code
        == 0
    )
    assert_frame_equal(pl.read_parquet(a), pl.read_parquet(b))
    assert_frame_equal(pl.read_parquet(ma), pl.read_parquet(mb))
    assert pl.read_parquet(a).filter(pl.col("suspected")).height >= 4


@pytest.mark.parametrize(
    ("command", "outputs"),
    [
        ("cluster", ["-o", "{out}.csv", "--members", "{out}_members.csv"]),
        ("graph", ["-o", "{out}.graphml"]),
        ("indicators", ["-o", "{out}.csv", "--stix-output", "{out}.json", "--hash-key", "k" * 32]),
    ],
)
def test_the_evidence_window_gives_the_files_of_its_raw_logs(store, tmp_path, command, outputs):
    # At a threshold below the default: a store run that fell back to the default
    # would differ from the raw one.
    def written(name: str, *inputs: str) -> list[bytes]:
        args = [a.format(out=tmp_path / name) for a in outputs]
        result = _run(command, *inputs, *args, "--threshold", "10", "-q")
        assert result.exit_code == 0, result.output
        return [Path(a).read_bytes() for a in args if a.startswith(str(tmp_path))]

    evidence = written("evidence", "--evidence", str(store), "--window", "12d")
    raw = written("raw", LOGS, "--accounts", ACCOUNTS, "--from", "2026-03-19", "--to", "2026-03-31")
    assert evidence == raw
    assert all(len(data) > 1000 for data in evidence)
    default = _run(
        command,
        "--evidence",
        str(store),
        "--window",
        "12d",
        *(a.format(out=tmp_path / "default") for a in outputs),
        "-q",
    )
    assert default.exit_code == 0, default.output
    assert Path(outputs[1].format(out=tmp_path / "default")).read_bytes() != evidence[0]


def test_extracting_a_day_again_replaces_that_day_only(store, tmp_path):
    day = pl.read_parquet(LOGS).filter(pl.col("timestamp").dt.day() == 30)
    day.write_parquet(tmp_path / "day30.parquet")
    before = {p.name: (p / "usage.parquet").read_bytes() for p in store.iterdir()}
    stat_other = (store / "day=2026-03-29" / "usage.parquet").stat().st_mtime_ns
    assert (
        _run(
            "extract",
            str(tmp_path / "day30.parquet"),
            "--accounts",
            ACCOUNTS,
            "-o",
            str(store),
            "-q",
        ).exit_code
        == 0
    )
    after = {p.name: (p / "usage.parquet").read_bytes() for p in store.iterdir()}
    assert before == after  # the same day's rows give the same evidence
    assert (store / "day=2026-03-29" / "usage.parquet").stat().st_mtime_ns == stat_other
    assert not [p for p in store.iterdir() if p.name.startswith(".")]


def _snapshot(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in store.rglob("*") if p.is_file()}


def test_a_failed_extract_leaves_the_store_as_it_was(store, tmp_path, monkeypatch):
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    before = _snapshot(copy)
    args = ["extract", LOGS, "--accounts", ACCOUNTS, "-o", str(copy), "-q"]
    write_parquet = pl.DataFrame.write_parquet
    calls = []

    def disk_fills(frame, path, *args, **kwargs):  # on the 14th day's second table
        calls.append(path)
        if len(calls) == 41:
            raise OSError(28, "No space left on device")
        return write_parquet(frame, path, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(pl.DataFrame, "write_parquet", disk_fills)
        result = CliRunner().invoke(main, args)
    assert result.exit_code == EXIT_INPUT, result.output
    tmp = copy / f".day=2026-03-14.tmp-{os.getpid()}"
    assert result.stderr == (
        f"error: {tmp}: cannot write the evidence day (No space left on device); check the "
        f"space and permissions of {str(copy)!r}, then extract again\n"
    )
    assert _snapshot(copy) == before
    assert not [p for p in copy.iterdir() if p.name.startswith(".")]

    # Stopped (Ctrl-C) while a day is being written: nothing of it stays.
    def stopped_writing(frame, path, *args, **kwargs):
        if len(calls) == 20:  # (the 7th day's third table)
            raise KeyboardInterrupt
        return disk_fills(frame, path, *args, **kwargs)

    calls.clear()
    with monkeypatch.context() as patch:
        patch.setattr(pl.DataFrame, "write_parquet", stopped_writing)
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 130, result.output
    assert _snapshot(copy) == before
    assert not [p for p in copy.iterdir() if p.name.startswith(".")]
    # A day that cannot be swapped in: the days swapped before it are put back.
    rename = Path.rename

    def locked(path, target):
        if path.name == "day=2026-03-20":
            raise PermissionError(1, "Operation not permitted")
        return rename(path, target)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "rename", locked)
        result = CliRunner().invoke(main, args)
    assert result.exit_code == EXIT_INPUT, result.output
    assert result.stderr == (
        f"error: {copy / 'day=2026-03-20'}: cannot replace the evidence day (Operation not "
        "permitted); check the permissions of the store, then extract again\n"
    )
    assert _snapshot(copy) == before
    assert not [p for p in copy.iterdir() if p.name.startswith(".")]
    # The same when the new folder cannot take the day's place, or the run is stopped
    # there (Ctrl-C): the days swapped before are put back.
    for stop in (PermissionError(1, "Operation not permitted"), KeyboardInterrupt()):

        def stopped(path, target, stop=stop):
            if path.name.startswith(".day=2026-03-20.tmp"):
                raise stop
            return rename(path, target)

        with monkeypatch.context() as patch:
            patch.setattr(Path, "rename", stopped)
            result = CliRunner().invoke(main, args)
        assert result.exit_code == (EXIT_INPUT if isinstance(stop, OSError) else 130)
        assert _snapshot(copy) == before
        assert not [p for p in copy.iterdir() if p.name.startswith(".")]
    # Nor does a failed run leave a new, empty store behind.
    fresh = tmp_path / "fresh"
    with monkeypatch.context() as patch:
        patch.setattr(pl.DataFrame, "write_parquet", disk_fills)
        calls.clear()
        result = CliRunner().invoke(main, [*args[:-3], "-o", str(fresh), "-q"])
    assert result.exit_code == EXIT_INPUT and not fresh.exists()


def test_window_without_evidence_is_an_input_error(tmp_path):
    result = CliRunner().invoke(main, ["cluster", LOGS, "--window", "30d"])
    assert result.exit_code == EXIT_INPUT
    assert "--window goes with --evidence" in result.stderr
    result = CliRunner().invoke(main, ["cluster", "--evidence", str(tmp_path / "none")])
    assert result.exit_code == EXIT_INPUT
    assert "no evidence store here" in result.stderr


def test_from_and_to_bound_the_evidence_window_by_whole_days(store, tmp_path):
    a, b = tmp_path / "evidence.parquet", tmp_path / "raw.parquet"
    window = ("--from", "2026-03-10", "--to", "2026-03-14")
    result = _run("cluster", "--evidence", str(store), *window, "-o", str(a), "-q")
    assert result.exit_code == 0, result.stderr
    result = _run("cluster", LOGS, "--accounts", ACCOUNTS, *window, "-o", str(b), "-q")
    assert result.exit_code == 0, result.stderr
    assert_frame_equal(pl.read_parquet(a), pl.read_parquet(b))
    # With --window, the later of the two starts counts.
    c = tmp_path / "narrow.parquet"
    args = ("--window", "10d", "--from", "2026-03-25", "-o", str(c), "-q")
    assert _run("cluster", "--evidence", str(store), *args).exit_code == 0
    d = tmp_path / "raw_narrow.parquet"
    raw = ("--from", "2026-03-25", "-o", str(d), "-q")
    assert _run("cluster", LOGS, "--accounts", ACCOUNTS, *raw).exit_code == 0
    assert_frame_equal(pl.read_parquet(c), pl.read_parquet(d))
    # A window wider than any calendar is the whole store.
    e = tmp_path / "all.parquet"
    result = _run("cluster", "--evidence", str(store), "--window", "99999999999d", "-o", str(e))
    assert result.exit_code == 0, result.stderr
    f = tmp_path / "raw_all.parquet"
    assert _run("cluster", LOGS, "--accounts", ACCOUNTS, "-o", str(f), "-q").exit_code == 0
    assert_frame_equal(pl.read_parquet(e), pl.read_parquet(f))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--from", "2026-03-10T12:00"], "--from 2026-03-10T12:00:00+00:00: an evidence store"),
        (["--to", "2026-03-12T06:00"], "give a date such as --to 2026-03-12"),
        (["--accounts", ACCOUNTS], "--accounts goes with raw LOGS"),
        (["--column", "ip=client_ip"], "--column goes with raw LOGS"),
    ],
)
@pytest.mark.parametrize(
    ("command", "name"),
    [("cluster", "report.csv"), ("graph", "net.graphml"), ("indicators", "i.csv")],
)
def test_evidence_refuses_options_it_cannot_honour(store, tmp_path, args, needle, command, name):
    out = tmp_path / name
    result = CliRunner().invoke(
        main,
        [command, "--evidence", str(store), *args, "-o", str(out)],
        env={"DISTILL_FORENSICS_HASH_KEY": "k" * 32},
    )
    assert result.exit_code == EXIT_INPUT, result.output
    assert needle in result.stderr and result.stderr.count("\n") == 1
    assert not out.exists()


def test_days_missing_from_the_window_are_named(store, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    for day in ("2026-03-20", "2026-03-22"):
        shutil.rmtree(copy / f"day={day}")
    result = CliRunner().invoke(main, ["cluster", "--evidence", str(copy), "--window", "14d"])
    assert result.exit_code == 0, result.output
    assert (
        "warning: 2 day(s) of the window have no evidence (2026-03-20, 2026-03-22); "
        "extract them to include them"
    ) in result.stderr
    # Last night's day missing: the window still ends where --to says, and says so.
    shutil.rmtree(copy / "day=2026-03-30")
    a, b = tmp_path / "evidence.parquet", tmp_path / "raw.parquet"
    args = ["cluster", "--evidence", str(copy), "--window", "7d", "--to", "2026-03-31"]
    result = CliRunner().invoke(main, [*args, "-o", str(a)])
    assert result.exit_code == 0, result.output
    assert "warning: 1 day(s) of the window have no evidence (2026-03-30)" in result.stderr
    raw = ["cluster", LOGS, "--accounts", ACCOUNTS, "--from", "2026-03-24", "--to", "2026-03-30"]
    assert CliRunner().invoke(main, [*raw, "-o", str(b), "-q"]).exit_code == 0
    assert_frame_equal(pl.read_parquet(a), pl.read_parquet(b))
    # Nor are days after today missing: they are not here yet.
    args = ["cluster", "--evidence", str(copy), "--to", "9999-12-31", "-o", str(a)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    today = datetime.now(UTC).date()
    missing = 2 + (today - date(2026, 3, 30)).days + 1  # 03-20, 03-22, 03-30 to today
    assert f"warning: {missing:,} day(s) of the window have no evidence (2026-03-20" in (
        result.stderr
    )
    # From after to: the same error as for raw logs.
    args = ["cluster", "--evidence", str(copy), "--from", "2026-03-15", "--to", "2026-03-10"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == EXIT_INPUT and "swap --from and --to" in result.stderr
    # A store begun after the window's first day lacks nothing before it.
    result = CliRunner().invoke(main, ["cluster", "--evidence", str(store), "--window", "60d"])
    assert result.exit_code == 0 and "no evidence" not in result.stderr


@pytest.mark.parametrize(
    ("command", "option", "name"),
    [
        ("cluster", "-o", "report.csv"),
        ("cluster", "--members", "members.csv"),
        ("graph", "-o", "net.graphml"),
        ("indicators", "-o", "iocs.csv"),
        ("indicators", "--stix-output", "bundle.json"),
    ],
)
def test_outputs_are_not_written_into_the_evidence_store(store, command, option, name):
    meta = store / "day=2026-03-01" / "meta.json"
    before = meta.read_bytes()
    # (A graph file is named .graphml or .gexf, and a STIX bundle is not a table: a day's
    # meta.json would be refused for its name first.)
    named = command == "graph" or option == "--stix-output"
    outputs = (store / name,) if named else (meta, store / name)
    for output in outputs:
        result = CliRunner().invoke(
            main,
            [command, "--evidence", str(store), option, str(output)],
            env={"DISTILL_FORENSICS_HASH_KEY": "k" * 32},
        )
        assert result.exit_code == EXIT_INPUT, result.output
        assert result.stderr.count("\n") == 1 and "lies in the evidence store" in result.stderr
    assert meta.read_bytes() == before and not (store / name).exists()


@pytest.mark.parametrize("command", ["cluster", "graph", "indicators"])
def test_a_folder_without_days_is_not_a_store(tmp_path, command):
    # An output below the folder given: refused for what the folder is not, a store,
    # rather than for lying in one.
    out = tmp_path / "work" / ("net.graphml" if command == "graph" else "out.csv")
    out.parent.mkdir()
    result = CliRunner().invoke(
        main,
        [command, "--evidence", str(tmp_path), "-o", str(out)],
        env={"DISTILL_FORENSICS_HASH_KEY": "k" * 32},
    )
    assert result.exit_code == EXIT_INPUT, result.output
    assert (
        result.stderr == f"error: {tmp_path}: holds no evidence days; give the folder "
        "`distill-forensics extract LOGS -o DIR` wrote\n"
    )
    assert not out.exists()


@pytest.mark.parametrize("command", ["cluster", "graph", "indicators"])
@pytest.mark.parametrize(
    ("inputs", "needle"),
    [
        ([], "give either LOGS or --evidence DIR"),
        ([LOGS, "--evidence", "{store}"], "give either LOGS or --evidence DIR"),
        ([LOGS, "--window", "7d"], "--window goes with --evidence"),
        (["--evidence", "{store}", "--config", "columns.toml"], "--config goes with raw LOGS"),
    ],
)
def test_logs_or_a_store_one_of_them(store, tmp_path, command, inputs, needle):
    out = tmp_path / ("net.graphml" if command == "graph" else "out.csv")
    args = [a.format(store=store) for a in inputs]
    result = CliRunner().invoke(
        main, [command, *args, "-o", str(out)], env={"DISTILL_FORENSICS_HASH_KEY": "k" * 32}
    )
    assert result.exit_code == EXIT_INPUT, result.output
    assert result.stderr.startswith(f"error: {needle}") and result.stderr.count("\n") == 1
    assert result.stdout == "" and not out.exists()


def test_a_day_linked_from_elsewhere_is_part_of_the_store(store, tmp_path):
    copy, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    shutil.copytree(store, copy)
    elsewhere.mkdir()
    (copy / "day=2026-03-30").rename(elsewhere / "day=2026-03-30")
    (copy / "day=2026-03-30").symlink_to(elsewhere / "day=2026-03-30")
    meta = elsewhere / "day=2026-03-30" / "meta.json"
    result = CliRunner().invoke(main, ["cluster", "--evidence", str(copy), "-o", str(meta)])
    assert result.exit_code == EXIT_INPUT and "lies in the evidence store" in result.stderr
    report = elsewhere / "report.csv"
    result = CliRunner().invoke(main, ["cluster", "--evidence", str(copy), "-o", str(report), "-q"])
    assert result.exit_code == 0 and report.exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("meta.json", "cannot read it"),
        ("usage.parquet", "cannot read it as Parquet"),
        ("activity.parquet", "missing or not a file"),
        ("accounts.parquet", "not the accounts table"),
        ("usage.parquet", "column 'n_requests' is String, not Int64"),
        ("meta.json", "missing or not a file"),
        ("day=2026-03-30", "not a folder"),
        ("meta.json", "evidence format '1' is not 1"),
        ("meta.json", "its counts or columns are missing"),
    ],
)
def test_a_damaged_evidence_day_is_named(store, tmp_path, damage, message):
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    day = copy / "day=2026-03-30"
    target = day if damage == day.name else day / damage
    if damage == day.name:
        shutil.rmtree(day)
        day.write_text("not a day")
    elif damage == "meta.json" and ("format" in message or "counts" in message):
        meta = json.loads(target.read_text())
        meta.update({"format": "1"} if "format" in message else {"counts": {"rows": -1}})
        target.write_text(json.dumps(meta))
    elif "missing" in message:
        target.unlink()
    elif damage == "accounts.parquet":
        pl.DataFrame({"account_id": ["a"]}).write_parquet(target)
    elif "is String" in message:
        usage = pl.read_parquet(target)
        usage.with_columns(pl.col("n_requests").cast(pl.String)).write_parquet(target)
    else:
        target.write_bytes(target.read_bytes()[:20])
    result = CliRunner().invoke(main, ["cluster", "--evidence", str(copy), "--window", "2d"])
    assert result.exit_code == EXIT_INPUT, result.stderr
    assert result.stderr.count("\n") == 1
    named = day if "format" in message else target
    assert f"error: {named}: " in result.stderr and message in result.stderr
    assert "extract that day again" in result.stderr


def test_days_hashed_by_another_polars_are_not_merged(store, tmp_path, monkeypatch):
    # Another polars release may hash prompts differently: merged, its sketches and
    # tonight's would count every prompt of a window twice. A store written by one
    # release alone is read by any, as reading merges the sketches it holds.
    other = tmp_path / "other"
    with monkeypatch.context() as patched:
        patched.setattr(extract_module, "prompt_hash", lambda prompt: prompt.hash(seed=1))
        patched.setattr(pl, "__version__", "2.0.0")
        assert _run("extract", LOGS, "--accounts", ACCOUNTS, "-o", str(other), "-q").exit_code == 0
    meta = json.loads((other / "day=2026-03-30" / "meta.json").read_text())
    assert meta["polars"] == "2.0.0" and meta["prompt_hash"] != prompt_hash_mark()
    alone = CliRunner().invoke(main, ["cluster", "--evidence", str(other), "--window", "2d"])
    assert alone.exit_code == 0, alone.stderr
    mixed = tmp_path / "mixed"
    shutil.copytree(store, mixed)
    shutil.rmtree(mixed / "day=2026-03-30")
    shutil.copytree(other / "day=2026-03-30", mixed / "day=2026-03-30")
    result = CliRunner().invoke(main, ["cluster", "--evidence", str(mixed), "--window", "2d"])
    assert result.exit_code == EXIT_INPUT and result.stderr.count("\n") == 1
    assert (
        f"error: {mixed / 'day=2026-03-29'} and {mixed / 'day=2026-03-30'}: the prompts of "
        f"these days were hashed differently (by polars {pl.__version__} and polars 2.0.0)"
    ) in result.stderr
    # The older day alone is one hash.
    one_day = CliRunner().invoke(
        main, ["cluster", "--evidence", str(mixed), "--window", "1d", "--to", "2026-03-30"]
    )
    assert one_day.exit_code == 0, one_day.stderr


def test_days_written_before_the_hash_mark_still_merge(store, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    assert json.loads((store / "day=2026-03-30" / "meta.json").read_text())["prompt_hash"] == (
        prompt_hash_mark()
    )
    for meta_file in copy.glob("day=*/meta.json"):
        meta = json.loads(meta_file.read_text())
        del meta["prompt_hash"], meta["polars"]
        meta_file.write_text(json.dumps(meta))
    reports = [tmp_path / "old.csv", tmp_path / "new.csv"]
    for folder, report in zip((copy, store), reports, strict=True):
        result = CliRunner().invoke(main, ["cluster", "--evidence", str(folder), "-o", str(report)])
        assert result.exit_code in (0, EXIT_FINDINGS), result.stderr
    assert reports[0].read_bytes() == reports[1].read_bytes()


def test_ids_carry_over_when_the_anchor_leaves():
    old = pl.DataFrame({"account_id": ["a", "b", "c", "d"], "cluster_id": ["C-old"] * 4})
    new = pl.DataFrame({"account_id": ["b", "c", "d", "e"], "cluster_id": ["C-new"] * 4})
    assert carry_ids(new, old) == {"C-new": "C-old"}
    # Only a minority of the new cluster was known: a new id.
    new2 = pl.DataFrame({"account_id": ["d", "x", "y", "z"], "cluster_id": ["C-new"] * 4})
    assert carry_ids(new2, old) == {}


def test_ids_stable_across_two_nights_with_churn(tmp_path):
    m1, m2 = tmp_path / "night1.parquet", tmp_path / "night2.parquet"
    assert (
        _run(
            "cluster",
            LOGS,
            "--accounts",
            ACCOUNTS,
            "--to",
            "2026-03-26",
            "--members",
            str(m1),
            "-q",
        ).exit_code
        == 0
    )
    assert (
        _run(
            "cluster",
            LOGS,
            "--accounts",
            ACCOUNTS,
            "--from",
            "2026-03-06",
            "--previous",
            str(m1),
            "--members",
            str(m2),
            "-q",
        ).exit_code
        == 0
    )
    night1, night2 = pl.read_parquet(m1), pl.read_parquet(m2)
    suspected = night2.filter(pl.col("suspected"))
    checked = 0
    for cid, part in suspected.group_by("cluster_id"):
        before = night1.join(part.select("account_id"), on="account_id")
        top = before.group_by("cluster_id").len().sort("len", descending=True).head(1)
        if top.height and top["len"][0] > part.height / 2:
            assert cid[0] == top["cluster_id"][0]
            checked += 1
    assert checked >= 4
    churned = night1.join(night2, on="account_id", how="anti").height
    assert churned > 0


def _members(rows: dict[str, list[str]], scores: dict[str, float]) -> pl.DataFrame:
    data = [(a, c, scores[c], scores[c] >= 50) for c, accs in rows.items() for a in accs]
    return pl.DataFrame(
        data, schema=["account_id", "cluster_id", "score", "suspected"], orient="row"
    )


def test_diff_names_every_kind_of_change(tmp_path):
    old = _members(
        {
            "A": ["a1", "a2", "a3"],
            "B": ["b1", "b2"],
            "C": ["c1", "c2"],
            "D": ["d1", "d2"],
            "S": ["s1", "s2", "s3", "s4"],
            "V": ["v1", "v2"],
        },
        {"A": 90, "B": 80, "C": 70, "D": 20, "S": 60, "V": 10},
    )
    new = _members(
        {
            "A": ["a1", "a2", "a3", "a4"],
            "BC": ["b1", "b2", "c1", "c2"],
            "D": ["d1"],
            "S1": ["s1", "s2"],
            "S2": ["s3", "s4"],
            "N": ["n1", "n2"],
        },
        {"A": 95, "BC": 85, "D": 20, "S1": 60, "S2": 61, "N": 75},
    )
    changes = diff_members(old, new)
    got = dict(zip(changes["cluster_id"], changes["change"], strict=True))
    assert got["A"] == "grown" and got["BC"] == "merged" and got["D"] == "shrunk"
    assert got["S"] == "split" and got["V"] == "vanished" and got["N"] == "new"
    a = changes.filter(pl.col("cluster_id") == "A").row(0, named=True)
    assert (a["n_old"], a["n_new"], a["n_joined"], a["score_change"]) == (3, 4, 1, 5.0)
    old.write_parquet(tmp_path / "old.parquet")
    new.write_parquet(tmp_path / "new.parquet")
    result = CliRunner().invoke(
        main,
        ["diff", str(tmp_path / "old.parquet"), str(tmp_path / "new.parquet"), "--fail-on-changes"],
    )
    assert result.exit_code == EXIT_FINDINGS
    assert result.output.splitlines()[0].split()[:3] == ["change", "cluster", "related"]
    same = CliRunner().invoke(
        main,
        ["diff", str(tmp_path / "old.parquet"), str(tmp_path / "old.parquet"), "--fail-on-changes"],
    )
    assert same.exit_code == 0


def test_diff_rejects_files_that_are_not_member_reports(tmp_path):
    pl.DataFrame({"x": [1]}).write_parquet(tmp_path / "x.parquet")
    result = CliRunner().invoke(
        main, ["diff", str(tmp_path / "x.parquet"), str(tmp_path / "x.parquet")]
    )
    assert result.exit_code == EXIT_INPUT
    assert "cluster --members" in result.stderr and result.stderr.count("\n") == 1


def test_members_tables_are_read_back_typed_from_any_format(tmp_path):
    # Ids that look like numbers stay the ids they are.
    members = _members({"C-a": ["007", "0012"], "C-b": ["1e3", "5"]}, {"C-a": 80.0, "C-b": 20.0})
    text = tmp_path / "text.csv"
    members.with_columns(pl.col("suspected").cast(pl.String)).write_csv(text)
    categories = tmp_path / "categories.parquet"
    members.with_columns(pl.col("account_id").cast(pl.Categorical)).write_parquet(categories)
    for path in (text, categories):
        assert_frame_equal(read_members(path, DIFF_COLUMNS), members)
    result = CliRunner().invoke(main, ["diff", str(text), str(categories), "--fail-on-changes"])
    assert result.exit_code == 0, result.output
    previous = ["cluster", LOGS, "--accounts", ACCOUNTS, "--previous", str(categories), "-q"]
    assert CliRunner().invoke(main, previous).exit_code == 0


def _null_where(column: str) -> pl.Expr:
    """``column`` with no value on account a2's row."""
    return pl.when(pl.col("account_id") != "a2").then(pl.col(column)).alias(column)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            _null_where("cluster_id"),
            "1 row(s) without a value in cluster_id",
        ),
        (
            _null_where("account_id"),
            "1 row(s) without a value in account_id",
        ),
        (
            pl.lit("maybe").alias("suspected"),
            "column 'suspected' holds String values, not true or false",
        ),
        (pl.lit("high").alias("score"), "column 'score' holds String values, not numbers"),
    ],
)
def test_a_members_table_that_cannot_be_compared_is_named(tmp_path, damage, message):
    members = _members({"C-a": ["a1", "a2"]}, {"C-a": 80.0})
    good, bad = tmp_path / "good.parquet", tmp_path / "bad.parquet"
    members.write_parquet(good)
    members.with_columns(damage).write_parquet(bad)
    fix = "; give a file written by `distill-forensics cluster --members`\n"
    result = CliRunner().invoke(main, ["diff", str(good), str(bad)])
    assert result.exit_code == EXIT_INPUT
    assert result.stderr == f"error: {bad}: {message}{fix}"
    if "_id" in message:  # (--previous reads the ids alone)
        args = ["cluster", LOGS, "--previous", str(bad), "-o", str(tmp_path / "r.csv")]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == EXIT_INPUT
        assert result.stderr == f"error: {bad}: {message}{fix}"
        assert not (tmp_path / "r.csv").exists()


def test_diff_flags_a_cluster_suspected_tonight_with_the_same_members(tmp_path):
    old = _members({"E": ["e1", "e2", "e3"], "Q": ["q1", "q2"]}, {"E": 10, "Q": 30})
    new = _members({"E": ["e1", "e2", "e3"], "Q": ["q1", "q2"]}, {"E": 60, "Q": 30})
    changes = diff_members(old, new)
    assert dict(zip(changes["cluster_id"], changes["change"], strict=True)) == {
        "E": "escalated",
        "Q": "unchanged",
    }
    old.write_parquet(tmp_path / "old.parquet")
    new.write_parquet(tmp_path / "new.parquet")
    args = ["diff", str(tmp_path / "old.parquet"), str(tmp_path / "new.parquet")]
    result = CliRunner().invoke(main, [*args, "--fail-on-changes"])
    assert result.exit_code == EXIT_FINDINGS
    assert result.output.splitlines()[1].split()[:2] == ["escalated", "E"]


def test_diff_split_row_keeps_the_score_of_the_part_that_kept_the_id():
    old = _members({"S": ["s1", "s2", "s3", "s4", "s5"]}, {"S": 60})
    new = _members({"S": ["s1", "s2", "s3"], "T": ["s4", "s5"]}, {"S": 70, "T": 65})
    changes = diff_members(old, new)
    split = changes.filter(pl.col("change") == "split").row(0, named=True)
    assert (split["cluster_id"], split["related_ids"]) == ("S", "T")
    assert (split["n_new"], split["score_new"], split["score_change"]) == (3, 70.0, 10.0)


def test_clusters_are_ranked_again_after_their_ids_carry_over():
    clusters = pl.DataFrame(
        {
            "cluster_id": ["C-b", "C-a", "C-c"],
            "rank": [1, 2, 3],
            "score": [2.0, 2.0, 1.0],
            "n_accounts": [5, 5, 5],
        }
    )
    members = pl.DataFrame(
        {"account_id": ["x", "y", "z"], "cluster_id": ["C-b", "C-a", "C-c"], "rank": [1, 2, 3]}
    )
    ranked, ranked_members = rerank(clusters, members)
    assert ranked["cluster_id"].to_list() == ["C-a", "C-b", "C-c"]
    assert ranked["rank"].to_list() == [1, 2, 3]
    assert ranked_members.columns == members.columns
    assert ranked_members.rows() == [("y", "C-a", 1), ("x", "C-b", 2), ("z", "C-c", 3)]


def test_the_report_may_not_replace_the_previous_members_table(tmp_path):
    previous = tmp_path / "members.csv"
    _members({"C-x": ["acct_1", "acct_2"]}, {"C-x": 80.0}).write_csv(previous)
    before = previous.read_bytes()
    args = ["cluster", LOGS, "--accounts", ACCOUNTS, "--previous", str(previous), "-q"]
    refused = CliRunner().invoke(main, [*args, "-o", str(previous)])
    assert refused.exit_code == EXIT_INPUT
    assert refused.stderr == (
        f"error: {previous}: is the --previous members table, which -o would replace; "
        "write -o elsewhere\n"
    )
    # Nor may indicators (graph files cannot be members tables).
    indicators = ["indicators", *args[1:], "--hash-key", "k" * 16]
    refused = CliRunner().invoke(main, [*indicators, "-o", str(previous)])
    assert refused.exit_code == EXIT_INPUT, refused.output
    assert "is the --previous members table, which -o would replace" in refused.stderr
    assert previous.read_bytes() == before
    assert previous.read_bytes() == before
    # Tonight's members may replace last night's: the table is read before the run.
    replaced = CliRunner().invoke(main, [*args, "--members", str(previous)])
    assert replaced.exit_code == 0, replaced.output
    tonight = pl.read_csv(previous)
    assert tonight.height > 100 and "acct_1" not in tonight.get_column("account_id").to_list()


@pytest.mark.filterwarnings("error")  # (a polars warning would reach the user's terminal)
def test_ids_carried_over_are_known_to_the_investigation_commands(tmp_path):
    members = tmp_path / "members.parquet"
    assert (
        _run("cluster", LOGS, "--accounts", ACCOUNTS, "--members", str(members), "-q").exit_code
        == 0
    )
    last_night = pl.read_parquet(members)
    top = last_night.get_column("cluster_id")[0]
    previous = tmp_path / "previous.parquet"
    last_night.with_columns(
        cluster_id=pl.when(pl.col("cluster_id") == top)
        .then(pl.lit("C-1111111111"))
        .otherwise("cluster_id")
    ).write_parquet(previous)
    inputs = [LOGS, "--accounts", ACCOUNTS, "--previous", str(previous)]
    report = tmp_path / "report.csv"
    assert _run("cluster", *inputs, "-o", str(report), "-q").exit_code == 0
    assert pl.read_csv(report).get_column("cluster_id")[0] == "C-1111111111"
    explained = CliRunner().invoke(
        main, ["explain", *inputs, "C-1111111111", "--format", "json", "-q"]
    )
    assert explained.exit_code == 0, explained.output
    assert json.loads(explained.stdout)["cluster"]["cluster_id"] == "C-1111111111"
    out = tmp_path / "c.graphml"
    args = ["graph", *inputs, "--cluster", "C-1111111111", "-o", str(out), "-q"]
    assert CliRunner().invoke(main, args).exit_code == 0
    assert "C-1111111111" in out.read_text()
    iocs = tmp_path / "iocs.csv"
    args = ["indicators", *inputs, "--hash-key", "k" * 16, "-o", str(iocs), "-q"]
    assert CliRunner().invoke(main, args).exit_code == 0
    assert "C-1111111111" in pl.read_csv(iocs).get_column("cluster_id").to_list()
    # Without it, explain says where the id may come from.
    plain = CliRunner().invoke(main, ["explain", LOGS, "--accounts", ACCOUNTS, "C-1111111111"])
    assert plain.exit_code == EXIT_INPUT and "(and --previous)" in plain.stderr
