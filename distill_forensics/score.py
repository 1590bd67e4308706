"""Stage 4: describe each cluster with features, score it 0-100 and give reasons.

The score is a logistic model over named features in [0, 1] with fixed,
documented weights: evidence of coordination (lockstep timing, even load,
signup bursts, young accounts, links across orgs) and of distillation
(templated prompts with varying fills, capability concentration,
chain-of-thought elicitation, output-heavy answers, a pivot to a new model).
What innocent groups look like pulls the score down: one org owning the
cluster, or identical prompts repeated verbatim (public benchmarks).
Each reason shown is one of the largest terms of that sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import polars as pl

from distill_forensics.cluster import repeated_by_cluster
from distill_forensics.extract import (
    SLOT_SECONDS,
    Evidence,
    sketch_count,
    sketch_union_by,
    slot_span,
)
from distill_forensics.link import Links, both_ends
from distill_forensics.normalize import email_domain, is_free_mail

FEATURE_WEIGHTS: dict[str, float] = {
    "templated": 3.0,
    "cot": 1.5,
    "capability": 1.0,
    "output_heavy": 1.0,
    "sync": 1.5,
    "load_balance": 1.0,
    "signup_burst": 1.5,
    "young": 1.0,
    "new_model_pivot": 2.0,
    "cross_org": 1.0,
    "size": 1.0,
    "verbatim_repeats": -3.0,
    "single_org": -3.0,
    "established": -2.0,
}
"""Weight of each feature (each in [0, 1]) in the logit of the score."""

MEANINGFUL_LINK = 0.1
"""A link counts as made by a kind when that kind contributes at least this weight."""

BIAS = -4.5
"""Logit of a cluster with every feature at zero."""

LINK_KIND_LABELS: dict[str, str] = {
    "payment": "payment card",
    "email": "mailbox (normalised email)",
    "email_domain": "company email domain",
    "ip": "IP address",
    "net": "IP network",
    "signup_ip": "signup IP",
    "signup_net": "signup network",
    "signup_hour": "signup hour",
    "signup_day": "signup day",
    "tls": "TLS fingerprint",
    "ua": "user agent",
    "template": "prompt template",
    "bin_country": "card BIN+country",
    "sync": "lockstep timing",
}


@dataclass(frozen=True)
class ScoreOptions:
    """Knobs of the scoring stage."""

    threshold: float = 50.0
    weights: dict[str, float] = field(default_factory=lambda: dict(FEATURE_WEIGHTS))
    bias: float = BIAS
    burst_window_days: int = 3
    pivot_hours: float = 24.0
    new_model_grace_days: float = 2.0
    size_scale: float = 4.0
    volume_scale: float = 50.0


def _clip01(e: pl.Expr) -> pl.Expr:
    return e.clip(0.0, 1.0).fill_null(0.0).fill_nan(0.0)


def _members_rows(rows: pl.LazyFrame, keyed: pl.DataFrame, key: str) -> pl.DataFrame:
    """The members' rows of ``rows``, with their ``cluster_id``, from the members ``keyed``
    on ``key`` by :meth:`Evidence.keyed`; only those rows are gathered (the join alone:
    a membership filter before it costs as much again)."""
    return rows.join(keyed.lazy(), on=key).collect()


def _template_features(evidence: Evidence, members: pl.DataFrame) -> pl.DataFrame:
    keyed, key = evidence.keyed(evidence.usage, members)
    columns = ("account_id", key, "value", "n_requests", "variants")
    tpl = _members_rows(evidence.usage_of("template", *columns), keyed, key)
    # Distinct prompts across the members (a sketch union), so one prompt sent
    # word for word by many accounts counts once. An account has one row per
    # template, so a group's rows are its members. Grouped by template first: the
    # rows come mostly in template order (as the evidence is sorted), so the pass
    # over them reads memory nearly in order.
    per = sketch_union_by(tpl, ["value", "cluster_id"], "n_requests", "variants").select(
        "cluster_id",
        "value",
        pl.col("n_rows").alias("m"),
        pl.col("n_requests").alias("req"),
        var=sketch_count(pl.col("variants")),
    )
    sizes = members.group_by("cluster_id").agg(pl.len().alias("n"))
    per = per.join(sizes, on="cluster_id")
    shared = repeated_by_cluster(pl.col("m"), pl.col("n"))
    return per.group_by("cluster_id").agg(
        pl.col("req").filter(shared & (pl.col("var") >= 0.3 * pl.col("req"))).sum().alias("t_fill"),
        pl.col("req").filter(shared & (pl.col("var") < 0.1 * pl.col("req"))).sum().alias("t_verb"),
        pl.col("value").filter(shared).len().alias("n_shared_templates"),
    )


def _sync_features(evidence: Evidence, members: pl.DataFrame) -> pl.DataFrame:
    # Keyed on categories, the group-bys over members' slots need far less memory.
    category = pl.Categorical()
    act = _members_rows(
        evidence.activity.lazy(), *evidence.keyed(evidence.activity, members)
    ).with_columns(pl.col("account_id", "cluster_id").cast(category))
    span = slot_span(evidence.activity)
    per_slot = act.group_by("cluster_id", "slot").agg(pl.len().alias("active"))
    act = act.join(per_slot, on=["cluster_id", "slot"])
    per_acc = act.group_by("cluster_id", "account_id").agg(
        (pl.col("active") - 1).mean().alias("co"),
        pl.len().alias("slots"),
        (pl.col("slot") * SLOT_SECONDS // 86400).n_unique().alias("days"),
    )
    tot = per_acc.group_by("cluster_id").agg(pl.col("slots").sum().alias("all_slots"))
    # Members in id order, so the float sums below add up in the same order
    # on every run (group-by and join order is not fixed).
    per_acc = (
        per_acc.join(tot, on="cluster_id")
        .with_columns(expected=((pl.col("all_slots") - pl.col("slots")) / span))
        .sort(pl.col("cluster_id").cast(pl.String), pl.col("account_id").cast(pl.String))
    )
    return (
        per_acc.group_by("cluster_id")
        .agg(
            (pl.col("co").sum() / pl.col("expected").sum().clip(1e-9)).alias("sync_lift"),
            pl.col("days").alias("_days"),
            pl.col("account_id").cast(pl.String).alias("_acc"),
        )
        .with_columns(pl.col("cluster_id").cast(pl.String))
    )


def _ranked(clusters: pl.DataFrame) -> pl.DataFrame:
    """``clusters`` in rank order with their ``rank``: by score, then size, highest first;
    ties by id."""
    return clusters.sort(
        ["score", "n_accounts", "cluster_id"], descending=[True, True, False]
    ).with_columns(rank=pl.int_range(1, pl.len() + 1).cast(pl.Int32))


def score(
    evidence: Evidence,
    links: Links,
    membership: pl.DataFrame,
    options: ScoreOptions | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Score clusters: returns ``(clusters, members)`` ranked by score, best first."""
    opt = options or ScoreOptions()
    w = opt.weights
    members = membership.select("account_id", "cluster_id")
    acc = evidence.accounts.join(members, on="account_id")
    cols = set(acc.columns)

    # Model pivot: first use of a model that appeared after the data began.
    models = evidence.usage_of("model", "account_id", "value", "n_requests", "first_seen").collect()
    data_start = evidence.accounts.get_column("first_seen").min()
    if models.height and data_start is not None:
        release = models.group_by("value").agg(pl.col("first_seen").min().alias("release"))
        grace = pl.duration(seconds=int(opt.new_model_grace_days * 86400))
        new_models = release.filter(pl.col("release") > pl.lit(data_start) + grace)
        pivot = (
            models.join(new_models, on="value")
            .join(members, on="account_id")
            .group_by("account_id")
            .agg(
                pl.col("n_requests").sum().alias("new_req"),
                ((pl.col("first_seen") - pl.col("release")).dt.total_seconds() / 3600)
                .min()
                .alias("lag_h"),
            )
        )
        acc = acc.join(pivot, on="account_id", how="left")
    else:
        acc = acc.with_columns(new_req=pl.lit(None, pl.Int64), lag_h=pl.lit(None, pl.Float64))
    acc = acc.with_columns(
        pivoted=(
            (pl.col("lag_h") <= opt.pivot_hours)
            & (pl.col("new_req").fill_null(0) >= 0.5 * pl.col("n_requests"))
        ).fill_null(False)
    )
    age_days = (
        ((pl.col("first_seen") - pl.col("created_at")).dt.total_seconds() / 86400).clip(0.0)
        if "created_at" in cols
        else pl.lit(None, pl.Float64)
    )
    acc = acc.with_columns(age_days=age_days)

    org = pl.col("org_id") if "org_id" in cols else pl.lit(None, pl.String)
    org_share = (
        acc.with_columns(org=pl.coalesce(org, pl.col("account_id")))
        .group_by("cluster_id", "org")
        .agg(pl.len().alias("k"))
        .group_by("cluster_id")
        .agg(pl.col("k").max().alias("org_max"))
    )

    # Signup bursts: most members created within any window of a few days.
    if "created_at" in cols:
        days = acc.select(
            "cluster_id", (pl.col("created_at").dt.epoch("d")).alias("d")
        ).drop_nulls()
        per_day = days.group_by("cluster_id", "d").agg(pl.len().alias("c"))
        window = per_day.clone()
        for k in range(1, opt.burst_window_days):
            window = window.join(
                per_day.with_columns(pl.col("d") - k).rename({"c": f"c{k}"}),
                on=["cluster_id", "d"],
                how="left",
            )
        burst = (
            window.select(
                "cluster_id",
                pl.sum_horizontal(pl.exclude("cluster_id", "d").fill_null(0)).alias("burst"),
            )
            .group_by("cluster_id")
            .agg(pl.col("burst").max())
        )
    else:
        burst = pl.DataFrame(schema={"cluster_id": pl.String, "burst": pl.Int64})

    # Established customers: org accounts on a company's own email domain. A
    # harvesting operation runs on throwaway free-mail sign-ups; a verified org
    # with its own domain is costly to fake at scale, so it counts against.
    if "org_id" in cols and "email" in cols:
        domain = email_domain(pl.col("email"))
        established = (
            pl.col("org_id").is_not_null() & domain.is_not_null() & ~is_free_mail(domain)
        ).cast(pl.Float64)
    else:
        established = pl.lit(0.0)
    base = acc.group_by("cluster_id").agg(
        pl.len().alias("n_accounts"),
        pl.col("n_requests").sum().alias("n_requests"),
        (pl.col("input_tokens").fill_null(0) + pl.col("output_tokens").fill_null(0))
        .sum()
        .alias("n_tokens"),
        pl.col("input_tokens").sum().alias("_in"),
        pl.col("output_tokens").sum().alias("_out"),
        pl.col("n_prompts").sum().alias("_prompts"),
        pl.col("n_cot").sum().alias("_cot"),
        (pl.max_horizontal("n_cot", "n_grading", "n_coding", "n_tool")).sum().alias("_cap"),
        pl.col("first_seen").min(),
        pl.col("last_seen").max(),
        pl.col("pivoted").mean().alias("_pivot"),
        pl.col("age_days").median().alias("median_age_days"),
        established.mean().alias("_established"),
    )
    sync = _sync_features(evidence, members)
    # Even load: coefficient of variation of requests per active day.
    per_day = (
        sync.select("cluster_id", "_acc", "_days")
        .explode("_acc", "_days")
        .rename({"_acc": "account_id", "_days": "days"})
    )
    per_day = per_day.join(acc.select("account_id", "n_requests"), on="account_id").with_columns(
        rate=pl.col("n_requests") / pl.col("days").clip(1)
    )
    lb = per_day.group_by("cluster_id").agg(
        (pl.col("rate").std() / pl.col("rate").mean()).alias("volume_cv")
    )
    tf = _template_features(evidence, members)

    e = links.edges
    inside = _links_inside(e, members)
    edge_members = inside
    wcols = [c for c in e.columns if c.startswith("w_")]
    if "org_id" in cols:
        orgs = acc.select("account_id", "org_id")
        edge_members = edge_members.join(
            orgs.rename({"account_id": "a", "org_id": "org_a"}), on="a", how="left"
        ).join(orgs.rename({"account_id": "b", "org_id": "org_b"}), on="b", how="left")
        # A link crosses orgs when an org account links to an account outside it.
        crossing = (pl.col("org_a").is_not_null() | pl.col("org_b").is_not_null()) & (
            pl.col("org_a") != pl.col("org_b")
        ).fill_null(True)
    else:
        crossing = pl.lit(False)
    link_stats = edge_members.group_by("cluster_id").agg(
        pl.len().alias("n_links"),
        crossing.mean().alias("_cross_links"),
        *[(pl.col(c) >= MEANINGFUL_LINK).mean().alias("share_" + c[2:]) for c in wcols],
    )

    f = (
        base.join(org_share, on="cluster_id", how="left")
        .join(burst, on="cluster_id", how="left")
        .join(sync.select("cluster_id", "sync_lift"), on="cluster_id", how="left")
        .join(lb, on="cluster_id", how="left")
        .join(tf, on="cluster_id", how="left")
        .join(link_stats, on="cluster_id", how="left")
    )
    n = pl.col("n_accounts")
    prompts = pl.col("_prompts").clip(1)
    # Coordination measured on two or three accounts is weak evidence: two
    # friends can sign up the same week. Shrink it by the cluster's size.
    reliable = 1.0 - (-(n.cast(pl.Float64) - 1.0) / opt.size_scale).exp()
    # Shares of a handful of requests are weak evidence too.
    volume = 1.0 - (-pl.col("n_requests").cast(pl.Float64) / opt.volume_scale).exp()
    f = f.with_columns(
        p_templated=_clip01(pl.col("t_fill").fill_null(0) / prompts),
        p_cot=_clip01(pl.col("_cot") / prompts),
        p_capability=_clip01(pl.col("_cap") / prompts),
        f_templated=_clip01(reliable * volume * pl.col("t_fill").fill_null(0) / prompts),
        f_verbatim_repeats=_clip01(pl.col("t_verb").fill_null(0) / prompts),
        f_cot=_clip01(volume * pl.col("_cot") / prompts),
        f_capability=_clip01(volume * pl.col("_cap") / prompts),
        f_output_heavy=_clip01(volume * (pl.col("_out") / pl.col("_in").clip(1)).log(2) / 3.0),
        f_sync=_clip01(reliable * pl.col("sync_lift").fill_null(0).clip(1).log() / math.log(20)),
        f_load_balance=_clip01(reliable * (1.0 - pl.col("volume_cv").fill_null(1.0))),
        f_signup_burst=_clip01(reliable * (pl.col("burst").fill_null(0) / n - 0.2) / 0.6),
        f_young=_clip01(1.0 - pl.col("median_age_days").fill_null(365.0) / 60.0),
        f_new_model_pivot=_clip01(pl.col("_pivot").fill_null(0.0) * 2.0),
        f_cross_org=_clip01(reliable * pl.col("_cross_links").fill_null(0.0)),
        f_size=_clip01((n.cast(pl.Float64).log() - math.log(2)) / math.log(100)),
        f_single_org=_clip01((pl.col("org_max") / n - 0.5) * 2.0),
        f_established=_clip01(pl.col("_established")),
    )
    logit = pl.lit(opt.bias)
    for name, weight in w.items():
        logit = logit + weight * pl.col("f_" + name)
    f = f.with_columns(score=(100.0 / (1.0 + (-logit).exp())).round(1))
    f = f.with_columns(suspected=pl.col("score") >= opt.threshold)
    f = _ranked(f)
    link_kinds = [c[6:] for c in f.columns if c.startswith("share_")]
    f = f.with_columns(
        reasons=pl.Series(
            [_render_reasons(row, w, link_kinds) for row in f.iter_rows(named=True)],
            dtype=pl.String,
        )
    )
    feature_cols = ["f_" + k for k in w]
    share_cols = [c for c in f.columns if c.startswith("share_")]
    clusters = f.select(
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
        *feature_cols,
        "p_templated",
        "p_cot",
        "p_capability",
        "n_links",
        *share_cols,
        "n_shared_templates",
        "median_age_days",
    )
    member_out = (
        acc.select(
            "account_id",
            "cluster_id",
            "n_requests",
            "first_seen",
            "last_seen",
            *(["org_id"] if "org_id" in cols else []),
            "pivoted",
        )
        .join(clusters.select("cluster_id", "rank", "score", "suspected"), on="cluster_id")
        .join(_member_links(inside), on="account_id", how="left")
        .sort("rank", "account_id")
        .select(
            "account_id",
            "cluster_id",
            "rank",
            "score",
            "suspected",
            pl.exclude("account_id", "cluster_id", "rank", "score", "suspected"),
        )
    )
    return clusters, member_out


