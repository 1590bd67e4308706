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

from distill_forensics.cluster import ClusterOptions, cluster, cluster_id_for
from distill_forensics.errors import DistillForensicsError, InputError
from distill_forensics.extract import Evidence, extract
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
    "InputError",
    "LinkOptions",
    "Links",
    "Options",
    "ScoreOptions",
    "Source",
    "__version__",
    "analyze",
    "cluster",
    "cluster_id_for",
    "extract",
    "link",
    "read_logs",
    "run_cluster",
    "score",
    "write_table",
]
