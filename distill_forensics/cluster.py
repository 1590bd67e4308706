"""Stage 3: group linked accounts into clusters.

Connected components of the weighted account graph (scipy, linear time); a
component large enough to hide several groups is split into its communities
with Louvain (compiled, making the moves networkx makes; fixed seed) when the
split is clearly better than the whole, i.e. when the communities are far
denser inside than between.

Cluster ids are stable: a cluster is named after its anchor, the member whose
id hashes lowest, so the same accounts found again get the same id whatever
the order of the input rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from distill_forensics.extract import Evidence
from distill_forensics.jit import compiled
from distill_forensics.link import Links, both_ends
from distill_forensics.louvain import louvain_communities


@dataclass(frozen=True)
class ClusterOptions:
    """Knobs of the clustering stage."""

    min_size: int = 2
    split_min_size: int = 40
    resolution: float = 1.0
    merge_ratio: float = 0.1
    peel_min_size: int = 10
    peel_fraction: float = 0.1
    peel_rounds: int = 3
    bridge_fraction: float = 0.1
    reattach_share: float = 0.5
    reattach_min_prompts: int = 5
    seed: int = 0


REPEATED_SHARE = 0.2
"""A value a cluster repeats is used by at least this share of its members (and two)."""


def repeated_by_cluster(members_using: pl.Expr, cluster_size: pl.Expr) -> pl.Expr:
    """Whether a value used by ``members_using`` of ``cluster_size`` members is the cluster's."""
    return members_using >= pl.max_horizontal(pl.lit(2), REPEATED_SHARE * cluster_size)


def _anchor_key(account_id: str) -> str:
    return hashlib.blake2b(account_id.encode(), digest_size=8).hexdigest()


def cluster_id_for(members: list[str]) -> str:
    """The stable id of a cluster with these members: ``C-`` and 10 hex digits."""
    anchor = min(members, key=_anchor_key)
    return "C-" + hashlib.blake2b(("cluster:" + anchor).encode(), digest_size=5).hexdigest()


def _split(nodes: np.ndarray, edges: pl.DataFrame, opt: ClusterOptions) -> list[list[int]]:
    """Louvain communities of one component, merged back where they are not really apart.

    Louvain cuts even a homogeneous campaign into pieces (its waves of
    replacement accounts, say). Two communities stay apart only when the link
    weight between them is a small part of the smaller one's total
    (``merge_ratio``); a family joined to a campaign by two links is split
    off, waves joined by hundreds of links are merged back.
    """
    local_i = np.searchsorted(nodes, edges.get_column("i").to_numpy())
    local_j = np.searchsorted(nodes, edges.get_column("j").to_numpy())
    parts = [
        nodes[p].tolist()
        for p in louvain_communities(
            len(nodes),
            local_i,
            local_j,
            edges.get_column("weight").to_numpy(),
            resolution=opt.resolution,
            seed=opt.seed,
        )
    ]
    if len(parts) < 2:
        return [sorted(int(n) for n in nodes)]
    label = pl.DataFrame(
        {
            "i": [n for p in parts for n in p],
            "c": [k for k, p in enumerate(parts) for _ in p],
        },
        schema={"i": pl.Int64, "c": pl.Int64},
    )
    e = (
        edges.select(pl.col("i").cast(pl.Int64), pl.col("j").cast(pl.Int64), "weight")
        .join(label, on="i")
        .join(label.rename({"i": "j", "c": "cj"}), on="j")
    )
    vol = (
        pl.concat([e.select(pl.col("c"), "weight"), e.select(pl.col("cj").alias("c"), "weight")])
        .group_by("c")
        .agg(pl.col("weight").sum().alias("vol"))
    )
    cut = (
        e.filter(pl.col("c") != pl.col("cj"))
        .select(
            pl.min_horizontal("c", "cj").alias("a"),
            pl.max_horizontal("c", "cj").alias("b"),
            "weight",
        )
        .group_by("a", "b")
        .agg(pl.col("weight").sum().alias("cut"))
        .join(vol.rename({"c": "a", "vol": "va"}), on="a")
        .join(vol.rename({"c": "b", "vol": "vb"}), on="b")
        .filter(pl.col("cut") >= opt.merge_ratio * pl.min_horizontal("va", "vb"))
        .sort("a", "b")
    )
    parent = list(range(len(parts)))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for a, b in cut.select("a", "b").iter_rows():
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    merged: dict[int, list[int]] = {}
    for k, p in enumerate(parts):
        merged.setdefault(root(k), []).extend(p)
    return [sorted(m) for _, m in sorted(merged.items())]


