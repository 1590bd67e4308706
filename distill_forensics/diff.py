"""Night over night: carry cluster ids forward and describe what changed.

Ids are matched by members: a cluster of tonight takes the id of last night's
cluster that holds most of its members (more than half of tonight's members),
each old id going to at most one new cluster, the largest overlap first.
Clusters without such a predecessor keep their anchor-based id.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from distill_forensics.errors import InputError
from distill_forensics.write import read_table

MEMBER_COLUMNS = ("account_id", "cluster_id")
DIFF_COLUMNS = (*MEMBER_COLUMNS, "score", "suspected")
"""Columns of a members table that ``diff_members`` reads."""
_MEMBER_TYPES: dict[str, tuple[pl.DataType, str]] = {
    "account_id": (pl.String(), "ids"),
    "cluster_id": (pl.String(), "ids"),
    "score": (pl.Float64(), "numbers"),
    "suspected": (pl.Boolean(), "true or false"),
}
"""The type of each column of a members table as read back, and what it holds."""
MAJORITY = 0.5
SHARE = 0.2
"""A new cluster draws on an old one when it holds at least this share of the old one."""

CHANGES = (
    "new",
    "escalated",
    "grown",
    "shrunk",
    "changed",
    "unchanged",
    "merged",
    "split",
    "vanished",
)
"""Kinds of change, in the order they are listed. ``escalated``: the same or fewer
members, suspected tonight and not last night."""


def read_members(path: str | Path, columns: Sequence[str] = MEMBER_COLUMNS) -> pl.DataFrame:
    """A members table (``cluster --members``) read back with ``columns`` in the types
    the comparisons use: ids as text, ``score`` a number, ``suspected`` true or false
    (as a CSV spells them too).

    Refuses, naming the file and the column, a table without one of ``columns``, a
    row without its account or cluster id, and a value of another type.
    """
    # (CSV text as written: an id that looks like a number must not become one)
    table = read_table(path, infer_types=False)
    fix = "give a file written by `distill-forensics cluster --members`"
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(f"{path}: lacks column(s) {', '.join(missing)}; {fix}")
    for name in MEMBER_COLUMNS:
        nulls = table.get_column(name).null_count()
        if nulls:
            raise InputError(f"{path}: {nulls:,} row(s) without a value in {name}; {fix}")
    typed = []
    for name in columns:
        (dtype, holds), given = _MEMBER_TYPES[name], table.schema[name]
        value = pl.col(name)
        if dtype == pl.Boolean and given == pl.String:
            words = {"true": True, "false": False}
            typed_value = value.str.to_lowercase().replace_strict(words, default=None)
        else:
            typed_value = value.cast(dtype, strict=False)
        lost = table.select((typed_value.is_null() & value.is_not_null()).sum()).item()
        if lost:
            raise InputError(f"{path}: column {name!r} holds {given} values, not {holds}; {fix}")
        typed.append(typed_value.cast(dtype).alias(name))
    return table.with_columns(typed)


def carry_ids(members: pl.DataFrame, previous: pl.DataFrame) -> dict[str, str]:
    """Map tonight's cluster ids to last night's where most members are the same."""
    for name, df in (("members", members), ("previous", previous)):
        missing = [c for c in MEMBER_COLUMNS if c not in df.columns]
        if missing:
            raise InputError(
                f"{name} table lacks column(s) {', '.join(missing)}; give a file written by "
                "`distill-forensics cluster --members`"
            )
    new_sizes = members.group_by("cluster_id").agg(pl.len().alias("n_new"))
    overlap = (
        members.select("account_id", pl.col("cluster_id").alias("new_id"))
        .join(previous.select("account_id", pl.col("cluster_id").alias("old_id")), on="account_id")
        .group_by("new_id", "old_id")
        .agg(pl.len().alias("k"))
        .join(new_sizes.rename({"cluster_id": "new_id"}), on="new_id")
        .filter(pl.col("k") > MAJORITY * pl.col("n_new"))
        .sort(["k", "new_id", "old_id"], descending=[True, False, False])
    )
    mapping: dict[str, str] = {}
    used: set[str] = set()
    for new_id, old_id in overlap.select("new_id", "old_id").iter_rows():
        if new_id in mapping or old_id in used:
            continue
        mapping[new_id] = old_id
        used.add(old_id)
    # A new id that happens to equal an old id given to another cluster must not collide.
    taken = set(mapping.values())
    for new_id in new_sizes.get_column("cluster_id").to_list():
        if new_id not in mapping and new_id in taken:
            mapping[new_id] = new_id + "-2"
    return mapping


def apply_ids(frame: pl.DataFrame, mapping: dict[str, str]) -> pl.DataFrame:
    """Rename ``cluster_id`` values of ``frame`` with ``mapping``."""
    if not mapping:
        return frame
    return frame.with_columns(pl.col("cluster_id").replace(mapping))


def diff_members(old: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """One row per change between two member reports (``cluster --members`` files)."""
    for name, df in (("OLD", old), ("NEW", new)):
        missing = [c for c in (*MEMBER_COLUMNS, "score", "suspected") if c not in df.columns]
        if missing:
            raise InputError(
                f"{name} lacks column(s) {', '.join(missing)}; give member reports written by "
                "`distill-forensics cluster --members`"
            )
    o = old.select("account_id", pl.col("cluster_id").alias("old_id"))
    n = new.select("account_id", pl.col("cluster_id").alias("new_id"))
    old_info = old.group_by("cluster_id").agg(
        pl.len().alias("n_old"),
        pl.col("score").first().alias("score_old"),
        pl.col("suspected").first().alias("suspected_old"),
    )
    new_info = new.group_by("cluster_id").agg(
        pl.len().alias("n_new"),
        pl.col("score").first().alias("score_new"),
        pl.col("suspected").first().alias("suspected_new"),
    )
    overlap = (
        n.join(o, on="account_id")
        .group_by("new_id", "old_id")
        .agg(pl.len().alias("k"))
        .join(old_info.select(pl.col("cluster_id").alias("old_id"), "n_old"), on="old_id")
        .join(new_info.select(pl.col("cluster_id").alias("new_id"), "n_new"), on="new_id")
    )
    draws = overlap.filter(pl.col("k") >= SHARE * pl.col("n_old"))
    sources = draws.group_by("new_id").agg(pl.col("old_id").sort().alias("from_ids"))
    targets = draws.group_by("old_id").agg(pl.col("new_id").sort().alias("to_ids"))
    rows: list[dict[str, object]] = []
    old_ids = set(old_info.get_column("cluster_id").to_list())
    src = {r["new_id"]: r["from_ids"] for r in sources.iter_rows(named=True)}
    tgt = {r["old_id"]: r["to_ids"] for r in targets.iter_rows(named=True)}
    old_members = {
        k: set(v) for k, v in old.group_by("cluster_id").agg(pl.col("account_id")).iter_rows()
    }
    new_members = {
        k: set(v) for k, v in new.group_by("cluster_id").agg(pl.col("account_id")).iter_rows()
    }
    oinfo = {r["cluster_id"]: r for r in old_info.iter_rows(named=True)}
    for r in new_info.sort("cluster_id").iter_rows(named=True):
        cid = r["cluster_id"]
        froms = [f for f in src.get(cid, []) if f != cid]
        same = cid in old_ids
        if len(src.get(cid, [])) >= 2:
            change = "merged"
        elif same:
            before, after = old_members[cid], new_members[cid]
            change = (
                "unchanged"
                if before == after
                else "grown"
                if len(after) > len(before) and before <= after
                else "shrunk"
                if len(after) < len(before) and after <= before
                else "changed"
            )
        else:
            change = "new" if not src.get(cid) else "changed"
        prior = oinfo.get(cid)
        if (
            change in ("unchanged", "shrunk")
            and r["suspected_new"]
            and prior is not None
            and not prior["suspected_old"]
        ):
            change = "escalated"
        joined = new_members[cid] - (old_members.get(cid, set()))
        rows.append(
            {
                "change": change,
                "cluster_id": cid,
                "related_ids": ", ".join(froms),
                "n_old": prior["n_old"] if prior else 0,
                "n_new": r["n_new"],
                "n_joined": len(joined),
                "n_left": len(old_members.get(cid, set()) - new_members[cid]),
                "score_old": prior["score_old"] if prior else None,
                "score_new": r["score_new"],
                "suspected": r["suspected_new"],
            }
        )
    new_ids = set(new_info.get_column("cluster_id").to_list())
    new_scores = dict(new_info.select("cluster_id", "score_new").iter_rows())
    for r in old_info.sort("cluster_id").iter_rows(named=True):
        cid = r["cluster_id"]
        tos = tgt.get(cid, [])
        if len(tos) >= 2:
            change = "split"
        elif cid not in new_ids and not tos:
            change = "vanished"
        else:
            continue
        rows.append(
            {
                "change": change,
                "cluster_id": cid,
                "related_ids": ", ".join(t for t in tos if t != cid),
                "n_old": r["n_old"],
                "n_new": len(new_members.get(cid, set())),
                "n_joined": 0,
                "n_left": len(old_members[cid] - new_members.get(cid, set())),
                "score_old": r["score_old"],
                # (a split cluster's id may live on in one of its parts)
                "score_new": new_scores.get(cid),
                "suspected": r["suspected_old"],
            }
        )
    schema = {
        "change": pl.String,
        "cluster_id": pl.String,
        "related_ids": pl.String,
        "n_old": pl.Int64,
        "n_new": pl.Int64,
        "n_joined": pl.Int64,
        "n_left": pl.Int64,
        "score_old": pl.Float64,
        "score_new": pl.Float64,
        "suspected": pl.Boolean,
    }
    out = pl.DataFrame(rows, schema=schema, orient="row")
    order = {c: k for k, c in enumerate(CHANGES)}
    return (
        out.with_columns(
            score_change=(pl.col("score_new") - pl.col("score_old")).round(1),
            _o=pl.col("change").replace_strict(order, return_dtype=pl.Int32),
        )
        .sort(["_o", "suspected", "n_new", "cluster_id"], descending=[False, True, True, False])
        .drop("_o")
    )
