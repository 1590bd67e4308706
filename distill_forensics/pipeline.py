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
from distill_forensics.score import ScoreOptions, score

Progress = Callable[[str], None]
"""Called with the name of each stage as it starts (for status lines)."""


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
    note = progress or (lambda _stage: None)

    note("link")
    t0 = time.perf_counter()
    links = link(evidence, opt.link)
    t["link"] = time.perf_counter() - t0

    note("cluster")
    t0 = time.perf_counter()
    membership = reattach(cluster(links, opt.cluster), links, evidence, opt.cluster)
    t["cluster"] = time.perf_counter() - t0

    note("score")
    t0 = time.perf_counter()
    clusters, members = score(evidence, links, membership, opt.score)
    if previous is not None:
        mapping = carry_ids(members, previous)
        clusters = apply_ids(clusters, mapping)
        members = apply_ids(members, mapping)
    t["score"] = time.perf_counter() - t0
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
    note = progress or (lambda _stage: None)
    timings: dict[str, float] = {}
    note("read")
    t0 = time.perf_counter()
    source = read_logs(
        list(paths), accounts=accounts, columns=columns, time_from=time_from, time_to=time_to
    )
    timings["read"] = time.perf_counter() - t0
    note("extract")
    t0 = time.perf_counter()
    evidence = extract(source)
    timings["extract"] = time.perf_counter() - t0
    return analyze(evidence, options, progress, timings, previous)
