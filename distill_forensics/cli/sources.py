"""Where an analysis command's inputs come from: raw LOGS or an evidence store.

``cluster``, ``graph`` and ``indicators`` read either; ``explain`` shows prompts,
which the store does not keep, and reads raw logs only.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click
import polars as pl

from distill_forensics.diff import read_members
from distill_forensics.errors import InputError
from distill_forensics.evidence import days_in_window, evidence_days, read_days
from distill_forensics.pipeline import ClusterResult, Options, analyze, run_cluster
from distill_forensics.score import ScoreOptions

if TYPE_CHECKING:
    from collections.abc import Callable

    from distill_forensics.cli.common import Status


def evidence_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--evidence DIR`` and ``--window DAYS``, the same on every command that takes them."""
    func = click.option(
        "--window",
        metavar="DAYS",
        help="With --evidence: the last DAYS days of the store (e.g. 30d), up to --to "
        "(--from and --to take whole days there).",
    )(func)
    return click.option(
        "--evidence",
        type=click.Path(file_okay=False),
        help="Read an evidence store written by `extract` instead of raw LOGS.",
    )(func)


@dataclass(frozen=True)
class Sources:
    """Raw ``logs`` (with their ``accounts`` table) or an ``evidence`` store and ``window``."""

    logs: tuple[str, ...]
    evidence: str | None
    window: str | None
    accounts: str | None


def check_sources(
    logs: tuple[str, ...],
    *,
    evidence: str | None,
    window: str | None,
    accounts: str | None,
    column: tuple[str, ...],
    config: str | None,
) -> Sources:
    """The command's sources; refuses LOGS and ``--evidence`` together (or neither),
    ``--window`` without a store, the options that shaped `extract`'s reading given
    beside a store, and a store without any day (before outputs are checked against
    it: an output in a folder that is not a store is not refused as if it were)."""
    if bool(logs) == bool(evidence):
        raise InputError("give either LOGS or --evidence DIR (one of them, not both)")
    if window and not evidence:
        raise InputError("--window goes with --evidence; for raw LOGS use --from/--to")
    if evidence:
        for option, value in (("--accounts", accounts), ("--column", column), ("--config", config)):
            if value:
                raise InputError(
                    f"{option} goes with raw LOGS: the evidence store holds what `extract` "
                    f"read; give {option} to `distill-forensics extract` instead"
                )
        if not evidence_days(evidence):
            raise InputError(
                f"{evidence}: holds no evidence days; give the folder `distill-forensics "
                f"extract LOGS -o DIR` wrote"
            )
    return Sources(logs, evidence, window, accounts)


def run_inputs(
    sources: Sources,
    inputs: dict[str, Any],
    *,
    threshold: float,
    previous: str | None,
    status: Status,
) -> ClusterResult:
    """The run of the raw logs or of the days of the evidence store in the window, at
    ``--threshold`` and with the ``--previous`` members table's ids, shown on ``status``.

    ``inputs`` are :func:`~distill_forensics.cli.common.resolve_inputs`'s keyword
    arguments; with a store, ``--from`` and ``--to`` must be whole days and days the
    window lacks are named in a warning.
    """
    options = Options(score=ScoreOptions(threshold=threshold))
    prior = read_members(previous) if previous else None
    with status.running("reading logs…"):
        return _run(sources, inputs, options, status, prior)


def _run(
    sources: Sources,
    inputs: dict[str, Any],
    options: Options,
    status: Status,
    previous: pl.DataFrame | None,
) -> ClusterResult:
    evidence, window = sources.evidence, sources.window
    if not evidence:
        return run_cluster(
            list(sources.logs),
            sources.accounts,
            options=options,
            progress=status.stage,
            previous=previous,
            **inputs,
        )
    since, end = (
        _whole_day(inputs[key], option)
        for key, option in (("time_from", "--from"), ("time_to", "--to"))
    )
    window_days = parse_window(window) if window else None
    # (--to is the first moment left out: its day is not in the window)
    until = end - dt.timedelta(days=1) if end and end > dt.date.min else end
    days, gaps = days_in_window(evidence, window_days=window_days, until=until, since=since)
    if gaps:
        listed = ", ".join(d.isoformat() for d in gaps[:5]) + (", …" if gaps[5:] else "")
        status.warn(
            f"{len(gaps):,} day(s) of the window have no evidence ({listed}); "
            "extract them to include them"
        )
    return analyze(read_days(evidence, days), options, progress=status.stage, previous=previous)


def _whole_day(bound: dt.datetime | None, option: str) -> dt.date | None:
    """The day a --from/--to bound starts, for an evidence store (kept by whole UTC days)."""
    if bound is None:
        return None
    if bound.time() != dt.time(0):
        raise InputError(
            f"{option} {bound.isoformat()}: an evidence store is kept by whole days (UTC); "
            f"give a date such as {option} {bound.date().isoformat()}"
        )
    return bound.date()


def parse_window(text: str) -> int:
    """``30d`` or ``30`` -> 30 days."""
    m = re.fullmatch(r"\s*(\d+)\s*d?\s*", text)
    if not m or int(m.group(1)) < 1:
        raise InputError(f"--window {text!r}: give a number of days, e.g. --window 30d")
    return int(m.group(1))
