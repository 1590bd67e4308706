"""Stage 1: turn raw request rows into compact evidence.

Everything after this stage works on the :class:`Evidence` tables only, so a
nightly job can extract each day once and cluster a rolling window later.

- ``usage``: which account used which attribute value, how often and when
  (one row per account, kind and value);
- ``activity``: requests per account per 10-minute slot (for lockstep timing);
- ``accounts``: per-account behaviour counters (sums, so days can be added up).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl
import pyarrow as pa

from distill_forensics.jit import compiled
from distill_forensics.memory import release_freed_memory
from distill_forensics.normalize import email_domain, email_normalized, ip_network, is_free_mail
from distill_forensics.prompts import CAPABILITY_PATTERNS, prompt_features
from distill_forensics.radix import argsort_keys, sort_with_order
from distill_forensics.read import Source, malformed_sums, read_errors
from distill_forensics.schema import ROW_FLAGS

SLOT_SECONDS = 600
"""Width of an activity slot: lockstep is measured on 10-minute slots."""

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


def prompt_hash(prompt: pl.Expr) -> pl.Expr:
    """The 64-bit hash of each prompt that the distinct-prompt sketches hold."""
    return prompt.hash()


def prompt_hash_mark() -> str:
    """A mark of the hash :func:`prompt_hash` computes: the hashes of a few fixed texts.

    polars keeps its hashes the same within a release only. Sketches made under
    one hash and merged with sketches made under another count every prompt
    twice, so an evidence day records the mark of the hash its sketches hold.
    """
    probes = pl.Series(["", "distill-forensics", "Solve step by step: 12 + 30"], dtype=pl.String)
    hashes = pl.select(prompt_hash(pl.lit(probes))).to_series().to_list()
    return "-".join(f"{h:016x}" for h in hashes)


@dataclass(frozen=True)
class Evidence:
    """The compact evidence the linking, clustering and scoring stages work on.

    Built by :func:`finish`, ``accounts`` is sorted by ``account_id`` and the usage
    and activity rows also carry ``account_idx``, their account's row in
    ``accounts`` as ``numbered_ids`` lists them. The later stages join on that
    number while ``accounts`` still lists those ids in that order
    (:meth:`account_numbers`), and on the ids' text otherwise.
    """

    usage: pl.DataFrame
    activity: pl.DataFrame
    accounts: pl.DataFrame
    rows: int
    malformed: dict[str, int] = field(default_factory=dict)
    columns: tuple[str, ...] = ()
    unused_signals: tuple[str, ...] = ()
    numbered_ids: pl.Series | None = None

    @property
    def n_accounts(self) -> int:
        return self.accounts.height

    def account_numbers(self, table: pl.DataFrame) -> pl.DataFrame | None:
        """Each account's ``account_id`` and ``account_idx`` when the rows of ``table``
        carry numbers that still match ``accounts``; None when they carry none, or when
        the accounts were renamed, dropped or reordered since they were numbered."""
        if "account_idx" not in table.columns or self.numbered_ids is None:
            return None
        ids = self.accounts.get_column("account_id")
        if not ids.equals(self.numbered_ids):
            return None
        return pl.DataFrame(
            {"account_id": ids, "account_idx": pl.int_range(len(ids), eager=True, dtype=pl.Int32)}
        )

    def keyed(self, table: pl.DataFrame, frame: pl.DataFrame) -> tuple[pl.DataFrame, str]:
        """``frame`` (keyed by ``account_id``) ready to join the rows of ``table``, and the
        key to join on: the account's number when those rows carry matching numbers
        (:meth:`account_numbers`), several times faster than its text."""
        numbers = self.account_numbers(table)
        if numbers is None:
            return frame, "account_id"
        return frame.join(numbers, on="account_id").drop("account_id"), "account_idx"

    def usage_of(self, kind: str, *columns: str) -> pl.LazyFrame:
        """The usage rows of one kind with only ``columns`` (a name given twice is taken
        once, so a join key from :meth:`keyed` can be named beside ``account_id``): a
        lazy plan, so the rows' other columns (sketches among them) are never copied."""
        return self.usage.lazy().filter(pl.col("kind") == kind).select(*dict.fromkeys(columns))


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