def _peel(groups: list[list[int]], edges: pl.DataFrame, opt: ClusterOptions) -> list[list[int]]:
    """Drop members that hang on a large cluster by a thread.

    An account that shares a proxy address and one prompt opener with a
    campaign gets one or two weak links into it, while the campaign's own
    accounts have dozens. In clusters of ``peel_min_size`` or more, members
    whose summed link weight inside the cluster is below ``peel_fraction`` of
    the cluster's median are removed, a few rounds, until nothing changes.
    """
    member = pl.DataFrame(
        {
            "idx": [i for g in groups for i in g],
            "group": [k for k, g in enumerate(groups) for _ in g],
        },
        schema={"idx": pl.Int64, "group": pl.Int64},
    )
    sizes = member.group_by("group").agg(pl.len().alias("size"))
    big = sizes.filter(pl.col("size") >= opt.peel_min_size).get_column("group")
    if big.len() == 0:
        return groups
    und = pl.concat(
        [
            edges.select(pl.col("i").cast(pl.Int64), pl.col("j").cast(pl.Int64), "weight"),
            edges.select(
                pl.col("j").cast(pl.Int64).alias("i"),
                pl.col("i").cast(pl.Int64).alias("j"),
                "weight",
            ),
        ]
    )
    keep = member.filter(pl.col("group").is_in(big.implode()))
    for _ in range(opt.peel_rounds):
        intra = (
            und.join(keep.rename({"idx": "i"}), on="i")
            .join(keep.rename({"idx": "j", "group": "gj"}), on="j")
            .filter(pl.col("group") == pl.col("gj"))
            .group_by("i")
            .agg(pl.col("weight").sum().alias("wdeg"))
        )
        scored = keep.join(intra.rename({"i": "idx"}), on="idx", how="left").with_columns(
            pl.col("wdeg").fill_null(0.0)
        )
        scored = scored.with_columns(med=pl.col("wdeg").median().over("group"))
        nxt = scored.filter(pl.col("wdeg") >= opt.peel_fraction * pl.col("med")).select(
            "idx", "group"
        )
        if nxt.height == keep.height:
            break
        keep = nxt
    big_set = set(big.to_list())
    out = [g for k, g in enumerate(groups) if k not in big_set]
    out.extend(_runs(keep.get_column("idx").to_numpy(), keep.get_column("group").to_numpy()))
    return out


def _runs(values: np.ndarray, keys: np.ndarray) -> list[list[int]]:
    """``values`` grouped by ``keys``: a list per key in key order, each ascending (one
    sort and a split, not a step per group)."""
    order = np.lexsort((values, keys))
    keys, values = keys[order], values[order]
    cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    return [run.tolist() for run in np.split(values, cuts)] if len(values) else []


def _connected(groups: list[list[int]], edges: pl.DataFrame, n: int) -> list[list[int]]:
    """Each group's connected pieces: peeling or cutting a bridge can leave a group in parts."""
    label = np.full(n, -1, dtype=np.int64)
    for k, g in enumerate(groups):
        label[np.asarray(g, dtype=np.int64)] = k
    i = edges.get_column("i").to_numpy().astype(np.int64)
    j = edges.get_column("j").to_numpy().astype(np.int64)
    inside = (label[i] >= 0) & (label[i] == label[j])
    adj = sp.coo_matrix((np.ones(int(inside.sum())), (i[inside], j[inside])), shape=(n, n))
    _, comp = connected_components(adj, directed=False)
    members = np.flatnonzero(label >= 0)
    return _runs(members, comp[members])