def rerank(clusters: pl.DataFrame, members: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The clusters ranked again after their ids changed (ties are ranked by id), and the
    members with the new ranks, in rank order."""
    clusters = _ranked(clusters)
    rank = clusters.select("cluster_id", pl.col("rank").alias("_rank"))
    members = (
        members.join(rank, on="cluster_id", how="left")
        .with_columns(pl.col("_rank").alias("rank"))
        .drop("_rank")
        .sort("rank", "account_id")
    )
    return clusters, members


def _links_inside(edges: pl.DataFrame, members: pl.DataFrame) -> pl.DataFrame:
    """The links between members of one cluster, with that ``cluster_id``."""
    return (
        edges.join(members.rename({"account_id": "a"}), on="a")
        .join(members.rename({"account_id": "b", "cluster_id": "cb"}), on="b")
        .filter(pl.col("cluster_id") == pl.col("cb"))
    )


def _member_links(inside: pl.DataFrame) -> pl.DataFrame:
    """Per member: its links inside its cluster (``inside``, see :func:`_links_inside`) and
    the kinds of its strongest link."""
    wcols = [c for c in inside.columns if c.startswith("w_")]
    both = both_ends(inside, "weight", *wcols)
    kinds_expr = pl.concat_str(
        [pl.when(pl.col(c) >= MEANINGFUL_LINK).then(pl.lit(c[2:])) for c in wcols],
        separator=",",
        ignore_nulls=True,
    )
    strongest = (
        both.sort("weight", "other", descending=[True, False])
        .group_by("account_id", maintain_order=True)
        .first()
    )
    return (
        both.group_by("account_id")
        .agg(pl.len().alias("n_links"))
        .join(
            strongest.select(
                "account_id",
                pl.col("other").alias("strongest_link"),
                pl.col("weight").round(3).alias("strongest_weight"),
                kinds_expr.alias("strongest_kinds"),
            ),
            on="account_id",
        )
    )


_FEATURE_TEXT: dict[str, str] = {
    "templated": "{p:.0%} of prompts from shared templates with varying fills",
    "cot": "{p:.0%} of prompts elicit chain-of-thought",
    "capability": "{p:.0%} of prompts target reasoning, grading, coding or tool use",
    "output_heavy": "output-heavy answers",
    "sync": "members act in lockstep",
    "load_balance": "volume spread evenly across accounts",
    "signup_burst": "accounts created in a burst",
    "young": "young accounts",
    "new_model_pivot": "switched to a new model within 24 h of its release",
    "cross_org": "links cross org boundaries",
    "size": "large network",
    "verbatim_repeats": "identical prompts repeated verbatim (benchmark-like)",
    "single_org": "one org owns the cluster",
    "established": "members are org accounts on their org's own email domain",
}


def _render_reasons(s: dict, weights: dict[str, float], link_kinds: list[str], top: int = 4) -> str:
    """Top reasons in words: the largest positive terms of the score, then the linking kinds."""
    terms = sorted(
        (
            (weight * (s["f_" + name] or 0.0), name)
            for name, weight in weights.items()
            if weight > 0
        ),
        key=lambda t: (-t[0], t[1]),
    )
    # The words quote the measured share (p_*), not the size-shrunk feature value.
    parts = [
        _FEATURE_TEXT[name].format(p=s.get("p_" + name, s["f_" + name]))
        for v, name in terms[:top]
        if v >= 0.3
    ]
    shares = sorted(((s["share_" + k] or 0.0, k) for k in link_kinds), key=lambda t: (-t[0], t[1]))
    linked = [f"{LINK_KIND_LABELS.get(k, k)} {v:.0%}" for v, k in shares[:3] if v >= 0.1]
    if linked:
        parts.append("linked by " + ", ".join(linked))
    return "; ".join(parts)
