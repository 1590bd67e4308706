"""The compiled kernels of extraction, linking and clustering agree with the library code
they replace."""

from __future__ import annotations

import datetime as dt

import networkx as nx
import numba
import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from distill_forensics.cluster import bridge_links
from distill_forensics.extract import (
    SKETCH_SIZE,
    _derived_usage,
    _group_key,
    _merge_usage,
    _template_usage,
    sketch_union,
    sketch_union_by,
)
from distill_forensics.link import (
    DEFAULT_KIND_WEIGHTS,
    LinkOptions,
    _candidates,
    _decide,
    _dense_codes,
    _distinct,
    _hopeful,
    _hopeful_rule,
    _owner_pairs,
    _pair_dots,
    _PairLists,
    _pairs_by_own,
    _signature_orders,
)
from distill_forensics.louvain import louvain_communities
from distill_forensics.normalize import ip_network
from distill_forensics.radix import argsort_keys, sort_keys, sort_with_order


@settings(deadline=None)
@given(st.lists(st.integers(-5, 5) | st.integers(-(2**63), 2**63 - 1), max_size=60))
def test_distinct_keys_are_numpys_unique(values):
    keys = np.array(values, dtype=np.int64)
    got = _distinct(keys.copy())
    assert np.array_equal(got, np.unique(keys))
    assert got.base is None  # a fresh array, not a view holding the repeats


@settings(deadline=None)
@given(st.lists(st.integers(-5, 5) | st.integers(-(2**63), 2**63 - 1), max_size=60))
def test_radix_sorts_are_numpys(values):
    keys = np.array(values, dtype=np.int64)
    assert np.array_equal(sort_keys(keys.copy()), np.sort(keys))
    assert np.array_equal(argsort_keys(keys), np.argsort(keys, kind="stable"))
    in_order, order = sort_with_order(keys)
    assert np.array_equal(in_order, np.sort(keys))
    assert np.array_equal(order, np.argsort(keys, kind="stable"))


@pytest.mark.parametrize(
    ("n", "high"), [(300_000, 2), (300_000, 2**20), (300_000, 2**40), (200_000, 2**62)]
)
def test_radix_sorts_of_many_blocks_are_numpys(n, high):
    # Enough keys for several blocks counted and moved at once, each width of key
    # taking a different number of passes; repeats test that equal keys keep order.
    keys = np.random.default_rng(n + high).integers(0, high, n)
    order = argsort_keys(keys)
    assert np.array_equal(order, np.argsort(keys, kind="stable"))
    assert np.array_equal(sort_keys(keys.copy()), np.sort(keys))
    assert np.array_equal(argsort_keys(keys.astype(np.int32) if high < 2**31 else keys), order)
    in_order, same_order = sort_with_order(keys)
    assert np.array_equal(in_order, np.sort(keys)) and np.array_equal(same_order, order)


@pytest.mark.parametrize("high", [2**6, 2**20, 2**40])
def test_radix_sort_through_a_spare_buffer(high):
    # Odd and even numbers of passes leave the result in either buffer.
    keys = np.random.default_rng(high).integers(0, high, 5000)
    spare = np.full(6000, -1, dtype=np.int64)
    got = sort_keys(keys.copy(), spare)
    assert np.array_equal(got, np.sort(keys))
    with pytest.raises(ValueError, match="apart from the keys"):
        sort_keys(spare[:100], spare)


def test_pair_lists_reuse_their_buffers_and_union_the_lists():
    rng = np.random.default_rng(3)
    n = 50
    group = rng.integers(0, 40, 3000)
    idx = rng.integers(0, n, 3000)
    orders = _signature_orders(
        rng.integers(0, 5, n).astype(np.uint64), rng.integers(0, 5, n).astype(np.uint64)
    )
    lists = _PairLists()
    first = _candidates(group, idx, orders, 4, 2, n, lists)
    spare = lists.spare
    again = _candidates(group, idx, orders, 4, 2, n, lists)
    assert lists.spare is spare  # the same lists: no new buffer
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not any(np.may_share_memory(a, spare) for a in first + again)
    assert np.array_equal(lists.union(first + again[:1]), np.unique(np.concatenate(first)))
    assert len(lists.spare) == 0


