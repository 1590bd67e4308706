"""Shareable indicators of the suspected clusters, as a table and as a STIX 2.1 bundle.

An indicator is an attribute value that two or more members of one suspected
cluster used (an IP, a network, a TLS fingerprint, a user agent, a prompt
template, a payment fingerprint, a mailbox), or a member account itself.

Values that identify a customer (mailboxes, payment fingerprints, account
ids) never leave in clear: each becomes ``hmac-sha256:`` and the hex HMAC-SHA256
of the value under a key shared with partners, so a partner holding the same
key can match its own customers without learning anyone else's. Mailboxes are
hashed in their normalised form (lowercase, ``+tag`` removed, dots removed for
Gmail), so partners must normalise the same way. Network infrastructure, user
agents and prompt templates (the masked skeleton, never a prompt's text) are
shared as they are; a template also carries a ``sha256:`` fingerprint of its
skeleton for exact matching.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import polars as pl

from distill_forensics.errors import InputError
from distill_forensics.pipeline import ClusterResult

__all__ = [
    "HASHED_TYPES",
    "INDICATOR_TYPES",
    "MIN_SHARE",
    "STIX_NAMESPACE",
    "indicators",
    "keyed_hash",
    "stix_pattern",
    "to_stix",
]

INDICATOR_TYPES: tuple[str, ...] = (
    "ipv4-addr",
    "ipv6-addr",
    "network",
    "tls-fingerprint",
    "user-agent",
    "prompt-template",
    "payment-fingerprint",
    "email",
    "account",
)
"""Indicator types, in the order rows are listed within a cluster."""

MIN_SHARE = 0.5
"""Share of a value's accounts that must be in suspected clusters for it to be shared."""

HASHED_TYPES = frozenset({"payment-fingerprint", "email", "account"})
"""Types whose values identify a customer and are shared only as keyed hashes."""

# Evidence kind -> indicator type (IPs are split into v4 and v6 by their text).
_KIND_TYPES: dict[str, str] = {
    "ip": "ip",
    "signup_ip": "ip",
    "net": "network",
    "signup_net": "network",
    "tls": "tls-fingerprint",
    "ua": "user-agent",
    "template": "prompt-template",
    "payment": "payment-fingerprint",
    "email": "email",
}

STIX_NAMESPACE = uuid.UUID("6f0c7f3e-4a53-5c1e-9a7d-2d1b0e6a9c41")
"""Namespace of the UUIDv5 ids: the same indicator always gets the same id."""

CUSTOM_OBJECT = "x-distill-forensics"
"""Object type of the custom observables in patterns (fingerprints, templates, hashes)."""

PRODUCER = "distill-forensics"

_COLUMNS = [
    "cluster_id",
    "type",
    "value",
    "n_accounts",
    "first_seen",
    "last_seen",
    "score",
    "fingerprint",
    "n_accounts_all",
]


def keyed_hash(value: str, key: bytes) -> str:
    """``hmac-sha256:`` and the hex HMAC-SHA256 of ``value`` (UTF-8) under ``key``.

    >>> keyed_hash("acct_1", b"k")[:20]
    'hmac-sha256:d0c3c7d7'
    """
    return "hmac-sha256:" + hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def _sha256(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode("utf-8")).hexdigest()


