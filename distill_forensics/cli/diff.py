"""``distill-forensics diff``: what changed between last night's clusters and tonight's."""

from __future__ import annotations

import sys

import click
import polars as pl

from distill_forensics.cli.common import handle_errors, print_frame
from distill_forensics.diff import DIFF_COLUMNS, diff_members, read_members
from distill_forensics.errors import EXIT_FINDINGS
from distill_forensics.write import check_output, write_table

ALERT = ("new", "escalated", "grown", "changed", "merged", "split")


@click.command()
@click.argument("old", type=click.Path(dir_okay=False))
@click.argument("new", type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="Format of stdout.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Also write the changes here (.csv, .json or .parquet).",
)
@click.option(
    "--all/--changes-only",
    "show_all",
    default=False,
    show_default=True,
    help="Include unchanged clusters.",
)
@click.option(
    "--fail-on-changes/--pass-on-changes",
    default=False,
    show_default=True,
    help=f"Exit {EXIT_FINDINGS} when a suspected cluster is new, newly suspected, grew, changed, "
    "merged or split.",
)
@handle_errors
def diff(
    old: str, new: str, fmt: str, output: str | None, show_all: bool, fail_on_changes: bool
) -> None:
    """Compare two member reports (`cluster --members` files) night over night.

    Lists new, escalated (newly suspected), grown, shrunk, changed, merged,
    split and vanished clusters, how many accounts joined or left, and score
    changes. Run tonight's `cluster` with `--previous` last night's members so
    that ids carry over.

    \b
    Examples:
        distill-forensics diff reports/2026-03-29-members.parquet reports/2026-03-30-members.parquet
        distill-forensics diff old.csv new.csv --format csv --fail-on-changes
    """
    if output:
        check_output(output, inputs=[old, new])
    changes = diff_members(read_members(old, DIFF_COLUMNS), read_members(new, DIFF_COLUMNS))
    shown = changes if show_all else changes.filter(pl.col("change") != "unchanged")
    if output:
        write_table(shown, output)
    print_frame(shown, fmt, _render)
    alerts = changes.filter(pl.col("suspected") & pl.col("change").is_in(list(ALERT)))
    if fail_on_changes and alerts.height:
        sys.exit(EXIT_FINDINGS)


def _render(changes: pl.DataFrame) -> None:
    head = ["change", "cluster", "related", "accounts", "joined", "left", "score", "suspected"]
    rows = [head]
    for r in changes.iter_rows(named=True):
        old_score = "-" if r["score_old"] is None else f"{r['score_old']:.1f}"
        new_score = "-" if r["score_new"] is None else f"{r['score_new']:.1f}"
        rows.append(
            [
                r["change"],
                r["cluster_id"],
                r["related_ids"] or "-",
                f"{r['n_old']} -> {r['n_new']}",
                str(r["n_joined"]),
                str(r["n_left"]),
                f"{old_score} -> {new_score}",
                "yes" if r["suspected"] else "no",
            ]
        )
    widths = [max(len(row[k]) for row in rows) for k in range(len(head))]
    for row in rows:
        sys.stdout.write(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n"
        )
