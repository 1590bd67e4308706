"""Stage 1: turn raw request rows into compact evidence.

Everything after this stage works on the :class:`Evidence` tables only, so a
nightly job can extract each day once and cluster a rolling window later.

- ``usage``: which account used which attribute value, how often and when
  (one row per account, kind and value);
- ``activity``: requests per account per 10-minute slot (for lockstep timing);
- ``accounts``: per-account behaviour counters (sums, so days can be added up).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import polars as pl

from distill_forensics.normalize import email_domain, email_normalized, ip_network, is_free_mail
from distill_forensics.read import Source

SLOT_SECONDS = 600
"""Width of an activity slot: lockstep is measured on 10-minute slots."""

# Capability classes of a prompt.  They name the capabilities the 2026
# distillation reports saw harvested; a prompt may fall in several.
COT_PATTERN = (
    r"(?i)step[- ]by[- ]step|chain[- ]of[- ]thought|show (?:all |your |the )?(?:full |complete )?"
    r"(?:work|reasoning|thinking|steps)|think (?:carefully|through|aloud|out loud)|"
    r"explain your reasoning|reason (?:carefully|through)|full reasoning|detailed reasoning"
)
GRADING_PATTERN = (
    r"(?i)rubric|grade (?:this|the|each)|score (?:the|this|each|from|on a scale)|"
    r"rate (?:the|this) (?:answer|response)|evaluate (?:the|this) (?:answer|response)|"
    r"which (?:answer|response) is better"
)
CODING_PATTERN = (
    r"(?i)coding agent|```|\bdef |\bclass |implement|refactor|unit tests?|stack trace|"
    r"repository|pull request|\bbash\b|terminal|compile|function that|write (?:a|the) "
    r"(?:python|javascript|typescript|rust|go|java|sql|c\+\+)"
)
TOOL_PATTERN = (
    r"(?i)tool[ _]calls?|function[ _]call|available tools|call the tool|json schema|"
    r"\"name\"\s*:|tools?:\s*\[|<tool"
)

# Kinds of attribute value an account can share with another.
LOG_VALUE_KINDS: dict[str, str] = {
    "ip": "ip",
    "net": "ip",  # derived from ip: /24 (v4) or /48 (v6)
    "tls": "tls_fingerprint",
    "ua": "user_agent",
    "template": "prompt",
    "model": "model",
}
ACCOUNT_VALUE_KINDS: dict[str, str] = {
    "payment": "payment_fingerprint",
    "bin_country": "card_bin",
    "email": "email",
    "email_domain": "email",
    "signup_ip": "signup_ip",
    "signup_net": "signup_ip",
    "signup_hour": "created_at",
    "signup_day": "created_at",
}

USAGE_SCHEMA = pl.Schema(
    [
        ("account_id", pl.String()),
        ("kind", pl.String()),
        ("value", pl.String()),
        ("n_requests", pl.Int64()),
        ("first_seen", pl.Datetime("us", "UTC")),
        ("last_seen", pl.Datetime("us", "UTC")),
        ("n_variants", pl.Int64()),
        ("variants", pl.List(pl.UInt64())),
    ]
)
"""Columns of the usage table: one row per account, kind of value and value."""

SKETCH_SIZE = 32
"""Distinct prompts are counted with bottom-k sketches of this size: exact below it,
an estimate within about a fifth above it, and mergeable across days and clusters."""

BUCKET_ROWS = 1_500_000
"""Rows per account bucket when extracting a large input (see :func:`extract`)."""

BUCKET_SEED = 17

TEMPLATE_WORDS = 8
"""A prompt's template is its masked skeleton cut to its first words."""

TEMPLATE_CHARS = 128
"""Characters of a prompt's opening that can hold its first words."""


