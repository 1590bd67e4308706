"""Stage 2: link accounts that share rare infrastructure, payment, templates or timing.

The strength of a shared value falls with the number of accounts that share it
(an inverse document frequency, per kind), evidence within one kind saturates
(sharing five CGNAT addresses is not five times the evidence of one), and an
edge needs agreement between independent kinds of evidence, or one strong kind
such as a payment card. Accounts of one org sharing infrastructure is ordinary
and counts for little; accounts whose active periods are far apart count less.

Candidate pairs are generated without a quadratic blow-up: every pair only for
values shared by at most ``rare_max`` accounts; for more popular values each
account is paired with its ``neighbours`` nearest members in MinHash order (the
sorted-neighbourhood method), so similar accounts meet and the number of pairs
grows linearly with a value's popularity. Lockstep timing (SynchroTrap,
CopyCatch) uses the same machinery on MinHash bands of each account's set of
active 10-minute slots, then measures co-activity exactly for the candidates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import scipy.sparse as sp

from distill_forensics.extract import Evidence

DEFAULT_KIND_WEIGHTS: dict[str, float] = {
    "payment": 1.0,
    "email": 1.0,
    "ip": 0.6,
    "net": 0.3,
    "signup_ip": 0.5,
    "signup_net": 0.2,
    "signup_hour": 0.3,
    "signup_day": 0.2,
    "tls": 0.35,
    "ua": 0.3,
    "template": 0.55,
    "bin_country": 0.15,
    "email_domain": 0.4,
    "sync": 0.7,
}
"""Weight of each kind of evidence when a pair shares a value of it exclusively."""

STRONG_KINDS = frozenset({"payment", "email", "signup_ip"})
"""Kinds that can link two accounts on their own when the shared value is rare."""

FAMILY: dict[str, str] = {
    "ip": "network",
    "net": "network",
    "signup_ip": "network",
    "signup_net": "network",
    "signup_hour": "signup_time",
    "signup_day": "signup_time",
    "email": "email",
    "email_domain": "email",
}
"""Kinds that are not independent evidence of each other share a family."""

ACCOUNT_LEVEL_KINDS = frozenset(
    {
        "payment",
        "email",
        "email_domain",
        "signup_ip",
        "signup_net",
        "signup_hour",
        "signup_day",
        "bin_country",
    }
)
"""Kinds that describe the account itself rather than some of its requests."""

BURST_KINDS = frozenset({"signup_hour", "signup_day"})
"""Kinds whose values are points in time: they link only as part of a burst."""

INFRA_KINDS = frozenset(
    {"ip", "net", "signup_ip", "signup_net", "payment", "bin_country", "email_domain", "tls", "ua"}
)
"""Kinds that an org's members legitimately share."""


@dataclass(frozen=True)
class LinkOptions:
    """Knobs of the linking stage; the defaults are the documented behaviour."""

    kind_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_KIND_WEIGHTS))
    rare_max: int = 32
    neighbours: int = 4
    max_share: float = 0.25
    saturation: float = 0.5
    min_weight: float = 0.55
    min_families: int = 2
    same_org_factor: float = 0.2
    gap_half_life_days: float = 14.0
    sync_min_slots: int = 5
    sync_min_overlap: int = 4
    sync_min_lift: float = 8.0
    minhash_bands: int = 6
    burst_min: int = 5
    seed: int = 0


@dataclass(frozen=True)
class Links:
    """The weighted account graph: one row per linked pair with per-kind contributions."""

    edges: pl.DataFrame
    accounts: pl.Series
    value_stats: pl.DataFrame
    n_candidates: int


def both_ends(edges: pl.DataFrame, *columns: str) -> pl.DataFrame:
    """Each link twice, once from each end: ``account_id``, ``other`` and ``columns``."""
    return pl.concat(
        [
            edges.select(pl.col("a").alias("account_id"), pl.col("b").alias("other"), *columns),
            edges.select(pl.col("b").alias("account_id"), pl.col("a").alias("other"), *columns),
        ]
    )


def _hash64(values: pl.Expr, seed: int) -> pl.Expr:
    return values.hash(seed=seed)


