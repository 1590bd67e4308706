"""The whole job as one call: read -> extract -> link -> cluster -> score."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from distill_forensics.cluster import ClusterOptions, cluster, reattach
from distill_forensics.diff import apply_ids, carry_ids
from distill_forensics.extract import Evidence, extract
from distill_forensics.link import LinkOptions, Links, link
from distill_forensics.read import read_logs
from distill_forensics.score import ScoreOptions, rerank, score

Progress = Callable[[str, int, int | None], None]
"""Called as ``progress(stage, done, total)``: the stage (``read``, ``link``, ``cluster``,
``score``), what it has done so far in its unit (rows read, accounts linked, clusters
found, clusters scored) and the total when it is known."""


def _silent(_stage: str, _done: int, _total: int | None) -> None:
    return None


@dataclass(frozen=True)
class Options:
    """All knobs of a run; the defaults are the documented behaviour."""

    link: LinkOptions = field(default_factory=LinkOptions)
    cluster: ClusterOptions = field(default_factory=ClusterOptions)
    score: ScoreOptions = field(default_factory=ScoreOptions)


@dataclass(frozen=True)
class ClusterResult:
    """Ranked clusters, their members, and what the run saw of its input."""

    clusters: pl.DataFrame
    members: pl.DataFrame
    evidence: Evidence
    links: Links
    timings: dict[str, float]

    @property
    def suspected(self) -> pl.DataFrame:
        """The suspected clusters only, ranked."""
        return self.clusters.filter(pl.col("suspected"))


def analyze(
    evidence: Evidence,
    options: Options | None = None,
    progress: Progress | None = None,
    timings: dict[str, float] | None = None,
    previous: pl.DataFrame | None = None,
) -> ClusterResult:
    """Link, cluster and score already extracted evidence.

    With ``previous`` (last night's members: account_id, cluster_id), clusters
    that hold mostly the same accounts keep last night's ids.
    """
    opt = options or Options()
    t = timings if timings is not None else {}
    note = progress or _silent
    n_accounts = evidence.n_accounts

    note("link", 0, n_accounts)
    t0 = time.perf_counter()
    links = link(evidence, opt.link)
    t["link"] = time.perf_counter() - t0
    linked = pl.concat([links.edges.get_column("a"), links.edges.get_column("b")]).n_unique()
    note("link", linked, n_accounts)

    note("cluster", 0, None)
    t0 = time.perf_counter()
    membership = reattach(cluster(links, opt.cluster), links, evidence, opt.cluster)
    t["cluster"] = time.perf_counter() - t0
    n_clusters = membership.get_column("cluster_id").n_unique()
    note("cluster", n_clusters, None)

    note("score", 0, n_clusters)
    t0 = time.perf_counter()
    clusters, members = score(evidence, links, membership, opt.score)
    if previous is not None:
        mapping = carry_ids(members, previous)
        clusters, members = rerank(apply_ids(clusters, mapping), apply_ids(members, mapping))
    t["score"] = time.perf_counter() - t0
    note("score", clusters.height, clusters.height)
    return ClusterResult(clusters, members, evidence, links, t)


def run_cluster(
    paths: Sequence[str | Path] | str | Path,
    accounts: str | Path | None = None,
    *,
    columns: Mapping[str, str] | None = None,
    time_from: datetime | None = None,
    time_to: datetime | None = None,
    options: Options | None = None,
    progress: Progress | None = None,
    previous: pl.DataFrame | None = None,
) -> ClusterResult:
    """Run the whole job on log files, the library twin of ``distill-forensics cluster``.

    >>> result = run_cluster("sample_logs/logs.parquet", "sample_logs/accounts.parquet")
    >>> result.suspected.select("cluster_id", "score", "n_accounts")  # doctest: +SKIP
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    note = progress or _silent
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    source = read_logs(
        list(paths), accounts=accounts, columns=columns, time_from=time_from, time_to=time_to
    )
    # Rows to read, when the files say so cheaply (Parquet footers, no time filter).
    total = None if time_from or time_to else source.file_rows
    note("read", 0, total)
    timings["read"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    evidence = extract(source, on_rows=lambda rows: note("read", rows, total))
    timings["extract"] = time.perf_counter() - t0
    return analyze(evidence, options, progress, timings, previous)
