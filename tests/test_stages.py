"""Unit tests of the extract, link, cluster and score stages on hand-built traffic."""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from builders import background, campaign, strangers, write

from distill_forensics import extract, link, read_logs, run_cluster
from distill_forensics.cluster import cluster, cluster_id_for
from distill_forensics.link import LinkOptions
from distill_forensics.prompts import template_key


def _evidence(tmp_path, *parts):
    logs, accounts = write(tmp_path, *parts)
    return extract(read_logs([logs], accounts=accounts))


def _campaign_evidence(tmp_path):
    """A campaign in lockstep, strangers behind one address and background traffic."""
    return _evidence(tmp_path, campaign(30), strangers(60, ip="77.1.1.1"), background(300))


def test_template_key_masks_numbers_names_and_fills():
    df = pl.DataFrame(
        {
            "p": [
                "Solve: Ann has 3 apples and 4.5 pears. Think step by step please now",
                "Solve: Bob has 17 apples and 0.25 pears. Think step by step please now",
                "hi",
                None,
            ]
        }
    )
    keys = df.select(template_key(pl.col("p"))).to_series().to_list()
    assert keys[0] == keys[1] == "n n has # apples and # pears"
    assert keys[2] is None and keys[3] is None


def test_extract_builds_usage_activity_and_accounts(tmp_path):
    ev = _evidence(tmp_path, campaign(5), strangers(3))
    assert ev.n_accounts == 8
    assert (
        ev.rows
        == 5 * 50 + ev.accounts.filter(pl.col("account_id").str.contains("cg"))["n_requests"].sum()
    )
    kinds = set(ev.usage["kind"].unique())
    assert {"ip", "net", "tls", "ua", "template", "payment", "email", "signup_ip"} <= kinds
    tls = ev.usage.filter((pl.col("kind") == "tls") & (pl.col("value") == "t13_att"))
    assert tls.height == 5 and tls["n_requests"].to_list() == [50] * 5
    assert ev.activity["n"].sum() == ev.rows


def test_cgnat_strangers_are_not_linked(tmp_path):
    ev = _evidence(tmp_path, strangers(300), background())
    links = link(ev)
    assert links.edges.height == 0


def test_popular_value_pairs_grow_linearly(tmp_path):
    ev = _evidence(tmp_path, strangers(600), background())
    opt = LinkOptions()
    links = link(ev, opt)
    # One shared IP, TLS and UA for all 600: at most k neighbours in two orders each,
    # never the 179,700 pairs of the full clique.
    assert links.n_candidates <= 1400 * opt.neighbours * 2 * 4


def test_campaign_is_linked_and_strangers_stay_out(tmp_path):
    ev = _evidence(tmp_path, campaign(40), strangers(200, ip="77.1.1.1"), background())
    members = cluster(link(ev))
    att = members.filter(pl.col("account_id").str.contains("att"))
    assert att.height == 40
    assert att["cluster_id"].n_unique() == 1
    assert members.filter(pl.col("account_id").str.contains("cg")).height == 0


def test_same_org_sharing_counts_less_than_across_orgs(tmp_path):
    same = link(
        _evidence(
            tmp_path, strangers(6, ip="10.0.0.1", card="pm_corp", org="org_a", seed=6), background()
        )
    )
    other = tmp_path / "x"
    other.mkdir()
    cross = link(
        _evidence(other, strangers(6, ip="10.0.0.1", card="pm_corp", seed=6), background())
    )
    assert cross.edges.height == 15
    assert same.edges.height == 0 or same.edges["weight"].max() < cross.edges["weight"].min()


def test_scores_campaign_high_and_family_low(tmp_path):
    fam = strangers(4, ip="81.2.3.4", card="pm_family", tag="fam", seed=5)
    logs, accounts = write(tmp_path, campaign(40), fam, strangers(100), background())
    result = run_cluster(logs, accounts)
    top = result.clusters.row(0, named=True)
    assert top["suspected"] and top["n_accounts"] == 40 and top["score"] >= 90
    fam_clusters = result.members.filter(pl.col("account_id").str.contains("fam"))
    assert fam_clusters.height == 4
    assert not fam_clusters["suspected"].any()
    assert "templates" in top["reasons"]


def test_cluster_ids_are_stable_under_row_order(tmp_path):
    logs, accounts = write(tmp_path, campaign(20), strangers(50))
    a = run_cluster(logs, accounts).members.select("account_id", "cluster_id").sort("account_id")
    shuffled = pl.read_parquet(logs).sample(fraction=1.0, shuffle=True, seed=3)
    shuffled.write_parquet(tmp_path / "shuffled.parquet")
    b = (
        run_cluster(tmp_path / "shuffled.parquet", accounts)
        .members.select("account_id", "cluster_id")
        .sort("account_id")
    )
    assert a.equals(b)


