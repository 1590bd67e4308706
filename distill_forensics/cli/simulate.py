"""``distill-forensics simulate``: write simulated API logs with planted campaigns."""

from __future__ import annotations

import time
from pathlib import Path
from typing import IO, Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from distill_forensics.cli.common import (
    handle_errors,
    quiet_option,
)
from distill_forensics.errors import EXIT_INPUT
from distill_forensics.simulate import ATTACK_KINDS, FORMATS, MIXES, SCALES
from distill_forensics.simulate import simulate as run_simulation


class OptionError(click.ClickException):
    """A bad option value: one ``error:`` line on stderr, exit code 2, no usage banner."""

    exit_code = EXIT_INPUT

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class OneOf(click.Choice):
    """A choice whose error is one line naming the valid values."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            name = f"--{param.name}" if param and param.name else "value"
            raise OptionError(
                f"invalid {name} {value!r}: choose one of {', '.join(map(str, self.choices))}"
            ) from None


class Seed(click.ParamType):
    """A non-negative integer seed."""

    name = "N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            seed = int(value)
        except (TypeError, ValueError):
            seed = -1
        if seed < 0:
            raise OptionError(f"invalid --seed {value!r}: use a non-negative integer")
        return seed


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<32}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _summary(console: Console, summary: dict[str, Any], seconds: float) -> None:
    table = Table(title=None, show_edge=False, header_style="bold")
    table.add_column("group kind")
    table.add_column("accounts", justify="right")
    table.add_column("attack", justify="center")
    for kind, count in summary["populations"].items():
        table.add_row(kind, f"{count:,}", "yes" if kind in ATTACK_KINDS else "")
    console.print(table)
    console.print(
        f"wrote {summary['requests']:,} requests ({summary['malformed_rows']} malformed), "
        f"{summary['accounts']:,} accounts ({summary['attack_accounts']:,} attack) "
        f"to {summary['out_dir']} in {seconds:.1f} s"
    )


@click.command()
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option(
    "--scale",
    type=OneOf(list(SCALES)),
    default="small",
    show_default=True,
    help="Preset size: tiny ~1.5k accounts, sample ~3k, small ~20k, seed ~50k, large ~120k.",
)
@click.option(
    "--seed",
    type=Seed(),
    default=0,
    show_default=True,
    help="Random seed; the same seed, scale and mix give byte-identical files.",
)
@click.option(
    "--mix",
    type=OneOf(list(MIXES)),
    default="default",
    show_default=True,
    help="Which campaigns to plant and how hard they hide.",
)
@click.option(
    "--format",
    "fmt",
    type=OneOf(list(FORMATS)),
    default="parquet",
    show_default=True,
    help="parquet: logs/accounts/truth.parquet; csv: logs.csv.gz, accounts.csv, truth.csv.",
)
@quiet_option
@handle_errors
def simulate(out_dir: Path, scale: str, seed: int, mix: str, fmt: str, quiet: bool) -> None:
    """Write 30 days of simulated API traffic with planted distillation campaigns.

    Writes logs, accounts and ground-truth tables into OUT_DIR and prints the
    paths of the written files on stdout.

    \b
    Examples:
        distill-forensics simulate out/ --scale small --seed 7
        distill-forensics simulate sample_logs/ --scale sample --seed 7 --format csv
    """
    console = Console(stderr=True)
    show = not quiet and console.is_terminal
    started = time.perf_counter()
    if show:
        with _progress(console) as bar:
            task = bar.add_task("starting", total=1)

            def report(description: str, done: int, total: int) -> None:
                bar.update(task, description=description, completed=done, total=total)

            summary = run_simulation(
                out_dir, scale=scale, seed=seed, mix=mix, fmt=fmt, progress=report
            )
    else:
        summary = run_simulation(out_dir, scale=scale, seed=seed, mix=mix, fmt=fmt)
    for path in summary["files"].values():
        click.echo(path)
    if not quiet:
        _summary(console, summary, time.perf_counter() - started)
