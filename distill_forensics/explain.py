"""Why one cluster was formed and why it scores high, as tables an investigator can defend.

An :class:`Explanation` gathers, for one cluster of a :class:`ClusterResult`:

- ``header``: id, rank, score, verdict, reasons, size, volume and active span;
- ``members``: each member's volume, account age, role and strongest links;
- ``shared_values``: attribute values two or more members share, with how rare
  each is in all the data and how strongly its kind links the cluster;
- ``timeline``: requests per hour over the cluster's active span;
- ``templates``: prompt templates several members repeat, with example prompts;
- ``models`` and ``new_models``: requests per model per day, and how soon
  members took up models that appeared after the data began.

The timeline, templates and models are counted on the raw log rows of the
members (``logs``, e.g. ``read_logs(...).frame``); without them the timeline
comes from the evidence's activity slots, templates have no examples and the
per-day model mix is empty.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from distill_forensics.cluster import cluster_id_for
from distill_forensics.errors import InputError
from distill_forensics.extract import SLOT_SECONDS
from distill_forensics.link import both_ends
from distill_forensics.pipeline import ClusterResult
from distill_forensics.prompts import template_key
from distill_forensics.schema import BAD
from distill_forensics.score import FEATURE_WEIGHTS, MEANINGFUL_LINK, ScoreOptions
from distill_forensics.write import to_json_text

__all__ = ["Explanation", "explain", "to_json"]

TOP_LINKS = 3
"""Strongest links listed per member."""

PIVOT_HOURS = 24.0
"""A member took up a new model promptly when its first use came this soon after release."""

_TIMESTAMP = pl.Datetime("us", "UTC")


@dataclass(frozen=True)
class Explanation:
    """The evidence behind one cluster: a header and one table per section."""

    header: dict[str, Any]
    members: pl.DataFrame
    shared_values: pl.DataFrame
    timeline: pl.DataFrame
    templates: pl.DataFrame
    models: pl.DataFrame
    new_models: pl.DataFrame
    columns: tuple[str, ...] = ()
    """Canonical columns the run read: a section that is empty for want of one can say so."""


def explain(
    result: ClusterResult,
    cluster_id: str,
    logs: pl.LazyFrame | None,
    examples: int = 2,
) -> Explanation:
    """Explain cluster ``cluster_id`` of ``result``; ``logs`` are the rows the run read.

    Raises InputError when the cluster id is not in ``result``.

    >>> source = read_logs(["sample_logs/logs.parquet"], accounts="sample_logs/accounts.parquet")
    >>> result = analyze(extract(source))
    >>> top = result.clusters["cluster_id"][0]
    >>> explain(result, top, source.frame).shared_values  # doctest: +SKIP
    """
    row = result.clusters.filter(pl.col("cluster_id") == cluster_id)
    if row.height == 0:
        raise InputError(
            f"no cluster {cluster_id!r} in these logs ({result.clusters.height:,} clusters); "
            "run `distill-forensics cluster` with the same inputs (and --previous) to list "
            "the cluster ids"
        )
    cluster = row.row(0, named=True)
    ids = result.members.filter(pl.col("cluster_id") == cluster_id).select("account_id")
    # The anchor is the member the id is derived from: alone, it gets the cluster's id.
    anchor = next((a for a in ids["account_id"] if cluster_id_for([a]) == cluster_id), None)
    edges = _inside_edges(result.links.edges, ids)
    rows = _member_rows(logs, ids) if logs is not None else None
    # The members as the usage rows are keyed: by account number where they carry one.
    keyed, key = result.evidence.keyed(result.evidence.usage, ids)

    return Explanation(
        header=_header(cluster, anchor),
        members=_members(result, ids, edges, anchor),
        shared_values=_shared_values(result, keyed, key, edges),
        timeline=_timeline(result, ids, rows),
        templates=_templates(result, keyed, key, rows, examples),
        models=_model_days(rows),
        new_models=_new_models(result, keyed, key, int(cluster["n_requests"])),
        columns=result.evidence.columns,
    )


def to_json(explanation: Explanation) -> dict[str, Any]:
    """The explanation as JSON-safe data: six sections, timestamps ISO-8601 UTC with a Z."""
    header = {k: _iso(v) if isinstance(v, datetime) else v for k, v in explanation.header.items()}
    return {
        "cluster": header,
        "members": _records(explanation.members),
        "shared_values": _records(explanation.shared_values),
        "timeline": _records(explanation.timeline),
        "templates": _records(explanation.templates),
        "models": {
            "per_day": _records(explanation.models),
            "new_models": _records(explanation.new_models),
        },
    }


# ---------------------------------------------------------------------------
# Sections


def _header(cluster: dict[str, Any], anchor: str | None) -> dict[str, Any]:
    reasons = cluster["reasons"] or ""
    return {
        "cluster_id": cluster["cluster_id"],
        "rank": int(cluster["rank"]),
        "score": float(cluster["score"]),
        "suspected": bool(cluster["suspected"]),
        "verdict": "suspected" if cluster["suspected"] else "not suspected",
        "reasons": [r for r in reasons.split("; ") if r],
        "anchor": anchor,
        "n_accounts": int(cluster["n_accounts"]),
        "n_requests": int(cluster["n_requests"]),
        "n_tokens": int(cluster["n_tokens"]),
        "n_links": int(cluster["n_links"] or 0),
        "first_seen": cluster["first_seen"],
        "last_seen": cluster["last_seen"],
        "median_age_days": _round(cluster["median_age_days"], 2),
        "features": {
            name: _round(cluster["f_" + name], 3)
            for name in FEATURE_WEIGHTS
            if "f_" + name in cluster
        },
        "link_shares": {
            k[len("share_") :]: _round(v, 3)
            for k, v in cluster.items()
            if k.startswith("share_") and v
        },
    }


def _inside_edges(edges: pl.DataFrame, ids: pl.DataFrame) -> pl.DataFrame:
    """The cluster's own links, each with the kinds that made it (strongest first)."""
    inside = (
        edges.join(ids.rename({"account_id": "a"}), on="a", how="semi")
        .join(ids.rename({"account_id": "b"}), on="b", how="semi")
        .with_row_index("_edge")
    )
    wcols = [c for c in edges.columns if c.startswith("w_")]
    if not wcols:
        return inside.with_columns(kinds=pl.lit([], pl.List(pl.String)))
    kinds = (
        inside.unpivot(index="_edge", on=wcols, variable_name="kind", value_name="w")
        .filter(pl.col("w") >= MEANINGFUL_LINK)
        .sort("_edge", "w", "kind", descending=[False, True, False])
        .group_by("_edge", maintain_order=True)
        .agg(pl.col("kind").str.strip_prefix("w_").alias("kinds"))
    )
    return inside.join(kinds, on="_edge", how="left").with_columns(
        pl.col("kinds").fill_null(pl.lit([], pl.List(pl.String)))
    )