@compiled
def _sketch_groups(
    key: np.ndarray,
    order: np.ndarray,
    offsets: np.ndarray,
    hashes: np.ndarray,
    n: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows grouped by equal keys: row ``order[i]`` has key ``key[i]``, in ascending order.

    Row ``r`` carries a count ``n[r]``, a time span ``first[r]..last[r]`` and the
    hashes ``hashes[offsets[r]:offsets[r + 1]]``. Each group gets its first row in
    ``order``, its number of rows, the sum of counts, the span's bounds and the
    bottom-k sketch of its hashes (the ``k`` smallest distinct, ascending) as list
    offsets and values.
    """
    starts, head, rows, first_out, last_out, out_offsets = _groups_of(key, order)
    groups = len(head)
    n_out = np.empty(groups, np.int64)
    out = np.empty(min(len(hashes), groups * k), np.uint64)
    buf = np.empty(len(hashes), np.uint64)
    used = 0
    for g in range(groups):
        r = head[g]
        total, lo, hi, c = 0, first[r], last[r], 0
        for i in range(starts[g], starts[g + 1]):
            r = order[i]
            total += n[r]
            lo = min(lo, first[r])
            hi = max(hi, last[r])
            for j in range(offsets[r], offsets[r + 1]):
                buf[c] = hashes[j]
                c += 1
        n_out[g], first_out[g], last_out[g] = total, lo, hi
        out_offsets[g] = used
        used = _bottom_k(buf, c, k, out, used)
    out_offsets[groups] = used
    return head, rows, n_out, first_out, last_out, out_offsets, out[:used]


@compiled
def _sketch_requests(
    key: np.ndarray,
    order: np.ndarray,
    times: np.ndarray,
    hashes: np.ndarray,
    hashed: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_sketch_groups` of single requests: row ``r`` is one request at ``times[r]``
    with the hash ``hashes[r]`` where ``hashed[r]``. Each group gets its first row, its
    number of rows, the span's bounds and the sketch as list offsets and values.

    Reading two arrays per row where the general case reads six halves the time:
    rows are visited in key order, so each read is a cache miss.
    """
    starts, head, rows, first_out, last_out, out_offsets = _groups_of(key, order)
    groups = len(head)
    out = np.empty(len(order), np.uint64)
    buf = np.empty(len(order), np.uint64)
    used = 0
    for g in range(groups):
        r = head[g]
        lo = hi = times[r]
        c = 0
        for i in range(starts[g], starts[g + 1]):
            r = order[i]
            lo = min(lo, times[r])
            hi = max(hi, times[r])
            if hashed[r]:
                buf[c] = hashes[r]
                c += 1
        first_out[g], last_out[g] = lo, hi
        out_offsets[g] = used
        used = _bottom_k(buf, c, k, out, used)
    out_offsets[groups] = used
    return head, rows, first_out, last_out, out_offsets, out[:used]


@compiled
def _groups_of(
    key: np.ndarray, order: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The runs of equal sorted ``key`` values, for the sketch kernels: where each starts
    (and one more entry, ``len(key)``), its first row in ``order``, its number of rows,
    and the arrays the kernels fill per group (first, last, list offsets)."""
    m = len(key)
    starts = np.empty(m + 1, np.int64)
    groups = 0
    for i in range(m):
        if i == 0 or key[i] != key[i - 1]:
            starts[groups] = i
            groups += 1
    starts[groups] = m
    starts = starts[: groups + 1]
    head = np.empty(groups, np.int64)
    rows = np.empty(groups, np.int64)
    for g in range(groups):
        head[g] = order[starts[g]]
        rows[g] = starts[g + 1] - starts[g]
    first, last, offsets = (
        np.empty(groups, np.int64),
        np.empty(groups, np.int64),
        np.empty(groups + 1, np.int64),
    )
    return starts, head, rows, first, last, offsets


@compiled
def _bottom_k(buf: np.ndarray, c: int, k: int, out: np.ndarray, used: int) -> int:
    """The ``k`` smallest distinct of ``buf[:c]`` (which it sorts), ascending, written to
    ``out`` from ``used``; returns where they end."""
    if c > 32:
        buf[:c] = np.sort(buf[:c])
    else:  # insertion sort: most groups hold a handful of hashes
        for i in range(1, c):
            v = buf[i]
            j = i - 1
            while j >= 0 and buf[j] > v:
                buf[j + 1] = buf[j]
                j -= 1
            buf[j + 1] = v
    taken = 0
    for i in range(c):
        if taken == k:
            break
        if i == 0 or buf[i] != buf[i - 1]:
            out[used] = buf[i]
            used += 1
            taken += 1
    return used


def _group_key(frame: pl.DataFrame, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The rows in an order that brings equal ``keys`` (integer, date, text or categorical
    columns) together, and for each of them in that order an int64 that is equal exactly
    when the keys are: ``(key[order], order)``, ``key`` ascending.

    Category codes are read in place and folded into the key by compiled passes:
    the key is the only array of the rows' length made on the way.
    """
    codes = []
    span = 1
    for name in keys:
        column = frame.get_column(name)
        if column.dtype == pl.String:
            column = column.cast(pl.Categorical())
        physical = column.to_physical()
        if physical.null_count() or physical.dtype == pl.UInt64:
            physical = physical.cast(pl.Int64).fill_null(-1)
        values = physical.to_numpy()
        low, high = _bounds(values) if len(values) else (0, 0)
        size = int(high) - int(low) + 1
        codes.append((values, int(low), size))
        span *= size
    if span < 1 << 62:
        key = np.zeros(frame.height, dtype=np.int64)
        for values, low, size in codes:
            _fold(key, values, low, size)
        return sort_with_order(key)
    # Too wide to pack: number the distinct combinations instead.
    order = np.lexsort([values for values, _, _ in reversed(codes)])
    stacked = np.stack([values[order] for values, _, _ in codes])
    change = np.concatenate([[True], (stacked[:, 1:] != stacked[:, :-1]).any(axis=0)])
    return np.cumsum(change), order


@compiled
def _bounds(values: np.ndarray) -> tuple[int, int]:
    """The smallest and the largest of ``values`` (not empty), in one pass."""
    low = high = values[0]
    for v in values:
        low = min(low, v)
        high = max(high, v)
    return low, high


@compiled
def _fold(key: np.ndarray, values: np.ndarray, low: int, size: int) -> None:
    """``key = key * size + (values - low)``, in place."""
    for i in range(len(key)):
        key[i] = key[i] * size + (np.int64(values[i]) - low)


def _sketched_usage(
    frame: pl.DataFrame,
    keys: Sequence[str],
    n: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
    offsets: np.ndarray,
    hashes: np.ndarray,
) -> pl.DataFrame:
    """``frame``'s rows grouped by ``keys``: requests summed, first and last seen, and the
    bottom-k sketch of the hashes each row carries (see :func:`_sketch_groups`).

    The same as a polars group-by with :func:`sketch_union` of the rows' hashes, in one
    sorted pass instead of a list per group.
    """
    key, order = _group_key(frame, keys)
    head, _, n_out, first_out, last_out, out_offsets, out = _sketch_groups(
        key, order, offsets, hashes, n, first, last, SKETCH_SIZE
    )
    return _usage_groups(frame, keys, head, n_out, first_out, last_out, out_offsets, out)


def _usage_groups(
    frame: pl.DataFrame,
    keys: Sequence[str],
    head: np.ndarray,
    n: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
    offsets: np.ndarray,
    sketches: np.ndarray,
) -> pl.DataFrame:
    """Usage rows of groups: the ``keys`` of each group's first row (``head``), its
    requests, first and last seen (as UTC times) and its sketch (list offsets and values)."""
    when = pl.Datetime("us", "UTC")
    return frame.select(keys)[head].with_columns(
        pl.Series("n_requests", n),
        pl.Series("first_seen", first).cast(when),
        pl.Series("last_seen", last).cast(when),
        _list_series("variants", offsets, sketches),
    )


def _list_series(name: str, offsets: np.ndarray, values: np.ndarray) -> pl.Series:
    return pl.Series(name, pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values)))