def _neighbour_pairs(members: pl.DataFrame, k: int, orders: list[list[str]]) -> pl.DataFrame:
    """Pairs of each member with its next ``k`` members of the same group in each order."""
    out = []
    for cols in orders:
        s = members.sort("group", *cols, "idx")
        for d in range(1, k + 1):
            out.append(
                s.select(
                    pl.col("idx").alias("i"),
                    pl.col("idx").shift(-d).over("group").alias("j"),
                ).drop_nulls()
            )
    if not out:
        return pl.DataFrame(schema={"i": pl.Int64, "j": pl.Int64})
    return pl.concat(out)


def _all_pairs(members: pl.DataFrame) -> pl.DataFrame:
    return (
        members.select("group", pl.col("idx").alias("i"))
        .join(members.select("group", pl.col("idx").alias("j")), on="group")
        .filter(pl.col("i") < pl.col("j"))
        .select("i", "j")
    )


def _candidates(members: pl.DataFrame, rare_max: int, k: int) -> pl.DataFrame:
    """Candidate pairs from group membership (group, idx, sig1, sig2) without quadratic growth."""
    sizes = members.group_by("group").agg(pl.len().alias("size"))
    m = members.join(sizes, on="group")
    rare = _all_pairs(m.filter(pl.col("size") <= rare_max))
    popular = _neighbour_pairs(
        m.filter(pl.col("size") > rare_max), k, [["sig1", "sig2"], ["sig2", "sig1"]]
    )
    pairs = pl.concat([rare, popular]).select(
        pl.min_horizontal("i", "j").alias("i"), pl.max_horizontal("i", "j").alias("j")
    )
    return pairs.filter(pl.col("i") != pl.col("j")).unique()


def _rowwise_dot(
    x: sp.csr_matrix, i: np.ndarray, j: np.ndarray, chunk: int = 400_000
) -> np.ndarray:
    out = np.empty(len(i), dtype=np.float64)
    for s in range(0, len(i), chunk):
        a = x[i[s : s + chunk]]
        b = x[j[s : s + chunk]]
        out[s : s + chunk] = np.asarray(a.multiply(b).sum(axis=1)).ravel()
    return out


