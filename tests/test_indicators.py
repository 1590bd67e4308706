"""Indicators: keyed hashes for customer identifiers, a valid and deterministic STIX bundle."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from distill_forensics.cli.indicators import indicators as indicators_command
from distill_forensics.errors import EXIT_INPUT, InputError
from distill_forensics.indicators import (
    HASHED_TYPES,
    INDICATOR_TYPES,
    indicators,
    keyed_hash,
    stix_pattern,
    to_stix,
)
from distill_forensics.pipeline import ClusterResult, run_cluster

ROOT = Path(__file__).resolve().parent.parent
LOGS = str(ROOT / "sample_logs" / "logs.parquet")
ACCOUNTS = str(ROOT / "sample_logs" / "accounts.parquet")
KEY = "a long secret agreed with partners"
ENV = "DISTILL_FORENSICS_HASH_KEY"

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
HASHED = re.compile(r"^hmac-sha256:[0-9a-f]{64}$")
STRING = r"'(?:[^'\\]|\\['\\])*'"
IPV4 = r"'\d{1,3}(?:\.\d{1,3}){3}"
PATTERNS = [
    re.compile(rf"^\[ipv4-addr:value = {IPV4}'\]$"),
    re.compile(r"^\[ipv6-addr:value = '[0-9a-f:.]+'\]$"),
    re.compile(rf"^\[ipv4-addr:value ISSUBSET {IPV4}/\d{{1,2}}'\]$"),
    re.compile(r"^\[ipv6-addr:value ISSUBSET '[0-9a-f:.]+/\d{1,3}'\]$"),
    re.compile(rf"^\[x-distill-forensics:[a-z][a-z0-9_]* = {STRING}\]$"),
]


@pytest.fixture(scope="module")
def result() -> ClusterResult:
    return run_cluster(LOGS, ACCOUNTS)


@pytest.fixture(scope="module")
def table(result: ClusterResult) -> pl.DataFrame:
    return indicators(result, KEY.encode())


@pytest.fixture
def cached(monkeypatch: pytest.MonkeyPatch, result: ClusterResult) -> ClusterResult:
    """The command reuses the module's run instead of running the pipeline again."""
    monkeypatch.setattr(
        sys.modules["distill_forensics.cli.sources"], "run_cluster", lambda *a, **k: result
    )
    return result


def _invoke(*args: str, key: str | None = KEY):
    return CliRunner().invoke(
        indicators_command, [LOGS, "--accounts", ACCOUNTS, *args], env={ENV: key}
    )


def _raw_identifiers() -> set[str]:
    """Every account id, email (as given and normalised) and payment fingerprint of the input."""
    acc = pl.read_parquet(ACCOUNTS)
    raw = set(acc.get_column("account_id").drop_nulls().to_list())
    raw |= set(acc.get_column("payment_fingerprint").drop_nulls().to_list())
    emails = acc.get_column("email").drop_nulls()
    raw |= set(emails.to_list()) | set(emails.str.to_lowercase().to_list())
    return raw


def test_command_shares_no_raw_customer_identifier(tmp_path, result):
    csv, bundle = tmp_path / "iocs.csv", tmp_path / "bundle.json"
    run = _invoke("-o", str(csv), "--stix-output", str(bundle), "--quiet")
    assert run.exit_code == 0, run.output
    assert run.output == ""
    normalised = set(
        result.evidence.usage.filter(pl.col("kind") == "email").get_column("value").to_list()
    )
    secret = _raw_identifiers() | normalised
    for text in (csv.read_text(), bundle.read_text()):
        tokens = set(re.findall(r"[\w.@+-]+", text))
        assert not tokens & secret
        assert "@" not in text
    got = pl.read_csv(csv)
    hashed = got.filter(pl.col("type").is_in(list(HASHED_TYPES)))
    assert hashed.height and hashed.get_column("value").str.contains(HASHED.pattern).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.json", "iocs.csv"]


def test_table_shape(result, table):
    assert table.columns[:7] == [
        "cluster_id",
        "type",
        "value",
        "n_accounts",
        "first_seen",
        "last_seen",
        "score",
    ]
    assert set(table.get_column("type")) <= set(INDICATOR_TYPES)
    assert set(table.get_column("cluster_id")) == set(result.suspected.get_column("cluster_id"))
    values = table.filter(pl.col("type") != "account")
    assert values.get_column("n_accounts").min() >= 2
    assert (values.get_column("n_accounts") <= values.get_column("n_accounts_all")).all()
    templates = table.filter(pl.col("type") == "prompt-template")
    for value, fingerprint in templates.select("value", "fingerprint").iter_rows():
        assert fingerprint == "sha256:" + hashlib.sha256(value.encode()).hexdigest()