def template_key(prompt: pl.Expr) -> pl.Expr:
    """The template skeleton of a prompt: names, numbers and punctuation masked, first words.

    Two prompts generated from one template with different fills (numbers,
    names, task text after the fixed opening) get the same key. Only the
    opening matters, so the prompt is cut to its first characters before the
    (costly) masking passes.
    """
    masked = (
        prompt.str.slice(0, TEMPLATE_CHARS)
        .str.replace_all(r"\p{Lu}\p{Ll}+", "N")
        .str.to_lowercase()
        .str.replace_all(r"[0-9][0-9.,:]*", "#")
        .str.replace_all(r"[^\p{Ll}\p{Lo}#]+", " ")
    )
    # Four to eight words; a shorter skeleton ("hi", "n") says nothing about a template.
    return masked.str.extract(
        rf"^ ?((?:[\p{{Ll}}\p{{Lo}}#]+ ){{3,{TEMPLATE_WORDS - 1}}}[\p{{Ll}}\p{{Lo}}#]+)", 1
    )


@dataclass(frozen=True)
class Evidence:
    """The compact evidence the linking, clustering and scoring stages work on."""

    usage: pl.DataFrame
    activity: pl.DataFrame
    accounts: pl.DataFrame
    rows: int
    malformed: dict[str, int] = field(default_factory=dict)
    columns: tuple[str, ...] = ()
    unused_signals: tuple[str, ...] = ()

    @property
    def n_accounts(self) -> int:
        return self.accounts.height


def sketch(hashes: pl.Expr) -> pl.Expr:
    """Bottom-k sketch (aggregation): the smallest distinct hashes of a group."""
    return hashes.drop_nulls().unique().sort().head(SKETCH_SIZE)


def sketch_union(sketches: pl.Expr) -> pl.Expr:
    """Sketch of the union of sets (aggregation over a column of sketches)."""
    return (
        sketches.list.explode(keep_nulls=False, empty_as_null=False)
        .drop_nulls()
        .unique()
        .sort()
        .head(SKETCH_SIZE)
    )


def sketch_count(sketch_list: pl.Expr) -> pl.Expr:
    """Distinct count behind a sketch: exact when the sketch is not full, else estimated."""
    size = sketch_list.list.len()
    kth = sketch_list.list.get(SKETCH_SIZE - 1, null_on_oob=True).cast(pl.Float64)
    estimate = (SKETCH_SIZE - 1) / (kth / 2.0**64)
    return (
        pl.when(size < SKETCH_SIZE).then(size.cast(pl.Float64)).otherwise(estimate).round(0)
    ).cast(pl.Int64)


def slot_span(activity: pl.DataFrame) -> int:
    """Number of 10-minute slots from the first to the last active slot (at least 1)."""
    if activity.height == 0:
        return 1
    lo, hi = activity.select(
        pl.col("slot").min().alias("lo"), pl.col("slot").max().alias("hi")
    ).row(0)
    return max(1, int(hi) - int(lo) + 1)


def _value_expr(kind: str) -> pl.Expr:
    if kind == "ip":
        return pl.col("ip")
    if kind == "net":
        return ip_network(pl.col("ip"))
    if kind == "template":
        return template_key(pl.col("prompt"))
    return pl.col(LOG_VALUE_KINDS[kind])


def _account_value_expr(kind: str) -> pl.Expr:
    if kind == "payment":
        return pl.col("payment_fingerprint")
    if kind == "bin_country":
        return pl.concat_str(
            [pl.col("card_bin"), pl.col("billing_country").fill_null("?")], separator="/"
        )
    if kind == "email":
        return email_normalized(pl.col("email"))
    if kind == "email_domain":
        dom = email_domain(pl.col("email"))
        return pl.when(is_free_mail(dom)).then(None).otherwise(dom)
    if kind == "signup_ip":
        return pl.col("signup_ip")
    if kind == "signup_net":
        return ip_network(pl.col("signup_ip"))
    if kind == "signup_hour":
        return pl.col("created_at").dt.truncate("1h").dt.strftime("%Y-%m-%dT%H")
    if kind == "signup_day":
        return pl.col("created_at").dt.strftime("%Y-%m-%d")
    raise KeyError(kind)


