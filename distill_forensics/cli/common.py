"""Pieces shared by the commands: error handling, progress on stderr, output options."""

from __future__ import annotations

import fnmatch
import functools
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import polars as pl
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from distill_forensics.errors import EXIT_INTERNAL, DistillForensicsError, InputError

if TYPE_CHECKING:
    from distill_forensics.cli.sources import Sources
    from distill_forensics.extract import Evidence

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int) -> None:
    """Print one clean line on stderr and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handle_errors(func: F) -> F:
    """Turn library errors into one line and their exit code; never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            _refuse_empty(kwargs)
            return func(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, SystemExit):
            raise
        except DistillForensicsError as exc:
            fail(str(exc), exc.exit_code)
        except MemoryError:
            fail("out of memory; narrow the input with --from/--to", EXIT_INTERNAL)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, as Unix tools do.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(141)
        except Exception as exc:  # a bug, not a user mistake: still one line, no traceback
            if os.environ.get("DISTILL_FORENSICS_DEBUG"):
                raise
            fail(
                f"internal error: {type(exc).__name__}: {exc}".splitlines()[0]
                + " (set DISTILL_FORENSICS_DEBUG=1 for a traceback)",
                EXIT_INTERNAL,
            )

    return wrapper  # type: ignore[return-value]


def _refuse_empty(values: Mapping[str, Any]) -> None:
    """An option or argument given as empty text (``-o ''``, ``--from "$UNSET"``) would
    read as not given at all: refused, naming it."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return
    for param in ctx.command.params:
        value = values.get(param.name or "")
        given = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, str) and not v.strip() for v in given):
            if isinstance(param, click.Option):
                name = max(param.opts, key=len)
                source = ctx.get_parameter_source(param.name or "")
                if source == click.core.ParameterSource.ENVIRONMENT and param.envvar:
                    variable = param.envvar if isinstance(param.envvar, str) else param.envvar[0]
                    raise InputError(f"{variable} is blank; set it to the value for {name}")
                raise InputError(f"{name}: empty value; give one, or leave {name} out")
            name = param.human_readable_name
            raise InputError(f"{name}: an empty path; name the file (an unset variable?)")


STAGE_UNITS: dict[str, str] = {
    "read": "rows read",
    "link": "accounts linked",
    "cluster": "clusters found",
    "score": "clusters scored",
}
"""What the count of each stage of a run means, as shown beside its bar."""


class Status:
    """Progress on stderr, one line per stage with its count and time.

    Shown on a terminal only: nothing when quiet or when stderr is piped.
    """

    def __init__(self, quiet: bool) -> None:
        self.console = Console(stderr=True)
        self.quiet = quiet
        self.enabled = not quiet and self.console.is_terminal
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._title: str | None = None

    def stage(self, name: str, done: int = 0, total: int | None = None) -> None:
        """Start or advance a stage: ``done`` units of ``total`` (None: not known)."""
        bar = self._progress
        if bar is None:
            return
        task = self._tasks.get(name)
        if task is None:
            if self._title is not None:
                bar.remove_task(self._tasks.pop(self._title))
                self._title = None
            self._finish_all()
            task = self._tasks[name] = bar.add_task(name, total=total, count="")
        unit = STAGE_UNITS.get(name, "")
        count = f"{done:,}" + (f" of {total:,}" if total is not None else "") + f" {unit}"
        bar.update(task, completed=done, total=total, count=count if unit else "")

    def _finish_all(self) -> None:
        """Mark the stages shown so far as done (a full bar, the clock stopped)."""
        bar = self._progress
        if bar is None:
            return
        for state in bar.tasks:
            if state.id in self._tasks.values() and not state.finished:
                full = max(state.completed, 1)
                bar.update(state.id, total=full, completed=full)
                bar.stop_task(state.id)

    def message(self, text: str) -> None:
        """A status line for people (stderr), shown unless quiet or piped."""
        if self.enabled:
            self.console.print(text, highlight=False)

    def warn(self, text: str) -> None:
        """A warning for people (stderr): shown unless quiet, also when piped."""
        if not self.quiet:
            self.console.print(f"warning: {text}", highlight=False, soft_wrap=True)

    @contextmanager
    def running(self, title: str) -> Iterator[Status]:
        """Show the stages started inside the block; ``title`` until the first one starts."""
        if not self.enabled:
            yield self
            return
        columns = (
            SpinnerColumn(finished_text="[green]✓[/]"),
            TextColumn("[bold]{task.description:<8}[/]"),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[count]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=self.console) as bar:
            self._progress = bar
            # The title shows until the first stage reports.
            self._title = title
            self._tasks = {title: bar.add_task(title.rstrip("…. "), total=None, count="")}
            try:
                yield self
            finally:
                self._finish_all()
                self._progress = None
                self._tasks = {}
                self._title = None


def parse_column_mapping(values: tuple[str, ...]) -> dict[str, str]:
    """Parse repeated ``--column canonical=source`` options."""
    out: dict[str, str] = {}
    for v in values:
        key, _, src = (s.strip() for s in v.partition("="))
        if not key or not src:
            raise InputError(
                f"--column {v!r}: expected canonical=source, e.g. --column account_id=user_id"
            )
        if key in out and out[key] != src:
            raise InputError(
                f"--column {key}= given twice ({out[key]!r} and {src!r}); give it once"
            )
        out[key] = src
    return out


quiet_option = click.option(
    "-q", "--quiet", is_flag=True, help="No progress, summary or warnings on stderr."
)
"""``-q/--quiet``, the same on every command."""

previous_option = click.option(
    "--previous",
    type=click.Path(dir_okay=False, exists=False),
    help="Last night's --members file: clusters with mostly the same accounts keep their ids "
    "(give the one `cluster` was given, so that its ids are found).",
)
"""``--previous``, the same on every command that names clusters."""

threshold_option = click.option(
    "--threshold",
    type=click.FloatRange(0, 100),
    default=50.0,
    show_default=True,
    help="Score at or above which a cluster is suspected.",
)
"""``--threshold`` of the commands that decide which clusters are suspected."""


def input_options(func: F) -> F:
    """The input options every analysis command shares (LOGS required)."""
    return _input_options(func, logs_required=True)


def input_options_or_evidence(func: F) -> F:
    """The shared input options with LOGS optional (the command can read evidence instead)."""
    return _input_options(func, logs_required=False)


def _input_options(func: F, *, logs_required: bool) -> F:
    decorators = [
        click.argument("logs", nargs=-1, required=logs_required),
        click.option(
            "--accounts",
            "accounts",
            type=click.Path(dir_okay=False),
            help="Accounts/billing table (Parquet or CSV), joined on account_id.",
        ),
        click.option(
            "--column",
            "column",
            multiple=True,
            metavar="CANONICAL=SOURCE",
            help="Map a canonical column to the export's name (repeatable).",
        ),
        click.option(
            "--config",
            "config",
            type=click.Path(dir_okay=False),
            help="TOML file with a [columns] table of canonical = source names (and an "
            "[accounts_columns] table for the accounts table).",
        ),
        click.option(
            "--from", "time_from", metavar="TIME", help="Only rows at or after TIME (ISO)."
        ),
        click.option("--to", "time_to", metavar="TIME", help="Only rows before TIME (ISO)."),
    ]
    for d in reversed(decorators):
        func = d(func)
    return func


def resolve_inputs(
    column: tuple[str, ...], config: str | None, time_from: str | None, time_to: str | None
) -> dict[str, Any]:
    """Turn the shared input options into keyword arguments of the library calls."""
    from distill_forensics.read import check_time_window, load_config, parse_time_bound

    mapping: dict[str, str] = {}
    if config:
        mapping.update(load_config(config))
    mapping.update(parse_column_mapping(column))
    start, end = check_time_window(
        parse_time_bound(time_from) if time_from else None,
        parse_time_bound(time_to) if time_to else None,
    )
    return {"columns": mapping or None, "time_from": start, "time_to": end}


def print_frame(df: pl.DataFrame, fmt: str, render_table: Callable[[pl.DataFrame], None]) -> None:
    """Write ``df`` to stdout as ``csv``, ``json`` or, for ``table``, with ``render_table``."""
    from distill_forensics.write import to_csv_text, to_json_text

    if fmt == "csv":
        sys.stdout.write(to_csv_text(df))
    elif fmt == "json":
        text = to_json_text(df)
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        render_table(df)


class _Inputs:
    """Where the log inputs are: files, directories and globs, resolved."""

    def __init__(self, inputs: Sequence[str]) -> None:
        from distill_forensics.read import _glob_root, _is_glob

        self.files: set[Path] = set()
        self.dirs: list[Path] = []
        self.globs: list[tuple[Path, str]] = []  # (fixed root, rest of the pattern)
        for given in inputs:
            if _is_glob(given) and not Path(given).exists():
                root = _glob_root(given)
                rest = Path(given).relative_to(root) if root.parts else Path(given)
                self.globs.append((root.resolve(), rest.as_posix()))
                continue
            path = Path(given)
            if path.is_dir():
                self.dirs.append(path.resolve())
            elif path.exists():
                self.files.add(path.resolve())

    def reads(self, target: Path) -> str | None:
        """Which input a run given these inputs again would read ``target`` (resolved) as
        part of: an input directory or glob it lies in or matches; None if none."""
        for d in self.dirs:
            if target.is_relative_to(d):
                return str(d)
        for root, rest in self.globs:
            if target.is_relative_to(root):
                parts = target.relative_to(root).parts
                # The path itself or a directory above it matched (a matched directory is read
                # whole); a "*" here may span folders, so this errs on the side of refusing.
                if any(
                    fnmatch.fnmatchcase("/".join(parts[: k + 1]), rest) for k in range(len(parts))
                ):
                    return str(root / rest)
        return None


def _log_inputs(logs: Sequence[str], accounts: str | None) -> list[str]:
    return [*logs, *([accounts] if accounts else [])]


def check_outputs(
    outputs: Mapping[str, str | None],
    sources: Sources,
    *,
    tables: bool = True,
    previous: str | None = None,
    may_replace_previous: Sequence[str] = (),
) -> None:
    """Refuse unusable output paths (option name -> path) before any work is done.

    An output may name the ``previous`` members table only if its option is one of
    ``may_replace_previous`` (read before anything is written, it may be replaced by
    tonight's members).

    Each path as :func:`~distill_forensics.write.check_output` has it (with
    ``tables``, a known table type; an existing directory); two options may
    not name one file; no output may be an input file (the ``sources``' logs or
    accounts table) or lie inside an input directory or match an input glob,
    where it would overwrite the logs or be read as logs by the next run, or lie
    inside the evidence store read.
    """
    from distill_forensics.evidence import PREFIX
    from distill_forensics.write import check_output, check_place

    inputs = _log_inputs(sources.logs, sources.accounts)
    given = _Inputs(inputs)
    # The store, and its days where they are links to folders elsewhere.
    store = sources.evidence
    kept = _store_places(store, PREFIX) if store else []
    seen: dict[Path, str] = {}
    for option, path in outputs.items():
        if not path:
            continue
        if tables:
            check_output(path, inputs=inputs)
        else:
            check_place(path, inputs=inputs)
        target = Path(path).resolve()  # (an input file itself: refused by check_place)
        place = given.reads(target)
        if place is not None:
            raise InputError(
                f"{path}: lies in the log input {place!r}, so the next run would read it as "
                f"logs; write {option} elsewhere"
            )
        if any(target.is_relative_to(place) for place in kept):
            raise InputError(
                f"{path}: lies in the evidence store {store!r}, where it could overwrite "
                f"evidence; write {option} elsewhere"
            )
        if target in seen:
            raise InputError(f"{path}: given to both {seen[target]} and {option}; name two files")
        if previous and option not in may_replace_previous and target == Path(previous).resolve():
            raise InputError(
                f"{path}: is the --previous members table, which {option} would replace; "
                f"write {option} elsewhere"
            )
        seen[target] = option


def _store_places(store: str, prefix: str) -> list[Path]:
    root = Path(store).resolve()
    days = [d for d in root.iterdir() if d.name.startswith(prefix)] if root.is_dir() else []
    return [root, *(d.resolve() for d in days if d.is_symlink())]


def check_store(out_dir: str, logs: Sequence[str], accounts: str | None) -> None:
    """Refuse an evidence directory that is a log input or lies in one (a directory or a
    glob of the ``logs``, or the ``accounts`` table): the store would mix with the logs."""
    target = Path(out_dir).resolve()
    given = _Inputs(_log_inputs(logs, accounts))
    place = str(target) if target in given.files else given.reads(target)
    if place is not None:
        raise InputError(
            f"{out_dir}: the evidence store would mix with the log input {place!r}; "
            "give -o a directory of its own"
        )


def warn_counts(status: Status, counts: Mapping[str, int], n_accounts: int | None = None) -> None:
    """Warn of the log rows counted as malformed and of the accounts table's problems
    (``ACCOUNT_PROBLEMS``); ``n_accounts``, the accounts in the logs, tells when the
    table matches none of them."""
    from distill_forensics.read import ACCOUNT_PROBLEMS

    rows = {k: v for k, v in counts.items() if v and k not in ACCOUNT_PROBLEMS}
    table = {k: v for k, v in counts.items() if v and k in ACCOUNT_PROBLEMS}
    if rows:
        parts = ", ".join(f"{k} {v:,}" for k, v in sorted(rows.items()))
        status.warn(f"malformed rows counted and skipped or repaired: {parts}")
    if n_accounts and table.get("accounts_not_in_table") == n_accounts:
        status.warn(
            f"none of the {n_accounts:,} accounts in the logs has a row in the accounts "
            "table; check that its account_id holds the same ids as the logs' account_id"
        )
        del table["accounts_not_in_table"]
    if table:
        parts = ", ".join(f"{k} {v:,}" for k, v in sorted(table.items()))
        status.warn(f"accounts table: {parts}")


def warn_evidence(status: Status, evidence: Evidence) -> None:
    """Warn of the rows and accounts counted as malformed, of signals without columns, and
    of a run that had no row to analyse."""
    warn_counts(status, evidence.malformed, evidence.n_accounts)
    if not evidence.rows:
        status.warn("no rows to analyse (none in the input, or none within --from/--to)")
    elif not evidence.n_accounts:
        status.warn(f"none of the {evidence.rows:,} rows could be analysed (counted above)")
    if evidence.unused_signals:
        status.warn("signals not used (columns absent): " + ", ".join(evidence.unused_signals))
