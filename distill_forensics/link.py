"""Stage 2: link accounts that share rare infrastructure, payment, templates or timing.

The strength of a shared value falls with the number of accounts that share it
(an inverse document frequency, per kind), evidence within one kind saturates
(sharing five CGNAT addresses is not five times the evidence of one), and an
edge needs agreement between independent kinds of evidence, or one strong kind
such as a payment card. Accounts of one org sharing infrastructure is ordinary
and counts for little; accounts whose active periods are far apart count less.

Candidate pairs are generated without a quadratic blow-up: every pair only for
values shared by at most ``rare_max`` accounts; for more popular values each
account is paired with its ``neighbours`` nearest members in MinHash order (the
sorted-neighbourhood method), so similar accounts meet and the number of pairs
grows linearly with a value's popularity. Lockstep timing (SynchroTrap,
CopyCatch) uses the same machinery on MinHash bands of each account's set of
active 10-minute slots, then measures co-activity exactly for the candidates
that could still link with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import polars as pl
import scipy.sparse as sp

from distill_forensics.extract import Evidence
from distill_forensics.jit import compiled
from distill_forensics.memory import release_freed_memory
from distill_forensics.radix import sort_keys

DEFAULT_KIND_WEIGHTS: dict[str, float] = {
    "payment": 1.0,
    "email": 1.0,
    "ip": 0.6,
    "net": 0.3,
    "signup_ip": 0.5,
    "signup_net": 0.2,
    "signup_hour": 0.3,
    "signup_day": 0.2,
    "tls": 0.35,
    "ua": 0.3,
    "template": 0.55,
    "bin_country": 0.15,
    "email_domain": 0.4,
    "sync": 0.7,
}
"""Weight of each kind of evidence when a pair shares a value of it exclusively."""

STRONG_KINDS = frozenset({"payment", "email", "signup_ip"})
"""Kinds that can link two accounts on their own when the shared value is rare."""

FAMILY: dict[str, str] = {
    "ip": "network",
    "net": "network",
    "signup_ip": "network",
    "signup_net": "network",
    "signup_hour": "signup_time",
    "signup_day": "signup_time",
    "email": "email",
    "email_domain": "email",
}
"""Kinds that are not independent evidence of each other share a family."""

ACCOUNT_LEVEL_KINDS = frozenset(
    {
        "payment",
        "email",
        "email_domain",
        "signup_ip",
        "signup_net",
        "signup_hour",
        "signup_day",
        "bin_country",
    }
)
"""Kinds that describe the account itself rather than some of its requests."""

BURST_KINDS = frozenset({"signup_hour", "signup_day"})
"""Kinds whose values are points in time: they link only as part of a burst."""

INFRA_KINDS = frozenset(
    {"ip", "net", "signup_ip", "signup_net", "payment", "bin_country", "email_domain", "tls", "ua"}
)
"""Kinds that an org's members legitimately share."""


@dataclass(frozen=True)
class LinkOptions:
    """Knobs of the linking stage; the defaults are the documented behaviour."""

    kind_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_KIND_WEIGHTS))
    rare_max: int = 32
    neighbours: int = 4
    max_share: float = 0.25
    saturation: float = 0.5
    min_weight: float = 0.55
    min_families: int = 2
    same_org_factor: float = 0.2
    gap_half_life_days: float = 14.0
    sync_min_slots: int = 5
    sync_min_overlap: int = 4
    sync_min_lift: float = 8.0
    minhash_bands: int = 6
    burst_min: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        # Linking screens pairs by the most a pair can reach: the factors that
        # lower a contribution must not raise it.
        if not 0.0 <= self.same_org_factor <= 1.0:
            raise ValueError(f"same_org_factor must be within 0 and 1, not {self.same_org_factor}")
        if self.gap_half_life_days <= 0 or self.saturation <= 0:
            raise ValueError("gap_half_life_days and saturation must be positive")
        if self.rare_max < 1 or self.neighbours < 0:
            raise ValueError(
                f"rare_max must be at least 1 and neighbours at least 0, not {self.rare_max} "
                f"and {self.neighbours}"
            )


@dataclass(frozen=True)
class Links:
    """The weighted account graph: one row per linked pair with per-kind contributions."""

    edges: pl.DataFrame
    accounts: pl.Series
    value_stats: pl.DataFrame
    n_candidates: int


def both_ends(edges: pl.DataFrame, *columns: str) -> pl.DataFrame:
    """Each link twice, once from each end: ``account_id``, ``other`` and ``columns``."""
    return pl.concat(
        [
            edges.select(pl.col("a").alias("account_id"), pl.col("b").alias("other"), *columns),
            edges.select(pl.col("b").alias("account_id"), pl.col("a").alias("other"), *columns),
        ]
    )


def _hash64(values: pl.Expr, seed: int) -> pl.Expr:
    return values.hash(seed=seed)


_CHUNK = 1 << 20
"""Candidate pairs scored at a time: bounds the per-pair, per-kind working arrays."""

_EMPTY_DTYPES = {"i": np.int64, "j": np.int64, "n_families": np.int32, "same_org": np.bool_}


