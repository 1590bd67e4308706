"""distill-forensics: find coordinated account networks in AI API traffic logs.

The pipeline, one module per stage: :mod:`read` -> :mod:`extract` (raw rows to
evidence) -> :mod:`link` (weighted account graph) -> :mod:`cluster` ->
:mod:`score` (ranked, explained clusters) -> :mod:`write`.

>>> from distill_forensics import run_cluster
>>> result = run_cluster("sample_logs/logs.parquet", "sample_logs/accounts.parquet")
>>> result.suspected.head()  # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

# Before anything loads polars: its allocator reads its options once.
from distill_forensics.memory import keep_freed_pages

keep_freed_pages()

from distill_forensics.cluster import ClusterOptions, cluster, cluster_id_for
from distill_forensics.diff import carry_ids, diff_members
from distill_forensics.errors import DistillForensicsError, InputError
from distill_forensics.evidence import read_evidence, write_evidence
from distill_forensics.explain import Explanation, explain
from distill_forensics.extract import Evidence, extract
from distill_forensics.graph import build_graph, write_graph
from distill_forensics.indicators import indicators, to_stix
from distill_forensics.link import LinkOptions, Links, link
from distill_forensics.pipeline import ClusterResult, Options, analyze, run_cluster
from distill_forensics.read import Source, read_logs
from distill_forensics.score import ScoreOptions, score
from distill_forensics.write import write_table

__all__ = [
    "ClusterOptions",
    "ClusterResult",
    "DistillForensicsError",
    "Evidence",
    "Explanation",
    "InputError",
    "LinkOptions",
    "Links",
    "Options",
    "ScoreOptions",
    "Source",
    "__version__",
    "analyze",
    "build_graph",
    "carry_ids",
    "cluster",
    "cluster_id_for",
    "diff_members",
    "explain",
    "extract",
    "indicators",
    "link",
    "read_evidence",
    "read_logs",
    "run_cluster",
    "score",
    "to_stix",
    "write_evidence",
    "write_graph",
    "write_table",
]
