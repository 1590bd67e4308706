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
        # An empty value (an unset variable in a nightly script) is not a missing option.
        (["-o", ""], "--output: empty value; give one, or leave --output out"),
        (["--members", " "], "--members: empty value"),
        (["--from", ""], "--from: empty value"),
        ([""], "LOGS: an empty path; name the file (an unset variable?)"),
        (["--column", "ip=a", "--column", "ip=b"], "--column ip= given twice ('a' and 'b')"),
    ],
)
def test_bad_options_are_one_line_exit_2(runner, tmp_path, args, needle):
    args = [a if a != "report.xlsx" else str(tmp_path / a) for a in args]
    code, err = _error(runner, ["cluster", LOGS, *args])
    assert code == EXIT_INPUT
    assert needle in err
    assert "Traceback" not in err


def test_a_blank_variable_is_named(runner, monkeypatch):
    monkeypatch.setenv("DISTILL_FORENSICS_HASH_KEY", "  ")
    code, err = _error(runner, ["indicators", LOGS])
    assert code == EXIT_INPUT
    assert err == "error: DISTILL_FORENSICS_HASH_KEY is blank; set it to the value for --hash-key\n"


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


def test_usage_errors_are_one_line_naming_the_help(runner):
    for args, needle in ((["--bogus"], "--bogus"), (["--top", "-1"], "--top")):
        code, err = _error(runner, ["cluster", LOGS, *args])
        assert code == EXIT_INPUT
        assert err.startswith("error: ") and needle in err and err.count("\n") == 1
        assert "cluster --help" in err


def test_outputs_are_refused_before_the_run(runner, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    data = logs / "day1.csv"
    pl.read_parquet(LOGS).head(2000).write_csv(data)
    before = data.read_bytes()
    key = ["--hash-key", "a key long enough to be safe"]
    cases = [
        (["indicators", str(data), *key, "-o", str(data)], "is an input file"),
        (["cluster", str(logs), "-o", str(logs / "report.csv")], "lies in the log input"),
        (
            [
                "cluster",
                str(data),
                "-o",
                str(tmp_path / "r.csv"),
                "--members",
                str(tmp_path / "r.csv"),
            ],
            "both",
        ),
        (["graph", str(data), "-o", str(tmp_path / "no" / "g.graphml")], "does not exist"),
        (["extract", str(logs), "-o", str(logs)], "evidence store"),
        # A new file that the same glob would pick up next time.
        (["cluster", str(logs / "*.csv"), "-o", str(logs / "report.csv")], "read it as logs"),
        (["extract", str(tmp_path / "log*"), "-o", str(tmp_path / "logs-store")], "mix"),
    ]
    for args, needle in cases:
        code, err = _error(runner, args)
        assert code == EXIT_INPUT, (args, err)
        assert needle in err and err.count("\n") == 1, (args, err)
    # A second output that cannot be written stops the run before the first is written.
    table = tmp_path / "iocs.csv"
    code, err = _error(
        runner,
        [
            "indicators",
            str(data),
            *key,
            "-o",
            str(table),
            "--stix-output",
            str(tmp_path / "no" / "b.json"),
        ],
    )
    assert code == EXIT_INPUT and not table.exists()
    assert data.read_bytes() == before
    assert sorted(p.name for p in logs.iterdir()) == ["day1.csv"]
    # A store may hold the logs it was made from: `cluster --evidence` reads day=* only.
    result = runner.invoke(main, ["extract", str(data), "-o", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    assert any(p.name.startswith("day=") for p in tmp_path.iterdir())


def test_unreadable_files_are_input_errors_naming_the_file(runner, tmp_path):
    good = tmp_path / "good.parquet"
    pl.read_parquet(LOGS).write_parquet(good, compression="zstd")
    damaged = bytearray(good.read_bytes())
    for i in range(1000, len(damaged) // 2, 997):
        damaged[i] ^= 0xFF
    bad = tmp_path / "damaged.parquet"
    bad.write_bytes(bytes(damaged))
    ragged = tmp_path / "quote.csv"
    rows = pl.read_parquet(LOGS).head(50).select("timestamp", "account_id", "ip")
    text = rows.write_csv().splitlines()
    text[10] = '2026-03-01T00:00:00Z,"a2 unterminated,1.2.3.4'
    ragged.write_text("\n".join(text) + "\n")
    # In a longer file polars reads the CSV in chunks, and the open quote shifts one
    # chunk's rows against the count it expected.
    open_quote = tmp_path / "open_quote.csv"
    rows = pl.read_parquet(LOGS).head(1000).select("timestamp", "account_id", "prompt")
    text = rows.write_csv()
    cut = text.rfind("\n", 0, len(text) - 2000) + 1
    open_quote.write_text(
        text[:cut] + '2026-03-01T00:00:00Z,acct_x,"unterminated,foo\n' + text[cut:]
    )
    store = tmp_path / "store"
    for path in (bad, ragged, open_quote):
        for command in (["cluster", str(path)], ["extract", str(path), "-o", str(store)]):
            code, err = _error(runner, command)
            assert code == EXIT_INPUT, (command, err)
            assert err.startswith(f"error: {path}: cannot read its rows") and err.count("\n") == 1
    assert not store.exists()
    # Among several inputs, the damaged one is named.
    code, err = _error(runner, ["cluster", str(good), str(bad)])
    assert code == EXIT_INPUT and err.startswith(f"error: {bad}: cannot read its rows")
    # Parquet bytes under a CSV name.
    misnamed = tmp_path / "logs.csv"
    misnamed.write_bytes(good.read_bytes())
    code, err = _error(runner, ["cluster", str(misnamed)])
    assert code == EXIT_INPUT and "is a Parquet file" in err and err.count("\n") == 1


def test_account_table_problems_are_counted(runner, tmp_path):
    ids = pl.read_parquet(ACCOUNTS).with_columns(pl.int_range(pl.len()).alias("account_id"))
    numbered = tmp_path / "numbered.parquet"
    ids.write_parquet(numbered)
    result = runner.invoke(main, ["cluster", LOGS, "--accounts", str(numbered), "--top", "1"])
    assert result.exit_code == 0
    assert "none of the" in result.stderr and "accounts table" in result.stderr
    store = tmp_path / "store"
    result = runner.invoke(main, ["extract", LOGS, "--accounts", str(numbered), "-o", str(store)])
    assert result.exit_code == 0
    assert "none of the" in result.stderr
    assert "malformed rows counted and skipped or repaired: invalid_ip 12" in result.stderr
    table = pl.read_parquet(ACCOUNTS)
    twice = tmp_path / "twice.parquet"
    pl.concat([table, table.head(7)]).write_parquet(twice)
    result = runner.invoke(main, ["cluster", LOGS, "--accounts", str(twice), "--top", "1"])
    assert "warning: accounts table: duplicate_account_rows 7" in result.stderr


def test_graph_and_indicators_report_malformed_rows(runner, tmp_path):
    result = runner.invoke(
        main, ["graph", LOGS, "--accounts", ACCOUNTS, "-o", str(tmp_path / "g.graphml")]
    )
    assert result.exit_code == 0
    assert "malformed rows counted and skipped or repaired: invalid_ip" in result.stderr