def test_counts_are_distinct_accounts_across_kinds_of_one_type(result, table):
    # An address used in requests and at signup is one indicator, its accounts counted once.
    type_of = {"ip": "ip", "signup_ip": "ip", "net": "network", "signup_net": "network"}
    usage = (
        result.evidence.usage.filter(pl.col("kind").is_in(list(type_of)))
        .select("account_id", pl.col("kind").replace_strict(type_of).alias("t"), "value")
        .with_columns(
            t=pl.when(pl.col("t") == "network")
            .then(pl.lit("network"))
            .when(pl.col("value").str.contains(":", literal=True))
            .then(pl.lit("ipv6-addr"))
            .otherwise(pl.lit("ipv4-addr"))
        )
    )
    members = result.members.select("account_id", "cluster_id")
    expected = (
        usage.join(members, on="account_id")
        .group_by("cluster_id", pl.col("t").alias("type"), "value")
        .agg(pl.col("account_id").n_unique().alias("n_accounts"))
        .join(
            usage.group_by(pl.col("t").alias("type"), "value").agg(
                pl.col("account_id").n_unique().alias("n_accounts_all")
            ),
            on=["type", "value"],
        )
    )
    both = usage.group_by("account_id", "t", "value").agg(pl.len()).filter(pl.col("len") > 1)
    assert both.height  # (the sample has addresses seen in requests and at signup)
    got = table.filter(pl.col("type").is_in(["ipv4-addr", "ipv6-addr", "network"]))
    joined = got.join(expected, on=["cluster_id", "type", "value"], how="left", suffix="_x")
    assert got.height and joined.get_column("n_accounts_x").null_count() == 0
    assert joined.get_column("n_accounts").equals(
        joined.get_column("n_accounts_x"), check_names=False
    )
    assert joined.get_column("n_accounts_all").equals(
        joined.get_column("n_accounts_all_x"), check_names=False
    )


def test_share_in_suspected_clusters_counts_distinct_accounts(result):
    # A suspected account that used an address in requests and at signup is one of the
    # address's accounts, not two: at a share between the two counts, the address drops.
    usage = (
        result.evidence.usage.filter(pl.col("kind").is_in(["ip", "signup_ip"]))
        .join(
            result.members.filter("suspected").select("account_id", "cluster_id"),
            on="account_id",
            how="left",
        )
        .with_columns(suspected=pl.col("cluster_id").is_not_null())
    )
    per = usage.group_by("value").agg(
        n_all=pl.col("account_id").n_unique(),
        n_suspected=pl.col("account_id").filter("suspected").n_unique(),
        rows_suspected=pl.col("suspected").sum(),
    )
    tipping = per.filter(
        (pl.col("rows_suspected") > pl.col("n_suspected"))
        & (pl.col("n_all") > pl.col("n_suspected"))
        & (pl.col("n_suspected") >= 2)
    ).sort("n_all", "value")
    assert tipping.height  # (the sample has such addresses)
    value, n_all, n_suspected = tipping.select("value", "n_all", "n_suspected").row(0)
    share = (n_suspected + 0.5) / n_all  # the distinct count falls short, the rows reach it
    ips = pl.col("type").is_in(["ipv4-addr", "ipv6-addr"])
    at_share = indicators(result, KEY.encode(), min_share=share).filter(ips)
    expected = per.filter(pl.col("n_suspected") >= share * pl.col("n_all")).get_column("value")
    assert value not in at_share.get_column("value").to_list()
    assert set(at_share.get_column("value")) == set(expected) & set(
        indicators(result, KEY.encode(), min_share=0.0).filter(ips).get_column("value")
    )


def test_same_table_on_account_ids_as_on_account_numbers(result, table):
    # Without numbers that match the accounts, the counts key on the ids' text.
    evidence = dataclasses.replace(result.evidence, numbered_ids=None)
    assert evidence.account_numbers(evidence.usage) is None
    assert indicators(dataclasses.replace(result, evidence=evidence), KEY.encode()).equals(table)


def test_account_hashes_match_for_partners_with_the_key(result, table):
    members = result.members.filter(pl.col("suspected")).get_column("account_id").to_list()
    got = set(table.filter(pl.col("type") == "account").get_column("value").to_list())
    assert got == {keyed_hash(a, KEY.encode()) for a in members}


def test_same_key_same_hashes_other_key_other_hashes(result, table):
    assert indicators(result, KEY.encode()).equals(table)
    other = indicators(result, b"another key, another partner set")
    hashed = pl.col("type").is_in(list(HASHED_TYPES))
    assert other.filter(~hashed).equals(table.filter(~hashed))
    mine = set(table.filter(hashed).get_column("value").to_list())
    theirs = set(other.filter(hashed).get_column("value").to_list())
    assert mine and len(theirs) == len(mine) and not mine & theirs


def test_min_share_drops_values_common_outside_suspected_clusters(result, table):
    everything = indicators(result, KEY.encode(), min_share=0.0)
    assert everything.height > table.height
    assert table.join(everything, on=["cluster_id", "type", "value"], how="anti").height == 0