@pytest.mark.parametrize("high", [2**6, 2**20, 2**40])
@pytest.mark.parametrize("spare", [0, 10, 100_000])
def test_pair_lists_union_wherever_the_sort_ends(high, spare):
    # One, two or three radix passes end in either buffer; a spare too short is
    # replaced; many repeats give a copy, not a view holding them.
    rng = np.random.default_rng(high + spare)
    parts = [np.unique(rng.integers(0, high, size)) for size in (3000, 20_000, 500)]
    lists = _PairLists()
    lists.spare = np.full(spare, -1, dtype=np.int64)
    got = lists.union(parts)
    assert np.array_equal(got, np.unique(np.concatenate(parts)))
    assert len(lists.spare) == 0
    if got.base is not None:
        assert 4 * len(got) >= 3 * len(got.base)


@given(st.lists(st.integers(0, 5) | st.integers(0, 2**64 - 1), max_size=60))
def test_dense_codes_are_numpys_unique_inverse(values):
    hashes = np.array(values, dtype=np.uint64)
    _, inverse = np.unique(hashes, return_inverse=True)
    assert np.array_equal(_dense_codes(pl.Series(hashes)), inverse)


@pytest.mark.parametrize(
    ("index_type", "where_type"), [(np.int32, np.uint16), (np.int64, np.int64)]
)
def test_pair_dots_are_column_order_sums_of_products(index_type, where_type):
    rng = np.random.default_rng(7)
    n_rows, widths = 60, [5, 40, 200]
    blocks = [
        sp.random(n_rows, w, density=d, random_state=rng, format="csr")
        for w, d in zip(widths, [0.3, 0.2, 0.5], strict=True)
    ]
    # Some rows without entries of the last kind.
    blocks[2] = (sp.diags((np.arange(n_rows) % 7 != 0).astype(float)) @ blocks[2]).tocsr()
    blocks[2].eliminate_zeros()
    x = sp.hstack(blocks, format="csr")
    x.sum_duplicates()
    col_kind = np.repeat(np.arange(len(widths)), widths)
    keys = np.unique(rng.integers(0, n_rows * n_rows, 500))
    i, j = np.divmod(keys, n_rows)
    where = np.zeros((3, x.shape[1]), dtype=where_type)
    # Half the pairs walk row i against row j, half the other way round.
    flip = np.arange(len(i)) % 2 == 1
    order = np.concatenate([np.flatnonzero(~flip), np.flatnonzero(flip)])
    kind_start = np.concatenate([[0], np.cumsum(widths)])
    matrix = (x.indptr.astype(np.int64), x.indices.astype(index_type), x.data)
    own, walk = np.where(flip, j, i)[order], np.where(flip, i, j)[order]
    sparse = np.stack(
        [np.asarray(block[i].multiply(block[j]).sum(axis=1)).ravel() for block in blocks], axis=1
    )
    # Each kind's products added one by one in column order.
    expected = np.zeros((len(i), len(widths)))
    for p, (a, b) in enumerate(zip(i, j, strict=True)):
        row_a, row_b = slice(x.indptr[a], x.indptr[a + 1]), slice(x.indptr[b], x.indptr[b + 1])
        mine = dict(zip(x.indices[row_a], x.data[row_a], strict=True))
        for c, v in zip(x.indices[row_b], x.data[row_b], strict=True):
            if c in mine:
                expected[p, col_kind[c]] += mine[c] * v
    np.testing.assert_allclose(expected, sparse, rtol=1e-12)
    # The output is reused between chunks: what a previous chunk left is cleared.
    got = np.full((len(i), len(widths)), 7.0)
    _pair_dots(*matrix, col_kind, kind_start, 0, len(widths), own, walk, order, where, got)
    assert np.array_equal(got, expected)
    assert (where == 0).all()
    # As linking measures them: all kinds but the last, then the last for some pairs.
    # Only the kinds measured are cleared and written, and only for the pairs asked.
    got = np.full((len(i), len(widths)), 7.0)
    _pair_dots(*matrix, col_kind, kind_start, 0, 2, own, walk, order, where, got)
    assert np.array_equal(got[:, :2], expected[:, :2])
    assert (got[:, 2] == 7.0).all()
    some = np.arange(len(own)) % 3 != 0
    _pair_dots(*matrix, col_kind, kind_start, 2, 3, own[some], walk[some], order[some], where, got)
    asked = np.zeros(len(i), dtype=bool)
    asked[order[some]] = True
    assert np.array_equal(got[asked, 2], expected[asked, 2])
    assert (got[~asked, 2] == 7.0).all()
    assert np.array_equal(got[:, :2], expected[:, :2])
    assert (where == 0).all()
    # A middle kind alone.
    got = np.full((len(i), len(widths)), 7.0)
    _pair_dots(*matrix, col_kind, kind_start, 1, 2, own, walk, order, where, got)
    assert np.array_equal(got[:, 1], expected[:, 1])
    assert (got[:, [0, 2]] == 7.0).all()