def _members(
    result: ClusterResult, ids: pl.DataFrame, edges: pl.DataFrame, anchor: str | None
) -> pl.DataFrame:
    both = both_ends(edges, "weight", "kinds")
    link = pl.struct(
        pl.col("other").alias("account_id"), pl.col("weight").round(3), pl.col("kinds")
    )
    per = both.group_by("account_id").agg(
        pl.len().cast(pl.Int64).alias("n_links"),
        pl.col("weight").sum().alias("link_weight"),
        link.sort_by(["weight", "other"], descending=[True, False])
        .head(TOP_LINKS)
        .alias("top_links"),
    )
    acc = result.evidence.accounts.join(ids, on="account_id", how="semi")
    cols = set(acc.columns)
    created = pl.col("created_at") if "created_at" in cols else pl.lit(None, _TIMESTAMP)
    org = pl.col("org_id") if "org_id" in cols else pl.lit(None, pl.String)
    out = (
        acc.select(
            "account_id",
            "n_requests",
            "first_seen",
            "last_seen",
            created.alias("created_at"),
            ((pl.col("first_seen") - created).dt.total_seconds() / 86400)
            .round(2)
            .alias("age_days"),
            org.alias("org_id"),
        )
        .join(per, on="account_id", how="left")
        .with_columns(
            pl.col("n_links").fill_null(0),
            pl.col("link_weight").fill_null(0.0),
            pl.col("top_links").fill_null(pl.lit([], per.schema["top_links"])),
        )
    )
    # Core members hold the cluster together: link weight at least half the
    # median member's; peripheral ones hang on by fewer, weaker links.
    out = out.with_columns(
        # (An id carried over from last night is derived from no member: no anchor.)
        role=pl.when(pl.col("account_id") == anchor if anchor is not None else pl.lit(False))
        .then(pl.lit("anchor"))
        .when(pl.col("link_weight") >= 0.5 * pl.col("link_weight").median())
        .then(pl.lit("core"))
        .otherwise(pl.lit("peripheral")),
        link_weight=pl.col("link_weight").round(3),
    )
    return out.sort(["n_requests", "account_id"], descending=[True, False]).select(
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
    )