def test_stix_bundle_is_valid(table):
    bundle = to_stix(table)
    assert bundle["type"] == "bundle"
    assert re.fullmatch(r"bundle--[0-9a-f-]{36}", bundle["id"])
    objects = bundle["objects"]
    for obj in objects:
        assert re.fullmatch(rf"{obj['type']}--[0-9a-f-]{{36}}", obj["id"]), obj["id"]
        assert obj["spec_version"] == "2.1"
        for name in ("created", "modified", "valid_from"):
            if name in obj:
                assert TIMESTAMP.match(obj[name]), (name, obj[name])
    kinds = [o["type"] for o in objects]
    assert kinds.count("identity") == 1
    found = [o for o in objects if o["type"] == "indicator"]
    assert len(found) == table.height == len({o["id"] for o in found})
    for ind in found:
        assert ind["pattern_type"] == "stix"
        assert ind["indicator_types"] == ind["labels"] == ["malicious-activity"]
        assert any(p.match(ind["pattern"]) for p in PATTERNS), ind["pattern"]
        assert "cluster C-" in ind["description"] and "score" in ind["description"]
    ids = {o["id"] for o in found}
    groupings = [o for o in objects if o["type"] == "grouping"]
    assert len(groupings) == table.get_column("cluster_id").n_unique()
    for grouping in groupings:
        assert grouping["context"] == "suspicious-activity"
        assert grouping["object_refs"] and set(grouping["object_refs"]) <= ids
    assert sum(len(g["object_refs"]) for g in groupings) == len(ids)


def test_stix_timestamps_come_from_the_data_or_the_argument(table):
    latest = table.get_column("last_seen").max()
    assert isinstance(latest, datetime)
    identity = to_stix(table)["objects"][0]
    assert identity["created"] == latest.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    pinned = to_stix(table, created=datetime(2026, 4, 1, 8, 30, 0, 123456, tzinfo=UTC))
    assert {o["created"] for o in pinned["objects"]} == {"2026-04-01T08:30:00.123Z"}


def test_stix_bundle_is_deterministic_across_runs(tmp_path, cached):
    texts = []
    for name in ("one.json", "two.json"):
        run = _invoke("-o", str(tmp_path / "iocs.parquet"), "--stix-output", str(tmp_path / name))
        assert run.exit_code == 0, run.output
        texts.append((tmp_path / name).read_text())
    assert texts[0] == texts[1]
    assert json.loads(texts[0])["id"].startswith("bundle--")


def test_patterns():
    assert stix_pattern("ipv4-addr", "1.2.3.4") == "[ipv4-addr:value = '1.2.3.4']"
    assert stix_pattern("network", "1.2.3.0/24") == "[ipv4-addr:value ISSUBSET '1.2.3.0/24']"
    assert stix_pattern("network", "2001:db8:1::/48") == (
        "[ipv6-addr:value ISSUBSET '2001:db8:1::/48']"
    )
    assert stix_pattern("user-agent", "a'b\\c") == (
        "[x-distill-forensics:user_agent = 'a\\'b\\\\c']"
    )


@given(st.text())
def test_pattern_strings_round_trip_through_the_stix_grammar(text):
    pattern = stix_pattern("prompt-template", text)
    match = re.fullmatch(rf"\[x-distill-forensics:prompt_template = ({STRING})\]", pattern, re.S)
    assert match
    assert re.sub(r"\\(['\\])", r"\1", match.group(1)[1:-1]) == text


def test_no_key_exits_2_with_one_line(monkeypatch):
    def never(*_a, **_k):
        raise AssertionError("the pipeline ran")

    monkeypatch.setattr(sys.modules["distill_forensics.cli.sources"], "run_cluster", never)
    run = _invoke(key=None)
    assert run.exit_code == EXIT_INPUT
    assert run.output.count("\n") == 1
    assert run.output.startswith(f"error: no hash key; set --hash-key or {ENV}")
    with pytest.raises(InputError, match="no hash key"):
        indicators(None, b"")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "iocs.txt"], "unknown output file type"),
        (["--stix-output", "bundle.stix"], "a STIX bundle is JSON"),
    ],
)
def test_bad_output_names_fail_before_the_run(tmp_path, monkeypatch, args, message):
    def never(*_a, **_k):
        raise AssertionError("the pipeline ran")

    monkeypatch.setattr(sys.modules["distill_forensics.cli.sources"], "run_cluster", never)
    args = [args[0], str(tmp_path / args[1])]
    run = _invoke(*args)
    assert run.exit_code == EXIT_INPUT
    assert message in run.output and run.output.count("\n") == 1


def test_csv_on_stdout_without_output(cached):
    run = _invoke("--quiet")
    assert run.exit_code == 0
    assert run.output.splitlines()[0].startswith("cluster_id,type,value,n_accounts,")


def test_help_has_examples():
    assert indicators_command.help and "Example" in indicators_command.help