def test_pair_dots_write_only_the_kinds_measured():
    # Row 1's entries from row 0's first column on are all of the next kind: the
    # walk stops at once, and that kind is not written.
    x = sp.csr_matrix(np.array([[0, 0, 0, 1.0, 0, 0], [0, 0, 2.0, 0, 3.0, 0]]))
    kind_start = np.array([0, 2, 4, 6])
    col_kind = np.repeat(np.arange(3), 2)
    matrix = (x.indptr.astype(np.int64), x.indices.astype(np.int32), x.data)
    where = np.zeros((1, 6), dtype=np.uint16)
    got = np.full((1, 3), 7.0)
    own, walk, row = np.array([0]), np.array([1]), np.array([0])
    _pair_dots(*matrix, col_kind, kind_start, 1, 2, own, walk, row, where, got)
    assert got.tolist() == [[7.0, 0.0, 7.0]]


def _candidates_by_definition(group, idx, orders, rare_max, k, n):
    """Every pair within small groups; in larger ones each member and its next ``k``
    in each signature order; accounts numbered by their rank in the first order."""
    rank1, _, rank2, _ = orders
    keys = set()
    for g in np.unique(group):
        members = idx[group == g]
        for rank in (rank1, rank2):
            ordered = members[np.argsort(rank[members], kind="stable")]
            reach = len(ordered) if len(ordered) <= rare_max else k + 1
            for p in range(len(ordered)):
                for q in range(p + 1, min(p + reach, len(ordered))):
                    a, b = rank1[ordered[p]], rank1[ordered[q]]
                    if a != b:
                        keys.add(min(a, b) * n + max(a, b))
    return np.array(sorted(keys), dtype=np.int64)


@settings(deadline=None, max_examples=60)
@given(st.integers(0, 2**32 - 1), st.integers(1, 400), st.sampled_from([2, 3, 8]))
def test_candidates_are_the_defined_pairs(seed, n_rows, rare_max):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    pairs = np.unique(
        np.stack([rng.integers(0, 12, n_rows), rng.integers(0, n, n_rows)], axis=1), axis=0
    )
    group, idx = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    sig1 = rng.integers(0, 5, n).astype(np.uint64)
    sig2 = rng.integers(0, 5, n).astype(np.uint64)
    orders = _signature_orders(sig1, sig2)
    got = _candidates(group, idx, orders, rare_max, 2, n)
    assert all(np.array_equal(keys, np.unique(keys)) for keys in got)  # each sorted, distinct
    union = np.unique(np.concatenate(got)) if got else np.zeros(0, dtype=np.int64)
    assert np.array_equal(union, _candidates_by_definition(group, idx, orders, rare_max, 2, n))


