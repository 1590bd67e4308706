"""The compiled kernels of linking and clustering agree with the library code they replace."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp

from distill_forensics.cluster import bridge_links
from distill_forensics.link import _pair_dots, _pairwise_sum
from distill_forensics.louvain import louvain_communities


@pytest.mark.parametrize("n", [0, 1, 2, 7, 8, 9, 127, 128, 129, 300, 1000, 8193])
def test_pairwise_sum_matches_numpy_bit_for_bit(n):
    rng = np.random.default_rng(n)
    values = rng.random(n + 1) * np.exp(rng.normal(0, 8, n + 1))
    expected = np.add.reduceat(values, [0])[0]
    assert values[0] + _pairwise_sum(values, 1, n) == expected


def test_pair_dots_match_sparse_row_products():
    rng = np.random.default_rng(7)
    n_rows, widths = 60, [5, 40, 200]
    blocks = [
        sp.random(n_rows, w, density=d, random_state=rng, format="csr")
        for w, d in zip(widths, [0.3, 0.2, 0.5], strict=True)
    ]
    x = sp.hstack(blocks, format="csr")
    x.sum_duplicates()
    col_kind = np.repeat(np.arange(len(widths)), widths)
    keys = np.unique(rng.integers(0, n_rows * n_rows, 500))
    i, j = np.divmod(keys, n_rows)
    where = np.full((3, x.shape[1]), x.nnz, dtype=np.int64)
    # Half the pairs walk row i against row j, half the other way round.
    flip = np.arange(len(i)) % 2 == 1
    order = np.concatenate([np.flatnonzero(~flip), np.flatnonzero(flip)])
    got = _pair_dots(
        x.indptr.astype(np.int64),
        x.indices.astype(np.int64),
        np.append(x.data, 0.0),
        col_kind,
        len(widths),
        np.where(flip, j, i)[order],
        np.where(flip, i, j)[order],
        order,
        where,
    )
    for k, block in enumerate(blocks):
        expected = np.asarray(block[i].multiply(block[j]).sum(axis=1)).ravel()
        assert np.array_equal(got[:, k], expected)
    assert (where == x.nnz).all()


@pytest.mark.parametrize("seed", range(5))
def test_bridges_match_networkx(seed):
    g = nx.gnm_random_graph(80, 90, seed=seed)
    g.add_edges_from(nx.path_graph(range(80, 95)).edges)  # a chain: every link a bridge
    edges = np.array(sorted(g.edges), dtype=np.int64).reshape(-1, 2)
    i, j = edges[:, 0], edges[:, 1]
    bridge = bridge_links(i, j, 100)
    got = {(int(a), int(b)) for a, b in edges[bridge]}
    assert got == {(min(a, b), max(a, b)) for a, b in nx.bridges(g)}


def _random_graph(seed: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Planted groups with noise between them, edges in random order and orientation.

    Most weights repeat a few values, so that gains tie and tie-breaks matter.
    """
    rng = np.random.default_rng(seed)
    groups, size = int(rng.integers(2, 12)), int(rng.integers(3, 25))
    n = groups * size
    a, b = np.triu_indices(n, 1)
    keep = rng.random(len(a)) < np.where(a // size == b // size, 0.35, 0.02)
    a, b = a[keep], b[keep]
    weight = np.where(
        rng.random(len(a)) < 0.7, rng.choice([1.0, 0.5, 0.3], len(a)), rng.random(len(a))
    )
    order = rng.permutation(len(a))
    flip = rng.random(len(a)) < 0.5
    return n, np.where(flip, b, a)[order], np.where(flip, a, b)[order], weight[order]


@pytest.mark.parametrize("seed", range(40))
def test_louvain_makes_the_moves_networkx_makes(seed):
    n, u, v, w = _random_graph(seed)
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_weighted_edges_from(zip(u.tolist(), v.tolist(), w.tolist(), strict=True))
    expected = [sorted(p) for p in nx.community.louvain_communities(g, weight="weight", seed=seed)]
    got = [p.tolist() for p in louvain_communities(n, u, v, w, seed=seed)]
    assert got == expected


def test_louvain_without_edges_keeps_every_node_apart():
    none = np.zeros(0, dtype=np.int64)
    got = louvain_communities(3, none, none, np.zeros(0))
    assert [p.tolist() for p in got] == [[0], [1], [2]]