def _uses(usage: pl.DataFrame, key: str) -> pl.DataFrame:
    """The usage rows as integers, for group-bys that key on numbers rather than text:
    the account (``key``), the indicator ``type`` as its position in
    :data:`INDICATOR_TYPES` (IPs split into v4 and v6 by their text; null for kinds that
    make no indicator), the ``value`` as its category number (equal text, equal number,
    whatever the kind, so an address seen in requests and at signup is one value) and
    the first and last time seen, in the usage table's row order. The numbers hold
    within one call only: polars drops its category mapping once nothing uses it."""
    position = {t: i for i, t in enumerate(INDICATOR_TYPES)}
    by_kind = pl.col("kind").replace_strict(
        {kind: position.get(t, -1) for kind, t in _KIND_TYPES.items()},
        default=None,
        return_dtype=pl.Int8,
    )
    ip_type = (
        pl.when(pl.col("value").str.contains(":", literal=True))
        .then(pl.lit(position["ipv6-addr"], pl.Int8))
        .otherwise(pl.lit(position["ipv4-addr"], pl.Int8))
    )
    # A lazy plan: at 16 M requests, an eager select over the usage table (a chunk per
    # kind) held 2 GB more.
    return (
        usage.lazy()
        .select(
            key,
            pl.when(by_kind == -1).then(ip_type).otherwise(by_kind).alias("type"),
            pl.col("value").cast(pl.Categorical()).to_physical().alias("value"),
            "first_seen",
            "last_seen",
        )
        .collect()
    )


def _mapping(values: pl.Series, func: Callable[[str], str], name: str) -> pl.DataFrame:
    """A join table ``value -> name`` computed once per distinct value."""
    distinct = values.unique().sort().to_list()
    return pl.DataFrame(
        {"value": distinct, name: [func(v) for v in distinct]},
        schema={"value": pl.String, name: pl.String},
    )


def indicators(
    result: ClusterResult, hash_key: bytes, *, min_share: float = MIN_SHARE
) -> pl.DataFrame:
    """One row per indicator behind each suspected cluster, customer identifiers hashed.

    A value is an indicator of a cluster when two or more of its members used
    it and at least ``min_share`` of all the accounts that used it sit in
    suspected clusters: a common SDK user agent or a public benchmark's
    template shared by two members would only make partners block innocent
    customers. Every member account is an indicator too.

    Columns: ``cluster_id, type, value, n_accounts`` (members of the cluster
    using it), ``first_seen, last_seen, score``, ``fingerprint`` (``sha256:`` of
    a prompt template's skeleton, else null) and ``n_accounts_all`` (accounts in
    the whole input using it). Ordered by cluster rank, type, then most-used first.

    >>> iocs = indicators(result, b"key shared with partners")  # doctest: +SKIP
    """
    if not hash_key:
        raise InputError(
            "no hash key; set --hash-key or DISTILL_FORENSICS_HASH_KEY "
            "(the key shared with partners for matching hashed identifiers)"
        )
    if not 0.0 <= min_share <= 1.0:
        raise InputError(f"min_share {min_share} is not a share; use a number from 0 to 1")
    members = result.members.filter(pl.col("suspected")).select(
        "account_id", "cluster_id", "first_seen", "last_seen"
    )
    clusters = result.clusters.filter(pl.col("suspected")).select(
        "cluster_id", pl.col("rank").cast(pl.Int64), pl.col("score").cast(pl.Float64)
    )
    # Types and values as numbers, so the group-bys key on integers, not on text; the
    # accounts are counted distinct (kinds of one type merge into one value).
    evidence = result.evidence
    suspects, key = evidence.keyed(evidence.usage, members.select("account_id", "cluster_id"))
    uses = _uses(evidence.usage, key)
    in_clusters = (
        uses.lazy()
        .filter(pl.col("type").is_not_null())
        .join(suspects.lazy(), on=key)
        .group_by("cluster_id", "type", "value")
        .agg(
            pl.col(key).n_unique().cast(pl.Int64).alias("n_accounts"),
            pl.col("first_seen").min(),
            pl.col("last_seen").max(),
        )
        .filter(pl.col("n_accounts") >= 2)
        .collect(engine="streaming")
    )
    # Only for the values two members of a cluster share: who else uses them.
    in_suspected = pl.col(key).is_in(suspects.get_column(key).implode())
    values = in_clusters.lazy().select("type", "value").unique()
    overall = (
        uses.lazy()
        .join(values, on=["type", "value"], how="semi")
        .group_by("type", "value")
        .agg(
            pl.col(key).n_unique().cast(pl.Int64).alias("n_accounts_all"),
            pl.col(key).filter(in_suspected).n_unique().cast(pl.Int64).alias("_n_suspected"),
        )
        .collect(engine="streaming")
    )
    # Each value's text from one of its rows.
    rows = (
        uses.lazy()
        .with_row_index("_row")
        .join(values.select("value"), on="value", how="semi")
        .unique("value", keep="any")
        .select("value", "_row")
        .collect()
    )
    texts = rows.with_columns(
        evidence.usage.get_column("value").gather(rows.get_column("_row")).alias("_text")
    ).lazy()
    type_names = pl.col("type").replace_strict(
        dict(enumerate(INDICATOR_TYPES)), return_dtype=pl.String
    )
    shared = (
        in_clusters.lazy()
        .join(overall.lazy(), on=["type", "value"])
        .filter(pl.col("_n_suspected") >= min_share * pl.col("n_accounts_all"))
        .join(texts, on="value")
        .with_columns(type_names, pl.col("_text").alias("value"))
        .collect()
    )
    accounts = members.select(
        "cluster_id",
        pl.lit("account").alias("type"),
        pl.col("account_id").alias("value"),
        pl.lit(1, pl.Int64).alias("n_accounts"),
        "first_seen",
        "last_seen",
        pl.lit(1, pl.Int64).alias("n_accounts_all"),
    )
    rows = pl.concat([shared.select(accounts.columns), accounts]).join(clusters, on="cluster_id")

    templates = rows.filter(pl.col("type") == "prompt-template").get_column("value")
    fingerprints = _mapping(templates, _sha256, "fingerprint")
    secret = rows.filter(pl.col("type").is_in(list(HASHED_TYPES))).get_column("value")
    hashes = _mapping(secret, lambda v: keyed_hash(v, hash_key), "_hashed")
    order = pl.col("type").replace_strict(
        {t: i for i, t in enumerate(INDICATOR_TYPES)}, return_dtype=pl.Int32
    )
    out = (
        rows.join(fingerprints, on="value", how="left")
        .with_columns(
            pl.when(pl.col("type") == "prompt-template")
            .then(pl.col("fingerprint"))
            .alias("fingerprint"),
        )
        .join(hashes, on="value", how="left")
        .with_columns(
            pl.when(pl.col("type").is_in(list(HASHED_TYPES)))
            .then(pl.col("_hashed"))
            .otherwise(pl.col("value"))
            .alias("value")
        )
        .sort(
            pl.col("rank"),
            order,
            pl.col("n_accounts"),
            pl.col("value"),
            descending=[False, False, True, False],
        )
    )
    return out.select(_COLUMNS)


