"""Command-line interface: one module per command, each a thin shell over the library."""

from __future__ import annotations

from typing import IO, Any

import click

from distill_forensics import __version__
from distill_forensics.cli.cluster import cluster
from distill_forensics.cli.diff import diff
from distill_forensics.cli.explain import explain
from distill_forensics.cli.extract import extract
from distill_forensics.cli.graph import graph
from distill_forensics.cli.indicators import indicators
from distill_forensics.cli.simulate import simulate


class _UsageLine(click.UsageError):
    """A usage error shown as one line that names the help to read (click shows three)."""

    def __init__(self, error: click.UsageError) -> None:
        super().__init__(error.format_message(), error.ctx)

    def show(self, file: IO[Any] | None = None) -> None:
        where = self.ctx.command_path if self.ctx is not None else "distill-forensics"
        click.echo(f"error: {self.format_message()} (see `{where} --help`)", file=file, err=True)


class _Commands(click.Group):
    """The command group; usage errors, its own and its commands', come as one line."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError:
            raise  # no arguments at all: the help itself
        except click.UsageError as exc:
            raise _UsageLine(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _UsageLine:
            raise
        except click.UsageError as exc:
            raise _UsageLine(exc) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
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