def test_owner_pairs_of_packed_and_separate_keys_agree():
    # Rows sorted by (group, rank) as one packed key, or as groups beside ranks
    # (when the two do not fit in one integer); small groups, then large ones.
    rng = np.random.default_rng(11)
    n, rows, bits = 300, 20_000, 9
    label = rng.permutation(n)
    for groups, low, high, reach in [(4_000, 1, 8, 7), (400, 9, rows, 3)]:
        pairs = np.unique(rng.integers(0, groups, rows) * n + rng.integers(0, n, rows))
        group, rank = pairs // n, pairs % n
        key = (group << bits) | rank
        # (rows numbered in either integer type)
        small, large = np.empty(0, dtype=np.int32), np.empty(0, dtype=np.int64)
        threads = numba.get_num_threads()
        packed = _owner_pairs(
            key, bits, key, (1 << bits) - 1, label, reach, n, low, high, 4, threads, small
        )
        separate = _owner_pairs(group, 0, rank, -1, label, reach, n, low, high, 1, threads, large)
        assert len(packed) == len(np.unique(packed)) > 1000
        assert np.array_equal(np.sort(packed), np.sort(separate))


def test_candidates_of_many_blocks_match_one_block():
    # Long enough for the pair search to share runs out in blocks, with runs
    # crossing the blocks' first rows.
    rng = np.random.default_rng(7)
    n, rows = 5_000, 400_000
    group = np.sort(rng.integers(0, 3_000, rows)).astype(np.int64)
    idx = rng.integers(0, n, rows).astype(np.int64)
    keep = np.unique(group * n + idx, return_index=True)[1]
    group, idx = group[keep], idx[keep]
    sig1, sig2 = (rng.integers(0, 50, n).astype(np.uint64) for _ in range(2))
    orders = _signature_orders(sig1, sig2)
    got = np.unique(np.concatenate(_candidates(group, idx, orders, 32, 4, n)))
    pieces = []
    for lo in range(0, 3_000, 500):
        part = (group >= lo) & (group < lo + 500)
        pieces.extend(_candidates(group[part], idx[part], orders, 32, 4, n))
    assert len(got) > 100_000
    assert np.array_equal(got, np.unique(np.concatenate(pieces)))