def _timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a Z, as STIX wants (naive means UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _stix_string(text: str) -> str:
    """A STIX pattern string literal: quoted, backslashes and quotes escaped."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def stix_pattern(kind: str, value: str) -> str:
    """The STIX pattern of one indicator.

    >>> stix_pattern("network", "203.0.113.0/24")
    "[ipv4-addr:value ISSUBSET '203.0.113.0/24']"
    >>> stix_pattern("user-agent", "it's")
    "[x-distill-forensics:user_agent = 'it\\\\'s']"
    """
    if kind in ("ipv4-addr", "ipv6-addr"):
        return f"[{kind}:value = {_stix_string(value)}]"
    if kind == "network":
        family = "ipv6-addr" if ":" in value else "ipv4-addr"
        return f"[{family}:value ISSUBSET {_stix_string(value)}]"
    # Property names in a pattern's object path cannot hold hyphens.
    return f"[{CUSTOM_OBJECT}:{kind.replace('-', '_')} = {_stix_string(value)}]"


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def _id(kind: str, *parts: str) -> str:
    return f"{kind}--{uuid.uuid5(STIX_NAMESPACE, chr(31).join(parts))}"


_DESCRIBED = {
    "ipv4-addr": "IPv4 address",
    "ipv6-addr": "IPv6 address",
    "network": "IP network",
    "tls-fingerprint": "TLS fingerprint",
    "user-agent": "user agent",
    "prompt-template": "prompt template (masked skeleton)",
    "payment-fingerprint": "payment fingerprint (keyed hash)",
    "email": "normalised mailbox (keyed hash)",
    "account": "account id (keyed hash)",
}


def to_stix(df: pl.DataFrame, *, created: datetime | None = None) -> dict[str, Any]:
    """A STIX 2.1 bundle of ``df`` (from :func:`indicators`): the same table, the same bundle.

    Holds the producer ``identity``, one ``indicator`` per row and one
    ``grouping`` per cluster referencing its indicators. Ids are UUIDv5 of the
    type, value and cluster; ``created``/``modified`` are ``created`` (default:
    the latest ``last_seen`` in ``df``) and ``valid_from`` is the row's
    ``first_seen``, so nothing depends on the clock.

    >>> json.dumps(to_stix(indicators(result, key)), indent=2, sort_keys=True)  # doctest: +SKIP
    """
    if created is None:
        latest = df.get_column("last_seen").max() if df.height else None
        created = latest if isinstance(latest, datetime) else datetime(1970, 1, 1, tzinfo=UTC)
    stamp = _timestamp(created)
    identity_id = _id("identity", PRODUCER)
    identity = {
        "type": "identity",
        "spec_version": "2.1",
        "id": identity_id,
        "created": stamp,
        "modified": stamp,
        "name": PRODUCER,
        "identity_class": "system",
        "description": "Offline detector of coordinated account networks in AI API logs.",
    }
    indicator_objects: list[dict[str, Any]] = []
    refs: dict[str, list[str]] = {}
    cluster_facts: dict[str, dict[str, Any]] = {}
    for row in df.iter_rows(named=True):
        cid, kind, value = row["cluster_id"], row["type"], row["value"]
        score = float(row["score"])
        ind_id = _id("indicator", kind, value, cid)
        who = "member of" if kind == "account" else f"used by {row['n_accounts']} members of"
        obj: dict[str, Any] = {
            "type": "indicator",
            "spec_version": "2.1",
            "id": ind_id,
            "created": stamp,
            "modified": stamp,
            "created_by_ref": identity_id,
            "name": f"{_DESCRIBED.get(kind, kind)} of cluster {cid}",
            "description": (
                f"{_upper_first(_DESCRIBED.get(kind, kind))} {who} suspected coordinated "
                f"account cluster {cid} (score {score:.1f} of 100); seen "
                f"{_timestamp(row['first_seen'])} to {_timestamp(row['last_seen'])}."
            ),
            "indicator_types": ["malicious-activity"],
            "labels": ["malicious-activity"],
            "pattern": stix_pattern(kind, value),
            "pattern_type": "stix",
            "pattern_version": "2.1",
            "valid_from": _timestamp(row["first_seen"]),
            "confidence": max(0, min(100, round(score))),
        }
        if row.get("fingerprint"):
            obj["x_distill_forensics_fingerprint"] = row["fingerprint"]
        indicator_objects.append(obj)
        refs.setdefault(cid, []).append(ind_id)
        facts = cluster_facts.setdefault(cid, {"score": score, "accounts": 0})
        facts["accounts"] += kind == "account"
    groupings = [
        {
            "type": "grouping",
            "spec_version": "2.1",
            "id": _id("grouping", cid),
            "created": stamp,
            "modified": stamp,
            "created_by_ref": identity_id,
            "name": f"distill-forensics cluster {cid}",
            "description": (
                f"Suspected coordinated account cluster {cid}: {facts['accounts']} accounts, "
                f"score {facts['score']:.1f} of 100."
            ),
            "context": "suspicious-activity",
            "object_refs": sorted(refs[cid]),
        }
        for cid, facts in cluster_facts.items()
    ]
    objects = [identity, *indicator_objects, *groupings]
    return {
        "type": "bundle",
        "id": _id("bundle", *sorted(o["id"] for o in objects)),
        "objects": objects,
    }
