"""``explain``: the evidence behind one cluster of the sample logs, as tables, JSON and text."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from distill_forensics import read_logs, run_cluster
from distill_forensics.cli.explain import _clip, _visible
from distill_forensics.cli.explain import explain as explain_command
from distill_forensics.cluster import cluster_id_for
from distill_forensics.errors import EXIT_INPUT, InputError
from distill_forensics.explain import Explanation, explain
from distill_forensics.prompts import template_key
from distill_forensics.score import LINK_KIND_LABELS

SAMPLE = Path(__file__).resolve().parent.parent / "sample_logs"
LOGS = str(SAMPLE / "logs.parquet")
ACCOUNTS = str(SAMPLE / "accounts.parquet")
TOP = "C-c2ec3c88f4"  # the model-pivot campaign, rank 1 in tests/golden/sample_clusters.csv

MEMBER_KEYS = {
    "account_id",
    "role",
    "n_requests",
    "first_seen",
    "last_seen",
    "created_at",
    "age_days",
    "org_id",
    "n_links",
    "link_weight",
    "top_links",
}
SHARED_KEYS = {
    "kind",
    "value",
    "n_members",
    "share",
    "n_accounts_all",
    "n_requests",
    "first_seen",
    "last_seen",
    "kind_strength",
}
TEMPLATE_KEYS = {
    "template",
    "n_requests",
    "n_members",
    "n_distinct_prompts",
    "first_seen",
    "last_seen",
    "examples",
}
NEW_MODEL_KEYS = {
    "model",
    "released",
    "cluster_first_use",
    "first_lag_hours",
    "median_lag_hours",
    "n_members",
    "n_members_within_24h",
    "n_requests",
    "share_of_requests",
}
HEADER_KEYS = {
    "cluster_id",
    "rank",
    "score",
    "suspected",
    "verdict",
    "reasons",
    "anchor",
    "n_accounts",
    "n_requests",
    "n_tokens",
    "n_links",
    "first_seen",
    "last_seen",
    "median_age_days",
    "features",
    "link_shares",
}


@pytest.fixture(scope="module")
def run():
    return run_cluster(LOGS, ACCOUNTS)


@pytest.fixture(scope="module")
def logs() -> pl.LazyFrame:
    return read_logs([LOGS], accounts=ACCOUNTS).frame


@pytest.fixture(scope="module")
def top(run, logs) -> Explanation:
    assert run.clusters["cluster_id"][0] == TOP
    return explain(run, TOP, logs)


@pytest.fixture(scope="module")
def member_ids(run) -> set[str]:
    return set(run.members.filter(pl.col("cluster_id") == TOP)["account_id"])


@pytest.fixture(scope="module")
def cli_json() -> dict:
    result = CliRunner().invoke(
        explain_command, [LOGS, "--accounts", ACCOUNTS, TOP, "--format", "json", "-q"]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def cli_text() -> str:
    result = CliRunner().invoke(explain_command, [LOGS, "--accounts", ACCOUNTS, "--cluster", TOP])
    assert result.exit_code == 0, result.output
    # Only the warning of the sample's malformed rows (no progress when not a terminal).
    assert result.stderr == (
        "warning: malformed rows counted and skipped or repaired: invalid_ip 12, "
        "null_account_id 6\n"
    )
    return result.stdout


def test_header_is_the_clusters_row(run, top):
    row = run.clusters.row(0, named=True)
    h = top.header
    assert (h["cluster_id"], h["rank"], h["score"], h["verdict"]) == (
        TOP,
        1,
        row["score"],
        "suspected",
    )
    assert "; ".join(h["reasons"]) == row["reasons"]
    assert (h["n_accounts"], h["n_requests"], h["n_tokens"]) == (
        row["n_accounts"],
        row["n_requests"],
        row["n_tokens"],
    )
    assert (h["first_seen"], h["last_seen"]) == (row["first_seen"], row["last_seen"])


def test_members_are_the_whole_cluster_with_one_anchor(top, member_ids):
    m = top.members
    assert set(m["account_id"]) == member_ids and m.height == len(member_ids) == 50
    assert m["n_requests"].to_list() == sorted(m["n_requests"].to_list(), reverse=True)
    anchors = m.filter(pl.col("role") == "anchor")["account_id"].to_list()
    assert anchors == [top.header["anchor"]]
    assert cluster_id_for(anchors) == cluster_id_for(sorted(member_ids)) == TOP
    median = m["link_weight"].median()
    rest = m.filter(pl.col("role") != "anchor")
    core = rest.filter(pl.col("role") == "core")["link_weight"]
    assert core.min() >= 0.5 * median
    peripheral = rest.filter(pl.col("role") == "peripheral")["link_weight"]
    assert peripheral.len() == 0 or peripheral.max() < 0.5 * median


def test_member_links_stay_inside_and_are_strongest_first(top, member_ids):
    for row in top.members.iter_rows(named=True):
        links = row["top_links"]
        assert 1 <= len(links) <= 3 and len(links) == min(3, row["n_links"])
        assert {link["account_id"] for link in links} <= member_ids - {row["account_id"]}
        weights = [link["weight"] for link in links]
        assert weights == sorted(weights, reverse=True)
        assert all(set(link["kinds"]) <= {k for k in LINK_KIND_LABELS} for link in links)


def test_account_age_is_days_from_signup_to_first_request(top):
    row = top.members.row(0, named=True)
    days = (row["first_seen"] - row["created_at"]) / timedelta(days=1)
    assert row["age_days"] == pytest.approx(days, abs=0.005)


def test_shared_values_include_every_kind_the_reasons_name(top):
    label_kind = {label: kind for kind, label in LINK_KIND_LABELS.items()}
    linked = next(r for r in top.header["reasons"] if r.startswith("linked by "))
    named = {label_kind[part.rsplit(" ", 1)[0]] for part in linked[10:].split(", ")}
    assert named == {"template", "ip", "net"}
    sv = top.shared_values
    assert named <= set(sv["kind"])
    assert sv["n_members"].min() >= 2
    assert (sv["n_accounts_all"] >= sv["n_members"]).all()
    assert sv["share"].to_list() == [round(n / 50, 3) for n in sv["n_members"]]
    assert sv.select("kind", "n_members").equals(
        sv.select("kind", "n_members").sort(["kind", "n_members"], descending=[False, True])
    )


def test_shared_value_counts_come_from_all_the_data(run, top):
    ip = top.shared_values.filter(pl.col("kind") == "ip").row(0, named=True)
    users = run.evidence.usage.filter((pl.col("kind") == "ip") & (pl.col("value") == ip["value"]))
    assert ip["n_accounts_all"] == users["account_id"].n_unique()


def test_timeline_counts_every_request_hour_by_hour(top):
    tl = top.timeline
    assert tl["n_requests"].sum() == top.header["n_requests"] == 2086
    assert tl["hour"].diff().drop_nulls().unique().to_list() == [timedelta(hours=1)]
    assert tl["hour"][0] == top.header["first_seen"].replace(minute=0, second=0, microsecond=0)
    assert tl["hour"][-1] == top.header["last_seen"].replace(minute=0, second=0, microsecond=0)


def test_template_examples_are_prompts_of_members(top, logs, member_ids):
    prompts = set(
        logs.filter(pl.col("account_id").is_in(sorted(member_ids)))
        .select("prompt")
        .collect()["prompt"]
        .drop_nulls()
    )
    t = top.templates
    assert t.height > 0 and t["n_members"].min() >= 2
    for row in t.iter_rows(named=True):
        assert 1 <= len(row["examples"]) <= 2
        assert set(row["examples"]) <= prompts
        keys = pl.select(template_key(pl.lit(pl.Series(row["examples"])))).to_series()
        assert keys.to_list() == [row["template"]] * len(row["examples"])


def test_examples_option_sets_how_many(run, logs):
    assert explain(run, TOP, logs, examples=0).templates["examples"].list.len().max() == 0
    assert explain(run, TOP, logs, examples=4).templates["examples"].list.len().max() == 4


def test_model_mix_and_the_pivot_to_the_new_model(top):
    per_day = top.models
    assert per_day["n_requests"].sum() == 2086
    assert set(per_day["model"]) == {"frontier-3", "frontier-3-reasoning", "frontier-4"}
    new = top.new_models.row(0, named=True)
    assert top.new_models.height == 1 and new["model"] == "frontier-4"
    assert new["n_members"] == 50 and new["n_members_within_24h"] >= 40
    assert new["cluster_first_use"] >= new["released"]


def test_without_logs_the_evidence_gives_the_same_counts(run, top):
    bare = explain(run, TOP, None)
    assert bare.timeline.equals(top.timeline)
    cols = ["template", "n_requests", "n_members"]
    assert bare.templates.select(cols).equals(top.templates.select(cols))
    assert bare.templates["examples"].list.len().max() == 0
    assert bare.models.height == 0 and bare.new_models.equals(top.new_models)


def test_unknown_cluster_is_an_input_error(run):
    with pytest.raises(InputError, match="no cluster 'C-0000000000'"):
        explain(run, "C-0000000000", None)


def test_json_has_six_sections_with_exact_keys(cli_json):
    d = cli_json
    assert set(d) == {"cluster", "members", "shared_values", "timeline", "templates", "models"}
    assert set(d["cluster"]) == HEADER_KEYS
    assert d["cluster"]["cluster_id"] == TOP and d["cluster"]["first_seen"].endswith("Z")
    assert len(d["members"]) == 50
    assert all(set(m) == MEMBER_KEYS for m in d["members"])
    assert set(d["members"][0]["top_links"][0]) == {"account_id", "weight", "kinds"}
    assert all(set(v) == SHARED_KEYS for v in d["shared_values"])
    assert all(set(h) == {"hour", "n_requests"} for h in d["timeline"])
    assert sum(h["n_requests"] for h in d["timeline"]) == 2086
    assert all(set(t) == TEMPLATE_KEYS for t in d["templates"])
    assert set(d["models"]) == {"per_day", "new_models"}
    assert all(set(r) == {"day", "model", "n_requests"} for r in d["models"]["per_day"])
    assert [set(r) for r in d["models"]["new_models"]] == [NEW_MODEL_KEYS]
    assert d["timeline"][0]["hour"] == "2026-03-18T16:00:00Z"


def test_text_shows_every_section_and_the_top_25_members(cli_text):
    lines = cli_text.splitlines()
    assert lines[0] == f"Cluster {TOP}  rank 1  score 100.0  suspected"
    titles = ["Members", "Shared values", "Timeline", "Prompt templates", "Models"]
    assert [line for line in lines if line in titles] == titles
    members = lines[lines.index("Members") + 2 : lines.index("Shared values")]
    assert sum(line.startswith("acct_") for line in members) == 25
    assert any("top 25 of 50 by requests" in line for line in members)
    assert "\x1b" not in cli_text


def test_threshold_decides_the_verdict_as_in_cluster(run):
    # A cluster below the default threshold, above a lower one: `cluster --threshold 10`
    # marks it suspected, so `explain --threshold 10` must say the same.
    below = run.clusters.filter(pl.col("score").is_between(10, 50, closed="left"))
    cid = below["cluster_id"][0]

    def verdict(*extra: str) -> str:
        args = [LOGS, "--accounts", ACCOUNTS, cid, "--format", "json", "-q", *extra]
        result = CliRunner().invoke(explain_command, args)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["cluster"]["verdict"]

    assert verdict() == "not suspected"
    assert verdict("--threshold", "10") == "suspected"


def test_unknown_cluster_id_exits_2_with_one_line():
    result = CliRunner().invoke(explain_command, [LOGS, "--accounts", ACCOUNTS, "C-0000000000"])
    assert result.exit_code == EXIT_INPUT
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: no cluster 'C-0000000000' in these logs")
    assert "distill-forensics cluster" in result.stderr


def test_a_forgotten_cluster_id_fails_before_reading():
    result = CliRunner().invoke(explain_command, [LOGS, ACCOUNTS])
    assert result.exit_code == EXIT_INPUT
    assert result.stderr == (
        f"error: {ACCOUNTS!r} is not a cluster id (C- and 10 hex digits); give the id last "
        "or with --cluster, as listed by `distill-forensics cluster`\n"
    )


def test_untrusted_text_is_one_safe_line():
    assert _clip("a\x1b[31m\nb\u202ec", 80) == "a [31m b c"
    assert _clip("a\u2028b\ufeffc\u061cd\u2060e\U000e0041f", 80) == "a b c d e f"
    # Ids are shown whole: an escape written in the id shows apart from a real one.
    assert _visible("a\x1b") == "a\\x1b" and _visible("a\\x1b") == "a\\\\x1b"
    assert _clip("x" * 10, 5) == "xxxx…"


def test_ids_and_model_names_from_the_logs_cannot_drive_the_terminal(tmp_path, top):
    busiest = top.members["account_id"][0]
    renamed = pl.when(pl.col("account_id") == busiest).then(pl.lit(busiest + "\x1b[2J"))
    ids = renamed.otherwise(pl.col("account_id")).alias("account_id")
    logs, accounts = tmp_path / "logs.parquet", tmp_path / "accounts.parquet"
    bell = "\x1b]0;owned\x07"
    pl.read_parquet(LOGS).with_columns(ids, pl.col("model") + bell).write_parquet(logs)
    pl.read_parquet(ACCOUNTS).with_columns(ids).write_parquet(accounts)
    cluster_id = run_cluster(logs, accounts).clusters["cluster_id"][0]
    result = CliRunner().invoke(
        explain_command, [str(logs), "--accounts", str(accounts), cluster_id]
    )
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "\\x1b]0;owned\\x07 first appeared" in " ".join(result.stdout.split())
