"""``distill-forensics explain``: why one cluster was formed and why it scores high."""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from datetime import date, datetime
from typing import Any

import click
import polars as pl
from rich.console import Console
from rich.table import Table
from rich.text import Text

from distill_forensics.cli.common import (
    Status,
    handle_errors,
    input_options,
    previous_option,
    quiet_option,
    resolve_inputs,
    threshold_option,
    warn_evidence,
)
from distill_forensics.diff import read_members
from distill_forensics.errors import InputError
from distill_forensics.explain import Explanation, to_json
from distill_forensics.explain import explain as explain_cluster
from distill_forensics.extract import extract
from distill_forensics.pipeline import Options, analyze
from distill_forensics.read import read_logs
from distill_forensics.score import LINK_KIND_LABELS, ScoreOptions

FORMATS = ("text", "json")

CLUSTER_ID = re.compile(r"C-[0-9a-f]{10}(?:-2)?")
"""What ``cluster_id_for`` produces (with ``-2`` when ``--previous`` gave that id to
another cluster): checked before the (slow) run to catch a forgotten id."""

TOP_MEMBERS = 25
TOP_VALUES_PER_KIND = 5
TOP_TEMPLATES = 10
TOP_MODELS = 6
EXAMPLE_CHARS = 160
VALUE_CHARS = 48
PLAIN_WIDTH = 200
"""Width of the text when stdout is not a terminal: wide enough that no line wraps,
so every member, value and example prompt stays on one greppable line."""

BLOCKS = "▁▂▃▄▅▆▇█"


def _input_options() -> list[click.Parameter]:
    """The shared input options (``--accounts``, ``--column``, ...) without their LOGS argument.

    ``explain`` takes the cluster id after the variadic LOGS, so it declares its
    own positional argument and reuses the shared options as they are.
    """
    probe = click.command()(input_options(lambda **_: None))
    return [p for p in probe.params if isinstance(p, click.Option)]


@click.command(
    params=[
        click.Argument(["paths"], nargs=-1, required=True, metavar="LOGS... CLUSTER_ID"),
        *_input_options(),
    ]
)
@click.option(
    "--cluster",
    "cluster_id",
    metavar="ID",
    help="The cluster to explain; then every positional argument is a log input.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="text for people, json for scripts.",
)
@click.option(
    "--examples",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Example prompts shown per repeated template.",
)
@threshold_option
@previous_option
@quiet_option
@handle_errors
def explain(
    paths: tuple[str, ...],
    accounts: str | None,
    column: tuple[str, ...],
    config: str | None,
    time_from: str | None,
    time_to: str | None,
    cluster_id: str | None,
    fmt: str,
    examples: int,
    threshold: float,
    previous: str | None,
    quiet: bool,
) -> None:
    """Show why a cluster was formed and why it scores high, section by section.

    LOGS are the raw logs the cluster was found in, with the options of that
    `cluster` run (--accounts, --column, --config, --from/--to, --threshold,
    --previous); after `cluster --evidence`, the raw logs of its window with the
    --accounts, --column and --config given to `extract` (explain shows prompts,
    which the evidence store does not keep).
    CLUSTER_ID is an id from `distill-forensics cluster`.
    Sections: the cluster's score and reasons, its members and their strongest
    links, the attribute values they share, requests per hour, the prompt
    templates they repeat, and their model mix over time.

    \b
    Examples:
        distill-forensics explain sample_logs/logs.parquet \\
            --accounts sample_logs/accounts.parquet C-c2ec3c88f4
        distill-forensics explain 'exports/day=*/' --accounts billing.csv \\
            --cluster C-c2ec3c88f4 --format json --examples 5 > C-c2ec3c88f4.json
    """
    logs, wanted = _split_paths(paths, cluster_id)
    kwargs = resolve_inputs(column, config, time_from, time_to)
    prior = read_members(previous) if previous else None
    status = Status(quiet)
    with status.running("reading logs…"):
        source = read_logs(logs, accounts=accounts, **kwargs)
        status.stage("read")
        evidence = extract(source, on_rows=lambda rows: status.stage("read", rows))
        options = Options(score=ScoreOptions(threshold=threshold))
        result = analyze(evidence, options, progress=status.stage, previous=prior)
        status.stage("explain")
        explanation = explain_cluster(result, wanted, source.frame, examples=examples)
    if fmt == "json":
        sys.stdout.write(json.dumps(to_json(explanation), indent=2, ensure_ascii=False) + "\n")
    else:
        render(explanation)
    warn_evidence(status, evidence)