def test_cluster_id_depends_on_members_not_order():
    assert cluster_id_for(["b", "a", "c"]) == cluster_id_for(["c", "b", "a"])
    assert cluster_id_for(["a", "b"]) != cluster_id_for(["x", "y"])
    assert cluster_id_for(["a"]).startswith("C-")


@pytest.mark.parametrize("drop", ["prompt", "tls_fingerprint", "ip"])
def test_missing_optional_columns_are_reported_not_fatal(tmp_path, drop):
    logs, accounts = write(tmp_path, campaign(10))
    pl.read_parquet(logs).drop(drop).write_parquet(logs)
    result = run_cluster(logs, accounts)
    assert result.evidence.unused_signals
    assert result.members.height >= 0


def test_reattach_brings_back_accounts_that_use_the_clusters_templates():
    import datetime as dt

    from distill_forensics.cluster import reattach
    from distill_forensics.extract import USAGE_SCHEMA, Evidence
    from distill_forensics.link import Links

    members = [f"m{k}" for k in range(10)]
    membership = pl.DataFrame({"account_id": members, "cluster_id": ["C-x"] * 10})
    edges = pl.DataFrame(
        {"a": ["m0", "m1", "m2"], "b": ["camo", "camo", "stranger"], "weight": [0.7, 0.6, 0.7]}
    )
    t = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    rows = [(m, "template", "solve step by step", 10, t, t, 10, None) for m in members]
    rows += [
        ("camo", "template", "solve step by step", 6, t, t, 6, None),
        ("stranger", "template", "solve step by step", 1, t, t, 1, None),
    ]
    usage = pl.DataFrame(rows, schema=USAGE_SCHEMA, orient="row")
    accounts = pl.DataFrame(
        {"account_id": [*members, "camo", "stranger"], "n_prompts": [10] * 10 + [10, 10]}
    )
    evidence = Evidence(usage=usage, activity=pl.DataFrame(), accounts=accounts, rows=0)
    links = Links(
        edges=edges, accounts=accounts["account_id"], value_stats=pl.DataFrame(), n_candidates=0
    )
    out = reattach(membership, links, evidence)
    assert out.filter(pl.col("account_id") == "camo")["cluster_id"].to_list() == ["C-x"]
    assert out.filter(pl.col("account_id") == "stranger").height == 0
    assert out.height == 11


def test_batched_extraction_is_exact(tmp_path):
    from polars.testing import assert_frame_equal

    logs, accounts = write(tmp_path, campaign(30), strangers(60), background(200))
    source = read_logs([logs], accounts=accounts)
    whole = extract(source)
    read: list[int] = []
    buckets = extract(source, batch_rows=500, on_rows=read.append)
    assert len(read) > 3 and read == sorted(read) and read[-1] == whole.rows
    for name in ("usage", "activity", "accounts"):
        assert_frame_equal(getattr(whole, name), getattr(buckets, name))
    assert (whole.rows, whole.malformed) == (buckets.rows, buckets.malformed)


def test_merging_as_batches_arrive_is_exact(tmp_path, monkeypatch):
    """Shards merge their pending parts many times over (a first merge, then merges into
    the merged part) and the evidence is the same as from one merge at the end."""
    import importlib

    from polars.testing import assert_frame_equal

    # The module, not the function the package exports under the same name.
    extract_module = importlib.import_module("distill_forensics.extract")
    logs, accounts = write(tmp_path, campaign(30), strangers(60), background(200))
    source = read_logs([logs], accounts=accounts)
    whole = extract(source)
    merges: list[tuple[int, bool]] = []
    merge_pending = extract_module._Accumulator._merge_pending

    def counted(self: extract_module._Accumulator, shard: int) -> None:
        merges.append((shard, self.merged[shard] is not None))
        merge_pending(self, shard)

    monkeypatch.setattr(extract_module._Accumulator, "_merge_pending", counted)
    monkeypatch.setattr(extract_module, "FIRST_MERGE_ROWS", 400)
    monkeypatch.setattr(extract_module, "MERGE_ROWS", 80)
    often = extract(source, batch_rows=300)
    first = [shard for shard, into in merges if not into]
    assert sorted(first) == list(range(extract_module.MERGE_SHARDS))
    assert len(merges) > 3 * len(first)
    for name in ("usage", "activity", "accounts"):
        assert_frame_equal(getattr(whole, name), getattr(often, name))
    # Merging keeps one usage row per account, kind and value: explain and graph count
    # a value's rows as its accounts.
    keys = often.usage.select("account_id", "kind", "value")
    assert keys.height > 1000 and not keys.is_duplicated().any()