@compiled
def _bridges(indptr: np.ndarray, nbr: np.ndarray, edge: np.ndarray, n_edges: int) -> np.ndarray:
    """Which edges of an undirected graph are bridges (Tarjan's low-link, iterative DFS).

    The graph is CSR adjacency: the neighbours of node ``v`` are
    ``nbr[indptr[v]:indptr[v + 1]]``, reached over edges ``edge[...]``.
    """
    n = len(indptr) - 1
    disc = np.full(n, -1, dtype=np.int64)
    low = np.zeros(n, dtype=np.int64)
    via = np.full(n, -1, dtype=np.int64)
    nxt = indptr[:-1].copy()
    stack = np.empty(n, dtype=np.int64)
    bridge = np.zeros(n_edges, dtype=np.bool_)
    clock = 0
    for root in range(n):
        if disc[root] >= 0 or indptr[root] == indptr[root + 1]:
            continue
        disc[root] = clock
        low[root] = clock
        clock += 1
        top = 0
        stack[0] = root
        while top >= 0:
            v = stack[top]
            if nxt[v] < indptr[v + 1]:
                pos = nxt[v]
                nxt[v] += 1
                w = nbr[pos]
                if edge[pos] == via[v]:
                    continue
                if disc[w] < 0:
                    disc[w] = clock
                    low[w] = clock
                    clock += 1
                    via[w] = edge[pos]
                    top += 1
                    stack[top] = w
                elif disc[w] < low[v]:
                    low[v] = disc[w]
            else:
                top -= 1
                if top >= 0:
                    u = stack[top]
                    if low[v] < low[u]:
                        low[u] = low[v]
                    if low[v] > disc[u]:
                        bridge[via[v]] = True
    return bridge