def _split_paths(paths: tuple[str, ...], cluster_id: str | None) -> tuple[list[str], str]:
    """The log inputs and the cluster id: ``--cluster`` or else the last positional argument."""
    if cluster_id is None:
        if len(paths) < 2:
            raise click.UsageError("give the log inputs, then the CLUSTER_ID (or --cluster ID)")
        *logs, cluster_id = paths
    else:
        logs = list(paths)
    if not CLUSTER_ID.fullmatch(cluster_id):
        raise InputError(
            f"{cluster_id!r} is not a cluster id (C- and 10 hex digits); give the id last or "
            "with --cluster, as listed by `distill-forensics cluster`"
        )
    return logs, cluster_id


# ---------------------------------------------------------------------------
# Text rendering


def render(explanation: Explanation) -> None:
    """The explanation as text on stdout: styled on a terminal, plain when redirected."""
    console = Console(highlight=False, emoji=False)
    if console.is_terminal:
        _render(console, explanation, styled=True)
        return
    plain = Console(width=PLAIN_WIDTH, color_system=None, highlight=False, emoji=False)
    with plain.capture() as captured:
        _render(plain, explanation, styled=False)
    sys.stdout.write("\n".join(line.rstrip() for line in captured.get().splitlines()) + "\n")


def _render(console: Console, ex: Explanation, styled: bool) -> None:
    sections = [
        ("Cluster", _header),
        ("Members", _members),
        ("Shared values", _shared_values),
        ("Timeline", _timeline),
        ("Prompt templates", _templates),
        ("Models", _models),
    ]
    for k, (title, section) in enumerate(sections):
        if k:
            console.print()
        if title != "Cluster":
            console.print(Text(title, style="bold underline" if styled else ""))
        for part in section(ex, styled):
            console.print(part)


def _header(ex: Explanation, styled: bool) -> list[Any]:
    h = ex.header
    title = Text(f"Cluster {_visible(h['cluster_id'])}", style="bold" if styled else "")
    verdict_style = "bold red" if styled and h["suspected"] else ""
    title.append(f"  rank {h['rank']}  score {h['score']:.1f}  ")
    title.append(h["verdict"], style=verdict_style)
    span = (h["last_seen"] - h["first_seen"]).total_seconds() / 86400
    lines: list[Any] = [
        title,
        Text(
            f"{h['n_accounts']:,} accounts, {h['n_requests']:,} requests, "
            f"{h['n_tokens']:,} tokens, {h['n_links']:,} links between members"
            + (
                f"; id derived from member {_visible(h['anchor'])} (the anchor)"
                if h["anchor"]
                else ""
            )
        ),
        Text(
            f"active {_minute(h['first_seen'])} to {_minute(h['last_seen'])} UTC "
            f"({span:.1f} days); median account age at first request "
            + (f"{h['median_age_days']:.1f} days" if h["median_age_days"] is not None else "n/a")
        ),
        Text("reasons:"),
    ]
    lines.extend(Text(f"  - {r}") for r in h["reasons"] or ["(none)"])
    return lines


def _members(ex: Explanation, styled: bool) -> list[Any]:
    m = ex.members
    shown = m.head(TOP_MEMBERS)
    table = _table(styled)
    table.add_column("account", no_wrap=True)
    table.add_column("role", no_wrap=True)
    table.add_column("requests", justify="right", no_wrap=True)
    table.add_column("age (d)", justify="right", no_wrap=True)
    table.add_column("org", no_wrap=True)
    table.add_column("links", justify="right", no_wrap=True)
    # The only column that wraps, so a narrow terminal squeezes it and not the numbers.
    table.add_column("strongest links: member weight kinds")
    for r in shown.iter_rows(named=True):
        links = "\n".join(
            f"{_visible(link['account_id'])} {link['weight']:.2f} {_kinds(link['kinds'])}"
            for link in r["top_links"]
        )
        table.add_row(
            Text(_visible(r["account_id"])),
            Text(r["role"], style="bold" if styled and r["role"] == "anchor" else ""),
            f"{r['n_requests']:,}",
            "-" if r["age_days"] is None else f"{r['age_days']:.1f}",
            Text(_clip(r["org_id"] or "-", 20)),
            f"{r['n_links']:,}",
            Text(links or "-"),
        )
    roles = m["role"].value_counts().sort("role")
    counts = ", ".join(f"{n} {role}" for role, n in roles.iter_rows())
    note = f"; top {shown.height} of {m.height} by requests" if shown.height < m.height else ""
    return [
        table,
        Text(
            f"roles: {counts}{note}. Core: link weight inside the cluster at least half the "
            "median member's; age: days from account creation to first request."
        ),
    ]


