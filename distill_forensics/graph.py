"""The account graph of a run as a networkx graph, for Gephi, Cytoscape or a notebook.

Nodes are clustered accounts carrying their cluster's id, rank, score and
whether it is suspected; edges are the links the run found between them, with
the kinds of evidence that made each link and the attribute values the two
accounts share.
A bipartite view adds one node per shared attribute value (an IP, a card, a
prompt template) joined to the accounts that used it, which shows at a glance
the infrastructure a campaign runs on.

Files are GraphML or GEXF by extension, written atomically. Attribute values
are always str, int, float or bool (never missing), so every tool reads the
same columns for every node and edge.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import polars as pl
import pyarrow as pa

from distill_forensics.errors import InputError
from distill_forensics.jit import compiled
from distill_forensics.link import ACCOUNT_LEVEL_KINDS, DEFAULT_KIND_WEIGHTS
from distill_forensics.pipeline import ClusterResult
from distill_forensics.score import MEANINGFUL_LINK
from distill_forensics.write import write_atomic
from distill_forensics.xmlgraph import gexf_text, graphml_text, xml_safe

__all__ = [
    "GRAPH_FORMATS",
    "MAX_EDGES",
    "SHARED_PER_KIND",
    "build_graph",
    "graph_format",
    "write_graph",
]

GRAPH_FORMATS: dict[str, str] = {".graphml": "graphml", ".gexf": "gexf"}
"""Graph file name ending -> format."""

SHARED_PER_KIND = 5
"""Shared values listed per kind on an edge, rarest first."""

MAX_EDGES = 2_000_000
"""Most edges a graph is built with unless asked for more: networkx holds each edge
with its attributes in about 2 KB while the file is written, and graph viewers do
not open much larger graphs. (The bipartite view of a 20,000-account campaign has
some 10 million account-value edges.)"""

VALUE_KINDS: tuple[str, ...] = tuple(k for k in DEFAULT_KIND_WEIGHTS if k != "sync")
"""Kinds of attribute value that link accounts (the model an account calls does not)."""

LABEL_CHARS = 60
"""Longest label of a value node; its id keeps the whole value."""


def _included_members(result: ClusterResult, cluster_id: str | None) -> pl.DataFrame:
    members = result.members
    if cluster_id is None:
        return members
    known = result.clusters.get_column("cluster_id")
    if not known.is_in([cluster_id]).any():
        raise InputError(
            f"--cluster {cluster_id}: no such cluster in this run; "
            "list the cluster ids with `distill-forensics cluster` on the same input (and "
            "--previous)"
        )
    return members.filter(pl.col("cluster_id") == cluster_id)


def _account_nodes(members: pl.DataFrame) -> pl.DataFrame:
    org = pl.col("org_id").fill_null("") if "org_id" in members.columns else pl.lit("")
    return members.sort("rank", "account_id").select(
        pl.col("account_id").alias("id"),
        pl.lit("account").alias("type"),
        pl.col("account_id").alias("label"),
        pl.col("cluster_id").fill_null(""),
        pl.col("rank").fill_null(0).cast(pl.Int64),
        pl.col("score").fill_null(0.0).cast(pl.Float64).round(2),
        pl.col("suspected").fill_null(False),
        pl.col("n_requests").fill_null(0).cast(pl.Int64),
        org.alias("org_id"),
    )


def _kinds_text(edges: pl.DataFrame) -> pl.Expr:
    """Comma-joined kinds that contribute a meaningful weight to each link."""
    wcols = sorted(c for c in edges.columns if c.startswith("w_"))
    if not wcols:
        return pl.lit("")
    return pl.concat_str(
        [pl.when(pl.col(c) >= MEANINGFUL_LINK).then(pl.lit(c[2:])) for c in wcols],
        separator=",",
        ignore_nulls=True,
    ).fill_null("")


def _usage(result: ClusterResult, accounts: pl.DataFrame) -> pl.LazyFrame:
    """(account_id, kind, value, n_requests) of the included accounts, linking kinds only:
    a lazy plan over those columns, so the usage rows' sketches are never copied."""
    return (
        result.evidence.usage.lazy()
        .select("account_id", "kind", "value", "n_requests")
        .filter(pl.col("kind").is_in(VALUE_KINDS))
        .join(accounts.lazy().select("account_id"), on="account_id", how="semi")
    )