@settings(deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_pairs_by_own_group_each_pair_under_its_longer_row(seed):
    rng = np.random.default_rng(seed)
    # Few rows (a counting sort) or many more rows than pairs (a merge sort).
    n = int(rng.integers(2, 40) if seed % 2 else rng.integers(2000, 6000))
    row_len = rng.integers(0, 4, n)  # many ties
    row_tile = np.cumsum(rng.random(n) < 0.2) - 1
    row_tile -= row_tile[0]  # tiles from 0, ascending with the rows
    keys = np.unique(rng.integers(0, n * n, int(rng.integers(0, 200))))
    ri, rj = np.divmod(keys, n)
    keep = ri < rj
    keys, ri, rj = keys[keep], ri[keep], rj[keep]
    got_i, got_j, own, walk, order = _pairs_by_own(keys, n, row_len, row_tile)
    assert np.array_equal(got_i, ri) and np.array_equal(got_j, rj)
    assert np.array_equal(np.sort(order), np.arange(len(ri)))
    # The longer row owns the pair; on a tie, the first.
    flip = row_len[ri] < row_len[rj]
    assert np.array_equal(own, np.where(flip, rj, ri)[order])
    assert np.array_equal(walk, np.where(flip, ri, rj)[order])
    # Grouped by the walked row's tile, then by own; pairs in key order within a group.
    group = row_tile[walk] * n + own
    assert (np.diff(group) >= 0).all()
    same = np.diff(group) == 0
    assert (np.diff(order)[same] > 0).all()


@settings(deadline=None, max_examples=80)
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from([0, 1, 2, 3]),
    st.booleans(),
    st.sampled_from([0.25, 0.5, 1.0]),
    st.sampled_from([0.3, 0.55, 0.9]),
    st.sampled_from(["default", "some off", "custom"]),
)
def test_hopeful_never_drops_a_pair_that_links(
    seed, min_families, sync_measured, saturation, min_weight, weighing
):
    """Any pair that linking's final rule (:func:`_decide`) keeps, with the time and
    org factors at their largest (1), passes the prescreen, whatever lockstep adds."""
    rng = np.random.default_rng(seed)
    weights = dict(DEFAULT_KIND_WEIGHTS)
    if weighing == "some off":
        weights.update(ip=0.0, template=0.0)
    elif weighing == "custom":
        weights = {k: float(rng.choice([0.0, 0.1, 0.4, 1.0, 2.0])) for k in weights}
    opt = LinkOptions(
        kind_weights=weights,
        min_families=min_families,
        saturation=saturation,
        min_weight=min_weight,
    )
    kinds = sorted(k for k, w in weights.items() if w > 0)
    link_kinds = [k for k in weights if k != "sync" and weights[k] > 0]
    sync_weight = weights["sync"] if sync_measured else 0.0
    rule = _hopeful_rule(link_kinds, opt, sync_weight)
    on_dot, strong_dot = rule[3], rule[4]
    n, width = 4000, len(link_kinds)
    # Dots at, just below and just above the thresholds, zeros and anything in between.
    marks = np.array([on_dot, strong_dot])
    near = marks[rng.integers(0, 2, (n, width))] * (1 + rng.normal(0, 1e-13, (n, width)))
    dots = np.where(
        rng.random((n, width)) < 0.6,
        0.0,
        np.where(rng.random((n, width)) < 0.5, near, rng.random((n, width)) * saturation),
    )
    maybe, _ = _hopeful(np.ascontiguousarray(dots), *rule)
    kept = 0
    for sync in (np.zeros(n), np.full(n, sync_weight), rng.random(n) * sync_weight):
        contrib = {
            kind: weights[kind] * (1.0 - np.exp(-dots[:, col] / saturation))
            for col, kind in enumerate(link_kinds)
        }
        if sync_measured:
            contrib["sync"] = sync
        keep = _decide(contrib, kinds, opt, n)[2]
        assert not (keep & ~maybe).any()
        kept += int(keep.sum())
    # The pairs linked are not all trivial (random weights may make every link impossible).
    assert kept > 0 or weighing == "custom"
    # And it does rule pairs out: with nothing shared, only lockstep could link a pair.
    alone = sync_weight + 1e-9 >= min_weight and min_families <= 1
    assert _hopeful(np.zeros((1, width)), *rule)[0][0] == alone


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


_HASHES = st.one_of(
    st.integers(0, 40),  # small: repeats within and across rows
    st.integers(0, 2**64 - 1),
)


