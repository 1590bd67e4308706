"""Command-line interface: one module per command, each a thin shell over the library."""

from __future__ import annotations

import click

from distill_forensics import __version__
from distill_forensics.cli.cluster import cluster
from distill_forensics.cli.diff import diff
from distill_forensics.cli.explain import explain
from distill_forensics.cli.extract import extract
from distill_forensics.cli.graph import graph
from distill_forensics.cli.indicators import indicators
from distill_forensics.cli.simulate import simulate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="distill-forensics")
def main() -> None:
    """Find coordinated account networks (distillation campaigns) in AI API logs.

    \b
    Example:
        distill-forensics cluster sample_logs/logs.parquet --accounts sample_logs/accounts.parquet
    """


main.add_command(cluster)
main.add_command(diff)
main.add_command(explain)
main.add_command(extract)
main.add_command(graph)
main.add_command(indicators)
main.add_command(simulate)