def _list_buffers(lists: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and values of a list column (a null list is empty)."""
    offsets = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum(lists.list.len().fill_null(0).to_numpy(), out=offsets[1:])
    return offsets, lists.list.explode(keep_nulls=False, empty_as_null=False).to_numpy()


def sketch_union_by(
    frame: pl.DataFrame, keys: Sequence[str], counts: str, sketches: str
) -> pl.DataFrame:
    """``frame`` grouped by ``keys``: the number of rows (``n_rows``), the sum of
    ``counts`` and the :func:`sketch_union` of ``sketches`` of each group.

    The same as the polars group-by, in one sorted pass instead of a list per group.
    """
    offsets, hashes = _list_buffers(frame.get_column(sketches))
    n = frame.get_column(counts).cast(pl.Int64).to_numpy()
    key, order = _group_key(frame, keys)
    head, rows, n_out, _, _, out_offsets, out = _sketch_groups(
        key, order, offsets, hashes, n, n, n, SKETCH_SIZE
    )
    return frame.select(keys)[head].with_columns(
        pl.Series("n_rows", rows),
        pl.Series(counts, n_out),
        _list_series(sketches, out_offsets, out),
    )


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
    day_counts: pl.DataFrame | None = None
    """With ``by_day``: ``counts`` per ``day`` (rows whose timestamp could not be read
    have no day, and count in ``counts`` alone)."""


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


def _row_columns(source: Source, by_day: bool) -> tuple[pl.LazyFrame, list[str]]:
    """Every row reduced to the small columns the aggregates need (one streaming plan).

    The costly per-row work (template skeletons, capability patterns, networks,
    prompt hashes) happens here, inside the streaming engine, so it runs on all
    cores and the prompt text never leaves the plan. Returns the plan and the
    log kinds it carries a column for.
    """
    cols = set(source.columns)
    # With a separate accounts table, the rows stay unjoined: its columns are
    # joined once per account after aggregation (see extract_parts).
    lf = source.frame if source.account_table is None else source.log_rows
    assert lf is not None
    schema = lf.collect_schema().names()
    log_kinds = [k for k, c in LOG_VALUE_KINDS.items() if c in cols and k not in DERIVED_KINDS]
    has_prompt = "prompt" in cols
    prompt = pl.col("prompt")
    exprs: list[pl.Expr] = [
        pl.col("account_id"),
        pl.col("timestamp"),
        pl.col("_bad"),
        *((pl.col(f) if f in schema else pl.lit(False)).alias(f) for f in ROW_FLAGS.values()),
        # The template key comes with the capability classes, below.
        *[_value_expr(kind).alias(f"_v_{kind}") for kind in log_kinds if kind != "template"],
        (prompt_hash(prompt) if has_prompt else pl.lit(None, pl.UInt64)).alias("_ph"),
        (pl.col("input_tokens") if "input_tokens" in cols else pl.lit(None, pl.Int64)).alias(
            "input_tokens"
        ),
        (pl.col("output_tokens") if "output_tokens" in cols else pl.lit(None, pl.Int64)).alias(
            "output_tokens"
        ),
        (pl.col("org_id") if "org_id" in cols else pl.lit(None, pl.String)).alias("org_id"),
    ]
    if has_prompt:
        exprs.append(prompt.is_not_null().alias("_prompt"))
        # The template key and the capability classes come from one pass over the bytes.
        exprs.append(prompt_features(prompt).alias("_features"))
    exprs.extend(pl.col(c) for c in _account_columns(cols) if c in schema)
    if by_day:
        exprs.append(pl.col("timestamp").dt.date().alias("day"))
    plan = lf.select(exprs)
    if has_prompt:
        features = pl.col("_features").struct
        plan = plan.with_columns(
            features.field("template").alias("_v_template"),
            *(features.field(name).alias(f"_{name}") for name in CAPABILITY_PATTERNS),
        ).drop("_features")
    return plan, log_kinds


def _account_columns(cols: set[str]) -> list[str]:
    """Account attribute columns present (joined from the accounts table or in the logs)."""
    return sorted(
        {c for c in ACCOUNT_VALUE_KINDS.values() if c in cols}
        | ({"billing_country"} & cols)
        | ({"email"} & cols)
    )


DERIVED_KINDS: dict[str, tuple[str, Callable[[pl.Expr], pl.Expr]]] = {"net": ("ip", ip_network)}
"""Kinds whose value is a function of another kind's value: aggregated from its usage
rows (one per account and address) rather than computed for every request."""


def _aggregate(batch: pl.DataFrame, log_kinds: Sequence[str], by_day: bool) -> Parts:
    """The parts of one batch of row columns (see :func:`_row_columns`)."""
    sums = [pl.len().alias("rows"), *malformed_sums()]
    day_counts = None
    if by_day:  # the batch's counts are its days' (and the dayless rows')
        per_day = batch.group_by("day").agg(s.cast(pl.Int64) for s in sums)
        counts_row = per_day.drop("day").sum().row(0, named=True)
        day_counts = per_day.filter(pl.col("day").is_not_null())
    else:
        counts_row = batch.select(sums).row(0, named=True)
    counts = {k: int(v or 0) for k, v in counts_row.items()}
    # Account ids and values as categories: the group-bys key on integers, and
    # the parts held for merging store each distinct text once.
    category = pl.Categorical()
    # Most batches have no unusable row: filtering would copy every column for nothing.
    bad = batch.get_column("_bad")
    usable = batch.filter(bad.is_null()) if bad.null_count() < batch.height else batch
    good_rows = usable.with_columns(
        pl.col("account_id").cast(category),
        *(pl.col(f"_v_{kind}").cast(category) for kind in log_kinds),
    )
    good = good_rows.lazy()
    day = ["day"] if by_day else []
    seen = [
        pl.len().cast(pl.Int64).alias("n_requests"),
        pl.col("timestamp").min().alias("first_seen"),
        pl.col("timestamp").max().alias("last_seen"),
    ]
    usage_qs = []
    for kind in log_kinds:
        rows = good.select(
            *day, "account_id", "timestamp", "_ph", pl.col(f"_v_{kind}").alias("value")
        ).filter(pl.col("value").is_not_null())
        if kind == "template":
            usage_qs.append(_template_usage(rows.collect(), day).lazy())
            continue
        usage_qs.append(
            rows.group_by(*day, "account_id", "value")
            .agg(*seen, pl.lit(None, pl.List(pl.UInt64)).alias("variants"))
            .with_columns(kind=pl.lit(kind, category))
        )
    activity_q = good.group_by(
        "account_id", (pl.col("timestamp").dt.epoch("s") // SLOT_SECONDS).alias("slot")
    ).agg(pl.len().cast(pl.Int32).alias("n"))
    schema = batch.schema
    flag = [c for c in ("_prompt", *(f"_{n}" for n in CAPABILITY_PATTERNS)) if c in schema]
    acct_cols = _account_columns(set(schema))
    accounts_q = good.group_by(*day, "account_id").agg(
        *seen,
        pl.col("input_tokens").sum().cast(pl.Int64),
        pl.col("output_tokens").sum().cast(pl.Int64),
        *[
            pl.col(c).sum().cast(pl.Int64).alias(f"n{c}s" if c == "_prompt" else f"n{c}")
            for c in flag
        ],
        pl.col("org_id").min(),
        *[pl.col(c).min() for c in acct_cols],
    )
    usage_cols = [
        *day,
        "account_id",
        "kind",
        "value",
        "n_requests",
        "first_seen",
        "last_seen",
        "variants",
    ]
    # Ids, kinds and values stay categories while batches merge (see extract_parts).
    frames = pl.collect_all([*(q.select(usage_cols) for q in usage_qs), activity_q, accounts_q])
    usage_frames = frames[: len(usage_qs)]
    for kind, (base, to_value) in DERIVED_KINDS.items():
        if base in log_kinds:
            base_usage = usage_frames[log_kinds.index(base)]
            usage_frames.append(_derived_usage(base_usage, kind, to_value).select(usage_cols))
    usage = (
        pl.concat(usage_frames)
        if usage_frames
        else pl.DataFrame(schema={c: USAGE_SCHEMA.get(c, pl.Date()) for c in usage_cols})
    )
    accounts = frames[-1]
    if "n_prompts" not in accounts.columns:
        accounts = accounts.with_columns(
            pl.lit(0, pl.Int64).alias(c) for c in ACCOUNT_COUNTERS if c not in accounts.columns
        )
    return Parts(usage, frames[-2], accounts, counts, (), day_counts)


def _derived_usage(
    base: pl.DataFrame, kind: str, to_value: Callable[[pl.Expr], pl.Expr]
) -> pl.DataFrame:
    """Usage of a derived ``kind`` from its base kind's usage (``base``, grouped by its
    keys, ``account_id`` and ``value``): the function is applied to each distinct base
    value once (far fewer than usage rows) and joined back."""
    category = pl.Categorical()
    keys = [c for c in base.columns if c == "day"]
    derived = (
        base.select(pl.col("value").unique())
        .with_columns(to_value(pl.col("value").cast(pl.String)).cast(category).alias("_derived"))
        .filter(pl.col("_derived").is_not_null())
    )
    return (
        base.lazy()
        .join(derived.lazy(), on="value")
        .group_by(*keys, "account_id", "_derived")
        .agg(*_summed_usage())
        .rename({"_derived": "value"})
        .with_columns(kind=pl.lit(kind, category))
        .collect()
    )


def _template_usage(rows: pl.DataFrame, day: Sequence[str]) -> pl.DataFrame:
    """Template usage of one batch's requests (``account_id``, ``value``, ``timestamp``,
    ``_ph``): the group-by with a bottom-k sketch of the prompt hashes (nulls left out),
    done in one sorted pass.
    """
    keys = [*day, "account_id", "value"]
    key, order = _group_key(rows, keys)
    hashes = rows.get_column("_ph")
    head, n, first, last, offsets, sketches = _sketch_requests(
        key,
        order,
        rows.get_column("timestamp").to_physical().to_numpy(),
        hashes.fill_null(0).to_numpy(),
        hashes.is_not_null().to_numpy(),
        SKETCH_SIZE,
    )
    return _usage_groups(rows, keys, head, n, first, last, offsets, sketches).with_columns(
        kind=pl.lit("template", pl.Categorical())
    )


BATCH_ROWS = 1_000_000
"""Rows aggregated at a time: memory follows the batch and the evidence, not the input."""

MERGE_ROWS = 6_000_000
"""Usage rows of batch parts held before they are merged into merged parts (then held to
at least half the merged size)."""

FIRST_MERGE_ROWS = 24_000_000
"""Usage rows of batch parts held before the first merge, when nothing is merged yet:
merging early would merge the same groups again and again while the evidence grows."""

RowsRead = Callable[[int], None]
"""Called with the number of rows read so far, as extraction goes."""


MERGE_SHARDS = 8
"""Parts are merged in this many account shards, so a merge holds one shard at a time."""

MERGE_KEEP_FREE = 512 << 20
"""A merge hands the C heap's free pages back to the system only when glibc counts more
free bytes than this (see :func:`release_freed_memory`); below it the next batches reuse
them without faulting them in again. glibc's count includes pages handed back before,
so once past it, every merge hands them back."""


class _Accumulator:
    """Aggregates batches as they arrive and merges the parts as they pile up.

    Each part is split into account shards. A shard's first merge waits for a
    pending load near ``FIRST_MERGE_ROWS / MERGE_SHARDS``; after it, pending
    parts are merged in once they outgrow half of the merged part (and a floor
    near ``MERGE_ROWS / MERGE_SHARDS``). Both sizes are staggered by shard. So a
    long run holds at most half again the merged evidence in pending groups, a
    short one merges little more than once, and a merge never holds more than
    one shard's worth of intermediate groups (the last merges, after the final
    batch, two at a time). Freed C-heap pages go back to the
    system after a merge once glibc counts more than ``MERGE_KEEP_FREE`` bytes free.
    """

    def __init__(self, log_kinds: Sequence[str], by_day: bool, on_rows: RowsRead | None) -> None:
        self.log_kinds, self.by_day, self.on_rows = log_kinds, by_day, on_rows
        self.keys = ["day"] if by_day else []
        self.merged: list[Parts | None] = [None] * MERGE_SHARDS
        self.pending: list[list[Parts]] = [[] for _ in range(MERGE_SHARDS)]
        # Shards fill at the same pace; smallest merge sizes spread over a doubling
        # (shard s from 2**(-s/MERGE_SHARDS) of the base) keep their merges apart, so
        # the shards never all hold a full pending load at once.
        self.first, self.floor = (
            [int(rows / MERGE_SHARDS * 2 ** (-s / MERGE_SHARDS)) for s in range(MERGE_SHARDS)]
            for rows in (FIRST_MERGE_ROWS, MERGE_ROWS)
        )
        self.rows = 0

    def add(self, batch: pl.DataFrame) -> None:
        if batch.height == 0:
            return
        part = _aggregate(batch, self.log_kinds, self.by_day)
        self.rows += part.counts["rows"]
        if self.on_rows is not None:
            self.on_rows(self.rows)
        for shard, piece in enumerate(_shards(part)):
            self.pending[shard].append(piece)
            size = sum(p.usage.height for p in self.pending[shard])
            merged = self.merged[shard]
            if merged is None:
                limit = self.first[shard]
            else:
                limit = max(self.floor[shard], merged.usage.height // 2)
            if size >= limit:
                self._merge_pending(shard)

    def _merge_pending(self, shard: int) -> None:
        merged = self.merged[shard]
        self.merged[shard] = _merge(([merged] if merged else []) + self.pending[shard], self.keys)
        self.pending[shard] = []
        release_freed_memory(keep=MERGE_KEEP_FREE)

    def result(self) -> Parts | None:
        # The last merges have the machine to themselves: two shards at a time, so
        # one's compiled sketch pass overlaps the other's group-bys.
        with ThreadPoolExecutor(max_workers=2) as pool:
            left = [s for s in range(MERGE_SHARDS) if self.pending[s]]
            list(pool.map(self._merge_pending, left))  # (raises a merge's error here)
        shards = [m for m in self.merged if m is not None]
        return _concat(shards) if shards else None


def _shards(part: Parts) -> list[Parts]:
    """``part`` split into ``MERGE_SHARDS`` parts of disjoint accounts (counts in the first)."""
    shard = (pl.col("account_id").hash() % MERGE_SHARDS).alias("_shard")

    def split(frame: pl.DataFrame) -> list[pl.DataFrame]:
        pieces = frame.with_columns(shard).partition_by("_shard", as_dict=True, include_key=False)
        return [pieces.get((s,), frame.clear()) for s in range(MERGE_SHARDS)]

    usage, activity, accounts = split(part.usage), split(part.activity), split(part.accounts)
    return [
        Parts(usage[s], activity[s], accounts[s], {}, part.columns)
        if s
        else Parts(usage[s], activity[s], accounts[s], part.counts, part.columns, part.day_counts)
        for s in range(MERGE_SHARDS)
    ]


def _concat(parts: Sequence[Parts]) -> Parts:
    """Join the parts of disjoint sets of accounts."""
    return Parts(
        pl.concat([p.usage for p in parts], rechunk=False),
        pl.concat([p.activity for p in parts], rechunk=False),
        pl.concat([p.accounts for p in parts], rechunk=False),
        _sum_counts(parts),
        _union_columns(parts),
        _sum_day_counts(parts),
    )


def extract_parts(
    source: Source,
    *,
    by_day: bool = False,
    batch_rows: int = BATCH_ROWS,
    on_rows: RowsRead | None = None,
) -> Parts:
    """Aggregate the rows of ``source`` in one streaming pass over the input.

    Rows arrive in batches of about ``batch_rows``; each batch is aggregated into
    parts, and parts are merged whenever the pending ones outgrow half of what is
    already merged, so memory stays near the size of the evidence whatever the
    number of rows or files, and each row is read and parsed once.
    """
    plan, log_kinds = _row_columns(source, by_day)
    acc = _Accumulator(log_kinds, by_day, on_rows)
    # The engine hands each batch over and waits for it to be aggregated, so
    # batches never pile up faster than they are reduced. The rows are decoded
    # here: a damaged file is named (see read_errors).
    with read_errors(source.files):
        plan.sink_batches(acc.add, chunk_size=batch_rows, maintain_order=False)
    merged = acc.result() or _aggregate(plan.head(0).collect(), log_kinds, by_day)
    release_freed_memory()
    # Usage and activity stay categorical (finish and write_evidence turn them
    # into text as they sort them); the accounts become text now.
    accounts = merged.accounts.with_columns(pl.col(pl.Categorical).cast(pl.String))
    counts = {**merged.counts, **source.account_problems}
    if source.account_table is not None:
        table = source.account_table.collect()
        # Laid out as aggregating joined rows would: attributes last, by name.
        wanted = [c for c in _account_columns(set(source.columns)) if c in table.columns]
        accounts = accounts.join(
            table.select("account_id", *wanted), on="account_id", how="left"
        ).select(*accounts.columns, *wanted)
        ids = accounts.select("account_id").unique()
        counts["accounts_not_in_table"] = (
            ids.height - ids.join(table.select("account_id"), on="account_id", how="semi").height
        )
    columns = tuple(sorted(source.columns))
    return Parts(merged.usage, merged.activity, accounts, counts, columns, merged.day_counts)


def _merge_usage(frames: Sequence[pl.DataFrame], keys: Sequence[str] = ()) -> pl.DataFrame:
    usage = pl.concat(frames, how="diagonal_relaxed")
    group = [*keys, "account_id", "kind", "value"]
    # Only templates carry prompt sketches; the other kinds skip the list work.
    # Merges run their group-bys lazily: polars 2.1 hands a collected plan to its
    # streaming engine, which groups two to three times faster than eager calls.
    is_template = pl.col("kind") == "template"
    templates = usage.filter(is_template)
    offsets, hashes = _list_buffers(templates.get_column("variants"))
    merged = _sketched_usage(
        templates,
        [*keys, "account_id", "value"],
        templates.get_column("n_requests").to_numpy(),
        templates.get_column("first_seen").to_physical().to_numpy(),
        templates.get_column("last_seen").to_physical().to_numpy(),
        offsets,
        hashes,
    )
    return pl.concat(
        [
            merged.with_columns(kind=pl.lit("template", usage.schema["kind"])).select(
                *group, "n_requests", "first_seen", "last_seen", "variants"
            ),
            usage.lazy().filter(~is_template).group_by(group).agg(*_summed_usage()).collect(),
        ]
    )


def _summed_usage() -> list[pl.Expr]:
    """Aggregations of usage rows without prompt sketches into one: requests summed,
    first and last seen, no sketch."""
    return [
        pl.col("n_requests").sum(),
        pl.col("first_seen").min(),
        pl.col("last_seen").max(),
        pl.lit(None, pl.List(pl.UInt64)).alias("variants"),
    ]


def _merge_accounts(frames: Sequence[pl.DataFrame], keys: Sequence[str] = ()) -> pl.DataFrame:
    acc = pl.concat(frames, how="diagonal_relaxed")
    fixed = (*ACCOUNT_COUNTERS, *keys, "account_id", "last_seen")
    others = [c for c in acc.columns if c not in fixed]
    return (
        acc.lazy()
        .group_by(*keys, "account_id")
        .agg(
            *[pl.col(c).sum() for c in ACCOUNT_COUNTERS if c in acc.columns],
            pl.col("last_seen").max(),
            *[pl.col(c).min() for c in others],
        )
        .collect()
    )


def _sum_counts(parts: Sequence[Parts]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in parts:
        for k, v in p.counts.items():
            counts[k] = counts.get(k, 0) + v
    return counts


def _sum_day_counts(parts: Sequence[Parts]) -> pl.DataFrame | None:
    frames = [p.day_counts for p in parts if p.day_counts is not None]
    if not frames:
        return None
    return pl.concat(frames).group_by("day").agg(pl.all().sum()).sort("day")


def _union_columns(parts: Sequence[Parts]) -> tuple[str, ...]:
    return tuple(sorted(set().union(*(p.columns for p in parts))))


def _merge(parts: Sequence[Parts], keys: Sequence[str] = ()) -> Parts:
    """Merge the parts of disjoint sets of rows, keeping ``keys`` (``day``) apart."""
    if not parts:
        raise ValueError("merging needs at least one part")
    if len(parts) == 1:
        return parts[0]
    activity = (
        # Activity is categorical from extraction and text from an evidence store.
        pl.concat([p.activity for p in parts], how="vertical_relaxed")
        .lazy()
        .group_by("account_id", "slot")
        .agg(pl.col("n").sum().cast(pl.Int32))
        .collect()
    )
    return Parts(
        _merge_usage([p.usage for p in parts], keys),
        activity,
        _merge_accounts([p.accounts for p in parts], keys),
        _sum_counts(parts),
        _union_columns(parts),
        _sum_day_counts(parts),
    )


def merge_parts(parts: Sequence[Parts]) -> Parts:
    """Merge the parts of disjoint sets of rows (days, files) into the parts of their union."""
    return _merge(
        [
            replace(
                p,
                usage=p.usage.drop("day", strict=False),
                accounts=p.accounts.drop("day", strict=False),
            )
            for p in parts
        ]
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
        accounts = _merge_accounts([accounts.drop("day")])
    if "day" in usage_logs.columns:
        usage_logs = _merge_usage([usage_logs.drop("day")])
    created = pl.col("created_at") if "created_at" in accounts.columns else pl.col("first_seen")
    # Each usage and activity row also names its account by number, its row in the
    # accounts table: the later stages join on that number rather than on the text.
    accounts = accounts.sort("account_id").with_columns(
        account_idx=pl.int_range(pl.len(), dtype=pl.Int32)
    )
    account_rows = _AccountRows(accounts.select("account_id", "account_idx"))
    # Values and account ids stay categories until sorted (see _sorted_by_text).
    size = dict(usage_logs.get_column("kind").value_counts().cast({"kind": pl.String}).iter_rows())
    # The kind is the same text on every row of a table: a literal, not a cast per row.
    tables: dict[str, pl.LazyFrame] = {
        kind: usage_logs.lazy().filter(pl.col("kind") == kind).with_columns(kind=pl.lit(kind))
        for kind in size
    }
    for kind in acct_kinds:
        tables[kind] = (
            accounts.lazy()
            .select(
                "account_id",
                pl.lit(kind).alias("kind"),
                _account_value_expr(kind).alias("value"),
                pl.col("n_requests"),
                created.alias("first_seen"),
                created.alias("last_seen"),
                pl.lit(None, pl.List(pl.UInt64)).alias("variants"),
                "account_idx",
            )
            .filter(pl.col("value").is_not_null())
        )

    # Sorted by kind, value, account; two kinds at a time (their polars and
    # numpy steps overlap), so memory holds the parts, the sorted result and two
    # kinds in between. Each kind is one chunk: the later stages' filters and
    # joins over hundreds of small chunks held twice the memory.
    def sorted_kind(kind: str) -> pl.DataFrame:
        frame = (
            tables[kind]
            .with_columns(
                n_variants=pl.when(pl.col("kind") == "template").then(
                    sketch_count(pl.col("variants"))
                )
            )
            .select(*USAGE_SCHEMA, *(["account_idx"] if kind in acct_kinds else []))
            .collect()
            .rechunk()
        )
        return _sorted_by_text(account_rows.numbered(frame), ["value", "account_id"]).cast(
            USAGE_SCHEMA
        )

    # The activity table is sorted beside them; the largest tables go first, so the
    # two threads finish together.
    with ThreadPoolExecutor(max_workers=2) as pool:
        activity = pool.submit(
            lambda: _sorted_by_text(
                account_rows.numbered(parts.activity.rechunk()), ["account_id", "slot"]
            )
        )
        pending = {
            kind: pool.submit(sorted_kind, kind)
            for kind in sorted(tables, key=lambda k: (-size.get(k, accounts.height), k))
        }
        sorted_kinds = [pending[kind].result() for kind in sorted(tables)]
        del pending
    empty = pl.DataFrame(schema={**USAGE_SCHEMA, "account_idx": pl.Int32()})
    usage = pl.concat(sorted_kinds or [empty], rechunk=False)
    del sorted_kinds
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
        activity=activity.result(),
        accounts=accounts,
        rows=rows,
        numbered_ids=accounts.get_column("account_id"),
        malformed={k: v for k, v in counts.items() if v},
        columns=parts.columns,
        unused_signals=tuple(unused),
    )


class _AccountRows:
    """Account numbers: each account's row in ``ids`` (``account_id``, ``account_idx``).

    A category column of ids is numbered through its category codes, one lookup
    per row; a text column by a join.
    """

    def __init__(self, ids: pl.DataFrame) -> None:
        self.ids = ids
        codes = ids.get_column("account_id").cast(pl.Categorical()).to_physical().to_numpy()
        self.of_code = np.full(int(codes.max(initial=0)) + 1, -1, dtype=np.int32)
        self.of_code[codes] = ids.get_column("account_idx").to_numpy()

    def numbered(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` with ``account_idx`` (null for an id not in ``ids``) if it has none."""
        if "account_idx" in frame.columns:
            return frame
        column = frame.get_column("account_id")
        if column.dtype != pl.Categorical:
            return frame.join(self.ids, on="account_id", how="left", maintain_order="left")
        # (a null id gets a code past the end: no number)
        codes = column.to_physical().fill_null(len(self.of_code)).to_numpy()
        known = codes < len(self.of_code)
        rows = np.where(known, self.of_code[np.where(known, codes, 0)], -1)
        number = pl.Series("account_idx", rows, dtype=pl.Int32)
        return frame.with_columns(number.set(number < 0, None))