def bridge_links(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    """Which links (``i[k]``-``j[k]``, accounts below ``n``, each link once) are bridges."""
    ends = np.concatenate([i, j])
    order = np.argsort(ends, kind="stable")
    indptr = np.r_[0, np.cumsum(np.bincount(ends, minlength=n))]
    nbr = np.concatenate([j, i])[order]
    edge_of = np.concatenate([np.arange(len(i)), np.arange(len(i))])[order]
    return np.asarray(_bridges(indptr, nbr, edge_of, len(i)), dtype=bool)


def _cut_bridges(
    groups: list[list[int]], edges: pl.DataFrame, opt: ClusterOptions, n: int
) -> list[list[int]]:
    """Detach small groups that hang on a large cluster by a single link (a bridge).

    A family whose one mailbox collides with a campaign account's is joined to
    the campaign by one edge; one link is thin evidence for merging two groups.
    Pieces under ``bridge_fraction`` of the cluster become clusters of their own
    and are scored on their own behaviour.
    """
    label = np.full(n, -1, dtype=np.int64)
    for k, g in enumerate(groups):
        if len(g) >= opt.peel_min_size:
            label[np.asarray(g, dtype=np.int64)] = k
    if not (label >= 0).any():
        return groups
    i = edges.get_column("i").to_numpy().astype(np.int64)
    j = edges.get_column("j").to_numpy().astype(np.int64)
    inside = (label[i] >= 0) & (label[i] == label[j]) & (i != j)
    # Each link once, whichever way round it is listed.
    key = np.sort(np.minimum(i[inside], j[inside]) * n + np.maximum(i[inside], j[inside]))
    key = key[np.r_[True, key[1:] != key[:-1]]] if len(key) else key
    i, j = np.divmod(key, n)
    # The groups' own links form one graph whose components lie within groups,
    # so its bridges are the bridges of every group at once.
    bridge = bridge_links(i, j, n)
    cut_groups = np.unique(label[i[bridge]])
    if len(cut_groups) == 0:
        return groups
    keep = ~bridge
    adj = sp.coo_matrix((np.ones(int(keep.sum())), (i[keep], j[keep])), shape=(n, n))
    _, piece = connected_components(adj, directed=False)
    cut = set(cut_groups.tolist())
    out: list[list[int]] = []
    for k, g in enumerate(groups):
        if k not in cut:
            out.append(g)
            continue
        members = np.sort(np.asarray(g, dtype=np.int64))
        by_piece: dict[int, list[int]] = {}
        for node, p in zip(members.tolist(), piece[members].tolist(), strict=True):
            by_piece.setdefault(p, []).append(node)
        parts = sorted(by_piece.values(), key=lambda c: (-len(c), c))
        main = list(parts[0])
        for part in parts[1:]:
            if len(part) < opt.bridge_fraction * len(g):
                out.append(part)
            else:
                main.extend(part)
        out.append(sorted(main))
    return out


def cluster(links: Links, options: ClusterOptions | None = None) -> pl.DataFrame:
    """Assign accounts to clusters: returns ``account_id, cluster_id`` for clustered accounts."""
    opt = options or ClusterOptions()
    accounts = links.accounts
    n = len(accounts)
    index = pl.DataFrame({"account_id": accounts, "idx": pl.int_range(n, eager=True)})
    e = (
        links.edges.join(index.rename({"account_id": "a", "idx": "i"}), on="a")
        .join(index.rename({"account_id": "b", "idx": "j"}), on="b")
        .select("i", "j", "weight")
    )
    if e.height == 0:
        return pl.DataFrame(schema={"account_id": pl.String, "cluster_id": pl.String})
    i = e.get_column("i").to_numpy()
    j = e.get_column("j").to_numpy()
    adj = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, labels = connected_components(adj, directed=False)
    comp = pl.DataFrame({"idx": np.arange(n), "comp": labels})
    sizes = comp.group_by("comp").agg(pl.len().alias("size"), pl.col("idx").sort())
    groups: list[list[int]] = []
    e_comp = e.join(comp.rename({"idx": "i"}), on="i")
    sizes = sizes.filter(pl.col("size") >= opt.min_size).sort("comp")
    big = sizes.filter(pl.col("size") >= opt.split_min_size).get_column("comp")
    # Each large component's links, in the order they come in ``e_comp``.
    big_edges = e_comp.filter(pl.col("comp").is_in(big.implode())).partition_by(
        "comp", as_dict=True, maintain_order=True
    )
    for c, size, idx in sizes.select("comp", "size", "idx").iter_rows():
        if size >= opt.split_min_size:
            groups.extend(_split(np.asarray(idx), big_edges[(c,)], opt))
        else:
            groups.append(idx)
    groups = _peel(groups, e, opt)
    groups = _cut_bridges(groups, e, opt, n)
    groups = _connected(groups, e, n)
    rows_acc: list[str] = []
    rows_cid: list[str] = []
    acc_list = accounts.to_list()
    for g in groups:
        if len(g) < opt.min_size:
            continue
        members = [acc_list[k] for k in g]
        cid = cluster_id_for(members)
        rows_acc.extend(members)
        rows_cid.extend([cid] * len(members))
    return pl.DataFrame({"account_id": rows_acc, "cluster_id": rows_cid}).sort(
        "cluster_id", "account_id"
    )


def reattach(
    membership: pl.DataFrame,
    links: Links,
    evidence: Evidence,
    options: ClusterOptions | None = None,
) -> pl.DataFrame:
    """Bring back unclustered accounts that link into a cluster and do what it does.

    Peeling drops accounts with few links into a cluster; a campaign's
    camouflaged accounts (their own cards, their own clients, part of their
    traffic diverse) are among them. An unclustered account linked to members
    of a cluster joins it when most of its prompts use templates that the
    cluster repeats (:func:`repeated_by_cluster`).
    """
    opt = options or ClusterOptions()
    if membership.height == 0 or links.edges.height == 0:
        return membership
    outside = both_ends(links.edges, "weight").join(
        membership.select("account_id"), on="account_id", how="anti"
    )
    into = (
        outside.join(membership.rename({"account_id": "other"}), on="other")
        .group_by("account_id", "cluster_id")
        .agg(pl.col("weight").sum().alias("w"))
        .sort(["account_id", "w", "cluster_id"], descending=[False, True, False])
        .group_by("account_id", maintain_order=True)
        .first()
    )
    if into.height == 0:
        return membership
    # Template usage streamed from the evidence: only the rows of members and
    # of candidates are kept, never a copy of every template row. Rows join on the
    # key Evidence.keyed gives (keyed by number, an account's text comes back with
    # its template rows).
    members, key = evidence.keyed(evidence.usage, membership)
    into, _ = evidence.keyed(evidence.usage, into)
    tpl = evidence.usage_of("template", "account_id", key, "value", "n_requests")
    sizes = membership.group_by("cluster_id").agg(pl.len().alias("n"))
    repeated = (
        tpl.join(members.lazy(), on=key)
        .group_by("cluster_id", "value")
        .agg(pl.len().alias("m"))
        .join(sizes.lazy(), on="cluster_id")
        .filter(repeated_by_cluster(pl.col("m"), pl.col("n")))
        .select("cluster_id", "value")
        .collect(engine="streaming")
    )
    prompts = evidence.accounts.select("account_id", "n_prompts")
    conform = (
        into.lazy()
        .join(tpl, on=key)
        .join(repeated.lazy(), on=["cluster_id", "value"])
        .group_by("account_id", "cluster_id")
        .agg(pl.col("n_requests").sum().alias("on_templates"))
        .join(prompts.lazy(), on="account_id")
        .filter(
            (pl.col("n_prompts") >= opt.reattach_min_prompts)
            & (pl.col("on_templates") >= opt.reattach_share * pl.col("n_prompts"))
        )
        .select("account_id", "cluster_id")
        .collect(engine="streaming")
    )
    return pl.concat([membership, conform]).sort("cluster_id", "account_id")