def test_per_day_counts_come_from_the_one_pass_and_survive_merges(tmp_path, monkeypatch):
    import importlib

    from polars.testing import assert_frame_equal

    from distill_forensics.read import malformed_sums

    extract_module = importlib.import_module("distill_forensics.extract")
    logs, accounts = write(tmp_path, campaign(30), strangers(60), background(200))
    frame = pl.read_parquet(logs)
    # Some rows lose their timestamp (no day) or account, or carry a bad address.
    frame = frame.with_row_index("_i").with_columns(
        timestamp=pl.when(pl.col("_i") % 97 == 0).then(None).otherwise(pl.col("timestamp")),
        account_id=pl.when(pl.col("_i") % 89 == 0).then(None).otherwise(pl.col("account_id")),
        ip=pl.when(pl.col("_i") % 83 == 0).then(pl.lit("bad")).otherwise(pl.col("ip")),
    )
    frame.drop("_i").write_parquet(logs)
    source = read_logs([logs], accounts=accounts)
    expected = (
        source.frame.filter(pl.col("timestamp").is_not_null())
        .group_by(day=pl.col("timestamp").dt.date())
        .agg(pl.len().alias("rows"), *malformed_sums())
        .with_columns(pl.exclude("day").cast(pl.Int64))
        .sort("day")
        .collect()
    )
    assert expected["null_account_id"].sum() > 0 and expected["invalid_ip"].sum() > 0
    monkeypatch.setattr(extract_module, "FIRST_MERGE_ROWS", 400)
    monkeypatch.setattr(extract_module, "MERGE_ROWS", 80)
    parts = extract_module.extract_parts(source, by_day=True, batch_rows=300)
    assert parts.day_counts is not None
    assert_frame_equal(parts.day_counts, expected)
    assert parts.counts["rows"] == frame.height
    assert parts.counts["unparseable_timestamp"] == frame["timestamp"].null_count() > 0


def test_accounts_table_joined_per_account_equals_joined_per_row(tmp_path):
    from dataclasses import replace

    from polars.testing import assert_frame_equal

    logs, accounts = write(tmp_path, campaign(20), strangers(30), background(100))
    source = read_logs([logs], accounts=accounts)
    assert source.account_table is not None
    per_account = extract(source)
    per_row = extract(replace(source, log_rows=None, account_table=None))
    for name in ("usage", "activity", "accounts"):
        assert_frame_equal(getattr(per_account, name), getattr(per_row, name))


def test_account_columns_in_the_logs_and_the_table_join_per_row(tmp_path):
    logs, accounts = write(tmp_path, campaign(5), strangers(3))
    both = tmp_path / "logs_with_email.parquet"
    table = pl.read_parquet(accounts).select("account_id", "email")
    pl.read_parquet(logs).join(table, on="account_id", how="left").with_columns(
        email=pl.when(pl.col("account_id").str.ends_with("1"))
        .then(None)
        .otherwise(pl.lit("x@corp.example"))
    ).write_parquet(both)
    source = read_logs([both], accounts=accounts)
    # The logs' non-null values win over the table's, row by row: no per-account shortcut.
    assert source.account_table is None and source.log_rows is None
    ev = extract(source)
    emails = dict(ev.accounts.select("account_id", "email").iter_rows())
    assert all(
        (e == "x@corp.example") != a.endswith("1") for a, e in emails.items() if e is not None
    )