@compiled
def _dots_range(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    col_kind: np.ndarray,
    kind_start: np.ndarray,
    kind_lo: int,
    kind_hi: int,
    own: np.ndarray,
    walk: np.ndarray,
    row: np.ndarray,
    lo: int,
    hi: int,
    where: np.ndarray,
    out: np.ndarray,
) -> None:
    """``out[row[p], kind]`` for pairs ``lo <= p < hi`` and kinds ``kind_lo <= kind < kind_hi``
    (those entries are cleared first).

    While a run of pairs with one ``own`` row is scored, the row's values in
    the kinds are copied to ``mine[1:]`` and ``where`` maps each of its columns
    to its place there; every other column maps to ``mine[0]``, a zero.
    ``where`` is all zeros before and after, and small enough (16 bits per
    column when rows are shorter than 65,535 entries) to stay in the cache
    while rows are walked against it.
    """
    col_lo, col_hi = kind_start[kind_lo], kind_start[kind_hi]
    longest = 0
    for v in range(len(indptr) - 1):
        longest = max(longest, indptr[v + 1] - indptr[v])
    mine = np.zeros(longest + 1)
    current = -1
    a_lo = a_hi = 0
    for p in range(lo, hi):
        if own[p] != current:
            for q in range(a_lo, a_hi):
                where[indices[q]] = 0
            current = own[p]
            # The own row's entries within the kinds' columns.
            a_lo, a_hi = indptr[current], indptr[current + 1]
            a_lo += np.searchsorted(indices[a_lo:a_hi], col_lo)
            a_hi = a_lo + np.searchsorted(indices[a_lo:a_hi], col_hi)
            for q in range(a_lo, a_hi):
                where[indices[q]] = q - a_lo + 1
                mine[q - a_lo + 1] = data[q]
        r = row[p]
        out[r, kind_lo:kind_hi] = 0.0
        if a_lo == a_hi:
            continue
        # Only the part of the walked row within those entries' range of
        # columns can match.
        b_lo, b_hi = indptr[walk[p]], indptr[walk[p] + 1]
        b_lo += np.searchsorted(indices[b_lo:b_hi], indices[a_lo])
        if b_lo == b_hi:
            continue
        last = indices[a_hi - 1]
        # Each kind's products summed in column order, without a branch per
        # column: a missing column multiplies by zero, which adds nothing.
        kind = col_kind[indices[b_lo]]
        kind_end = kind_start[kind + 1]
        total = 0.0
        for b in range(b_lo, b_hi):
            c = indices[b]
            if c > last:
                break
            if c >= kind_end:
                out[r, kind] = total
                total = 0.0
                kind = col_kind[c]
                kind_end = kind_start[kind + 1]
            total += mine[where[c]] * data[b]
        if kind < kind_hi:  # (not when the walk stopped at once, past the kinds)
            out[r, kind] = total
    for q in range(a_lo, a_hi):
        where[indices[q]] = 0


@compiled(parallel=True)
def _pair_dots(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    col_kind: np.ndarray,
    kind_start: np.ndarray,
    kind_lo: int,
    kind_hi: int,
    own: np.ndarray,
    walk: np.ndarray,
    row: np.ndarray,
    where: np.ndarray,
    out: np.ndarray,
) -> None:
    """Per pair and kind, the dot product of two CSR rows over that kind's columns.

    Rows have sorted columns, each kind's columns contiguous: kind ``k`` has
    columns ``kind_start[k]`` to ``kind_start[k + 1]``; kinds ``kind_lo`` to
    ``kind_hi`` are measured. Pairs come in runs of one ``own`` row, whose
    entries in those kinds are spread into a column lookup once for the
    run; the ``walk`` row (the shorter one, see :func:`_pairs_by_own`) is
    walked against it. Products are added in column order, so
    ``out[row[p], kind]`` is the same whichever row is walked and however the
    pairs are shared among threads; it equals a sparse row product
    (``x[own].multiply(x[walk]).sum(axis=1)``) up to rounding. ``where``
    holds one lookup row per block of pairs scored in parallel, all zeros
    (see :func:`_dots_range`). ``out`` (a row per
    pair, a column per kind) is reused from chunk to chunk: clearing the
    measured entries as each pair is scored is cheaper than having the
    system hand over fresh zeroed pages each time.
    """
    n = len(own)
    blocks = where.shape[0]
    for blk in numba.prange(blocks):
        _dots_range(
            indptr,
            indices,
            data,
            col_kind,
            kind_start,
            kind_lo,
            kind_hi,
            own,
            walk,
            row,
            blk * n // blocks,
            (blk + 1) * n // blocks,
            where[blk],
            out,
        )


