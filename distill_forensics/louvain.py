"""Louvain communities, compiled: the moves of networkx's ``louvain_communities``.

networkx's Louvain spends most of its time in Python dictionaries: on a
component of 40k accounts and 700k links it takes half a minute. This is the
same algorithm over arrays, and it makes the same choices: nodes are visited in
the order ``random.Random(seed).shuffle`` gives networkx, each node's
neighbouring communities are weighed in the order networkx meets them (its
adjacency is insertion-ordered), gains are computed with the same float
operations in the same order, ties go to the first community met, and each
level's graph is aggregated as ``_gen_graph`` aggregates it. The one liberty:
the modularity that decides whether another level is worth it is summed in
node order rather than in set order, which can differ in the last bit; that
matters only when the gain of a level is within rounding of the threshold.
"""

from __future__ import annotations

import random

import numpy as np

from distill_forensics.jit import compiled


@compiled
def _adjacency(
    n: int, u: np.ndarray, v: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR adjacency of distinct undirected edges, each node's neighbours in the order added.

    A self-loop is listed once, as networkx lists it.
    """
    counts = np.zeros(n + 1, dtype=np.int64)
    for e in range(len(u)):
        counts[u[e] + 1] += 1
        if v[e] != u[e]:
            counts[v[e] + 1] += 1
    indptr = np.cumsum(counts)
    fill = indptr[:-1].copy()
    nbr = np.empty(indptr[-1], dtype=np.int64)
    wt = np.empty(indptr[-1])
    for e in range(len(u)):
        a, b = u[e], v[e]
        nbr[fill[a]] = b
        wt[fill[a]] = w[e]
        fill[a] += 1
        if b != a:
            nbr[fill[b]] = a
            wt[fill[b]] = w[e]
            fill[b] += 1
    return indptr, nbr, wt


@compiled
def _edges(
    indptr: np.ndarray, nbr: np.ndarray, wt: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each edge once, in the order networkx's ``G.edges`` yields them."""
    n = len(indptr) - 1
    seen = np.zeros(n, dtype=np.bool_)
    count = 0
    for a in range(n):
        for q in range(indptr[a], indptr[a + 1]):
            if not seen[nbr[q]]:
                count += 1
        seen[a] = True
    eu = np.empty(count, dtype=np.int64)
    ev = np.empty(count, dtype=np.int64)
    ew = np.empty(count)
    seen[:] = False
    k = 0
    for a in range(n):
        for q in range(indptr[a], indptr[a + 1]):
            if not seen[nbr[q]]:
                eu[k], ev[k], ew[k] = a, nbr[q], wt[q]
                k += 1
        seen[a] = True
    return eu, ev, ew


@compiled
def _degrees(indptr: np.ndarray, nbr: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """Weighted degrees as networkx sums them: neighbours in order, then the self-loop again."""
    n = len(indptr) - 1
    deg = np.zeros(n)
    for a in range(n):
        s = 0.0
        loop = 0.0
        has_loop = False
        for q in range(indptr[a], indptr[a + 1]):
            s += wt[q]
            if nbr[q] == a:
                loop = wt[q]
                has_loop = True
        deg[a] = s + loop if has_loop else s
    return deg


@compiled
def _one_level(
    indptr: np.ndarray,
    nbr: np.ndarray,
    wt: np.ndarray,
    degree: np.ndarray,
    order: np.ndarray,
    m: float,
    resolution: float,
    two_m2: float,
) -> tuple[np.ndarray, bool]:
    """Move nodes to the neighbouring community of best gain until none moves."""
    n = len(degree)
    node2com = np.arange(n)
    stot = degree.copy()
    weight = np.zeros(n)
    stamp = np.full(n, -1, dtype=np.int64)
    coms = np.empty(n, dtype=np.int64)
    improvement = False
    visit = 0
    moves = 1
    while moves > 0:
        moves = 0
        for u in order:
            visit += 1
            best_mod = 0.0
            best_com = node2com[u]
            k = 0
            for q in range(indptr[u], indptr[u + 1]):
                v = nbr[q]
                if v == u:
                    continue
                c = node2com[v]
                if stamp[c] != visit:
                    stamp[c] = visit
                    weight[c] = 0.0
                    coms[k] = c
                    k += 1
                weight[c] += wt[q]
            if stamp[best_com] != visit:
                stamp[best_com] = visit
                weight[best_com] = 0.0
                coms[k] = best_com
                k += 1
            d = degree[u]
            stot[best_com] -= d
            remove_cost = -weight[best_com] / m + resolution * (stot[best_com] * d) / two_m2
            for t in range(k):
                c = coms[t]
                gain = remove_cost + weight[c] / m - resolution * (stot[c] * d) / two_m2
                if gain > best_mod:
                    best_mod = gain
                    best_com = c
            stot[best_com] += d
            if best_com != node2com[u]:
                node2com[u] = best_com
                improvement = True
                moves += 1
    return node2com, improvement


@compiled
def _dense(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels renumbered 0.. in the order of their values, and how many there are."""
    n = len(labels)
    used = np.zeros(n, dtype=np.bool_)
    for c in labels:
        used[c] = True
    new = np.full(n, -1, dtype=np.int64)
    k = 0
    for c in range(n):
        if used[c]:
            new[c] = k
            k += 1
    out = np.empty(n, dtype=np.int64)
    for a in range(n):
        out[a] = new[labels[a]]
    return out, k


@compiled
def _modularity(
    indptr: np.ndarray,
    nbr: np.ndarray,
    wt: np.ndarray,
    degree: np.ndarray,
    com: np.ndarray,
    k: int,
    resolution: float,
    degree_sum: float,
) -> float:
    """Modularity of the partition ``com`` (communities 0..k-1)."""
    m = degree_sum / 2
    norm = 1 / degree_sum**2
    inner = np.zeros(k)
    total = np.zeros(k)
    n = len(degree)
    for a in range(n):
        total[com[a]] += degree[a]
        for q in range(indptr[a], indptr[a + 1]):
            b = nbr[q]
            if b >= a and com[b] == com[a]:
                inner[com[a]] += wt[q]
    out = 0.0
    for c in range(k):
        out += inner[c] / m - resolution * total[c] * total[c] * norm
    return out


def _aggregate(
    eu: np.ndarray, ev: np.ndarray, ew: np.ndarray, com: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The graph of communities, as ``_gen_graph`` builds it.

    Edges come in the order they are first made; each weight is added up in
    edge order (``bincount`` adds sequentially, as networkx does).
    """
    a = np.minimum(com[eu], com[ev])
    b = np.maximum(com[eu], com[ev])
    _, first, inverse = np.unique(a * k + b, return_index=True, return_inverse=True)
    created = np.argsort(first, kind="stable")
    position = np.empty(len(first), dtype=np.int64)
    position[created] = np.arange(len(first))
    w = np.bincount(position[inverse], weights=ew, minlength=len(first))
    return a[first[created]], b[first[created]], w


def _level_graph(
    n: int, u: np.ndarray, v: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """A level's adjacency, weighted degrees and their sum (in node order, as networkx adds)."""
    indptr, nbr, wt = _adjacency(n, u, v, w)
    degree = _degrees(indptr, nbr, wt)
    return indptr, nbr, wt, degree, sum(degree.tolist())


def louvain_communities(
    n: int,
    u: np.ndarray,
    v: np.ndarray,
    w: np.ndarray,
    resolution: float = 1.0,
    threshold: float = 1e-7,
    seed: int = 0,
) -> list[np.ndarray]:
    """Communities of nodes ``0..n-1`` joined by the distinct edges ``u - v`` of weight ``w``.

    Nodes and edges are taken in the order given, as networkx takes a graph
    built with ``add_nodes_from(range(n))`` and ``add_weighted_edges_from``;
    the communities come in networkx's order, each as sorted node numbers.
    """
    u = np.asarray(u, dtype=np.int64)
    v = np.asarray(v, dtype=np.int64)
    w = np.asarray(w, dtype=np.float64)
    rng = random.Random(seed)
    if len(u) == 0:
        return [np.array([a], dtype=np.int64) for a in range(n)]
    # networkx copies the input graph edge by edge before the first level.
    eu, ev, ew = _edges(*_adjacency(n, u, v, w))
    indptr, nbr, wt, degree, degree_sum = _level_graph(n, eu, ev, ew)
    m = degree_sum / 2  # every level's moves are weighed against the input graph's size
    level_n = n
    node_of = np.arange(n, dtype=np.int64)  # each input node's node in the current level
    mod = _modularity(indptr, nbr, wt, degree, node_of, n, resolution, degree_sum)
    found: np.ndarray | None = None
    improvement = True
    while improvement:
        visit = list(range(level_n))
        rng.shuffle(visit)
        com, improvement = _one_level(
            indptr, nbr, wt, degree, np.array(visit, dtype=np.int64), m, resolution, 2 * m**2
        )
        if not improvement:
            break
        com, k = _dense(com)
        node_of = com[node_of]
        found = node_of
        new_mod = _modularity(indptr, nbr, wt, degree, com, k, resolution, degree_sum)
        if new_mod - mod <= threshold:
            break
        mod = new_mod
        eu, ev, ew = _edges(indptr, nbr, wt)
        eu, ev, ew = _aggregate(eu, ev, ew, com, k)
        indptr, nbr, wt, degree, degree_sum = _level_graph(k, eu, ev, ew)
        level_n = k
    if found is None:
        return [np.array([a], dtype=np.int64) for a in range(n)]
    order = np.argsort(found, kind="stable")
    bounds = np.flatnonzero(np.diff(found[order])) + 1
    return np.split(order, bounds)