def _shared_values(
    pairs: pl.DataFrame, usage: pl.LazyFrame, rarity: pl.DataFrame, per_kind: int
) -> pl.DataFrame:
    """Per pair ``(a, b)``: the values both used, as ``kind=value; ...``, rarest first per kind.

    ``rarity`` holds ``(kind, value, n_accounts)``; values no one else shares sort first.
    Linked accounts can share thousands of values (a campaign's templates, say): each
    pair's are found by walking the two accounts' numbered values side by side, and
    only the first ``per_kind`` of each kind are kept.
    """
    empty = pl.DataFrame(schema={"a": pl.String, "b": pl.String, "shared": pl.String})
    if pairs.height == 0 or per_kind < 1:
        return empty
    ids = (
        pl.concat([pairs.get_column("a"), pairs.get_column("b")])
        .unique()
        .sort()
        .to_frame("account_id")
        .with_row_index("n")
    )
    # The usage rows of the pairs' accounts, read once for the values and their users.
    rows = usage.join(ids.lazy(), on="account_id").select("n", "kind", "value").collect()
    # Values numbered in the order they are listed: by kind, rarest first, then by text.
    values = (
        rows.lazy()
        .select("kind", "value")
        .unique()
        .join(rarity.lazy().select("kind", "value", "n_accounts"), on=["kind", "value"], how="left")
        .sort("kind", "n_accounts", "value", nulls_last=True)
        .select("kind", "value", (pl.col("kind").rank("dense") - 1).cast(pl.Int64).alias("k"))
        .collect()
    )
    if values.height == 0:
        return empty
    # Each account's values in order, as one sorted key per use (both row numbers are
    # 32-bit): the rows of a compressed matrix.
    used = (
        rows.lazy()
        .join(values.lazy().with_row_index("v"), on=["kind", "value"])
        .select((pl.col("n").cast(pl.UInt64) * 2**32 + pl.col("v")).alias("key"))
        .collect()
        .get_column("key")
        .sort()
        .to_numpy()
    )
    del rows
    indptr = np.zeros(ids.height + 1, dtype=np.int64)
    np.cumsum(np.bincount((used >> 32).astype(np.int64), minlength=ids.height), out=indptr[1:])
    kinds = values.get_column("k").to_numpy()
    kind_start = np.searchsorted(kinds, np.arange(int(kinds.max()) + 2)).astype(np.int64)
    ends = [
        pairs.select(end).join(ids.rename({"account_id": end}), on=end, maintain_order="left")
        for end in ("a", "b")
    ]
    edge, v = _first_shared(
        indptr,
        (used & 0xFFFFFFFF).astype(np.int64),
        kinds,
        kind_start,
        ends[0].get_column("n").to_numpy().astype(np.int64),
        ends[1].get_column("n").to_numpy().astype(np.int64),
        per_kind,
    )
    if len(edge) == 0:
        return empty
    # The pairs' listed values are runs of the kernel's output: one list per run, joined.
    labels = values.select(pl.concat_str("kind", pl.lit("="), "value")).to_series()
    starts = np.flatnonzero(np.r_[True, edge[1:] != edge[:-1]])
    offsets = np.r_[starts, len(edge)].astype(np.int64)
    lists = pa.LargeListArray.from_arrays(pa.array(offsets), labels.gather(v).to_arrow())
    at = edge[starts]
    return pl.DataFrame(
        {
            "a": pairs.get_column("a").gather(at),
            "b": pairs.get_column("b").gather(at),
            "shared": pl.Series(lists).list.join("; "),
        }
    )


