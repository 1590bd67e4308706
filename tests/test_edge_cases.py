"""Edge cases of the detector (extract, link, cluster, score, pipeline, CLI).

Degenerate inputs (empty, one account, only the required columns, nulls),
outputs with zero clusters, attacker-controlled text in CSV reports, and
determinism under row order and file names.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from builders import T0, background, campaign, strangers, write
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from distill_forensics import extract, link, read_logs, run_cluster
from distill_forensics.cli import main
from distill_forensics.cluster import cluster
from distill_forensics.errors import EXIT_INPUT
from distill_forensics.extract import ACCOUNT_VALUE_KINDS, LOG_VALUE_KINDS, _sorted_by_text
from distill_forensics.link import DEFAULT_KIND_WEIGHTS, LinkOptions, Links
from distill_forensics.prompts import prompt_features, template_key
from distill_forensics.write import FORMULA_PREFIXES

SAMPLE = Path(__file__).resolve().parent.parent / "sample_logs"
SAMPLE_LOGS = SAMPLE / "logs.parquet"
SAMPLE_ACCOUNTS = SAMPLE / "accounts.parquet"

REPORT_HEAD = [
    "cluster_id",
    "rank",
    "score",
    "suspected",
    "n_accounts",
    "n_requests",
    "n_tokens",
    "first_seen",
    "last_seen",
    "reasons",
]
MEMBERS_HEAD = ["account_id", "cluster_id", "rank", "score", "suspected"]
ALL_SIGNALS = sorted(set(LOG_VALUE_KINDS) | set(ACCOUNT_VALUE_KINDS))


# ---------------------------------------------------------------------------
# Helpers


def _frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema_overrides={"org_id": pl.String})


def _cli(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def _assert_no_traceback(result: Result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.stderr


def _one_line_error(result: Result) -> str:
    _assert_no_traceback(result)
    assert result.exit_code == EXIT_INPUT
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def _csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def _only_required_columns(tmp_path: Path) -> Path:
    """A lockstep campaign among background traffic with only timestamp and account_id."""
    path = tmp_path / "required_only.parquet"
    rows = campaign(30)[0] + background(100)[0]
    _frame(rows).select("timestamp", "account_id").sort("timestamp").write_parquet(path)
    return path


def _links(edges: list[tuple[str, str, float]]) -> Links:
    frame = pl.DataFrame(
        edges, schema={"a": pl.String, "b": pl.String, "weight": pl.Float64}, orient="row"
    ).sort("a", "b")
    accounts = pl.Series("account_id", sorted({x for e in edges for x in e[:2]}), pl.String)
    return Links(edges=frame, accounts=accounts, value_stats=pl.DataFrame(), n_candidates=0)


@pytest.fixture(scope="module")
def sample_result():
    """The sample run once for the whole module (about a second)."""
    return run_cluster(SAMPLE_LOGS, SAMPLE_ACCOUNTS)


# ---------------------------------------------------------------------------
# Degenerate inputs that have no shared value at all


def _empty_logs(tmp_path: Path) -> Path:
    path = tmp_path / "empty.parquet"
    _frame(campaign(1)[0]).head(0).write_parquet(path)
    return path


def test_empty_log_file_gives_zero_clusters(tmp_path):
    result = run_cluster(_empty_logs(tmp_path))
    assert result.evidence.rows == 0 and result.evidence.n_accounts == 0
    assert result.clusters.height == 0 and result.members.height == 0
    assert result.clusters.columns[: len(REPORT_HEAD)] == REPORT_HEAD
    assert result.members.columns[: len(MEMBERS_HEAD)] == MEMBERS_HEAD


def test_empty_log_file_cli_writes_empty_report(tmp_path):
    out, members = tmp_path / "report.csv", tmp_path / "members.csv"
    result = _cli("cluster", _empty_logs(tmp_path), "-o", out, "--members", members, "-q")
    _assert_no_traceback(result)
    assert result.exit_code == 0, result.stderr
    assert len(_csv_rows(out.read_text())) == 1
    assert _csv_rows(members.read_text())[0][: len(MEMBERS_HEAD)] == MEMBERS_HEAD


def test_a_run_without_rows_to_analyse_says_so(tmp_path):
    result = _cli("cluster", _empty_logs(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert "warning: no rows to analyse (none in the input, or none within --from/--to)" in (
        result.stderr
    )
    nameless = tmp_path / "nameless.parquet"
    _frame(campaign(3)[0]).with_columns(account_id=pl.lit(None, pl.String)).write_parquet(nameless)
    result = _cli("cluster", nameless)
    assert result.exit_code == 0, result.stderr
    assert "null_account_id 150" in result.stderr
    assert "warning: none of the 150 rows could be analysed (counted above)" in result.stderr
    assert "rows to analyse" not in _cli("cluster", _only_required_columns(tmp_path)).stderr


def test_only_one_account(tmp_path):
    logs = tmp_path / "one.parquet"
    _frame(campaign(1)[0]).write_parquet(logs)
    result = run_cluster(logs)
    assert result.evidence.n_accounts == 1 and result.evidence.rows == 50
    assert result.clusters.height == 0 and result.members.height == 0


def test_one_account_with_a_single_request(tmp_path):
    logs, accounts = write(tmp_path, campaign(1))
    pl.read_parquet(logs).head(1).write_parquet(logs)
    result = run_cluster(logs, accounts)
    assert result.evidence.rows == 1 and result.evidence.activity.height == 1
    assert result.clusters.height == 0


def test_from_after_every_row_is_an_empty_window_not_a_crash(tmp_path):
    logs, accounts = write(tmp_path, campaign(10), background(50))
    out = tmp_path / "report.csv"
    result = _cli("cluster", logs, "--accounts", accounts, "--from", "2030-01-01", "-o", out, "-q")
    _assert_no_traceback(result)
    if result.exit_code == EXIT_INPUT:  # refusing an empty window is acceptable too
        assert "--from" in _one_line_error(result) and not out.exists()
    else:
        assert result.exit_code == 0, result.stderr
        assert len(_csv_rows(out.read_text())) == 1  # the header only


# ---------------------------------------------------------------------------
# Absent and null signals


def test_only_timestamp_and_account_id_through_run_cluster(tmp_path):
    result = run_cluster(_only_required_columns(tmp_path))
    ev = result.evidence
    assert ev.columns == ("account_id", "timestamp")
    assert list(ev.unused_signals) == ALL_SIGNALS
    assert ev.usage.height == 0
    assert ev.n_accounts == 130 and ev.rows == ev.activity["n"].sum()
    assert ev.accounts["n_prompts"].sum() == 0
    # Nothing but timing is known: no background account may be clustered.
    assert result.members.filter(~pl.col("account_id").str.contains("att")).height == 0
    assert result.clusters.columns[: len(REPORT_HEAD)] == REPORT_HEAD


def test_only_timestamp_and_account_id_through_the_cli(tmp_path):
    result = _cli("cluster", _only_required_columns(tmp_path))
    _assert_no_traceback(result)
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].split()[:4] == ["rank", "cluster", "accounts", "requests"]
    assert result.stderr == (
        "warning: signals not used (columns absent): " + ", ".join(ALL_SIGNALS) + "\n"
    )


def test_no_accounts_table_uses_the_log_signals(tmp_path):
    logs, _ = write(tmp_path, campaign(20), background(200))
    result = run_cluster(logs)
    assert list(result.evidence.unused_signals) == sorted(ACCOUNT_VALUE_KINDS)
    assert result.evidence.usage.filter(pl.col("kind").is_in(list(ACCOUNT_VALUE_KINDS))).is_empty()
    top = result.clusters.row(0, named=True)
    assert top["n_accounts"] == 20 and top["suspected"]
    assert top["median_age_days"] is None and top["f_young"] == 0.0
    assert set(result.members.filter(pl.col("rank") == 1)["account_id"]) == {
        f"acct_att{a:04d}" for a in range(20)
    }


def test_all_prompts_null(tmp_path):
    logs, accounts = write(tmp_path, campaign(20), background(200))
    pl.read_parquet(logs).with_columns(prompt=pl.lit(None, pl.String)).write_parquet(logs)
    result = run_cluster(logs, accounts)
    ev = result.evidence
    counters = ["n_prompts", "n_cot", "n_grading", "n_coding", "n_tool"]
    assert ev.accounts.select(counters).sum().row(0) == (0,) * len(counters)
    assert ev.usage.filter(pl.col("kind") == "template").is_empty()
    assert result.clusters.height >= 1
    prompt_features = result.clusters.select("f_templated", "f_cot", "f_capability")
    assert prompt_features.sum().row(0) == (0.0, 0.0, 0.0)
    assert not result.clusters["reasons"].str.contains("prompts").any()


def test_org_column_entirely_null_is_the_same_as_no_org_column(tmp_path):
    logs, accounts = write(tmp_path, campaign(10), strangers(30, ip="81.2.3.4"), background(100))
    frame = pl.read_parquet(logs)
    frame.with_columns(org_id=pl.lit(None)).write_parquet(tmp_path / "null_org.parquet")
    frame.drop("org_id").write_parquet(tmp_path / "no_org.parquet")
    with_null = run_cluster(tmp_path / "null_org.parquet", accounts)
    without = run_cluster(tmp_path / "no_org.parquet", accounts)
    assert with_null.clusters.height >= 1
    assert_frame_equal(with_null.clusters, without.clusters)
    assert with_null.clusters["f_single_org"].sum() == 0.0
    assert with_null.clusters["f_cross_org"].sum() == 0.0


def test_identical_timestamps(tmp_path):
    logs, accounts = write(tmp_path, campaign(10), background(100))
    pl.read_parquet(logs).with_columns(timestamp=pl.lit(T0)).write_parquet(logs)
    result = run_cluster(logs, accounts)
    ev = result.evidence
    assert ev.activity.height == ev.n_accounts == 110
    assert ev.activity["slot"].n_unique() == 1
    assert result.clusters.height >= 1
    assert result.clusters["f_sync"].max() == 0.0  # one shared slot is not lockstep
    assert result.clusters["f_new_model_pivot"].max() == 0.0
    assert (result.clusters["first_seen"] == T0).all()
    assert (result.clusters["last_seen"] == T0).all()


def test_csv_tokens_as_text_are_counted_and_bad_ones_flagged(tmp_path):
    logs, accounts = write(tmp_path, campaign(10), background(60))
    frame = pl.read_parquet(logs).with_row_index("_i")
    bad = [0, 1, 2, 3, 5]  # "lots" x3, "-5", "1.5"
    frame = frame.with_columns(
        input_tokens=pl.col("input_tokens").cast(pl.String),
        output_tokens=pl.when(pl.col("_i").is_in(bad[:3]))
        .then(pl.lit("lots"))
        .when(pl.col("_i") == bad[3])
        .then(pl.lit("-5"))
        .when(pl.col("_i") == bad[4])
        .then(pl.lit("1.5"))
        .otherwise(pl.col("output_tokens").cast(pl.String)),
    )
    csv_path = tmp_path / "logs.csv"
    frame.drop("_i").write_csv(csv_path)
    result = run_cluster(csv_path, accounts)
    ev = result.evidence
    assert ev.malformed == {"invalid_tokens": len(bad)}
    want_out = frame.filter(~pl.col("_i").is_in(bad))["output_tokens"].cast(pl.Int64).sum()
    assert ev.accounts["output_tokens"].sum() == want_out
    assert ev.accounts["input_tokens"].sum() == frame["input_tokens"].cast(pl.Int64).sum()
    members = result.members.join(ev.accounts, on="account_id")
    per_cluster = members.group_by("cluster_id").agg(
        (pl.col("input_tokens") + pl.col("output_tokens")).sum().alias("want")
    )
    got = result.clusters.join(per_cluster, on="cluster_id")
    assert got.height == result.clusters.height >= 1
    assert (got["n_tokens"] == got["want"]).all()


def test_csv_rows_read_leniently_are_counted_through_to_the_store(tmp_path):
    logs, accounts = write(tmp_path, campaign(10), background(60))
    frame = pl.read_parquet(logs)
    frame = frame.select(pl.exclude("model"), "model")  # a plain last cell to append to
    lines = frame.write_csv().encode().splitlines(keepends=True)
    lines[1] = lines[1].rstrip(b"\n") + b",spilled\n"
    lines[2] = lines[2].rstrip(b"\n") + b",spilled,over\n"
    lines[3] = lines[3].rstrip(b"\n") + b"\xe9\n"
    lines[4] = lines[4].rsplit(b",", 1)[0] + b"\n"  # cut short: no model cell
    csv_path = tmp_path / "logs.csv"
    csv_path.write_bytes(b"".join(lines))
    result = run_cluster(csv_path, accounts)
    assert result.evidence.malformed == {"extra_cells": 2, "missing_cells": 1, "invalid_utf8": 1}
    assert result.evidence.accounts["n_requests"].sum() == frame.height  # rows kept

    store = tmp_path / "store"
    run = _cli("extract", csv_path, "--accounts", accounts, "-o", store)
    assert run.exit_code == 0, run.stderr
    assert "skipped or repaired: extra_cells 2, invalid_utf8 1, missing_cells 1" in run.stderr
    per_day: dict[str, int] = {}
    for meta in store.glob("day=*/meta.json"):
        for reason, n in json.loads(meta.read_text())["counts"].items():
            per_day[reason] = per_day.get(reason, 0) + n
    assert (per_day["extra_cells"], per_day["missing_cells"], per_day["invalid_utf8"]) == (2, 1, 1)
    run = _cli("cluster", "--evidence", store, "-o", tmp_path / "report.csv")
    assert run.exit_code == 0, run.stderr
    assert "skipped or repaired: extra_cells 2, invalid_utf8 1, missing_cells 1" in run.stderr


# ---------------------------------------------------------------------------
# The accounts table


def _accounts_with_ghosts_and_duplicates(tmp_path: Path) -> tuple[Path, Path, pl.DataFrame]:
    logs, accounts = write(tmp_path, campaign(10), background(50))
    table = pl.read_parquet(accounts)
    dup = table.head(2).with_columns(email=pl.lit("second@corp.example"))
    ghosts = table.head(3).with_columns(account_id=pl.format("ghost{}", pl.int_range(3)))
    full = pl.concat([table, dup, ghosts])
    full.write_parquet(accounts)
    return logs, accounts, full


def test_accounts_table_with_ghost_ids_and_duplicates(tmp_path):
    logs, accounts, table = _accounts_with_ghosts_and_duplicates(tmp_path)
    result = run_cluster(logs, accounts)
    ev = result.evidence
    assert ev.n_accounts == 60
    assert not ev.accounts["account_id"].str.starts_with("ghost").any()
    assert not ev.usage["account_id"].str.starts_with("ghost").any()
    # The first row of a duplicated account wins (documented in read.py).
    first = table.row(0, named=True)
    got = ev.accounts.filter(pl.col("account_id") == first["account_id"])["email"].to_list()
    assert got == [first["email"]]


def test_account_columns_inside_the_logs_do_not_depend_on_row_order(tmp_path):
    frame = _frame(campaign(6, tag="em")[0]).with_columns(
        email=pl.when(pl.col("timestamp").dt.day() < 5)
        .then(pl.format("old{}@corp.example", pl.col("account_id")))
        .otherwise(pl.format("new{}@corp.example", pl.col("account_id")))
    )
    frame.write_parquet(tmp_path / "a.parquet")
    frame.reverse().write_parquet(tmp_path / "b.parquet")
    a = extract(read_logs([tmp_path / "a.parquet"]))
    b = extract(read_logs([tmp_path / "b.parquet"]))
    assert_frame_equal(a.accounts, b.accounts)
    assert_frame_equal(a.usage, b.usage)


# ---------------------------------------------------------------------------
# Reports with zero clusters


@pytest.mark.parametrize("ext", ["csv", "json", "parquet"])
def test_zero_cluster_report_and_members_are_valid_empty_files(tmp_path, ext):
    out, members = tmp_path / f"report.{ext}", tmp_path / f"members.{ext}"
    result = _cli("cluster", _only_required_columns(tmp_path), "-o", out, "--members", members)
    _assert_no_traceback(result)
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 1  # the table header only
    if ext == "csv":
        for path, head in ((out, REPORT_HEAD), (members, MEMBERS_HEAD)):
            rows = _csv_rows(path.read_text())
            assert len(rows) == 1 and rows[0][: len(head)] == head
    elif ext == "json":
        assert json.loads(out.read_text()) == []
        assert json.loads(members.read_text()) == []
    else:
        report = pl.read_parquet(out)
        assert report.height == 0 and report.columns[: len(REPORT_HEAD)] == REPORT_HEAD
        assert report.schema["score"] == pl.Float64 and report.schema["suspected"] == pl.Boolean
        member_rows = pl.read_parquet(members)
        assert member_rows.height == 0
        assert member_rows.columns[: len(MEMBERS_HEAD)] == MEMBERS_HEAD


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_zero_clusters_on_stdout(tmp_path, fmt):
    result = _cli("cluster", _only_required_columns(tmp_path), "--format", fmt, "-q")
    _assert_no_traceback(result)
    assert result.exit_code == 0
    if fmt == "csv":
        rows = _csv_rows(result.stdout)
        assert len(rows) == 1 and rows[0][: len(REPORT_HEAD)] == REPORT_HEAD
    else:
        assert json.loads(result.stdout) == []


def test_report_columns_do_not_depend_on_the_data(tmp_path, sample_result):
    empty = run_cluster(_only_required_columns(tmp_path)).clusters
    sample = sample_result.clusters
    assert empty.schema == sample.schema
    assert {c for c in sample.columns if c.startswith("share_")} == {
        "share_" + k for k in DEFAULT_KIND_WEIGHTS
    }


# ---------------------------------------------------------------------------
# Attacker-controlled text in CSV outputs


def test_formula_cells_are_neutralised_in_every_csv_output(tmp_path):
    rows, accounts = campaign(20, tag="x")
    prefixes = ["=", "+", "-", "@"]
    for r in rows:
        r["user_agent"] = '=HYPERLINK("http://evil.example","click")'
        r["account_id"] = prefixes[int(r["account_id"][-4:]) % 4] + r["account_id"]
    for a in accounts:
        a["account_id"] = prefixes[int(a["account_id"][-4:]) % 4] + a["account_id"]
    logs, accounts_path = write(tmp_path, (rows, accounts), background(200))
    out, members = tmp_path / "report.csv", tmp_path / "members.csv"
    result = _cli(
        "cluster",
        logs,
        "--accounts",
        accounts_path,
        "-o",
        out,
        "--members",
        members,
        "--format",
        "csv",
        "-q",
    )
    _assert_no_traceback(result)
    assert result.exit_code == 0
    member_rows = _csv_rows(members.read_text())
    assert len(member_rows) == 21  # the campaign was found, so the ids reached the file
    assert {r[0][:2] for r in member_rows[1:]} == {"'=", "'+", "'-", "'@"}
    for text in (out.read_text(), members.read_text(), result.stdout):
        for row in _csv_rows(text):
            for cell in row:
                assert not cell.startswith(FORMULA_PREFIXES), cell


# ---------------------------------------------------------------------------
# CLI: nothing written on a user mistake, one-line errors


@pytest.mark.parametrize("bad", ["missing_dir/members.csv", "members.xlsx"])
def test_bad_members_path_writes_nothing(tmp_path, bad):
    out = tmp_path / "report.csv"
    result = _cli(
        "cluster", _only_required_columns(tmp_path), "-o", out, "--members", tmp_path / bad
    )
    _one_line_error(result)
    assert not out.exists()


def test_report_never_overwrites_an_input_log(tmp_path):
    logs = tmp_path / "logs.csv"
    pl.read_parquet(_only_required_columns(tmp_path)).write_csv(logs)
    before = logs.read_bytes()
    result = _cli("cluster", logs, "-o", logs, "-q")
    assert "logs.csv" in _one_line_error(result)
    assert logs.read_bytes() == before


def test_malformed_column_option_is_one_error_line(tmp_path):
    result = _cli("cluster", _only_required_columns(tmp_path), "--column", "account_id")
    assert "--column" in _one_line_error(result)


# ---------------------------------------------------------------------------
# Sorting evidence by text


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["b", "a", "ab", "B", "é", "Z9", "", "a b", "ж"]),
            st.sampled_from(["acc-1", "acc-10", "acc-2", "Acc", "ü"]),
            st.integers(-5, 5),
        ),
        max_size=60,
        unique=True,
    ),
    st.booleans(),
)
@settings(max_examples=150, deadline=None)
def test_sorting_by_text_ranks_is_sorting_by_text(rows, as_categories):
    frame = pl.DataFrame(rows, schema=["value", "account_id", "slot"], orient="row")
    if as_categories:
        frame = frame.with_columns(pl.col("value", "account_id").cast(pl.Categorical()))
    # Rows are unique, so each full ordering has one answer; the category
    # columns sorted by come back as text.
    for by in (["value", "account_id", "slot"], ["account_id", "slot", "value"]):
        expected = frame.sort(by).with_columns(pl.col("value", "account_id").cast(pl.String))
        assert _sorted_by_text(frame, by).equals(expected)
    by_slot = _sorted_by_text(frame, ["slot"])
    assert by_slot.get_column("slot").equals(frame.sort("slot")["slot"])
    assert by_slot.schema == frame.schema


def test_sorting_with_nulls_falls_back_and_still_gives_text():
    frame = pl.DataFrame(
        {"value": ["b", None, "a"], "account_id": ["x", "y", "z"]},
        schema_overrides={"value": pl.Categorical(), "account_id": pl.Categorical()},
    )
    got = _sorted_by_text(frame, ["value", "account_id"])
    expected = frame.sort("value", "account_id").with_columns(pl.all().cast(pl.String))
    assert got.equals(expected)
    assert got.schema == pl.Schema({"value": pl.String(), "account_id": pl.String()})


# ---------------------------------------------------------------------------
# Determinism


def _assert_same(a, b) -> None:
    assert_frame_equal(a.clusters, b.clusters)
    assert_frame_equal(a.members, b.members)


def test_sample_twice_gives_identical_frames(sample_result):
    assert sample_result.clusters.height >= 6
    _assert_same(sample_result, run_cluster(SAMPLE_LOGS, SAMPLE_ACCOUNTS))


def test_sample_shuffled_split_and_renamed_gives_identical_frames(sample_result, tmp_path):
    logs = pl.read_parquet(SAMPLE_LOGS).sample(fraction=1.0, shuffle=True, seed=11)
    half = logs.height // 2
    parts = tmp_path / "parts"
    parts.mkdir()
    logs[:half].write_parquet(parts / "zz_second.parquet")
    logs[half:].write_parquet(parts / "aa_first.parquet")
    accounts = tmp_path / "billing.parquet"
    pl.read_parquet(SAMPLE_ACCOUNTS).sample(fraction=1.0, shuffle=True, seed=12).write_parquet(
        accounts
    )
    _assert_same(sample_result, run_cluster(parts, accounts))
    renamed = tmp_path / "renamed" / "export-2026-03.parquet"
    renamed.parent.mkdir()
    shutil.copy(SAMPLE_LOGS, renamed)
    _assert_same(sample_result, run_cluster(renamed, SAMPLE_ACCOUNTS))


# ---------------------------------------------------------------------------
# Linking


def test_campaign_without_an_org_is_fully_linked(tmp_path):
    logs, accounts = write(tmp_path, campaign(10), background(200))
    edges = link(extract(read_logs([logs], accounts=accounts))).edges
    assert edges.height == 45  # every pair of the 10 campaign accounts


def test_same_org_discounts_only_shared_infrastructure(tmp_path):
    logs, accounts = write(tmp_path, campaign(10, org="org_a"), background(200))
    edges = link(extract(read_logs([logs], accounts=accounts))).edges
    assert edges.height == 45
    assert edges["w_sync"].min() == pytest.approx(DEFAULT_KIND_WEIGHTS["sync"])


def test_disabling_a_signal_never_adds_links(tmp_path):
    logs, accounts = write(
        tmp_path, strangers(6, ip="81.2.3.4", tag="nat", seed=5), background(200)
    )
    ev = extract(read_logs([logs], accounts=accounts))
    assert link(ev).edges.height == 0  # six strangers behind one NAT
    weights = {**DEFAULT_KIND_WEIGHTS, "sync": 0.0}
    assert link(ev, LinkOptions(kind_weights=weights)).edges.height == 0


def test_template_key_works_for_non_latin_prompts():
    prompts = [
        "Решите задачу и покажите полное рассуждение шаг за шагом: 17 яблок",
        "Решите задачу и покажите полное рассуждение шаг за шагом: 4 груши",
    ]
    keys = pl.DataFrame({"p": prompts}).select(template_key(pl.col("p"))).to_series()
    assert keys[0] is not None and keys[0] == keys[1]


def test_template_key_does_not_depend_on_fill_length():
    prompts = [
        "Multiply 4.5 by 9.5 and add 7.5, then show each step",
        "Multiply 48213779.1234 by 99120315.5678 and add 77512345.9012, then show each step",
    ]
    keys = pl.DataFrame({"p": prompts}).select(template_key(pl.col("p"))).to_series()
    assert keys[0] == keys[1] == "n # by # and add # then"


def _plain_template_key(prompt: pl.Expr) -> pl.Expr:
    """The template key as defined: mask, make every separator run one space, 4-8 words."""
    return (
        prompt.str.slice(0, 128)
        .str.replace_all(r"\p{Lu}\p{Ll}+", "N")
        .str.to_lowercase()
        .str.replace_all(r"[0-9][0-9.,:]*", "#")
        .str.replace_all(r"[^\p{Ll}\p{Lo}#]+", " ")
        .str.extract(r"^ ?((?:[\p{Ll}\p{Lo}#]+ ){3,7}[\p{Ll}\p{Lo}#]+)", 1)
    )


_PROMPT_TEXT = st.text(
    alphabet=st.sampled_from(list("abcXYZ019 .,:;!?-_\n\t#éÉжЖ漢字ß'\"()")), max_size=160
)


# ASCII openings take the compiled pass; words, names and numbers come often.
_ASCII_TEXT = st.lists(
    st.sampled_from(
        [*"abXZ09 .,:;!?-_\n\t#'\"()", "Ab", "McDonald", "HTTPServer", "3.14,", "12:30", "word "]
    ),
    max_size=60,
).map("".join)


# ASCII openings followed by non-ASCII text: the scan of the whole prompt sees it,
# the template key (which reads the opening only) must not be thrown by it.
_ASCII_THEN_OTHER = st.tuples(_ASCII_TEXT, _PROMPT_TEXT).map("é".join)


@given(st.lists(_PROMPT_TEXT | _ASCII_TEXT | _ASCII_THEN_OTHER, min_size=1, max_size=30))
@settings(max_examples=300, deadline=None)
def test_template_key_matches_its_plain_definition(prompts):
    frame = pl.DataFrame({"p": prompts}, schema={"p": pl.String})
    plain = frame.select(_plain_template_key(pl.col("p"))).to_series().to_list()
    assert frame.select(template_key(pl.col("p"))).to_series().to_list() == plain
    # The key that comes with the capability flags, which knows the all-ASCII prompts.
    features = frame.select(prompt_features(pl.col("p")).struct.field("template")).to_series()
    assert features.to_list() == plain


# ---------------------------------------------------------------------------
# Clustering


@pytest.mark.parametrize("hub_weight", [0.55, 1.0], ids=["hub-peeled", "hub-cut-as-bridge"])
def test_clusters_are_connected(hub_weight):
    def clique(tag: str, n: int) -> list[tuple[str, str, float]]:
        return [(f"{tag}{i:02d}", f"{tag}{j:02d}", 1.0) for i in range(n) for j in range(i + 1, n)]

    edges = clique("a", 15) + clique("b", 15) + [("a00", "x", hub_weight), ("b00", "x", hub_weight)]
    members = cluster(_links(edges))
    prefixes = members.group_by("cluster_id").agg(pl.col("account_id").str.slice(0, 1).unique())
    assert all(len(p) == 1 for p in prefixes["account_id"].to_list())


# ---------------------------------------------------------------------------
# Scoring and reasons


def _verbatim_benchmark(tmp_path: Path) -> pl.DataFrame:
    """Twelve linked accounts that each send the same 30 public prompts, verbatim, once."""
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefghij"), 6)) for _ in range(300)]
    questions = [" ".join(rng.choice(words, 10)) + " ?" for _ in range(30)]
    _, accounts = campaign(12, tag="bm")
    rows = []
    for acc in accounts:
        k = int(acc["account_id"][-4:])
        for q, text in enumerate(questions):
            rows.append(
                dict(
                    timestamp=T0 + dt.timedelta(days=q % 10, hours=3, minutes=q % 10),
                    account_id=acc["account_id"],
                    org_id=None,
                    ip=f"77.{k}.{q % 10}.1",
                    user_agent="weird-ua/1",
                    tls_fingerprint="t13_bm",
                    model="frontier-3",
                    input_tokens=100,
                    output_tokens=900,
                    prompt=text,
                )
            )
    logs, accounts_path = write(tmp_path, (rows, accounts), background(300))
    result = run_cluster(logs, accounts_path)
    return result.clusters.filter(pl.col("n_accounts") == 12)


def test_prompts_repeated_verbatim_across_accounts_are_verbatim_not_templated(tmp_path):
    bench = _verbatim_benchmark(tmp_path)
    assert bench.height == 1
    assert bench["f_verbatim_repeats"][0] > 0.5
    assert bench["f_templated"][0] < 0.1


def test_reasons_percentages_are_shares_of_prompts(tmp_path):
    logs, accounts = write(tmp_path, campaign(3, tag="sm"), background(300))
    result = run_cluster(logs, accounts)
    small = result.clusters.filter(pl.col("n_accounts") == 3)
    assert small.height == 1
    reasons = small["reasons"][0]
    assert "100% of prompts from shared templates" in reasons
    assert "100% of prompts elicit chain-of-thought" in reasons