def _shared_values(
    result: ClusterResult, members: pl.DataFrame, key: str, edges: pl.DataFrame
) -> pl.DataFrame:
    """Values two or more ``members`` (usage rows' ``key``) used, and how widely used."""
    evidence = result.evidence
    # Lazy, with only the columns needed: the usage rows' sketches are never copied.
    # (A usage row is one account's use of one value: rows count accounts.)
    usage = evidence.usage.lazy().select(
        key, "kind", "value", "n_requests", "first_seen", "last_seen"
    )
    per = (
        usage.join(members.lazy(), on=key, how="semi")
        .group_by("kind", "value")
        .agg(
            pl.len().cast(pl.Int64).alias("n_members"),
            pl.col("n_requests").sum().alias("n_requests"),
            pl.col("first_seen").min(),
            pl.col("last_seen").max(),
        )
        .filter(pl.col("n_members") >= 2)
        .collect()
    )
    everywhere = (
        usage.select("kind", "value")
        .join(per.lazy().select("kind", "value"), on=["kind", "value"], how="semi")
        .group_by("kind", "value")
        .agg(pl.len().cast(pl.Int64).alias("n_accounts_all"))
        .collect()
    )
    strength = (
        edges.select(pl.col("^w_.*$").mean().round(3).name.map(lambda c: c[2:]))
        .unpivot(variable_name="kind", value_name="kind_strength")
        .cast({"kind": pl.String, "kind_strength": pl.Float64})
    )
    return (
        per.join(everywhere, on=["kind", "value"])
        .join(strength, on="kind", how="left")
        .with_columns(share=(pl.col("n_members") / members.height).round(3))
        .sort(["kind", "n_members", "value"], descending=[False, True, False])
        .select(
            "kind",
            "value",
            "n_members",
            "share",
            "n_accounts_all",
            "n_requests",
            "first_seen",
            "last_seen",
            "kind_strength",
        )
    )


def _member_rows(logs: pl.LazyFrame, ids: pl.DataFrame) -> pl.DataFrame:
    """The members' usable log rows, in one scan of only the columns the sections need."""
    names = logs.collect_schema().names()
    keep = [c for c in ("timestamp", "account_id", "model", "prompt") if c in names]
    usable = pl.col("timestamp").is_not_null()
    if BAD in names:
        usable = usable & pl.col(BAD).is_null()
    return (
        logs.filter(usable & pl.col("account_id").is_in(ids["account_id"].implode()))
        .select(keep)
        .collect()
    )


def _timeline(result: ClusterResult, ids: pl.DataFrame, rows: pl.DataFrame | None) -> pl.DataFrame:
    if rows is not None:
        counts = rows.group_by(pl.col("timestamp").dt.truncate("1h").alias("hour")).agg(
            pl.len().cast(pl.Int64).alias("n_requests")
        )
    else:
        counts = (
            result.evidence.activity.join(ids, on="account_id", how="semi")
            .group_by(
                pl.from_epoch(pl.col("slot") * SLOT_SECONDS, time_unit="s")
                .dt.replace_time_zone("UTC")
                .dt.truncate("1h")
                .alias("hour")
            )
            .agg(pl.col("n").sum().cast(pl.Int64).alias("n_requests"))
        )
    counts = counts.with_columns(pl.col("hour").cast(_TIMESTAMP))
    if counts.height == 0:
        return counts.select("hour", "n_requests")
    hours = counts.select(
        pl.datetime_range(pl.col("hour").min(), pl.col("hour").max(), "1h").alias("hour")
    )
    return (
        hours.join(counts, on="hour", how="left")
        .with_columns(pl.col("n_requests").fill_null(0))
        .sort("hour")
    )


_TEMPLATE_SCHEMA = pl.Schema(
    [
        ("template", pl.String()),
        ("n_requests", pl.Int64()),
        ("n_members", pl.Int64()),
        ("n_distinct_prompts", pl.Int64()),
        ("first_seen", _TIMESTAMP),
        ("last_seen", _TIMESTAMP),
        ("examples", pl.List(pl.String())),
    ]
)


