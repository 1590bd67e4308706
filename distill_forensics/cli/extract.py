"""``distill-forensics extract``: a day's logs into the evidence store, for nightly jobs."""

from __future__ import annotations

import click

from distill_forensics.cli.common import (
    Status,
    check_store,
    handle_errors,
    input_options,
    quiet_option,
    resolve_inputs,
    warn_counts,
)
from distill_forensics.evidence import write_evidence
from distill_forensics.read import read_logs


@click.command()
@input_options
@click.option(
    "-o",
    "--output",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Evidence store directory; one day=YYYY-MM-DD folder per day.",
)
@quiet_option
@handle_errors
def extract(
    logs: tuple[str, ...],
    accounts: str | None,
    column: tuple[str, ...],
    config: str | None,
    time_from: str | None,
    time_to: str | None,
    out_dir: str,
    quiet: bool,
) -> None:
    """Extract logs into per-day evidence that `cluster`, `graph` and `indicators` read later
    with --evidence.

    Re-running on a day already in the store replaces that day only.

    \b
    Examples:
        distill-forensics extract exports/2026-03-21.parquet --accounts billing.csv -o evidence/
        distill-forensics cluster --evidence evidence/ --window 30d -o report.csv
    """
    check_store(out_dir, logs, accounts)
    kwargs = resolve_inputs(column, config, time_from, time_to)
    status = Status(quiet)
    with status.running("extracting evidence…"):
        source = read_logs(list(logs), accounts=accounts, **kwargs)
        status.stage("read")
        counts: dict[str, int] = {}
        days = write_evidence(
            source, out_dir, on_rows=lambda rows: status.stage("read", rows), summary=counts
        )
    if days:
        span = days[0].isoformat() if len(days) == 1 else f"{days[0]} to {days[-1]}"
        status.message(f"wrote {len(days)} day(s) of evidence ({span}) to {out_dir}")
    else:
        status.warn("no usable rows: nothing written")
    n_accounts = counts.pop("accounts", None)
    counts.pop("rows", None)
    warn_counts(status, counts, n_accounts)