def _in_key_order(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    return frame.sort([pl.col(k).cast(pl.String) for k in keys])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 1),  # day
            st.sampled_from(["a1", "a2", "a3"]),
            st.sampled_from(["t1", "t2"]),
            st.integers(1, 5),  # requests
            st.integers(0, 10**6),  # first seen (s)
            st.integers(0, 10**6),  # span (s)
            st.one_of(st.none(), st.lists(_HASHES, max_size=40, unique=True).map(sorted)),
        ),
        max_size=60,
    ),
    st.booleans(),
)
def test_template_merge_matches_polars_sketch_union(rows, as_text):
    """Merged template usage: sums, bounds and the bottom-k union of the rows' sketches,
    with ids and values as categories (extraction) or text (the evidence store)."""
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    usage = pl.DataFrame(
        {
            "day": [dt.date(2026, 1, 1 + r[0]) for r in rows],
            "account_id": [r[1] for r in rows],
            "kind": ["template"] * len(rows),
            "value": [r[2] for r in rows],
            "n_requests": [r[3] for r in rows],
            "first_seen": [start + dt.timedelta(seconds=r[4]) for r in rows],
            "last_seen": [start + dt.timedelta(seconds=r[4] + r[5]) for r in rows],
            "variants": [r[6] for r in rows],
        },
        schema_overrides={
            "day": pl.Date(),
            "account_id": pl.Categorical(),
            "kind": pl.Categorical(),
            "n_requests": pl.Int64(),
            "value": pl.Categorical(),
            "first_seen": pl.Datetime("us", "UTC"),
            "last_seen": pl.Datetime("us", "UTC"),
            "variants": pl.List(pl.UInt64()),
        },
    )
    keys = ["day", "account_id", "kind", "value"]
    if as_text:
        usage = usage.with_columns(pl.col(pl.Categorical).cast(pl.String))
    # Two parts, so the merge sees rows of one group arrive from either.
    got = _merge_usage([usage[: len(rows) // 2], usage[len(rows) // 2 :]], ["day"])
    expected = usage.group_by(keys).agg(
        pl.col("n_requests").sum(),
        pl.col("first_seen").min(),
        pl.col("last_seen").max(),
        sketch_union(pl.col("variants")).alias("variants"),
    )
    assert_frame_equal(_in_key_order(got, keys), _in_key_order(expected, keys))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a1", "a2", "a3"]),
            st.sampled_from(["t1", "t2", "t3"]),
            st.integers(0, 10**6),
            st.one_of(st.none(), _HASHES),
        ),
        max_size=120,
    )
)
def test_template_usage_of_a_batch_matches_polars_sketch(rows):
    """One batch's template usage: requests, first and last seen, and the sketch of prompt hashes
    (null hashes left out)."""
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    batch = pl.DataFrame(
        {
            "account_id": [r[0] for r in rows],
            "value": [r[1] for r in rows],
            "timestamp": [start + dt.timedelta(seconds=r[2]) for r in rows],
            "_ph": [r[3] for r in rows],
        },
        schema_overrides={
            "account_id": pl.Categorical(),
            "value": pl.Categorical(),
            "timestamp": pl.Datetime("us", "UTC"),
            "_ph": pl.UInt64(),
        },
    )
    got = _template_usage(batch, [])
    expected = batch.group_by("account_id", "value").agg(
        pl.len().cast(pl.Int64).alias("n_requests"),
        pl.col("timestamp").min().alias("first_seen"),
        pl.col("timestamp").max().alias("last_seen"),
        pl.col("_ph").drop_nulls().unique().sort().head(SKETCH_SIZE).alias("variants"),
        kind=pl.lit("template", pl.Categorical()),
    )
    keys = ["account_id", "value"]
    assert_frame_equal(_in_key_order(got, keys), _in_key_order(expected, keys))


@pytest.mark.parametrize("by_day", [False, True])
@pytest.mark.parametrize("rows", [0, 40])
def test_derived_usage_is_the_group_by_of_each_rows_derived_value(by_day, rows):
    """Networks from address usage: the function of each distinct address, joined back,
    grouped as applying it to every row would; addresses with no network drop out."""
    rng = np.random.default_rng(rows)
    addresses = [
        "10.0.0.1",
        "10.0.0.7",
        "10.0.1.2",
        "2001:db8:abcd:12::1",
        "2001:db8:abcd::9",
        "bad",
    ]
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    seen = [start + dt.timedelta(minutes=int(m)) for m in rng.integers(0, 10_000, rows)]
    base = pl.DataFrame(
        {
            "day": [dt.date(2026, 1, 1 + int(d)) for d in rng.integers(0, 2, rows)],
            "account_id": [f"a{int(a)}" for a in rng.integers(0, 4, rows)],
            "kind": ["ip"] * rows,
            "value": [addresses[int(v)] for v in rng.integers(0, len(addresses), rows)],
            "n_requests": rng.integers(1, 9, rows),
            "first_seen": seen,
            "last_seen": [t + dt.timedelta(minutes=5) for t in seen],
            "variants": [None] * rows,
        },
        schema_overrides={
            "day": pl.Date(),
            "account_id": pl.Categorical(),
            "kind": pl.Categorical(),
            "value": pl.Categorical(),
            "n_requests": pl.Int64(),
            "first_seen": pl.Datetime("us", "UTC"),
            "last_seen": pl.Datetime("us", "UTC"),
            "variants": pl.List(pl.UInt64()),
        },
    )
    if not by_day:
        base = base.drop("day")
    day = ["day"] if by_day else []
    got = _derived_usage(base, "net", ip_network)
    expected = (
        base.lazy()
        .select(
            *day,
            "account_id",
            ip_network(pl.col("value").cast(pl.String)).cast(pl.Categorical()).alias("value"),
            "n_requests",
            "first_seen",
            "last_seen",
        )
        .filter(pl.col("value").is_not_null())
        .group_by(*day, "account_id", "value")
        .agg(
            pl.col("n_requests").sum(),
            pl.col("first_seen").min(),
            pl.col("last_seen").max(),
            pl.lit(None, pl.List(pl.UInt64)).alias("variants"),
        )
        .with_columns(kind=pl.lit("net", pl.Categorical()))
        .collect()
    )
    keys = [*day, "account_id", "value"]
    assert_frame_equal(_in_key_order(got, keys), _in_key_order(expected, keys))
    assert (rows > 0) == (got.height > 0)


