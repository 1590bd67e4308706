"""Simple peers the tool is compared with, run on the same simulated data.

- ``cc_any``: connected components over any shared IP or payment card (the
  naive analyst script);
- ``cc_rare``: the same with values shared by more than 50 accounts dropped;
- ``fraudar``: FRAUDAR (Hooi et al., KDD 2016), from the ``ugfraud`` package, on
  the account x attribute-value matrix, several dense blocks peeled in turn.

Each returns a members frame like the tool's: ``account_id, cluster_id, score,
suspected``; a higher score ranks a cluster first.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components


def _values(logs: pl.DataFrame, accounts: pl.DataFrame, kinds: list[str]) -> pl.DataFrame:
    parts = []
    log_cols = {"ip": "ip", "tls": "tls_fingerprint", "ua": "user_agent", "prompt": "prompt"}
    acc_cols = {"card": "payment_fingerprint", "bin": "card_bin", "signup_ip": "signup_ip"}
    for k in kinds:
        if k in log_cols:
            src = logs.select("account_id", pl.col(log_cols[k]).alias("value"))
        else:
            src = accounts.select("account_id", pl.col(acc_cols[k]).alias("value"))
        parts.append(src.drop_nulls().unique().with_columns(pl.lit(k).alias("kind")))
    return pl.concat(parts)


def _components(values: pl.DataFrame, max_share: int | None) -> pl.DataFrame:
    accounts = values.get_column("account_id").unique().sort()
    idx = pl.DataFrame({"account_id": accounts, "i": pl.int_range(len(accounts), eager=True)})
    v = values.join(idx, on="account_id")
    counts = v.group_by("kind", "value").agg(pl.len().alias("n"))
    v = v.join(counts, on=["kind", "value"]).filter(pl.col("n") >= 2)
    if max_share is not None:
        v = v.filter(pl.col("n") <= max_share)
    # Star edges from each value's first account: linear in the value's popularity.
    v = v.sort("kind", "value", "i").with_columns(
        pl.col("i").first().over("kind", "value").alias("root")
    )
    n = len(accounts)
    adj = sp.coo_matrix(
        (np.ones(v.height), (v["i"].to_numpy(), v["root"].to_numpy())), shape=(n, n)
    )
    _, labels = connected_components(adj, directed=False)
    comp = pl.DataFrame({"account_id": accounts, "cluster_id": labels.astype(np.int64)})
    sizes = comp.group_by("cluster_id").agg(pl.len().alias("size"))
    comp = comp.join(sizes, on="cluster_id").filter(pl.col("size") >= 2)
    return comp.select(
        "account_id",
        pl.col("cluster_id").cast(pl.String),
        pl.col("size").cast(pl.Float64).alias("score"),
        pl.lit(True).alias("suspected"),
    )


def cc_any(logs: pl.DataFrame, accounts: pl.DataFrame) -> pl.DataFrame:
    """Components over any shared IP or card; every multi-account component is suspected."""
    return _components(_values(logs, accounts, ["ip", "card"]), None)


def cc_rare(logs: pl.DataFrame, accounts: pl.DataFrame, max_share: int = 50) -> pl.DataFrame:
    """As ``cc_any`` with values shared by more than ``max_share`` accounts dropped."""
    return _components(_values(logs, accounts, ["ip", "card"]), max_share)


def has_fraudar() -> bool:
    """Whether the ``ugfraud`` package (the ``bench`` extra) is installed."""
    import importlib.util

    return importlib.util.find_spec("UGFraud") is not None


def fraudar(logs: pl.DataFrame, accounts: pl.DataFrame, blocks: int = 6) -> pl.DataFrame:
    """FRAUDAR's log-weighted greedy peeling on the account x value matrix."""
    from UGFraud.Detector.Fraudar import detectMultiple, logWeightedAveDegree

    values = _values(logs, accounts, ["ip", "card", "bin", "tls", "ua", "signup_ip"])
    counts = values.group_by("kind", "value").agg(pl.len().alias("n"))
    values = values.join(counts, on=["kind", "value"]).filter(pl.col("n") >= 2)
    acc = values.get_column("account_id").unique().sort()
    a_idx = pl.DataFrame({"account_id": acc, "r": pl.int_range(len(acc), eager=True)})
    vals = values.select("kind", "value").unique().sort("kind", "value")
    v_idx = vals.with_columns(c=pl.int_range(vals.height))
    m = values.join(a_idx, on="account_id").join(v_idx, on=["kind", "value"])
    matrix = sp.coo_matrix(
        (np.ones(m.height), (m["r"].to_numpy(), m["c"].to_numpy())),
        shape=(len(acc), vals.height),
    ).tocsc()
    found = detectMultiple(matrix, logWeightedAveDegree, blocks)
    rows = []
    for b, ((row_set, _cols), score) in enumerate(found):
        for r in sorted(row_set):
            rows.append((acc[r], f"block-{b}", float(score)))
    out = pl.DataFrame(
        rows,
        schema={"account_id": pl.String, "cluster_id": pl.String, "score": pl.Float64},
        orient="row",
    )
    # An account peeled in several blocks belongs to the first.
    return out.unique("account_id", keep="first", maintain_order=True).with_columns(
        suspected=pl.lit(True)
    )