@compiled(parallel=True)
def _hopeful(
    dots: np.ndarray,
    kind_weight: np.ndarray,
    kind_family: np.ndarray,
    kind_strong: np.ndarray,
    on_dot: float,
    strong_dot: float,
    saturation: float,
    min_weight: float,
    min_families: int,
    sync_weight: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Whether each pair can still be linked, before lockstep is measured, and the most
    its kinds other than lockstep can add up to.

    A kind's contribution ``w * (1 - exp(-dot / saturation))`` is at most
    ``w * min(1, dot / saturation)``; it counts for its family from
    ``dot >= on_dot`` and is strong from ``dot >= strong_dot``, and the
    factors applied later only lower it. Lockstep adds at most
    ``sync_weight`` and one family. Pairs that fall short even so (most
    candidates) need neither the lockstep measure nor any more work.
    Thresholds are met with a margin far above rounding, so this never drops
    a pair that the exact arithmetic would keep.
    """
    n = dots.shape[0]
    n_kinds = len(kind_weight)
    n_families = 0
    for k in range(n_kinds):
        n_families = max(n_families, kind_family[k] + 1)
    slack = 1.0 - 1e-9
    keep = np.zeros(n, dtype=np.bool_)
    most = np.empty(n)
    for p in numba.prange(n):
        bound = 0.0
        strong = False
        on = 0  # a bit per family
        for k in range(n_kinds):
            d = dots[p, k]
            bound += kind_weight[k] * min(1.0, d / saturation)
            if d >= on_dot * slack:
                on |= 1 << kind_family[k]
                strong = strong or (kind_strong[k] and d >= strong_dot * slack)
        families = 1 if sync_weight > 0 else 0
        for f in range(n_families):
            families += (on >> f) & 1
        most[p] = bound
        keep[p] = bound + sync_weight + 1e-9 >= min_weight and (strong or families >= min_families)
    return keep, most


def _hopeful_rule(
    link_kinds: list[str], opt: LinkOptions, sync_weight: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float, float, float, int, float]:
    """The arguments of :func:`_hopeful` after the dots, for kinds ``link_kinds`` (in
    column order) and lockstep weighing ``sync_weight`` (0 when it is not measured)."""
    family_code: dict[str, int] = {}
    kind_family = np.array(
        [family_code.setdefault(FAMILY.get(k, k), len(family_code)) for k in link_kinds],
        dtype=np.int64,
    )
    if len(family_code) > 63:
        raise ValueError(f"at most 63 families of link kinds, not {len(family_code)}")
    # A kind counts for its family from a quarter of its weight, and is strong
    # from 0.8 of it: the dots at which ``w * (1 - exp(-dot / saturation))`` gets there.
    return (
        np.array([opt.kind_weights[k] for k in link_kinds]),
        kind_family,
        np.array([k in STRONG_KINDS for k in link_kinds], dtype=np.bool_),
        -opt.saturation * math.log(0.75),
        -opt.saturation * math.log(0.2),
        opt.saturation,
        opt.min_weight,
        opt.min_families,
        sync_weight,
    )


@compiled(parallel=True)
def _screen(
    dots: np.ndarray,
    maybe: np.ndarray,
    most: np.ndarray,
    min_weight: float,
    i: np.ndarray,
    j: np.ndarray,
    deg: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    density: np.ndarray,
    sync_weight: float,
    sync_min_overlap: float,
    sync_min_lift: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Each pair's lockstep contribution, and whether the pair can reach ``min_weight`` at all
    with it (pairs that :func:`_hopeful` ruled out, ``maybe`` false, are not).

    ``most`` is :func:`_hopeful`'s bound on the other kinds. The lockstep
    contribution is computed in full, with the operations the array code
    used, so it is the same to the last bit.
    """
    n = dots.shape[0]
    sync_col = dots.shape[1] - 1  # the last column: co-active slots
    sync = np.zeros(n)
    keep = np.zeros(n, dtype=np.bool_)
    for p in numba.prange(n):
        if not maybe[p]:
            continue
        if sync_weight > 0:
            a, b = i[p], j[p]
            overlap = dots[p, sync_col]
            shared_span = max(1.0, min(hi[a], hi[b]) - max(lo[a], lo[b]) + 1.0)
            expected = density[a] * density[b] * shared_span
            both = deg[a] * deg[b]
            cosine = overlap / np.sqrt(both) if both > 0 else 0.0
            lift = overlap / expected if expected > 0 else 0.0
            if overlap >= sync_min_overlap and lift >= sync_min_lift:
                sync[p] = sync_weight * min(1.0, cosine / 0.5)
        keep[p] = most[p] + sync[p] + 1e-9 >= min_weight
    return sync, keep


@compiled
def _stable_by(key: np.ndarray, order: np.ndarray, size: int) -> np.ndarray:
    """The positions ``order`` stably sorted by ``key[position]`` (``0 <= key < size``):
    a counting sort."""
    start = np.zeros(size + 1, dtype=np.int64)
    for p in order:
        start[key[p] + 1] += 1
    for v in range(size):
        start[v + 1] += start[v]
    out = np.empty(len(order), dtype=np.int64)
    for p in order:
        out[start[key[p]]] = p
        start[key[p]] += 1
    return out


@compiled
def _pairs_by_own(
    keys: np.ndarray, n: int, row_len: np.ndarray, row_tile: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The pairs of ascending ``keys`` (``i * n + j``, as :meth:`_PairLists.union` gives
    them; not checked) as rows ``ri``, ``rj``, and grouped by the tile of the shorter
    row, ``walk``, then by the longer row, ``own``, with each pair's position in
    ``keys``: a stable sort by (tile of ``walk``, ``own``). Either way round gives the
    same products, summed in column order.

    A tile (``row_tile``, from 0) is a run of rows whose entries fit in the
    processor's cache: pairs that walk rows of one tile in turn read them from
    the cache rather than from memory. One group per row and tile means one
    spread of its lookup for all of those pairs; with pairs in key order, the
    rows walked within a group come in ascending order. Counting sorts over
    the tiles and over the rows the chunk spans (a merge sort when the rows are
    many more than its pairs). Returns ``ri, rj, own, walk, order``.
    """
    m = len(keys)
    ri = np.empty(m, dtype=np.int64)
    rj = np.empty(m, dtype=np.int64)
    owner = np.empty(m, dtype=np.int64)
    walk_tile = np.empty(m, dtype=np.int64)
    i = keys[0] // n if m else 0
    lo, hi = len(row_len), -1
    for p in range(m):
        while keys[p] >= (i + 1) * n:  # (keys ascend: no division per pair)
            i += 1
        j = keys[p] - i * n
        ri[p], rj[p] = i, j
        a = j if row_len[i] < row_len[j] else i
        owner[p] = a
        walk_tile[p] = row_tile[i + j - a]
        lo, hi = min(lo, a), max(hi, a)
    if m == 0:
        lo = hi = 0
    if hi - lo >= 4 * m + 1024:
        by_own = np.argsort(owner, kind="mergesort")
    else:
        by_own = _stable_by(owner - lo, np.arange(m), hi - lo + 1)
    tiles = row_tile[-1] + 1 if len(row_tile) else 1
    order = _stable_by(walk_tile, by_own, tiles)
    own = np.empty(m, dtype=np.int64)
    walk = np.empty(m, dtype=np.int64)
    for t in range(m):
        p = order[t]
        own[t] = owner[p]
        walk[t] = ri[p] + rj[p] - owner[p]
    return ri, rj, own, walk, order


_TILE_ENTRIES = 1 << 19
"""Matrix entries per tile of rows (see :func:`_pairs_by_own`): about 6 MB of columns and values."""


@compiled
def _rows_by_owner(
    keys: np.ndarray,
    shift: int,
    accts: np.ndarray,
    mask: int,
    dmax: int,
    owners: int,
    min_size: int,
    max_size: int,
    row_type: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of :func:`_owner_pairs` that pair with a later row, by owner: owner ``o``
    (an account's rank in the order, ``accts[r] & mask``) has rows
    ``pos[start[o]:start[o + 1]]``, in order, and at most ``pairs[o + 1] - pairs[o]``
    pairs with the rows after them (one for each, with repeats). Two sweeps over
    the runs: one counts, the other places the rows (of ``row_type``'s type)."""
    rows = len(keys)
    start = np.zeros(owners + 1, dtype=np.int64)
    pairs = np.zeros(owners + 1, dtype=np.int64)
    fill = np.empty(0, dtype=np.int64)
    pos = np.empty(0, dtype=row_type.dtype)
    for sweep in range(2):
        if sweep:
            for o in range(owners):
                start[o + 1] += start[o]
                pairs[o + 1] += pairs[o]
            fill = start[:-1].copy()
            pos = np.empty(start[owners], dtype=row_type.dtype)
        first = 0
        while first < rows:
            group = keys[first] >> shift
            stop = first + 1
            while stop < rows and keys[stop] >> shift == group:
                stop += 1
            if min_size <= stop - first <= max_size:
                for r in range(first, stop - 1):
                    o = accts[r] & mask
                    if sweep:
                        pos[fill[o]] = r
                        fill[o] += 1
                    else:
                        start[o + 1] += 1
                        pairs[o + 1] += min(dmax, stop - 1 - r)
            first = stop
    return start, pos, pairs


@compiled(parallel=True)
def _owner_pairs(
    keys: np.ndarray,
    shift: int,
    accts: np.ndarray,
    mask: int,
    label: np.ndarray,
    dmax: int,
    n: int,
    min_size: int,
    max_size: int,
    blocks: int,
    threads: int,
    row_type: np.ndarray,
) -> np.ndarray:
    """Keys ``min * n + max`` of each row paired with the next ``dmax`` rows of its run, in
    runs of equal group of ``min_size`` to ``max_size`` rows, each pair once, in no
    particular order.

    Rows are sorted by group, ``keys[r] >> shift`` (a group number), then by the
    rank of their account in one order of the accounts, ``accts[r] & mask`` (both
    can be one packed array); that account is ``label[rank]`` (below ``n``, a
    different account for each rank). Pairs of an account with itself are left
    out. Within every group the account of lower rank comes first, so a pair of
    accounts is always found from that one, its owner: each owner's pairs,
    gathered over all its groups, are made distinct there (a mark per account,
    one row of marks for each of the ``threads``, at least numba's number of
    threads), and no pair is ever held twice. Owners are shared out in
    ``blocks`` blocks of about equal rows. Rows are numbered in ``row_type``'s
    integer type (int32 when they fit: less to write and read). The keys are a
    view of a larger buffer (see :meth:`_PairLists.distinct`).
    """
    owners = len(label)
    start, pos, pairs = _rows_by_owner(
        keys, shift, accts, mask, dmax, owners, min_size, max_size, row_type
    )
    edge = np.empty(blocks + 1, dtype=np.int64)
    o = 0
    for blk in range(blocks + 1):
        target = blk * start[owners] // blocks
        while o < owners and start[o] < target:
            o += 1
        edge[blk] = o if blk < blocks else owners
    # Each block writes within its owners' share of the pairs with repeats; only
    # the distinct ones are written, then moved together.
    out = np.empty(pairs[owners], dtype=np.int64)
    count = np.zeros(blocks, dtype=np.int64)
    # A thread's blocks have different owners, so its marks are never stale.
    marks = np.full((threads, n), -1, dtype=np.int32)
    for blk in numba.prange(blocks):
        lo, hi = edge[blk], edge[blk + 1]
        mark = marks[numba.get_thread_id()]
        at = pairs[lo]
        for own in range(lo, hi):
            a = label[own]
            for t in range(start[own], start[own + 1]):
                r = pos[t]
                group = keys[r] >> shift
                for q in range(r + 1, min(r + dmax, len(keys) - 1) + 1):
                    if keys[q] >> shift != group:
                        break
                    b = label[accts[q] & mask]
                    if b != a and mark[b] != own:
                        mark[b] = own
                        out[at] = min(a, b) * n + max(a, b)
                        at += 1
        count[blk] = at - pairs[lo]
    m = 0
    for blk in range(blocks):
        first = pairs[edge[blk]]
        for t in range(count[blk]):  # (forward: the regions may overlap)
            out[m + t] = out[first + t]
        m += count[blk]
    return out[:m]


@compiled
def _squeeze(keys: np.ndarray) -> int:
    """Move the distinct values of sorted ``keys`` to its front; returns how many there are."""
    m = 0
    for t in range(len(keys)):
        if t == 0 or keys[t] != keys[m - 1]:
            keys[m] = keys[t]
            m += 1
    return m


def _distinct(
    keys: np.ndarray, spare: np.ndarray | None = None, *, view: bool = False
) -> np.ndarray:
    """The distinct values of ``keys``, sorted (``keys``, and ``spare`` if given, are
    overwritten: see :func:`sort_keys`).

    A new array, or with ``view`` (the caller gives ``keys`` up) a view of ``keys``
    when the result ends there and at least three in four keys were distinct, so
    little is held for the repeats.
    """
    out = sort_keys(keys, spare)
    distinct = out[: _squeeze(out)]
    in_spare = spare is not None and np.may_share_memory(distinct, spare)
    if view and not in_spare and 4 * len(distinct) >= 3 * len(out):
        return distinct
    return distinct.copy()


class _PairLists:
    """Distinct neighbour pairs of one list after another, sorted through one reused buffer.

    Fresh memory costs far more to fault in than reused memory (on virtual
    machines that hand freed pages back to the host, up to a second a gigabyte).
    """

    def __init__(self) -> None:
        self.spare = np.empty(0, dtype=np.int64)

    def distinct(self, *args: Any) -> np.ndarray:
        """:func:`_owner_pairs` with arguments ``args``, sorted."""
        row_type = np.empty(0, dtype=np.int32 if len(args[0]) < 2**31 else np.int64)
        pairs = _owner_pairs(*args, numba.get_num_threads(), row_type)
        if len(self.spare) < len(pairs):
            self.spare = np.empty(len(pairs), dtype=np.int64)
        # One copy, whichever buffer the sort ends in: the spare is kept for the
        # next list, and the pairs' buffer holds the blocks' shares.
        return sort_keys(pairs, self.spare).copy()

    def union(self, lists: list[np.ndarray]) -> np.ndarray:
        """The distinct values of all ``lists``, sorted; the buffer is let go."""
        keys = np.concatenate(lists) if lists else np.zeros(0, dtype=np.int64)
        # A spare too short is let go now: the sort makes its own.
        spare = self.spare if len(self.spare) >= len(keys) else None
        self.spare = np.empty(0, dtype=np.int64)
        return _distinct(keys, spare, view=True)


def _dense_codes(values: pl.Series) -> np.ndarray:
    """Each value's number among the distinct values in ascending order, from 0
    (``np.unique``'s inverse, from polars' parallel sort)."""
    return (values.rank("dense") - 1).cast(pl.Int64).to_numpy()


def _sort_in_groups(
    group: np.ndarray, idx: np.ndarray, rank: np.ndarray
) -> tuple[np.ndarray, int, np.ndarray, int]:
    """Rows sorted by (group, ``rank`` of the account), as the arguments of
    :func:`_owner_pairs` (``keys, shift, accts, mask``): one packed int64 sort when both
    fit in one, else a lexsort and two arrays."""
    bits = max(1, (len(rank) - 1).bit_length())
    if (int(group.max()) + 1).bit_length() + bits <= 62:
        packed = sort_keys((group << bits) | rank[idx])
        return packed, bits, packed, (1 << bits) - 1
    order = np.lexsort((rank[idx], group))
    return group[order], 0, rank[idx[order]], -1


def _signature_orders(
    sig1: np.ndarray, sig2: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Accounts in (sig1, sig2, idx) order and in (sig2, sig1, idx) order: each account's
    rank in the first, the first order, its rank in the second, the second order."""
    idx = np.arange(len(sig1), dtype=np.int64)
    by1 = np.lexsort((idx, sig2, sig1))
    by2 = np.lexsort((idx, sig1, sig2))
    rank1 = np.empty(len(idx), dtype=np.int64)
    rank2 = np.empty(len(idx), dtype=np.int64)
    rank1[by1] = idx
    rank2[by2] = idx
    return rank1, by1, rank2, by2


def _candidates(
    group_codes: np.ndarray,
    idx: np.ndarray,
    orders: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    rare_max: int,
    k: int,
    n: int,
    lists: _PairLists | None = None,
) -> list[np.ndarray]:
    """Candidate pair keys from group membership: row ``r`` puts account ``idx[r]`` in
    group ``group_codes[r]`` (codes from 0).

    Every pair within groups of at most ``rare_max`` members; in larger groups
    each member and its next ``k`` members in each of the accounts' two
    signature orders (:func:`_signature_orders`). Keys number the accounts by
    their rank in the first order (see :func:`link`). Each list is sorted and
    distinct; a pair may be in several (the caller makes their union).
    ``lists`` holds the sort buffer (kept for the caller's next lists).
    """
    if len(idx) == 0:
        return []
    # The signatures are the account's, so each order within a group is the
    # order of the accounts' ranks: sort (group, rank) packed in one int64.
    rank1, _, rank2, by2 = orders
    by_rank1 = _sort_in_groups(group_codes, idx, rank1)
    # Neighbours in popular groups repeat across the groups two accounts share:
    # each account's are made distinct as they are found, so repeats are never held.
    everyone = len(idx)
    blocks = max(1, min(4 * numba.get_num_threads(), everyone // 65536))
    same = np.arange(n, dtype=np.int64)
    lists = lists or _PairLists()
    keys = [
        lists.distinct(*by_rank1, same, rare_max - 1, n, 1, rare_max, blocks),
        lists.distinct(*by_rank1, same, k, n, rare_max + 1, everyone, blocks),
    ]
    if len(keys[1]):
        del by_rank1
        # The second order's neighbours, still numbered by rank in the first.
        by_rank2 = _sort_in_groups(group_codes, idx, rank2)
        keys.append(lists.distinct(*by_rank2, rank1[by2], k, n, rare_max + 1, everyone, blocks))
    return keys


def _matrix_entries(
    tokens: pl.DataFrame,
    tok_codes: np.ndarray,
    busy: pl.DataFrame | None,
    n_kinds: int,
    label: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Entries (rows, columns, values) of the value matrix, and each kind's number of columns.

    Accounts by shared values, weighted ``w = sqrt(idf * share)``: kind ``k``
    fills a block of columns, one per value in hash order (``tok_codes`` numbers
    each token's value in that order across kinds); busy slots (weight 1)
    fill a last block, kind ``n_kinds``. Account ``idx`` is row ``label[idx]``.
    The arrays are fresh, so the caller can let go of ``tokens`` before the
    matrix is built.
    """
    n_tok = tokens.height
    total = n_tok + (busy.height if busy is not None else 0)
    # Rows (account ranks) fit in int32 (see ``index``); columns are fewer than entries.
    rows = np.empty(total, dtype=np.int32)
    cols = np.empty(total, dtype=np.int32 if total < 2**31 else np.int64)
    values = np.ones(total)
    # Columns: each kind's distinct values in hash order. One sort of the
    # hashes numbers them all; a stable sort by kind then counts within kinds.
    k = tokens.get_column("k").to_numpy().astype(np.int64)
    n_values = int(tok_codes.max()) + 1 if n_tok else 0
    tok_kind = np.zeros(n_values, dtype=np.int64)
    tok_kind[tok_codes] = k
    width = np.bincount(tok_kind, minlength=n_kinds + 1).astype(np.int64)
    by_kind = np.argsort(tok_kind, kind="stable")
    column = np.empty(n_values, dtype=np.int64)
    column[by_kind] = np.arange(n_values)  # kind blocks in kind order, hash order inside
    del tok_kind, by_kind, k
    cols[:n_tok] = column[tok_codes]
    del column
    rows[:n_tok] = label[tokens.get_column("idx").to_numpy()]
    values[:n_tok] = tokens.get_column("w").to_numpy()
    if busy is not None:
        slots = busy.select(pl.col("slot").rank("dense").cast(pl.Int64) - 1).to_series()
        width[-1] = slots.n_unique()
        rows[n_tok:] = label[busy.get_column("idx").to_numpy()]
        cols[n_tok:] = int(width[:-1].sum()) + slots.to_numpy()
    return rows, cols, values, width


def _value_matrix(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, width: np.ndarray, n_acc: int
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """The value matrix in compressed rows (int64 row pointers), each column's kind, and
    each kind's first column (one more entry: the number of columns).

    Column indices keep scipy's type (int32 unless there are billions of
    columns): pair scoring streams them for every candidate pair.
    """
    matrix = sp.csr_matrix((values, (rows, cols)), shape=(n_acc, int(width.sum())))
    matrix.sum_duplicates()
    matrix.indptr = matrix.indptr.astype(np.int64)
    col_kind = np.repeat(np.arange(len(width), dtype=np.int8), width)
    kind_start = np.concatenate([[0], np.cumsum(width)]).astype(np.int64)
    return matrix, col_kind, kind_start


def _decide(
    contrib: dict[str, np.ndarray], kinds: list[str], opt: LinkOptions, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each of ``n`` pairs' weight, number of families of evidence, and whether it links.

    ``contrib`` holds each kind's contribution per pair (kinds missing from it
    contribute nothing and are added as zeros): a pair links when its weight
    reaches ``min_weight`` with enough independent families (a kind counts
    from a quarter of its weight) or one strong kind at 0.8 of its weight.
    """
    weights = opt.kind_weights
    for kind in kinds:
        contrib.setdefault(kind, np.zeros(n))
    total = np.zeros(n)
    for kind in kinds:
        total += contrib[kind]
    families: dict[str, np.ndarray] = {}
    for kind in kinds:
        fam = FAMILY.get(kind, kind)
        on = contrib[kind] >= 0.25 * weights[kind]
        families[fam] = families.get(fam, np.zeros(n, dtype=bool)) | on
    n_families = np.sum(np.stack(list(families.values())), axis=0) if families else np.zeros(n)
    strong = np.zeros(n, dtype=bool)
    for kind in STRONG_KINDS & set(kinds):
        strong |= contrib[kind] >= 0.8 * weights[kind]
    keep = (total >= opt.min_weight) & ((n_families >= opt.min_families) | strong)
    return total, n_families, keep


def link(evidence: Evidence, options: LinkOptions | None = None) -> Links:
    """Build the weighted account graph from the evidence tables."""
    opt = options or LinkOptions()
    accounts = evidence.accounts.get_column("account_id").sort()
    n_acc = len(accounts)
    index = pl.DataFrame(
        {"account_id": accounts, "idx": pl.int_range(n_acc, eager=True, dtype=pl.Int32)}
    )
    weights = opt.kind_weights
    link_kinds = [k for k, w in weights.items() if k != "sync" and w > 0]
    kind_code = {k: c for c, k in enumerate(link_kinds)}

    # Usage rows are streamed twice (value counts, then tokens) rather than
    # held: the value texts are the largest thing linking would hold. They are
    # rows of the evidence's accounts; account numbers are joined on only to the
    # rows of shared values.
    # Rows that carry their account's number (see Evidence.account_numbers) join on
    # it, which is then the account's place in ``accounts``; others on the text.
    numbered = evidence.account_numbers(evidence.usage) is not None
    account = [pl.col("account_idx").alias("idx")] if numbered else ["account_id"]
    usage = (
        evidence.usage.lazy()
        .select(*account, "kind", "value", "n_requests")
        .filter(pl.col("kind").is_in(link_kinds))
    )
    stats = (
        usage.group_by("kind", "value")
        .agg(pl.len().alias("n_accounts"))
        .collect(engine="streaming")
    )
    max_n = max(2, int(opt.max_share * n_acc))
    idf_den = math.log(max(n_acc, 3) / 2.0)
    stats = stats.with_columns(
        idf=((pl.lit(float(max(n_acc, 3))) / pl.col("n_accounts")).log() / idf_den).clip(0.0, 1.0)
    )
    # Two strangers signing up in the same hour is a coincidence, not a burst:
    # signup-time values count only once several accounts share them. Each
    # shared value is hashed once, here, rather than for each account using it.
    min_n = pl.when(pl.col("kind").is_in(list(BURST_KINDS))).then(opt.burst_min).otherwise(2)
    # Each shared value is a group, numbered in hash order (also the matrix's column
    # order): numbered here, once per value.
    shared = stats.filter((pl.col("n_accounts") >= min_n) & (pl.col("n_accounts") <= max_n)).select(
        "kind",
        "value",
        "idf",
        _hash64(pl.concat_str(["kind", "value"], separator="\x1f"), opt.seed).alias("tok"),
        # What the kind says, per value here rather than per account using it.
        pl.col("kind").replace_strict(kind_code, return_dtype=pl.Int8).alias("k"),
        pl.col("kind").is_in(list(ACCOUNT_LEVEL_KINDS)).alias("_whole"),
        (pl.col("kind") == "template").alias("_of_prompts"),
    )
    shared = shared.with_columns(code=pl.Series(_dense_codes(shared.get_column("tok"))))
    # How central a value is to an account: its share of the account's requests
    # (of its prompts, for templates). Account-level values (card, email,
    # signup) are the whole account. A value an account touched once counts
    # little even when it is rare.
    totals = evidence.accounts.join(index, on="account_id").select(
        "account_id",
        "idx",
        pl.col("n_requests").cast(pl.Float64).alias("_total"),
        pl.col("n_prompts").cast(pl.Float64).alias("_prompts"),
    )
    tokens = (
        usage.join(shared.lazy(), on=["kind", "value"])
        .join(
            totals.lazy().drop("account_id") if numbered else totals.lazy(),
            on="idx" if numbered else "account_id",
        )
        .with_columns(
            share=pl.when(pl.col("_whole"))
            .then(1.0)
            .when(pl.col("_of_prompts"))
            .then(pl.col("n_requests") / pl.col("_prompts").clip(1.0))
            .otherwise(pl.col("n_requests") / pl.col("_total").clip(1.0))
            .clip(0.0, 1.0)
        )
        .select(
            "k",
            "idx",
            (pl.col("idf") * pl.col("share")).sqrt().alias("w"),
            "tok",
            "code",
        )
        .collect(engine="streaming")
    )
    del shared

    # MinHash signatures of each account's set of shared values: accounts that
    # share many values get equal signatures and sit next to each other. (Group-bys
    # here are lazy plans: polars 2.1 runs those in its faster streaming engine.)
    sigs = (
        tokens.lazy()
        .group_by("idx")
        .agg(
            (pl.col("tok") ^ pl.lit(0x9E3779B97F4A7C15, pl.UInt64))
            .hash(seed=1)
            .min()
            .alias("sig1"),
            (pl.col("tok") ^ pl.lit(0xC2B2AE3D27D4EB4F, pl.UInt64))
            .hash(seed=2)
            .min()
            .alias("sig2"),
        )
        .collect()
    )
    sig1 = np.zeros(n_acc, dtype=np.uint64)  # accounts without shared values: 0
    sig2 = np.zeros(n_acc, dtype=np.uint64)
    sig1[sigs.get_column("idx").to_numpy()] = sigs.get_column("sig1").to_numpy()
    sig2[sigs.get_column("idx").to_numpy()] = sigs.get_column("sig2").to_numpy()
    orders = _signature_orders(sig1, sig2)
    tok_codes = tokens.get_column("code").to_numpy()
    # The token lists' sort buffer is kept to sort all candidate keys at the end.
    lists = _PairLists()
    cand = _candidates(
        tok_codes,
        tokens.get_column("idx").to_numpy().astype(np.int64),
        orders,
        opt.rare_max,
        opt.neighbours,
        n_acc,
        lists,
    )

    # Lockstep: MinHash bands of the slot sets, each band a group.
    if evidence.account_numbers(evidence.activity) is not None:
        act = evidence.activity.rename({"account_idx": "idx"}).filter(pl.col("idx").is_not_null())
    else:
        act = evidence.activity.join(index, on="account_id")
    slot_counts = act.lazy().group_by("idx").agg(pl.len().alias("n_slots")).collect()
    busy = slot_counts.filter(pl.col("n_slots") >= opt.sync_min_slots).get_column("idx")
    act_busy = act.filter(pl.col("idx").is_in(busy.implode()))
    if act_busy.height:
        hashed = act_busy.with_columns(_hash64(pl.col("slot"), opt.seed + 7).alias("h"))
        # Two MinHash values per band, all bands in one pass over the slots.
        salts = [
            (
                int(0x9E3779B97F4A7C15 * (2 * b + 1) % (1 << 64)),
                int(0xBF58476D1CE4E5B9 * (2 * b + 3) % (1 << 64)),
            )
            for b in range(opt.minhash_bands)
        ]
        mins = (
            hashed.lazy()
            .group_by("idx")
            .agg(
                expr
                for b, (salt_a, salt_b) in enumerate(salts)
                for expr in (
                    (pl.col("h") ^ pl.lit(salt_a, pl.UInt64)).hash(seed=3).min().alias(f"m1_{b}"),
                    (pl.col("h") ^ pl.lit(salt_b, pl.UInt64)).hash(seed=4).min().alias(f"m2_{b}"),
                )
            )
            .collect()
        )
        band_parts = [
            mins.select(
                pl.concat_str(
                    [
                        pl.lit(str(b)),
                        pl.col(f"m1_{b}").cast(pl.String),
                        pl.col(f"m2_{b}").cast(pl.String),
                    ],
                    separator=":",
                )
                .hash(seed=5)
                .alias("group"),
                "idx",
            )
            for b in range(opt.minhash_bands)
        ]
        bands = pl.concat(band_parts)
        band_codes = _dense_codes(bands.get_column("group"))
        cand += _candidates(
            band_codes,
            bands.get_column("idx").to_numpy().astype(np.int64),
            orders,
            opt.rare_max,
            opt.neighbours,
            n_acc,
        )

    # Each candidate pair once, as i * n + j with i < j, in (i, j) order, where
    # accounts are numbered by their rank in the first signature order: an
    # account's candidates then sit near it, and so do the rows pair scoring
    # reads one after another, which keeps them in cache.
    by1 = orders[1]
    keys = lists.union(cand)
    del cand
    n_candidates = len(keys)

    # One matrix of every account's shared values, each kind in its own block of
    # columns, and its busy slots in a last block: one pass over the candidate
    # pairs measures every kind of shared value, a second the co-activity of
    # the pairs that can still link.
    sync_on = bool(act_busy.height) and weights.get("sync", 0.0) > 0
    entries = _matrix_entries(
        tokens, tok_codes, act_busy if sync_on else None, len(link_kinds), orders[0]
    )
    del tokens, tok_codes
    matrix, col_kind, kind_start = _value_matrix(*entries, n_acc)
    del entries
    sync_col = len(link_kinds)

    # Lockstep strength: co-active slots versus what two independent accounts
    # with these activity levels would share by chance.
    deg = np.zeros(n_acc)
    lo = np.zeros(n_acc, dtype=np.float64)
    hi = np.zeros(n_acc, dtype=np.float64)
    if sync_on:
        deg = np.bincount(act_busy.get_column("idx").to_numpy(), minlength=n_acc).astype(np.float64)
        # Chance co-activity: each account's activity density over its own
        # active span, times the span the two share. An always-on app shares
        # every slot with everyone by chance; a sparse burst schedule does not.
        spans = (
            act.lazy()
            .group_by("idx")
            .agg(pl.col("slot").min().alias("lo"), pl.col("slot").max().alias("hi"))
            .collect()
        )
        lo[spans.get_column("idx").to_numpy()] = spans.get_column("lo").to_numpy()
        hi[spans.get_column("idx").to_numpy()] = spans.get_column("hi").to_numpy()
    density = deg / np.maximum(1.0, hi - lo + 1.0)
    ranked = (deg[by1], lo[by1], hi[by1], density[by1])  # by rank, as pairs are scored

    # Same org: shared infrastructure is ordinary. Far-apart activity: weaker.
    acc = evidence.accounts.join(index, on="account_id").sort("idx")
    if "org_id" in acc.columns:
        org_codes = (
            acc.select(
                pl.when(pl.col("org_id").is_null())
                .then(-1)
                .otherwise(pl.col("org_id").rank("dense").cast(pl.Int64))
            )
            .to_series()
            .to_numpy()
        )
    else:
        org_codes = np.full(n_acc, -1, dtype=np.int64)
    first = acc.get_column("first_seen").dt.epoch("s").to_numpy().astype(np.float64)
    last = acc.get_column("last_seen").dt.epoch("s").to_numpy().astype(np.float64)

    # Every kind gets a column, present in the data or not, so the edge table
    # (and the report built on it) has the same columns whatever the input.
    kinds = sorted(k for k, w in weights.items() if w > 0)
    kept: list[dict[str, np.ndarray]] = []
    row_len = np.diff(matrix.indptr)
    row_tile = matrix.indptr[:-1] // _TILE_ENTRIES
    data = matrix.data
    where = np.zeros(
        (2 * numba.get_num_threads(), matrix.shape[1]),
        dtype=np.uint16 if row_len.max(initial=0) < 2**16 - 1 else np.int64,
    )
    sync_weight = weights["sync"] if sync_on else 0.0
    rule = _hopeful_rule(link_kinds, opt, sync_weight)
    matrix_parts = (matrix.indptr, matrix.indices, data, col_kind, kind_start)
    dots_buffer = np.empty((min(_CHUNK, n_candidates), sync_col + 1))
    for start in range(0, n_candidates, _CHUNK):
        ri, rj, own, walk, order = _pairs_by_own(
            keys[start : start + _CHUNK], n_acc, row_len, row_tile
        )
        dots = dots_buffer[: len(ri)]
        _pair_dots(*matrix_parts, 0, sync_col, own, walk, order, where, dots)
        maybe, most = _hopeful(dots, *rule)
        # Lockstep, the longest part of most rows, only for pairs that can use it.
        if sync_on:
            walked = maybe[order]
            _pair_dots(
                *matrix_parts,
                sync_col,
                sync_col + 1,
                own[walked],
                walk[walked],
                order[walked],
                where,
                dots,
            )
        del own, walk, order
        sync, hopeful = _screen(
            dots,
            maybe,
            most,
            opt.min_weight,
            ri,
            rj,
            *ranked,
            sync_weight,
            opt.sync_min_overlap,
            opt.sync_min_lift,
        )
        dots, sync = dots[hopeful], sync[hopeful]
        # Back to account numbers, i < j.
        i, j = by1[ri[hopeful]], by1[rj[hopeful]]
        i, j = np.minimum(i, j), np.maximum(i, j)
        contrib: dict[str, np.ndarray] = {}
        for col, kind in enumerate(link_kinds):
            contrib[kind] = weights[kind] * (1.0 - np.exp(-dots[:, col] / opt.saturation))
        if sync_on:
            contrib["sync"] = sync
        del dots

        same_org = (org_codes[i] >= 0) & (org_codes[i] == org_codes[j])
        gap_days = (
            np.maximum(0.0, np.maximum(first[i], first[j]) - np.minimum(last[i], last[j])) / 86400
        )
        time_factor = np.power(0.5, gap_days / opt.gap_half_life_days)
        for kind, c in contrib.items():
            if kind in INFRA_KINDS:
                c *= time_factor
                c[same_org] *= opt.same_org_factor

        total, n_families, keep = _decide(contrib, kinds, opt, len(i))
        kept.append(
            {
                "i": i[keep],
                "j": j[keep],
                "weight": total[keep],
                "n_families": n_families[keep].astype(np.int32),
                "same_org": same_org[keep],
                **{f"w_{k}": contrib[k][keep] for k in kinds},
            }
        )

    del dots_buffer, where, data, matrix, matrix_parts, row_len
    columns = ["i", "j", "weight", "n_families", "same_org", *(f"w_{k}" for k in kinds)]
    out = {
        c: np.concatenate([part[c] for part in kept])
        if kept
        else np.zeros(0, dtype=_EMPTY_DTYPES.get(c, np.float64))
        for c in columns
    }
    edges = pl.DataFrame(
        {
            "a": accounts.gather(out.pop("i")),
            "b": accounts.gather(out.pop("j")),
            **out,
        }
    ).sort("a", "b")
    release_freed_memory()
    return Links(edges=edges, accounts=accounts, value_stats=stats, n_candidates=n_candidates)