def _templates(
    result: ClusterResult,
    members: pl.DataFrame,
    key: str,
    rows: pl.DataFrame | None,
    examples: int,
) -> pl.DataFrame:
    if rows is not None and "prompt" in rows.columns:
        per = (
            rows.filter(pl.col("prompt").is_not_null())
            .with_columns(template=template_key(pl.col("prompt")))
            .filter(pl.col("template").is_not_null())
            .group_by("template")
            .agg(
                pl.len().cast(pl.Int64).alias("n_requests"),
                pl.col("account_id").n_unique().cast(pl.Int64).alias("n_members"),
                pl.col("prompt").n_unique().cast(pl.Int64).alias("n_distinct_prompts"),
                pl.col("timestamp").min().alias("first_seen"),
                pl.col("timestamp").max().alias("last_seen"),
                # The first distinct prompts in time: the same examples whatever the row order.
                pl.col("prompt")
                .sort_by(["timestamp", "prompt"])
                .unique(maintain_order=True)
                .head(examples)
                .alias("examples"),
            )
        )
    else:
        per = (
            result.evidence.usage_of(
                "template", key, "value", "n_requests", "first_seen", "last_seen"
            )
            .join(members.lazy(), on=key, how="semi")
            .group_by(pl.col("value").alias("template"))
            .agg(
                pl.col("n_requests").sum(),
                pl.col(key).n_unique().cast(pl.Int64).alias("n_members"),
                pl.lit(None, pl.Int64).alias("n_distinct_prompts"),
                pl.col("first_seen").min(),
                pl.col("last_seen").max(),
                pl.lit([], pl.List(pl.String)).alias("examples"),
            )
            .collect()
        )
    return (
        per.filter(pl.col("n_members") >= 2)
        .select(list(_TEMPLATE_SCHEMA))
        .cast(_TEMPLATE_SCHEMA)
        .sort(["n_requests", "template"], descending=[True, False])
    )


def _model_days(rows: pl.DataFrame | None) -> pl.DataFrame:
    schema = pl.Schema([("day", pl.Date()), ("model", pl.String()), ("n_requests", pl.Int64())])
    if rows is None or "model" not in rows.columns:
        return pl.DataFrame(schema=schema)
    return (
        rows.group_by(pl.col("timestamp").dt.date().alias("day"), "model")
        .agg(pl.len().cast(pl.Int64).alias("n_requests"))
        .sort("day", "model", nulls_last=True)
    )


def _new_models(
    result: ClusterResult, members: pl.DataFrame, key: str, n_requests: int
) -> pl.DataFrame:
    """Models that first appeared after the data began, and how soon members used them.

    "After the data began" is the scoring stage's rule: later than its grace
    period after the first request in the data, so models in use from the
    start are not mistaken for releases.
    """
    ev = result.evidence
    models = ev.usage_of("model", key, "value", "first_seen", "n_requests").collect()
    data_start = ev.accounts["first_seen"].min()
    lag = (pl.col("first_seen") - pl.col("released")).dt.total_seconds() / 3600
    schema = pl.Schema(
        [
            ("model", pl.String()),
            ("released", _TIMESTAMP),
            ("cluster_first_use", _TIMESTAMP),
            ("first_lag_hours", pl.Float64()),
            ("median_lag_hours", pl.Float64()),
            ("n_members", pl.Int64()),
            ("n_members_within_24h", pl.Int64()),
            ("n_requests", pl.Int64()),
            ("share_of_requests", pl.Float64()),
        ]
    )
    if models.height == 0 or data_start is None:
        return pl.DataFrame(schema=schema)
    grace = pl.duration(seconds=int(ScoreOptions().new_model_grace_days * 86400))
    released = (
        models.group_by("value")
        .agg(pl.col("first_seen").min().alias("released"))
        .filter(pl.col("released") > pl.lit(data_start) + grace)
    )
    return (
        models.join(members, on=key, how="semi")
        .join(released, on="value")
        .group_by(pl.col("value").alias("model"))
        .agg(
            pl.col("released").first(),
            pl.col("first_seen").min().alias("cluster_first_use"),
            lag.min().round(2).alias("first_lag_hours"),
            lag.median().round(2).alias("median_lag_hours"),
            pl.col(key).n_unique().cast(pl.Int64).alias("n_members"),
            (lag <= PIVOT_HOURS).sum().cast(pl.Int64).alias("n_members_within_24h"),
            pl.col("n_requests").sum().cast(pl.Int64),
        )
        .with_columns(share_of_requests=(pl.col("n_requests") / max(1, n_requests)).round(3))
        .select(list(schema))
        .cast(schema)
        .sort("released", "model")
    )


# ---------------------------------------------------------------------------
# Helpers


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def _iso(value: datetime) -> str:
    """A timestamp as the reports write it: ISO-8601 UTC with a Z."""
    text: str = pl.Series([value]).dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ").item()
    return text


def _records(df: pl.DataFrame) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(to_json_text(df))
    return records
