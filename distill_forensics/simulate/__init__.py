"""Traffic simulator: realistic API logs with planted distillation campaigns and ground truth.

>>> from distill_forensics.simulate import generate
>>> data = generate("tiny", seed=3)  # doctest: +SKIP
"""

from __future__ import annotations

from distill_forensics.schema import ACCOUNT_SCHEMA, LOG_SCHEMA
from distill_forensics.simulate.config import (
    ATTACK_KINDS,
    BENIGN_KINDS,
    FORMATS,
    FRONTIER4_RELEASE,
    MIXES,
    MODELS,
    SCALES,
    WINDOW_DAYS,
    WINDOW_START,
)
from distill_forensics.simulate.core import (
    TRUTH_SCHEMA,
    ProgressCallback,
    SimulatedData,
    generate,
    output_files,
    simulate,
    write,
)

__all__ = [
    "ACCOUNT_SCHEMA",
    "ATTACK_KINDS",
    "BENIGN_KINDS",
    "FORMATS",
    "FRONTIER4_RELEASE",
    "LOG_SCHEMA",
    "MIXES",
    "MODELS",
    "SCALES",
    "TRUTH_SCHEMA",
    "WINDOW_DAYS",
    "WINDOW_START",
    "ProgressCallback",
    "SimulatedData",
    "generate",
    "output_files",
    "simulate",
    "write",
]