def test_group_key_numbers_rows_too_wide_to_pack():
    rng = np.random.default_rng(3)
    wide = rng.integers(0, 3, (3, 500)) * (1 << 40)  # three columns of 2^41 values each
    frame = pl.DataFrame({"x": wide[0], "y": wide[1], "z": wide[2]})
    in_order, order = _group_key(frame, ["x", "y", "z"])
    key = np.empty_like(in_order)
    key[order] = in_order
    rows = [tuple(r) for r in wide.T]
    assert all((key[a] == key[b]) == (rows[a] == rows[b]) for a in range(50) for b in range(500))
    assert np.all(np.diff(in_order) >= 0)
    # Numbered 1..groups, not packed.
    assert set(key.tolist()) == set(range(1, len(set(rows)) + 1))


def test_sketch_of_a_busy_group_keeps_the_smallest_distinct_hashes():
    rng = np.random.default_rng(5)
    hashes = rng.integers(0, 2**63, 300, dtype=np.uint64)
    batch = pl.DataFrame(
        {
            "account_id": ["a"] * 600,
            "value": ["t"] * 600,
            "timestamp": [dt.datetime(2026, 1, 1, tzinfo=dt.UTC)] * 600,
            "_ph": np.concatenate([hashes, hashes[::-1]]),
        },
        schema_overrides={"account_id": pl.Categorical(), "value": pl.Categorical()},
    )
    got = _template_usage(batch, [])
    assert got.get_column("variants").to_list() == [sorted(hashes.tolist())[:32]]
    assert got.get_column("n_requests").to_list() == [600]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["c1", "c2"]),
            st.sampled_from(["t1", "t2", "t3"]),
            st.integers(1, 9),
            st.one_of(st.none(), st.lists(_HASHES, max_size=40, unique=True).map(sorted)),
        ),
        max_size=60,
    )
)
def test_sketch_union_by_matches_polars(rows):
    """Rows per group, summed counts and the union of the rows' sketches, on text keys."""
    frame = pl.DataFrame(
        {
            "cluster_id": [r[0] for r in rows],
            "value": [r[1] for r in rows],
            "n_requests": [r[2] for r in rows],
            "variants": [r[3] for r in rows],
        },
        schema={
            "cluster_id": pl.String(),
            "value": pl.String(),
            "n_requests": pl.Int64(),
            "variants": pl.List(pl.UInt64()),
        },
    )
    keys = ["cluster_id", "value"]
    got = sketch_union_by(frame, keys, "n_requests", "variants")
    expected = frame.group_by(keys).agg(
        pl.len().cast(pl.Int64).alias("n_rows"),
        pl.col("n_requests").sum(),
        sketch_union(pl.col("variants")).alias("variants"),
    )
    assert_frame_equal(_in_key_order(got, keys), _in_key_order(expected, keys))
