"""The CLI through click's CliRunner: outputs, exit codes, error lines, golden report."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import click
import polars as pl
import pytest
from click.testing import CliRunner
from rich.console import Console

from distill_forensics.cli import main
from distill_forensics.cli.common import Status
from distill_forensics.errors import EXIT_FINDINGS, EXIT_INPUT

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_logs"
LOGS = str(SAMPLE / "logs.parquet")
ACCOUNTS = str(SAMPLE / "accounts.parquet")
GOLDEN = Path(__file__).resolve().parent / "golden" / "sample_clusters.csv"


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def _run(runner: CliRunner, *args: str):
    return runner.invoke(main, list(args), catch_exceptions=False)


def test_every_command_has_help_and_an_example(runner):
    for name, command in main.commands.items():
        assert command.help, f"{name} has no help text"
        assert "Example" in command.help, f"{name} help has no example block"
        result = _run(runner, name, "--help")
        assert result.exit_code == 0
        assert "Usage: " in result.output


def test_cluster_table_on_sample_ranks_campaigns_first(runner):
    result = _run(runner, "cluster", LOGS, "--accounts", ACCOUNTS, "--top", "5", "--quiet")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split()[:6] == ["rank", "cluster", "accounts", "requests", "score", "top"]
    assert len(lines) == 6
    assert all(line.split()[4] == "*" or line.split()[5] == "*" for line in lines[1:])


def test_cluster_golden_report(runner, tmp_path):
    out = tmp_path / "report.csv"
    result = _run(runner, "cluster", LOGS, "--accounts", ACCOUNTS, "-o", str(out), "--quiet")
    assert result.exit_code == 0
    got = pl.read_csv(out).select("cluster_id", "rank", "n_accounts", "suspected", "score")
    if os.environ.get("UPDATE_GOLDEN"):
        got.filter(pl.col("score") >= 20).write_csv(GOLDEN)
    want = pl.read_csv(GOLDEN)
    got = got.head(want.height)
    assert got.select("cluster_id", "rank", "n_accounts", "suspected").equals(
        want.select("cluster_id", "rank", "n_accounts", "suspected")
    )
    diff = (got["score"] - want["score"]).abs().max()
    assert diff is not None and diff <= 0.5


def test_csv_input_gives_the_same_clusters_as_parquet(runner, tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    _run(runner, "cluster", LOGS, "--accounts", ACCOUNTS, "-o", str(a), "-q")
    _run(
        runner,
        "cluster",
        str(SAMPLE / "logs.csv.gz"),
        "--accounts",
        str(SAMPLE / "accounts.csv"),
        "-o",
        str(b),
        "-q",
    )
    cols = ["cluster_id", "rank", "n_accounts", "n_requests", "suspected"]
    assert pl.read_csv(a).select(cols).equals(pl.read_csv(b).select(cols))


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_cluster_stdout_formats(runner, fmt):
    result = _run(
        runner, "cluster", LOGS, "--accounts", ACCOUNTS, "--format", fmt, "--top", "3", "-q"
    )
    assert result.exit_code == 0
    if fmt == "json":
        rows = json.loads(result.output)
        assert [r["rank"] for r in rows] == [1, 2, 3]
        assert {"cluster_id", "score", "suspected", "reasons", "f_sync"} <= set(rows[0])
    else:
        lines = result.output.splitlines()
        assert lines[0].startswith("cluster_id,rank,score,suspected,n_accounts,n_requests")
        assert len(lines) == 4


def test_members_and_report_files_follow_extension(runner, tmp_path):
    rep, mem = tmp_path / "r.json", tmp_path / "m.parquet"
    result = _run(
        runner,
        "cluster",
        LOGS,
        "--accounts",
        ACCOUNTS,
        "-o",
        str(rep),
        "--members",
        str(mem),
        "--min-size",
        "10",
        "-q",
    )
    assert result.exit_code == 0
    report = json.loads(rep.read_text())
    assert report and min(r["n_accounts"] for r in report) >= 10
    members = pl.read_parquet(mem)
    assert members.columns[:5] == ["account_id", "cluster_id", "rank", "score", "suspected"]
    assert set(members["cluster_id"]) == {r["cluster_id"] for r in report}


def test_fail_on_findings_exit_code(runner):
    found = _run(runner, "cluster", LOGS, "--accounts", ACCOUNTS, "--fail-on-findings", "-q")
    assert found.exit_code == EXIT_FINDINGS
    quiet = _run(
        runner,
        "cluster",
        LOGS,
        "--accounts",
        ACCOUNTS,
        "--fail-on-findings",
        "--min-size",
        "100000",
        "-q",
    )
    assert quiet.exit_code == 0


def test_malformed_rows_are_reported_on_stderr(runner):
    result = runner.invoke(main, ["cluster", LOGS, "--accounts", ACCOUNTS, "--top", "1"])
    assert result.exit_code == 0
    assert "warning: malformed rows counted and skipped or repaired: invalid_ip" in result.stderr


def _error(runner: CliRunner, args: list[str]) -> tuple[int, str]:
    result = runner.invoke(main, args)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.exit_code, result.stderr


def test_missing_file_is_one_line_exit_2(runner, tmp_path):
    out = tmp_path / "r.csv"
    code, err = _error(runner, ["cluster", str(tmp_path / "nope.parquet"), "-o", str(out)])
    assert code == EXIT_INPUT
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "nope.parquet" in err
    assert not out.exists()


def test_missing_required_column_names_file_and_fix(runner, tmp_path):
    f = tmp_path / "logs.csv"
    pl.DataFrame({"ts": ["2026-03-01T00:00:00Z"], "user": ["a"]}).write_csv(f)
    code, err = _error(runner, ["cluster", str(f)])
    assert code == EXIT_INPUT
    assert "logs.csv" in err and "timestamp" in err and "--column" in err
    assert err.count("\n") == 1


def test_column_mapping_and_config(runner, tmp_path):
    f = tmp_path / "export.parquet"
    pl.read_parquet(LOGS).rename({"account_id": "user", "timestamp": "ts"}).write_parquet(f)
    result = _run(
        runner,
        "cluster",
        str(f),
        "--column",
        "account_id=user",
        "--column",
        "timestamp=ts",
        "--top",
        "1",
        "-q",
    )
    assert result.exit_code == 0 and "C-" in result.output
    cfg = tmp_path / "map.toml"
    cfg.write_text('[columns]\naccount_id = "user"\ntimestamp = "ts"\n')
    result = _run(runner, "cluster", str(f), "--config", str(cfg), "--top", "1", "-q")
    assert result.exit_code == 0 and "C-" in result.output


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--column", "acount_id=user"], "acount_id"),
        (["--column", "no-equals-sign"], "canonical=source"),
        (["--from", "yesterday-ish"], "yesterday-ish"),
        (["--format", "xml"], "xml"),
        (["-o", "report.xlsx"], ".xlsx"),
    ],
)
def test_bad_options_are_one_line_exit_2(runner, tmp_path, args, needle):
    args = [a if a != "report.xlsx" else str(tmp_path / a) for a in args]
    code, err = _error(runner, ["cluster", LOGS, *args])
    assert code == EXIT_INPUT
    assert needle in err
    assert "Traceback" not in err


def test_time_window_filters_rows(runner, tmp_path):
    out = tmp_path / "r.csv"
    result = _run(
        runner,
        "cluster",
        LOGS,
        "--accounts",
        ACCOUNTS,
        "--from",
        "2026-03-20",
        "--to",
        "2026-03-25",
        "-o",
        str(out),
        "-q",
    )
    assert result.exit_code == 0
    report = pl.read_csv(out, try_parse_dates=True)
    assert report["first_seen"].cast(pl.String).min() >= "2026-03-20"
    assert report["last_seen"].cast(pl.String).max() < "2026-03-25"


def test_version(runner):
    result = _run(runner, "--version")
    assert result.exit_code == 0 and "distill-forensics" in result.output


def test_commands_are_click_commands():
    assert all(isinstance(c, click.Command) for c in main.commands.values())


def _terminal_status(quiet: bool) -> tuple[Status, io.StringIO]:
    out = io.StringIO()
    status = Status(quiet)
    status.console = Console(file=out, force_terminal=True, width=120)
    status.enabled = not quiet
    return status, out


def test_progress_shows_each_stage_with_its_count():
    status, out = _terminal_status(quiet=False)
    with status.running("reading logs…"):
        status.stage("read", 0, 2_000_000)
        status.stage("read", 1_000_000, 2_000_000)
        status.stage("read", 2_000_000, 2_000_000)
        status.stage("link", 0, 30)
        status.stage("link", 12, 30)
        status.stage("cluster", 3, None)
        status.stage("score", 3, 3)
    text = out.getvalue()
    for shown in (
        "2,000,000 of 2,000,000 rows read",
        "12 of 30 accounts linked",
        "3 clusters found",
        "3 of 3 clusters scored",
    ):
        assert shown in text


def test_progress_is_silent_when_quiet():
    status, out = _terminal_status(quiet=True)
    with status.running("reading logs…"):
        status.stage("read", 5, 10)
    assert out.getvalue() == ""