def test_rows_are_numbered_by_their_accounts_row_and_stages_agree_without_numbers():
    from pathlib import Path

    from distill_forensics.cluster import reattach
    from distill_forensics.score import score

    sample = Path(__file__).resolve().parent.parent / "sample_logs"
    ev = extract(read_logs([sample / "logs.parquet"], accounts=sample / "accounts.parquet"))
    rows = ev.accounts.select("account_id", pl.int_range(pl.len(), dtype=pl.Int32).alias("row"))
    for table in (ev.usage, ev.activity):
        numbered = table.join(rows, on="account_id", how="left")
        assert numbered.height == table.height
        assert numbered.get_column("account_idx").equals(
            numbered.get_column("row"), check_names=False
        )
    # The numbers only speed up joins: without them every stage gives the same.
    assert ev.account_numbers(ev.usage) is not None
    assert ev.account_numbers(ev.activity) is not None
    plain = replace(
        ev, usage=ev.usage.drop("account_idx"), activity=ev.activity.drop("account_idx")
    )
    assert plain.account_numbers(plain.usage) is None
    links, plain_links = link(ev), link(plain)
    assert links.edges.height > 1000 and links.edges.equals(plain_links.edges)
    # Numbers that no longer match the accounts (some dropped) are not used.
    fewer = ev.accounts.filter(pl.int_range(pl.len()) % 7 != 3)
    stale, stale_plain = replace(ev, accounts=fewer), replace(plain, accounts=fewer)
    assert stale.account_numbers(stale.usage) is None
    assert link(stale).edges.equals(link(stale_plain).edges)
    clustered = cluster(links)
    members = reattach(clustered, links, ev)
    assert members.height > clustered.height  # (some accounts are brought back)
    assert members.equals(reattach(clustered, plain_links, plain))
    clusters, scored = score(ev, links, members)
    plain_clusters, plain_scored = score(plain, plain_links, members)
    assert clusters.height > 10 and clusters.equals(plain_clusters)
    assert scored.equals(plain_scored)


def test_links_do_not_depend_on_how_accounts_are_named(tmp_path):
    # Linking numbers accounts by name and, while it scores pairs, by signature
    # rank (ties broken by name): renaming the accounts in reverse order must give
    # the same links, value for value.
    ev = _campaign_evidence(tmp_path)
    names = ev.accounts.get_column("account_id").sort()
    renamed = pl.DataFrame(
        {"account_id": names, "new": [f"x{len(names) - i:05d}" for i in range(len(names))]}
    )

    def rename(frame: pl.DataFrame) -> pl.DataFrame:
        # (the rows keep their account numbers, which no longer match the renamed
        # accounts: linking must notice and join on the names)
        return (
            frame.join(renamed, on="account_id")
            .drop("account_id")
            .rename({"new": "account_id"})
            .select(frame.columns)
        )

    other = replace(
        ev,
        usage=rename(ev.usage),
        activity=rename(ev.activity),
        accounts=rename(ev.accounts),
    )
    back = renamed.select(pl.col("new").alias("x"), pl.col("account_id").alias("orig"))
    first, second = link(ev).edges, link(other).edges
    second = (
        second.join(back.rename({"x": "a", "orig": "oa"}), on="a")
        .join(back.rename({"x": "b", "orig": "ob"}), on="b")
        .with_columns(a=pl.min_horizontal("oa", "ob"), b=pl.max_horizontal("oa", "ob"))
        .select(first.columns)
        .sort("a", "b")
    )
    assert first.height > 100 and first.get_column("w_sync").max() > 0
    assert first.equals(second)


@pytest.mark.parametrize(
    ("options", "screens"),
    [
        (LinkOptions(), True),
        # Lockstep alone could link any pair: nothing is ruled out before it is measured.
        (LinkOptions(min_families=1), False),
        (LinkOptions(min_families=3, min_weight=0.4), True),
        (LinkOptions(kind_weights={**LinkOptions().kind_weights, "sync": 0.0}), True),
    ],
    ids=["default", "one-family", "three-families", "no-lockstep"],
)
def test_the_prescreen_drops_no_link(tmp_path, monkeypatch, options, screens):
    # Pairs that cannot link skip the lockstep measure and the full rule; letting
    # every pair through must give the same links, value for value.
    ev = _campaign_evidence(tmp_path)
    link_module = sys.modules["distill_forensics.link"]
    screened = link_module._hopeful
    ruled_out = []

    def counting(dots, *rule):
        maybe, most = screened(dots, *rule)
        ruled_out.append(int((~maybe).sum()))
        return maybe, most

    def letting_all_through(dots, *rule):
        return np.ones(len(dots), dtype=bool), screened(dots, *rule)[1]

    monkeypatch.setattr(link_module, "_hopeful", counting)
    first = link(ev, options).edges
    monkeypatch.setattr(link_module, "_hopeful", letting_all_through)
    assert first.equals(link(ev, options).edges)
    assert first.height > 20
    assert (sum(ruled_out) > 0) == screens


@pytest.mark.parametrize(
    "bad",
    [
        {"same_org_factor": 1.5},
        {"saturation": 0.0},
        {"gap_half_life_days": -1.0},
        {"rare_max": 0},
        {"neighbours": -1},
    ],
)
def test_link_options_refuse_values_linking_cannot_use(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        LinkOptions(**bad)
    LinkOptions(rare_max=1, neighbours=0)  # the smallest usable values