def _kinds(kinds: list[str], limit: int = 3) -> str:
    """The kinds that made a link, strongest first, the rest counted."""
    if not kinds:
        return "-"
    more = f" +{len(kinds) - limit}" if len(kinds) > limit else ""
    return ",".join(kinds[:limit]) + more


def _shared_values(ex: Explanation, styled: bool) -> list[Any]:
    sv = ex.shared_values
    if sv.height == 0:
        return [Text("no attribute value is shared by two or more members")]
    table = _table(styled)
    table.add_column("kind (mean link)", no_wrap=True)
    table.add_column("value", min_width=16)  # the only column that wraps
    table.add_column("members", justify="right", no_wrap=True)
    table.add_column("share", justify="right", no_wrap=True)
    table.add_column("all accounts", justify="right", no_wrap=True)
    table.add_column("first seen", no_wrap=True)
    table.add_column("last seen", no_wrap=True)
    for (kind,), group in sv.group_by("kind", maintain_order=True):
        strength = group["kind_strength"][0]
        label = str(kind) + ("" if strength is None else f" ({strength:.2f})")
        for k, r in enumerate(group.head(TOP_VALUES_PER_KIND).iter_rows(named=True)):
            table.add_row(
                Text(label if k == 0 else ""),
                Text(_clip(r["value"], VALUE_CHARS)),
                f"{r['n_members']:,}",
                f"{r['share']:.0%}",
                f"{r['n_accounts_all']:,}",
                _day(r["first_seen"]),
                _day(r["last_seen"]),
            )
        if group.height > TOP_VALUES_PER_KIND:
            table.add_row("", Text(f"… {group.height - TOP_VALUES_PER_KIND} more"))
    kinds = ", ".join(
        f"{k} = {LINK_KIND_LABELS[k]}"
        for k in sv["kind"].unique(maintain_order=True)
        if k in LINK_KIND_LABELS
    )
    return [
        table,
        Text(
            "mean link: how much that kind contributes to the cluster's links on average; "
            "signup and card values are first/last seen at account creation"
        ),
        Text(kinds),
    ]


def _timeline(ex: Explanation, styled: bool) -> list[Any]:
    tl = ex.timeline
    if tl.height == 0:
        return [Text("no requests")]
    peak: int = tl.select(pl.col("n_requests").max()).item()
    days = _day_rows(tl, peak)
    out: list[Any] = [
        Text(f"requests per hour, UTC; one row per day, one cell per hour; {BLOCKS[-1]} = {peak}"),
        Text(" " * 12 + "".join(f"{h:02d}    " for h in range(0, 24, 6)) + f"  {'total':>7}"),
    ]
    quiet = 0
    for day, cells, total in days.iter_rows():
        if total == 0:
            quiet += 1
            continue
        if quiet:
            out.append(Text(f"{'':12}({quiet} quiet day{'s' if quiet > 1 else ''})"))
            quiet = 0
        line = Text(f"{day:%Y-%m-%d}  ")
        line.append(cells, style="cyan" if styled else "")
        line.append(f"  {total:7,}")
        out.append(line)
    return out


def _day_rows(timeline: pl.DataFrame, peak: int) -> pl.DataFrame:
    """One row per day: 24 block characters (blank for a quiet hour) and the day's total."""
    grid = timeline.select(
        pl.datetime_range(
            pl.col("hour").min().dt.truncate("1d"),
            pl.col("hour").max().dt.truncate("1d") + pl.duration(hours=23),
            "1h",
        ).alias("hour")
    )
    level = (pl.col("n_requests") * len(BLOCKS) / max(1, peak)).ceil().cast(pl.Int64)
    cell = (
        pl.when(pl.col("n_requests") == 0)
        .then(pl.lit(" "))
        .otherwise(pl.lit(BLOCKS).str.slice(level.clip(1, len(BLOCKS)) - 1, 1))
    )
    return (
        grid.join(timeline, on="hour", how="left")
        .with_columns(pl.col("n_requests").fill_null(0))
        .group_by(pl.col("hour").dt.date().alias("day"), maintain_order=True)
        .agg(cell.str.join("").alias("cells"), pl.col("n_requests").sum().alias("total"))
        .sort("day")
    )