@dataclass(frozen=True)
class Parts:
    """Mergeable aggregates of some rows: what :func:`finish` turns into :class:`Evidence`.

    Every column is a sum, a minimum, a maximum or a bottom-k sketch, so the
    parts of several days (or files) merge into exactly the parts of all their
    rows (:func:`merge_parts`). With ``by_day`` each table carries a ``day`` key.
    """

    usage: pl.DataFrame
    activity: pl.DataFrame
    accounts: pl.DataFrame
    counts: dict[str, int]
    columns: tuple[str, ...]


ACCOUNT_COUNTERS = (
    "n_requests",
    "input_tokens",
    "output_tokens",
    "n_prompts",
    "n_cot",
    "n_grading",
    "n_coding",
    "n_tool",
)
"""Per-account counters: sums over rows."""

ACCOUNT_COLUMNS = (
    "account_id",
    *ACCOUNT_COUNTERS,
    "first_seen",
    "last_seen",
    "org_id",
    "created_at",
    "email",
)
"""Columns of :attr:`Evidence.accounts`."""


def extract_parts(source: Source, *, by_day: bool = False) -> Parts:
    """Aggregate the rows of ``source`` in one pass per table (streaming engine)."""
    cols = set(source.columns)
    lf = source.frame
    good = lf.filter(pl.col("_bad").is_null())
    day = ["day"] if by_day else []
    if by_day:
        good = good.with_columns(day=pl.col("timestamp").dt.date())

    log_kinds = [k for k, c in LOG_VALUE_KINDS.items() if c in cols]
    has_prompt = "prompt" in cols
    prompt = pl.col("prompt") if has_prompt else pl.lit(None, dtype=pl.String)
    tokens_in = pl.col("input_tokens") if "input_tokens" in cols else pl.lit(None, pl.Int64)
    tokens_out = pl.col("output_tokens") if "output_tokens" in cols else pl.lit(None, pl.Int64)

    # Usage of every per-request kind in one scan: one column per kind,
    # unpivoted to (kind, value) and grouped once.
    value_cols = [_value_expr(kind).alias(kind) for kind in log_kinds]
    prompt_hash = prompt.hash() if has_prompt else pl.lit(None, pl.UInt64)
    usage_q = (
        good.select("account_id", "timestamp", *day, prompt_hash.alias("_ph"), *value_cols)
        .unpivot(
            index=["account_id", "timestamp", *day, "_ph"],
            on=log_kinds,
            variable_name="kind",
            value_name="value",
        )
        .filter(pl.col("value").is_not_null())
        .with_columns(_ph=pl.when(pl.col("kind") == "template").then(pl.col("_ph")))
        .group_by(*day, "account_id", "kind", "value")
        .agg(
            pl.len().cast(pl.Int64).alias("n_requests"),
            pl.col("timestamp").min().alias("first_seen"),
            pl.col("timestamp").max().alias("last_seen"),
            sketch(pl.col("_ph")).alias("variants"),
        )
        .with_columns(variants=pl.when(pl.col("kind") == "template").then(pl.col("variants")))
    )
    activity_q = (
        good.select(
            "account_id",
            (pl.col("timestamp").dt.epoch("s") // SLOT_SECONDS).alias("slot"),
        )
        .group_by("account_id", "slot")
        .agg(pl.len().cast(pl.Int32).alias("n"))
    )
    acct_cols = sorted(
        {ACCOUNT_VALUE_KINDS[k] for k in ACCOUNT_VALUE_KINDS if ACCOUNT_VALUE_KINDS[k] in cols}
        | ({"billing_country"} & cols)
        | ({"email"} & cols)
    )
    feats = [
        pl.len().cast(pl.Int64).alias("n_requests"),
        pl.col("timestamp").min().alias("first_seen"),
        pl.col("timestamp").max().alias("last_seen"),
        tokens_in.sum().cast(pl.Int64).alias("input_tokens"),
        tokens_out.sum().cast(pl.Int64).alias("output_tokens"),
        prompt.is_not_null().sum().cast(pl.Int64).alias("n_prompts"),
        prompt.str.contains(COT_PATTERN).sum().cast(pl.Int64).alias("n_cot"),
        prompt.str.contains(GRADING_PATTERN).sum().cast(pl.Int64).alias("n_grading"),
        prompt.str.contains(CODING_PATTERN).sum().cast(pl.Int64).alias("n_coding"),
        prompt.str.contains(TOOL_PATTERN).sum().cast(pl.Int64).alias("n_tool"),
        (pl.col("org_id") if "org_id" in cols else pl.lit(None, pl.String)).min().alias("org_id"),
    ]
    # Account attributes (joined from the accounts table or denormalised in the
    # logs): the smallest non-null value per account, whatever the row order.
    feats.extend(pl.col(c).min().alias(c) for c in acct_cols)
    accounts_q = good.group_by(*day, "account_id").agg(feats)

    schema = lf.collect_schema().names()
    counts_q = lf.select(
        pl.len().alias("rows"),
        (pl.col("_bad") == "unparseable_timestamp").sum().alias("unparseable_timestamp"),
        (pl.col("_bad") == "null_account_id").sum().alias("null_account_id"),
        *([pl.col("_ip_invalid").sum().alias("invalid_ip")] if "_ip_invalid" in schema else []),
        *(
            [pl.col("_tokens_invalid").sum().alias("invalid_tokens")]
            if "_tokens_invalid" in schema
            else []
        ),
    )
    # The streaming engine keeps memory to the size of the groups, not the rows.
    usage, activity, accounts, counts_df = pl.collect_all(
        [usage_q, activity_q, accounts_q, counts_q], engine="streaming"
    )
    counts = {k: int(v or 0) for k, v in counts_df.row(0, named=True).items()}
    return Parts(usage, activity, accounts, counts, tuple(sorted(cols)))


def _merge_usage(frames: Sequence[pl.DataFrame]) -> pl.DataFrame:
    return (
        pl.concat([f.drop("day", strict=False) for f in frames], how="diagonal_relaxed")
        .group_by("account_id", "kind", "value")
        .agg(
            pl.col("n_requests").sum(),
            pl.col("first_seen").min(),
            pl.col("last_seen").max(),
            sketch_union(pl.col("variants")).alias("variants"),
        )
        .with_columns(variants=pl.when(pl.col("kind") == "template").then(pl.col("variants")))
    )


def _merge_accounts(frames: Sequence[pl.DataFrame]) -> pl.DataFrame:
    acc = pl.concat([f.drop("day", strict=False) for f in frames], how="diagonal_relaxed")
    others = [c for c in acc.columns if c not in (*ACCOUNT_COUNTERS, "account_id", "last_seen")]
    return acc.group_by("account_id").agg(
        *[pl.col(c).sum() for c in ACCOUNT_COUNTERS if c in acc.columns],
        pl.col("last_seen").max(),
        *[pl.col(c).min() for c in others],
    )


def _sum_counts(parts: Sequence[Parts]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in parts:
        for k, v in p.counts.items():
            counts[k] = counts.get(k, 0) + v
    return counts


def _union_columns(parts: Sequence[Parts]) -> tuple[str, ...]:
    return tuple(sorted(set().union(*(p.columns for p in parts))))


def merge_parts(parts: Sequence[Parts]) -> Parts:
    """Merge the parts of disjoint sets of rows into the parts of their union."""
    if not parts:
        raise ValueError("merge_parts needs at least one part")
    activity = (
        pl.concat([p.activity for p in parts])
        .group_by("account_id", "slot")
        .agg(pl.col("n").sum().cast(pl.Int32))
    )
    return Parts(
        _merge_usage([p.usage for p in parts]),
        activity,
        _merge_accounts([p.accounts for p in parts]),
        _sum_counts(parts),
        _union_columns(parts),
    )


def finish(parts: Parts) -> Evidence:
    """Turn merged parts into the evidence tables the later stages read."""
    cols = set(parts.columns)
    acct_kinds = [k for k, c in ACCOUNT_VALUE_KINDS.items() if c in cols]
    if "billing_country" not in cols and "bin_country" in acct_kinds:
        acct_kinds.remove("bin_country")
    unused = sorted(
        {k for k, c in LOG_VALUE_KINDS.items() if c not in cols}
        | {k for k, c in ACCOUNT_VALUE_KINDS.items() if c not in cols}
        | ({"bin_country"} if "billing_country" not in cols else set())
    )
    accounts = parts.accounts
    usage_logs = parts.usage
    if "day" in accounts.columns:
        accounts = _merge_accounts([accounts])
    if "day" in usage_logs.columns:
        usage_logs = _merge_usage([usage_logs])
    usage_logs = usage_logs.with_columns(
        n_variants=pl.when(pl.col("kind") == "template").then(sketch_count(pl.col("variants")))
    )
    created = pl.col("created_at") if "created_at" in accounts.columns else pl.col("first_seen")
    usage_parts = [usage_logs]
    for kind in acct_kinds:
        usage_parts.append(
            accounts.select(
                "account_id",
                pl.lit(kind).alias("kind"),
                _account_value_expr(kind).alias("value"),
                pl.col("n_requests"),
                created.alias("first_seen"),
                created.alias("last_seen"),
                pl.lit(None, pl.Int64).alias("n_variants"),
                pl.lit(None, pl.List(pl.UInt64)).alias("variants"),
            ).filter(pl.col("value").is_not_null())
        )
    usage = pl.concat([p.select(list(USAGE_SCHEMA)).cast(USAGE_SCHEMA) for p in usage_parts]).sort(
        "kind", "value", "account_id"
    )
    accounts = accounts.select(
        [
            pl.col(c) if c in accounts.columns else pl.lit(None, pl.String).alias(c)
            for c in ACCOUNT_COLUMNS
            if c in accounts.columns or c == "org_id"
        ]
    )
    counts = dict(parts.counts)
    rows = int(counts.pop("rows", 0))
    return Evidence(
        usage=usage,
        activity=parts.activity.sort("account_id", "slot"),
        accounts=accounts.sort("account_id"),
        rows=rows,
        malformed={k: v for k, v in counts.items() if v},
        columns=parts.columns,
        unused_signals=tuple(unused),
    )


def _concat_parts(parts: Sequence[Parts]) -> Parts:
    """Join the parts of disjoint sets of accounts (no account in two parts)."""
    return Parts(
        pl.concat([p.usage for p in parts], how="diagonal_relaxed"),
        pl.concat([p.activity for p in parts]),
        pl.concat([p.accounts for p in parts], how="diagonal_relaxed"),
        _sum_counts(parts),
        _union_columns(parts),
    )


def extract(source: Source, *, bucket_rows: int = BUCKET_ROWS) -> Evidence:
    """Read the rows of ``source`` and build the evidence tables.

    Large inputs are extracted in account buckets (rows split by a hash of the
    account id, about ``bucket_rows`` rows each): every account's rows land in
    one bucket, so the buckets' evidence simply stacks, and memory follows the
    bucket rather than the whole input. Signals whose columns are absent are
    listed in ``unused_signals``.
    """
    rows = int(source.frame.select(pl.len()).collect().item())
    buckets = max(1, -(-rows // bucket_rows))
    if buckets == 1:
        return finish(extract_parts(source))
    key = pl.col("account_id").hash(seed=BUCKET_SEED) % buckets
    parts = [
        extract_parts(replace(source, frame=source.frame.filter(key == b))) for b in range(buckets)
    ]
    return finish(_concat_parts(parts))