def link(evidence: Evidence, options: LinkOptions | None = None) -> Links:
    """Build the weighted account graph from the evidence tables."""
    opt = options or LinkOptions()
    accounts = evidence.accounts.get_column("account_id").sort()
    n_acc = len(accounts)
    index = pl.DataFrame({"account_id": accounts, "idx": pl.int_range(n_acc, eager=True)})
    weights = opt.kind_weights
    link_kinds = [k for k, w in weights.items() if k != "sync" and w > 0]

    usage = evidence.usage.filter(pl.col("kind").is_in(link_kinds)).join(index, on="account_id")
    stats = usage.group_by("kind", "value").agg(pl.len().alias("n_accounts"))
    max_n = max(2, int(opt.max_share * n_acc))
    idf_den = math.log(max(n_acc, 3) / 2.0)
    stats = stats.with_columns(
        idf=((pl.lit(float(max(n_acc, 3))) / pl.col("n_accounts")).log() / idf_den).clip(0.0, 1.0)
    )
    # How central a value is to an account: its share of the account's requests
    # (of its prompts, for templates). Account-level values (card, email,
    # signup) are the whole account. A value an account touched once counts
    # little even when it is rare.
    totals = evidence.accounts.select(
        "account_id",
        pl.col("n_requests").cast(pl.Float64).alias("_total"),
        pl.col("n_prompts").cast(pl.Float64).alias("_prompts"),
    )
    # Two strangers signing up in the same hour is a coincidence, not a burst:
    # signup-time values count only once several accounts share them.
    min_n = pl.when(pl.col("kind").is_in(list(BURST_KINDS))).then(opt.burst_min).otherwise(2)
    tokens = (
        usage.join(stats, on=["kind", "value"])
        .filter((pl.col("n_accounts") >= min_n) & (pl.col("n_accounts") <= max_n))
        .join(totals, on="account_id")
        .with_columns(
            share=pl.when(pl.col("kind").is_in(list(ACCOUNT_LEVEL_KINDS)))
            .then(1.0)
            .when(pl.col("kind") == "template")
            .then(pl.col("n_requests") / pl.col("_prompts").clip(1.0))
            .otherwise(pl.col("n_requests") / pl.col("_total").clip(1.0))
            .clip(0.0, 1.0)
        )
        .select("kind", "value", "idx", "idf", "share", "n_accounts")
    )
    tokens = tokens.with_columns(
        _hash64(pl.concat_str(["kind", "value"], separator="\x1f"), opt.seed).alias("tok")
    )

    # MinHash signatures of each account's set of shared values: accounts that
    # share many values get equal signatures and sit next to each other.
    sigs = tokens.group_by("idx").agg(
        (pl.col("tok") ^ pl.lit(0x9E3779B97F4A7C15, pl.UInt64)).hash(seed=1).min().alias("sig1"),
        (pl.col("tok") ^ pl.lit(0xC2B2AE3D27D4EB4F, pl.UInt64)).hash(seed=2).min().alias("sig2"),
    )
    members = tokens.select(pl.col("tok").alias("group"), "idx").join(sigs, on="idx")
    cand = [_candidates(members, opt.rare_max, opt.neighbours)]

    # Lockstep: MinHash bands of the slot sets, each band a group.
    act = evidence.activity.join(index, on="account_id")
    slot_counts = act.group_by("idx").agg(pl.len().alias("n_slots"))
    busy = slot_counts.filter(pl.col("n_slots") >= opt.sync_min_slots).get_column("idx")
    act_busy = act.filter(pl.col("idx").is_in(busy.implode()))
    if act_busy.height:
        hashed = act_busy.with_columns(_hash64(pl.col("slot"), opt.seed + 7).alias("h"))
        # Two MinHash values per band, all bands in one pass over the slots.
        salts = [
            (
                int(0x9E3779B97F4A7C15 * (2 * b + 1) % (1 << 64)),
                int(0xBF58476D1CE4E5B9 * (2 * b + 3) % (1 << 64)),
            )
            for b in range(opt.minhash_bands)
        ]
        mins = hashed.group_by("idx").agg(
            expr
            for b, (salt_a, salt_b) in enumerate(salts)
            for expr in (
                (pl.col("h") ^ pl.lit(salt_a, pl.UInt64)).hash(seed=3).min().alias(f"m1_{b}"),
                (pl.col("h") ^ pl.lit(salt_b, pl.UInt64)).hash(seed=4).min().alias(f"m2_{b}"),
            )
        )
        band_parts = [
            mins.select(
                pl.concat_str(
                    [
                        pl.lit(str(b)),
                        pl.col(f"m1_{b}").cast(pl.String),
                        pl.col(f"m2_{b}").cast(pl.String),
                    ],
                    separator=":",
                )
                .hash(seed=5)
                .alias("group"),
                "idx",
            )
            for b in range(opt.minhash_bands)
        ]
        band_members = (
            pl.concat(band_parts)
            .join(sigs, on="idx", how="left")
            .with_columns(pl.col("sig1").fill_null(0), pl.col("sig2").fill_null(0))
        )
        cand.append(_candidates(band_members, opt.rare_max, opt.neighbours))

    pairs = pl.concat(cand).unique().sort("i", "j")
    n_candidates = pairs.height
    i = pairs.get_column("i").to_numpy().astype(np.int64)
    j = pairs.get_column("j").to_numpy().astype(np.int64)

    contrib: dict[str, np.ndarray] = {}
    for kind in link_kinds:
        kt = tokens.filter(pl.col("kind") == kind)
        if kt.height == 0:
            continue
        codes = kt.select(pl.col("tok").rank("dense").cast(pl.Int64) - 1).to_series().to_numpy()
        x = sp.csr_matrix(
            (
                np.sqrt(kt.get_column("idf").to_numpy() * kt.get_column("share").to_numpy()),
                (kt.get_column("idx").to_numpy(), codes),
            ),
            shape=(n_acc, int(codes.max()) + 1),
        )
        # Only pairs where both accounts hold a shared value of this kind can score.
        has = np.diff(x.indptr) > 0
        both = has[i] & has[j]
        s = np.zeros(len(i))
        s[both] = _rowwise_dot(x, i[both], j[both])
        contrib[kind] = weights[kind] * (1.0 - np.exp(-s / opt.saturation))

    # Lockstep strength: co-active slots versus what two independent accounts
    # with these activity levels would share by chance.
    if act_busy.height and len(i) and weights.get("sync", 0.0) > 0:
        slot_codes = act_busy.select(pl.col("slot").rank("dense").cast(pl.Int64) - 1).to_series()
        n_slots = int(slot_codes.n_unique())
        s_mat = sp.csr_matrix(
            (
                np.ones(act_busy.height),
                (act_busy.get_column("idx").to_numpy(), slot_codes.to_numpy()),
            ),
            shape=(n_acc, n_slots),
        )
        overlap = _rowwise_dot(s_mat, i, j)
        deg = np.asarray(s_mat.sum(axis=1)).ravel()
        # Chance co-activity: each account's activity density over its own
        # active span, times the span the two share. An always-on app shares
        # every slot with everyone by chance; a sparse burst schedule does not.
        spans = act.group_by("idx").agg(
            pl.col("slot").min().alias("lo"), pl.col("slot").max().alias("hi")
        )
        lo = np.zeros(n_acc, dtype=np.float64)
        hi = np.zeros(n_acc, dtype=np.float64)
        lo[spans.get_column("idx").to_numpy()] = spans.get_column("lo").to_numpy()
        hi[spans.get_column("idx").to_numpy()] = spans.get_column("hi").to_numpy()
        density = deg / np.maximum(1.0, hi - lo + 1.0)
        shared_span = np.maximum(1.0, np.minimum(hi[i], hi[j]) - np.maximum(lo[i], lo[j]) + 1.0)
        expected = density[i] * density[j] * shared_span
        with np.errstate(divide="ignore", invalid="ignore"):
            cosine = np.where(deg[i] * deg[j] > 0, overlap / np.sqrt(deg[i] * deg[j]), 0.0)
            lift = np.where(expected > 0, overlap / expected, 0.0)
        ok = (overlap >= opt.sync_min_overlap) & (lift >= opt.sync_min_lift)
        contrib["sync"] = np.where(ok, weights["sync"] * np.minimum(1.0, cosine / 0.5), 0.0)

    # Same org: shared infrastructure is ordinary. Far-apart activity: weaker.
    acc = evidence.accounts.join(index, on="account_id").sort("idx")
    if "org_id" in acc.columns:
        org_codes = (
            acc.select(
                pl.when(pl.col("org_id").is_null())
                .then(-1)
                .otherwise(pl.col("org_id").rank("dense").cast(pl.Int64))
            )
            .to_series()
            .to_numpy()
        )
        same_org = (org_codes[i] >= 0) & (org_codes[i] == org_codes[j])
    else:
        same_org = np.zeros(len(i), dtype=bool)
    first = acc.get_column("first_seen").dt.epoch("s").to_numpy().astype(np.float64)
    last = acc.get_column("last_seen").dt.epoch("s").to_numpy().astype(np.float64)
    gap_days = (
        np.maximum(0.0, np.maximum(first[i], first[j]) - np.minimum(last[i], last[j])) / 86400
    )
    time_factor = np.power(0.5, gap_days / opt.gap_half_life_days)
    for kind, c in contrib.items():
        if kind in INFRA_KINDS:
            c *= time_factor
            c[same_org] *= opt.same_org_factor

    # Every kind gets a column, present in the data or not, so the edge table
    # (and the report built on it) has the same columns whatever the input.
    kinds = sorted(k for k, w in weights.items() if w > 0)
    for kind in kinds:
        contrib.setdefault(kind, np.zeros(len(i)))
    total = np.zeros(len(i))
    for kind in kinds:
        total += contrib[kind]
    families: dict[str, np.ndarray] = {}
    for kind in kinds:
        fam = FAMILY.get(kind, kind)
        on = contrib[kind] >= 0.25 * weights[kind]
        families[fam] = families.get(fam, np.zeros(len(i), dtype=bool)) | on
    n_families = np.sum(np.stack(list(families.values())), axis=0) if families else np.zeros(len(i))
    strong = np.zeros(len(i), dtype=bool)
    for kind in STRONG_KINDS & set(kinds):
        strong |= contrib[kind] >= 0.8 * weights[kind]
    keep = (total >= opt.min_weight) & ((n_families >= opt.min_families) | strong)

    edges = pl.DataFrame(
        {
            "a": accounts.gather(i[keep]),
            "b": accounts.gather(j[keep]),
            "weight": total[keep],
            "n_families": n_families[keep].astype(np.int32),
            "same_org": same_org[keep],
            **{f"w_{k}": contrib[k][keep] for k in kinds},
        }
    ).sort("a", "b")
    return Links(edges=edges, accounts=accounts, value_stats=stats, n_candidates=n_candidates)