def _templates(ex: Explanation, styled: bool) -> list[Any]:
    t = ex.templates
    if t.height == 0:
        if "prompt" not in ex.columns:
            return [Text("no prompt column in the logs")]
        return [Text("no prompt template is used by two or more members")]
    shown = t.head(TOP_TEMPLATES)
    table = _table(styled)
    table.add_column("requests", justify="right", no_wrap=True)
    table.add_column("members", justify="right", no_wrap=True)
    table.add_column("distinct", justify="right", no_wrap=True)
    table.add_column("template skeleton, then example prompts")
    for r in shown.iter_rows(named=True):
        cell = Text(_clip(r["template"], 80), style="bold" if styled else "")
        for prompt in r["examples"]:
            cell.append("\n  " + _clip(prompt, EXAMPLE_CHARS))
        distinct = r["n_distinct_prompts"]
        table.add_row(
            f"{r['n_requests']:,}",
            f"{r['n_members']:,}",
            "-" if distinct is None else f"{distinct:,}",
            cell,
        )
    note = f"top {shown.height} of {t.height} " if shown.height < t.height else ""
    return [
        table,
        Text(
            f"{note}templates used by two or more members, by requests; a skeleton is a "
            "prompt's opening with names (N), numbers (#) and punctuation masked"
        ),
    ]


def _models(ex: Explanation, styled: bool) -> list[Any]:
    per_day = ex.models
    out: list[Any] = []
    if per_day.height:
        models = (
            per_day.group_by("model")
            .agg(pl.col("n_requests").sum())
            .sort(["n_requests", "model"], descending=[True, False], nulls_last=True)
        )
        top = models.head(TOP_MODELS)["model"]
        other = "(other)" if models.height > TOP_MODELS else None
        named = per_day.with_columns(
            model=pl.when(pl.col("model").is_in(top.implode(), nulls_equal=True))
            .then(pl.col("model").fill_null("(none)"))
            .otherwise(pl.lit(other))
        )
        order = [m if m is not None else "(none)" for m in top] + ([other] if other else [])
        wide = named.pivot(
            on="model", index="day", values="n_requests", aggregate_function="sum"
        ).sort("day")
        table = _table(styled)
        table.add_column("day", no_wrap=True)
        for name in order:
            table.add_column(Text(_visible(name)), justify="right")
        table.add_column("total", justify="right", no_wrap=True)
        for r in wide.iter_rows(named=True):
            counts = [r.get(name) or 0 for name in order]
            table.add_row(
                _day(r["day"]),
                *[f"{c:,}" if c else "" for c in counts],
                f"{sum(counts):,}",
            )
        out.extend([Text("requests per model per day (UTC)"), table])
    elif "model" not in ex.columns:
        out.append(Text("no model column in the logs"))
    for r in ex.new_models.iter_rows(named=True):
        out.append(
            Text(
                f"{_visible(r['model'])} first appeared in the data {_minute(r['released'])} UTC; "
                + (
                    "a member of this cluster was its first user; "
                    if r["cluster_first_use"] == r["released"]
                    else f"the cluster first used it {r['first_lag_hours']:.1f} h later; "
                )
                + f"{r['n_members_within_24h']} of {r['n_members']} members using it started "
                f"within 24 h (median {r['median_lag_hours']:.1f} h); "
                f"{r['share_of_requests']:.0%} of the cluster's requests"
            )
        )
    return out


# ---------------------------------------------------------------------------
# Helpers


def _table(styled: bool) -> Table:
    return Table(box=None, header_style="bold" if styled else "", pad_edge=False)


# Control and format characters (bidi overrides, zero-width marks, tags), line and
# paragraph separators, private and unassigned code points: log text is
# attacker-controlled and must not move the cursor, reorder or hide what is shown.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cn", "Cs"})


def _unsafe(char: str) -> bool:
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def _clip(text: str, limit: int) -> str:
    """One display line of untrusted text: unsafe characters as spaces, cut with an ellipsis."""
    line = " ".join("".join(" " if _unsafe(c) else c for c in text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _visible(text: str) -> str:
    """Untrusted text whole (an id, a model name), its unsafe characters and backslashes
    written as escapes (``\\x1b``, ``\\u202e``, ``\\\\``) so that ids that differ by one
    still show apart."""
    return "".join(
        c.encode("unicode_escape").decode("ascii") if c == "\\" or _unsafe(c) else c for c in text
    )


def _minute(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M}"


def _day(value: datetime | date | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d}"
