"""``distill-forensics cluster``: ranked, explained clusters of coordinated accounts."""

from __future__ import annotations

import sys

import click
import polars as pl
from rich import box
from rich.console import Console
from rich.table import Table

from distill_forensics.cli.common import (
    Status,
    check_outputs,
    handle_errors,
    input_options_or_evidence,
    previous_option,
    print_frame,
    quiet_option,
    resolve_inputs,
    threshold_option,
    warn_evidence,
)
from distill_forensics.cli.sources import check_sources, evidence_options, run_inputs
from distill_forensics.errors import EXIT_FINDINGS
from distill_forensics.pipeline import ClusterResult
from distill_forensics.write import table_file, write_files

FORMATS = ("table", "csv", "json")


@click.command()
@input_options_or_evidence
@evidence_options
@previous_option
@click.option(
    "--top",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Rows of the table on stdout (0: all).",
)
@click.option(
    "--min-size",
    type=click.IntRange(min=2),
    default=2,
    show_default=True,
    help="Smallest cluster reported.",
)
@click.option(
    "--min-score",
    type=click.FloatRange(0, 100),
    default=0.0,
    show_default=True,
    help="Lowest score reported.",
)
@threshold_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="Format of the report on stdout.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Write the cluster report here (.csv, .csv.gz, .json, .jsonl/.ndjson or .parquet).",
)
@click.option(
    "--members",
    type=click.Path(dir_okay=False),
    help="Write one row per member of a reported cluster here (the same formats as -o).",
)
@click.option(
    "--fail-on-findings/--pass-on-findings",
    default=False,
    show_default=True,
    help=f"Exit {EXIT_FINDINGS} when suspected clusters were found (for nightly jobs).",
)
@quiet_option
@handle_errors
def cluster(
    logs: tuple[str, ...],
    evidence: str | None,
    previous: str | None,
    window: str | None,
    accounts: str | None,
    column: tuple[str, ...],
    config: str | None,
    time_from: str | None,
    time_to: str | None,
    top: int,
    min_size: int,
    min_score: float,
    threshold: float,
    fmt: str,
    output: str | None,
    members: str | None,
    fail_on_findings: bool,
    quiet: bool,
) -> None:
    """Rank clusters of coordinated accounts in API logs, with the evidence for each.

    LOGS are Parquet or CSV files (.csv.gz too), globs or directories.

    \b
    Examples:
        distill-forensics cluster sample_logs/logs.parquet --accounts sample_logs/accounts.parquet
        distill-forensics cluster 'exports/day=*/' --accounts billing.csv -o report.csv \\
            --members members.parquet --fail-on-findings --quiet
        distill-forensics cluster --evidence evidence/ --window 30d -o report.csv
    """
    sources = check_sources(
        logs, evidence=evidence, window=window, accounts=accounts, column=column, config=config
    )
    kwargs = resolve_inputs(column, config, time_from, time_to)
    # Refuse an unusable output path before the run, not after it.
    check_outputs(
        {"-o": output, "--members": members},
        sources,
        previous=previous,
        may_replace_previous=("--members",),
    )
    status = Status(quiet)
    result = run_inputs(sources, kwargs, threshold=threshold, previous=previous, status=status)
    report = result.clusters.filter(
        (pl.col("n_accounts") >= min_size) & (pl.col("score") >= min_score)
    )
    member_rows = result.members.join(report.select("cluster_id"), on="cluster_id", how="semi")
    # Both or neither: a failed write leaves last night's files as they were.
    outputs = ((report, output), (member_rows, members))
    write_files([table_file(frame, path) for frame, path in outputs if path])
    shown = report.head(top) if top else report
    print_frame(shown, fmt, render_table)
    _summary(status, result, report)
    if fail_on_findings and report.filter(pl.col("suspected")).height:
        sys.exit(EXIT_FINDINGS)


COLUMNS = [
    ("rank", ">"),
    ("cluster", "<"),
    ("accounts", ">"),
    ("requests", ">"),
    ("score", ">"),
    ("top reasons", "<"),
]


def _cells(row: dict) -> list[str]:
    score = f"{row['score']:.1f}" + (" *" if row["suspected"] else "  ")
    return [
        str(row["rank"]),
        row["cluster_id"],
        f"{row['n_accounts']:,}",
        f"{row['n_requests']:,}",
        score,
        row["reasons"] or "",
    ]


def render_table(report: pl.DataFrame) -> None:
    """The ranked table on stdout: rich on a terminal, plain aligned text when piped.

    A ``*`` after the score marks a suspected cluster.
    """
    console = Console()
    rows = [_cells(r) for r in report.iter_rows(named=True)]
    if not console.is_terminal:
        widths = [max([len(h)] + [len(r[k]) for r in rows]) for k, (h, _) in enumerate(COLUMNS)]
        for cells in [[h for h, _ in COLUMNS], *rows]:
            parts = [
                f"{c:{a}{w}}" for c, (_, a), w in zip(cells[:-1], COLUMNS, widths, strict=False)
            ]
            sys.stdout.write("  ".join([*parts, cells[-1]]).rstrip() + "\n")
        return
    table = Table(box=box.SIMPLE_HEAVY)
    for name, align in COLUMNS:
        table.add_column(
            name, justify="right" if align == ">" else "left", no_wrap=name != "top reasons"
        )
    for cells, row in zip(rows, report.iter_rows(named=True), strict=True):
        table.add_row(*cells, style="bold red" if row["suspected"] else None)
    console.print(table)


def _summary(status: Status, result: ClusterResult, report: pl.DataFrame) -> None:
    ev = result.evidence
    n_susp = report.filter(pl.col("suspected"))
    status.message(
        f"{ev.rows:,} rows, {ev.n_accounts:,} accounts, {result.clusters.height:,} clusters, "
        f"{n_susp.height:,} suspected ({int(n_susp['n_accounts'].sum() or 0):,} accounts)"
    )
    warn_evidence(status, ev)