def _text_ranks(column: pl.Series) -> tuple[np.ndarray, pl.Series]:
    """Each row's rank among a category column's distinct texts, and those texts in rank
    order.

    Only the distinct texts are sorted: rows are numbered by their category.
    """
    codes = column.to_physical().to_numpy()
    row_of = np.full(int(codes.max()) + 1, -1, dtype=np.int64)
    row_of[codes] = np.arange(len(codes))
    present = np.flatnonzero(row_of >= 0)
    texts = column.gather(row_of[present]).cast(pl.String)
    order = texts.arg_sort().to_numpy()
    rank = np.empty(len(row_of), dtype=np.int64)
    rank[present[order]] = np.arange(len(present))
    return rank[codes], texts.gather(order)


def _sorted_by_text(frame: pl.DataFrame, by: Sequence[str]) -> pl.DataFrame:
    """``frame.sort(by)`` with text and category columns in text order, by one integer sort;
    the category columns of ``by`` come back as text.

    Sorting millions of rows on two text or category columns compares text at
    every step; ranking each column's distinct values once and sorting one
    packed integer key gives the same order several times faster. A category
    column's text is then its distinct texts gathered by rank: each row's text
    is shared with the other rows of its value, not copied for every row as a
    cast would.
    """
    categories = [c for c in by if frame.schema[c] == pl.Categorical]
    if frame.height == 0 or any(frame.get_column(c).null_count() for c in by):
        return _sorted_as_text(frame, by, categories)
    key = np.zeros(frame.height, dtype=np.int64)
    span = 1
    texts: dict[str, tuple[np.ndarray, pl.Series]] = {}
    for name in by:
        column = frame.get_column(name)
        if column.dtype == pl.Categorical:
            rank, distinct = _text_ranks(column)
            size = len(distinct)
            texts[name] = (rank, distinct)
        elif column.dtype == pl.String:
            # Text is ranked as it is: making it a category first costs more.
            rank = (column.rank("dense") - 1).cast(pl.Int64).to_numpy()
            size = int(rank.max()) + 1
        elif column.dtype.is_integer():
            values = column.to_numpy().astype(np.int64)
            low = int(values.min())
            rank, size = values - low, int(values.max()) - low + 1
        else:
            return _sorted_as_text(frame, by, categories)
        span *= size
        if span >= 1 << 62:
            return _sorted_as_text(frame, by, categories)
        key = key * size + rank
    order = argsort_keys(key)
    # The category columns are rebuilt as text, so only the others are gathered.
    return (
        frame.drop(list(texts))[order]
        .with_columns(
            distinct.gather(rank[order]).alias(name) for name, (rank, distinct) in texts.items()
        )
        .select(frame.columns)
    )


def _sorted_as_text(frame: pl.DataFrame, by: Sequence[str], categories: list[str]) -> pl.DataFrame:
    """``frame.sort(by)`` with the ``categories`` columns cast to text."""
    return frame.sort(by).with_columns(pl.col(categories).cast(pl.String))


def extract(
    source: Source, *, batch_rows: int = BATCH_ROWS, on_rows: RowsRead | None = None
) -> Evidence:
    """Read the rows of ``source`` and build the evidence tables.

    One streaming pass over the input (see :func:`extract_parts`); ``on_rows``
    hears how many rows have been read. Signals whose columns are absent are
    listed in ``unused_signals``.
    """
    evidence = finish(extract_parts(source, batch_rows=batch_rows, on_rows=on_rows))
    release_freed_memory()
    return evidence