@compiled
def _first_shared(
    indptr: np.ndarray,
    values: np.ndarray,
    kinds: np.ndarray,
    kind_start: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    per_kind: int,
) -> tuple[np.ndarray, np.ndarray]:
    """For each pair ``p`` (rows ``a[p]`` and ``b[p]`` of a compressed matrix of sorted
    ``values``): the first ``per_kind`` values of each kind the two rows share, as
    ``(pair, value)`` in order. Value ``v`` is of kind ``kinds[v]``, and kind ``k``
    holds values ``kind_start[k]`` to ``kind_start[k + 1]``; once a kind is full, both
    rows skip to the next kind."""
    n_kinds = len(kind_start) - 1
    room = np.empty(len(a) + 1, dtype=np.int64)
    room[0] = 0
    for p in range(len(a)):
        la = indptr[a[p] + 1] - indptr[a[p]]
        lb = indptr[b[p] + 1] - indptr[b[p]]
        room[p + 1] = room[p] + min(la, lb, per_kind * n_kinds)
    out_pair = np.empty(room[-1], dtype=np.int64)
    out_value = np.empty(room[-1], dtype=np.int64)
    n = 0
    for p in range(len(a)):
        i, i_end = indptr[a[p]], indptr[a[p] + 1]
        j, j_end = indptr[b[p]], indptr[b[p] + 1]
        kind, taken = -1, 0
        while i < i_end and j < j_end:
            vi, vj = values[i], values[j]
            if vi < vj:
                i += 1
            elif vj < vi:
                j += 1
            else:
                if kinds[vi] != kind:
                    kind, taken = kinds[vi], 0
                out_pair[n], out_value[n] = p, vi
                n += 1
                taken += 1
                i += 1
                j += 1
                if taken == per_kind:  # the next kind's values, in both rows
                    nxt = kind_start[kind + 1]
                    i += np.searchsorted(values[i:i_end], nxt)
                    j += np.searchsorted(values[j:j_end], nxt)
    return out_pair[:n], out_value[:n]


def _links_among(result: ClusterResult, accounts: pl.DataFrame) -> pl.DataFrame:
    """The run's links between two of ``accounts``, in (a, b) order."""
    ids = accounts.select("account_id")
    return (
        result.links.edges.join(ids.rename({"account_id": "a"}), on="a", how="semi")
        .join(ids.rename({"account_id": "b"}), on="b", how="semi")
        .sort("a", "b")
    )


def _link_edges(result: ClusterResult, accounts: pl.DataFrame, edges: pl.DataFrame) -> pl.DataFrame:
    usage = _usage(result, accounts)
    shared = _shared_values(edges, usage, result.links.value_stats, SHARED_PER_KIND)
    return (
        edges.select(
            "a",
            "b",
            pl.lit("link").alias("relation"),
            pl.col("weight").cast(pl.Float64).round(4),
            _kinds_text(edges).alias("kinds"),
            pl.col("same_org").fill_null(False),
        )
        .join(shared, on=["a", "b"], how="left", maintain_order="left")
        .with_columns(pl.col("shared").fill_null(""))
    )


def _value_layer(result: ClusterResult, nodes: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Value nodes (shared by two or more included accounts) and account-value edges."""
    accounts = nodes.select(pl.col("id").alias("account_id"), "cluster_id")
    usage = _usage(result, accounts).join(accounts.lazy(), on="account_id").collect()
    counts = usage.group_by("kind", "value").agg(
        pl.len().cast(pl.Int64).alias("n_accounts"),
        pl.col("n_requests").sum().cast(pl.Int64),
        pl.col("cluster_id").n_unique().alias("_n_clusters"),
        pl.col("cluster_id").min().alias("_cluster"),
    )
    counts = counts.filter(pl.col("n_accounts") >= 2)
    # A value used within one cluster only takes that cluster's colours in a viewer.
    cluster_info = result.clusters.select(
        pl.col("cluster_id").alias("_cluster"),
        pl.col("rank").cast(pl.Int64).alias("_rank"),
        pl.col("score").cast(pl.Float64).round(2).alias("_score"),
        pl.col("suspected").alias("_suspected"),
    )
    one = pl.col("_n_clusters") == 1
    value_id = pl.concat_str("kind", pl.lit(":"), "value")
    label = pl.concat_str("kind", pl.lit("="), "value")
    value_nodes = (
        counts.join(cluster_info, on="_cluster", how="left")
        .sort("kind", "value")
        .select(
            value_id.alias("id"),
            pl.lit("value").alias("type"),
            pl.when(label.str.len_chars() > LABEL_CHARS)
            .then(label.str.slice(0, LABEL_CHARS - 1) + "…")
            .otherwise(label)
            .alias("label"),
            pl.when(one).then(pl.col("_cluster")).otherwise(pl.lit("")).alias("cluster_id"),
            pl.when(one).then(pl.col("_rank")).otherwise(0).fill_null(0).alias("rank"),
            pl.when(one).then(pl.col("_score")).otherwise(0.0).fill_null(0.0).alias("score"),
            pl.when(one)
            .then(pl.col("_suspected"))
            .otherwise(False)
            .fill_null(False)
            .alias("suspected"),
            "n_requests",
            pl.lit("").alias("org_id"),
            "kind",
            "n_accounts",
        )
    )
    # Weight of an account-value edge: how central the value is to the account,
    # the share of its requests (of its prompts, for templates) that used it.
    totals = result.evidence.accounts.select(
        "account_id",
        pl.col("n_requests").cast(pl.Float64).alias("_total"),
        pl.col("n_prompts").cast(pl.Float64).alias("_prompts"),
    )
    share = (
        pl.when(pl.col("kind").is_in(list(ACCOUNT_LEVEL_KINDS)))
        .then(1.0)
        .when(pl.col("kind") == "template")
        .then(pl.col("n_requests") / pl.col("_prompts").clip(1.0))
        .otherwise(pl.col("n_requests") / pl.col("_total").clip(1.0))
        .clip(0.0, 1.0)
        .fill_null(1.0)
    )
    uses = (
        usage.join(counts.select("kind", "value"), on=["kind", "value"], how="semi")
        .join(totals, on="account_id", how="left")
        .sort("account_id", "kind", "value")
        .select(
            pl.col("account_id").alias("a"),
            value_id.alias("b"),
            pl.lit("uses").alias("relation"),
            share.round(4).alias("weight"),
            pl.col("kind").alias("kinds"),
            pl.lit(False).alias("same_org"),
            label.alias("shared"),
        )
    )
    return value_nodes, uses


def build_graph(
    result: ClusterResult,
    cluster_id: str | None = None,
    bipartite: bool = False,
    max_edges: int | None = MAX_EDGES,
) -> nx.Graph:
    """The clustered accounts and their links as an undirected graph.

    With ``cluster_id``, only that cluster's members and the links among them
    (an unknown id raises :class:`InputError`). With ``bipartite``, one node per
    attribute value shared by two or more of those accounts (id ``kind:value``,
    ``type="value"``) is added and joined to the accounts that used it.

    Every node has ``type, label, cluster_id, rank, score, suspected, n_requests,
    org_id`` (plus ``kind, n_accounts`` when bipartite); every edge has
    ``relation`` (``link`` or ``uses``), ``weight``, ``kinds``, ``same_org`` and
    ``shared``. Account-account links list their shared values as
    ``kind=value; ...``, at most five per kind, rarest first. A graph of more than
    ``max_edges`` edges (None: no limit) raises :class:`InputError` before it is built.

    >>> g = build_graph(result, "C-c2ec3c88f4")  # doctest: +SKIP
    >>> g.nodes["acct_0044..."]["cluster_id"]  # doctest: +SKIP
    'C-c2ec3c88f4'
    """
    members = _included_members(result, cluster_id)
    nodes = _account_nodes(members)
    links = _links_among(result, members)
    # Counted before the links' shared values are looked up: a graph too large
    # is refused before the costly part.
    n_edges = links.height
    if bipartite:
        value_nodes, uses = _value_layer(result, nodes)
        n_edges += uses.height
    if max_edges is not None and n_edges > max_edges:
        scope = f"cluster {cluster_id}" if cluster_id else "the whole run"
        raise InputError(
            f"the graph of {scope} has {n_edges:,} edges"
            f"{' with --bipartite' if bipartite else ''}, more than --max-edges "
            f"{max_edges:,}; narrow it with --cluster, leave out --bipartite, or raise "
            "--max-edges (about 2 GB of memory per million edges)"
        )
    edges = _link_edges(result, members, links)
    if bipartite:
        nodes = pl.concat(
            [
                nodes.with_columns(
                    pl.lit("").alias("kind"), pl.lit(1, pl.Int64).alias("n_accounts")
                ),
                value_nodes,
            ],
            how="vertical_relaxed",
        )
        edges = pl.concat([edges, uses.select(edges.columns)], how="vertical_relaxed")

    graph = nx.Graph()
    graph.graph["name"] = f"distill-forensics {cluster_id}" if cluster_id else "distill-forensics"
    graph.add_nodes_from((row.pop("id"), row) for row in nodes.iter_rows(named=True))
    graph.add_edges_from((row.pop("a"), row.pop("b"), row) for row in edges.iter_rows(named=True))
    return graph


def graph_format(path: str | Path) -> str:
    """The format a graph file name asks for (``graphml`` or ``gexf``), else InputError."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in GRAPH_FORMATS:
        endings = " or ".join(GRAPH_FORMATS)
        raise InputError(
            f"{path}: unknown graph file type {suffix or '(none)'!r}; name it with {endings}"
        )
    return GRAPH_FORMATS[suffix]


def _xml_text(value: Any) -> Any:
    return xml_safe(value) if isinstance(value, str) else value


def _xml_safe(graph: nx.Graph) -> nx.Graph:
    """A copy of the same class whose ids and texts hold only characters XML 1.0 can carry."""
    out = graph.__class__()
    out.graph.update({k: _xml_text(v) for k, v in graph.graph.items()})
    out.add_nodes_from(
        (_xml_text(n), {k: _xml_text(v) for k, v in d.items()}) for n, d in graph.nodes(data=True)
    )
    # (A multigraph's edges carry their keys, between the ends and the data.)
    edges = graph.edges(keys=True, data=True) if graph.is_multigraph() else graph.edges(data=True)
    out.add_edges_from(
        (_xml_text(u), _xml_text(v), *key, {k: _xml_text(x) for k, x in d.items()})
        for u, v, *key, d in edges
    )
    return out


def write_graph(graph: nx.Graph, path: str | Path) -> None:
    """Write ``graph`` as GraphML or GEXF, chosen by the file name, atomically.

    Text XML 1.0 cannot carry becomes U+FFFD. Graphs of this package are
    written as they are walked (see :mod:`distill_forensics.xmlgraph`); others
    go through networkx's writers, with the same result.

    >>> write_graph(build_graph(result), "net.graphml")  # doctest: +SKIP
    """
    fmt = graph_format(path)
    pieces = graphml_text(graph) if fmt == "graphml" else gexf_text(graph)
    if pieces is not None:
        write_atomic(
            path, lambda fh: fh.writelines(p.encode("utf-8", "xmlcharrefreplace") for p in pieces)
        )
        return
    safe = _xml_safe(graph)
    if fmt == "graphml":
        # ElementTree's writer, as for the graphs above (networkx's default
        # takes lxml when it is installed, which lays the file out otherwise).
        write_atomic(path, lambda fh: nx.write_graphml_xml(safe, fh))
    else:
        data = _gexf_bytes(safe)
        write_atomic(path, lambda fh: fh.write(data))


def _gexf_bytes(graph: nx.Graph) -> bytes:
    """GEXF without the writer's "last modified" date: the same graph gives the same bytes."""
    text = "\n".join(nx.generate_gexf(graph))
    text = re.sub(r'(<meta)\s+lastmodifieddate="[^"]*"', r"\1", text, count=1)
    return ("<?xml version='1.0' encoding='utf-8'?>\n" + text + "\n").encode("utf-8")
