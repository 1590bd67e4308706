"""Speed and memory of ``cluster`` at 1M, 4M and 16M requests, beside the I/O floor.

For each size (simulator scales ``small``, ``seed`` and ``large``, cached under
``benchmarks/.cache``) and each layout (one Parquet file, daily Parquet files in
hive folders, one CSV file) it runs, each in a fresh process so peak RSS is its own:

- the tool end to end, timed per stage: read+extract (one streaming pass: rows are
  read, parsed and aggregated together), link, cluster, score, write;
- the floor: a bare polars scan of exactly the columns the tool reads plus one
  group-by of account by each linkage attribute, the least work any tool reading
  these rows must do.

It prints wall time, peak RSS, the ratio tool / floor and the per-row cost growth
from the smallest to the largest size, then (``--x4``) extraction alone over the
largest logs repeated four times across daily files, to show that extraction
memory does not grow with rows, and (``--commands``) the investigation commands
an analyst runs on the largest logs next (``explain`` of the top cluster, the whole
``graph``, ``indicators`` with its STIX bundle) beside ``cluster``, each as the
command line runs it, with its wall time and peak RSS. The table is appended to
``benchmarks/RESULTS.md``.

    python benchmarks/scale.py                     # 1M and 4M, Parquet and daily
    python benchmarks/scale.py --sizes small,seed,large --csv --x4
    python benchmarks/scale.py --sizes large --no-daily --repeat 3
    python benchmarks/scale.py --sizes large --no-daily --commands

Each layout's files are read once before it is measured, so every run, the
tool's first one included, reads its input from the page cache.

With ``--repeat N`` the tool and the floor run N times each, in turn; the table
shows the run of median wall time of each (peak RSS: the highest of the runs)
and, in a last column, each pair of runs' ratio, so the spread the machine adds
is on record beside the median.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# isort: off
# The package loads before polars, as it does in the CLI: it sets polars'
# allocator options (distill_forensics.memory). The floor runs with them too.
import distill_forensics  # noqa: F401

# isort: on
import click
import polars as pl

from distill_forensics.read import _expand  # the tool's own file discovery

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

CACHE = HERE / ".cache"
RESULTS = HERE / "RESULTS.md"
SEED = 11

LOG_COLUMNS = [
    "timestamp",
    "account_id",
    "org_id",
    "ip",
    "user_agent",
    "tls_fingerprint",
    "model",
    "input_tokens",
    "output_tokens",
    "prompt",
]
LINK_ATTRIBUTES = ["ip", "user_agent", "tls_fingerprint", "prompt", "model"]


def dataset(scale: str) -> Path:
    """Simulated logs of one scale, generated once."""
    out = CACHE / f"scale-{scale}"
    if not (out / "logs.parquet").exists():
        from distill_forensics.simulate import simulate

        simulate(out, scale=scale, seed=SEED, mix="default", fmt="parquet")
    return out


def daily(scale: str) -> Path:
    """The same logs split into one Parquet file per day in hive folders."""
    src = dataset(scale)
    out = src / "daily"
    if not out.exists():
        tmp = src / "daily.tmp"
        logs = pl.scan_parquet(src / "logs.parquet").with_columns(day=pl.col("timestamp").dt.date())
        days = logs.select(pl.col("day").unique().sort()).collect().to_series().to_list()
        for day in days:
            folder = tmp / f"day={day}"
            folder.mkdir(parents=True, exist_ok=True)
            logs.filter(pl.col("day") == day).drop("day").sink_parquet(folder / "part.parquet")
        tmp.rename(out)
    return out


def csv(scale: str) -> Path:
    """The same logs as one CSV file."""
    src = dataset(scale)
    out = src / "logs.csv"
    if not out.exists():
        pl.scan_parquet(src / "logs.parquet").sink_csv(src / "logs.csv.tmp")
        (src / "logs.csv.tmp").rename(out)
    return out


def repeated(scale: str, times: int = 4) -> Path:
    """The daily files of ``scale`` repeated ``times`` times (hard links, not copies)."""
    src = daily(scale)
    out = src.parent / f"daily_x{times}"
    if not out.exists():
        for k in range(times):
            for part in sorted(src.glob("day=*/part.parquet")):
                target = out / f"copy={k}" / part.parent.name / "part.parquet"
                target.parent.mkdir(parents=True, exist_ok=True)
                # Hard links: distinct files to the reader (it reads a path once),
                # no extra disk.
                os.link(part, target)
    return out


# --------------------------------------------------------------------------- worker


def _worker(mode: str, logs: str, accounts: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    out: dict[str, Any] = {}
    if mode == "floor":
        files = [f.path for f in _expand([logs])]
        scans = [
            (pl.scan_parquet(f) if f.suffix == ".parquet" else pl.scan_csv(f)).select(LOG_COLUMNS)
            for f in files
        ]
        lf = pl.concat(scans, how="vertical_relaxed")
        queries = [
            lf.group_by("account_id", a).agg(pl.len()).select(pl.len()) for a in LINK_ATTRIBUTES
        ]
        queries.append(pl.scan_parquet(accounts).group_by("account_id").agg(pl.len()))
        pl.collect_all(queries)
        out["rows"] = int(lf.select(pl.len()).collect().item())
    elif mode == "extract":
        from distill_forensics import extract, read_logs

        timings: dict[str, float] = {}
        t = time.perf_counter()
        src = read_logs([logs], accounts=accounts)
        timings["read"] = time.perf_counter() - t
        t = time.perf_counter()
        ev = extract(src)
        timings["extract"] = time.perf_counter() - t
        out["rows"] = ev.rows
        out["timings"] = timings
    else:
        from distill_forensics import run_cluster, write_table

        result = run_cluster([logs], accounts)
        t = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            write_table(result.clusters, Path(tmp) / "report.csv")
            write_table(result.members, Path(tmp) / "members.parquet")
        result.timings["write"] = time.perf_counter() - t
        out["rows"] = result.evidence.rows
        out["timings"] = result.timings
        out["suspected"] = int(result.suspected.height)
    out["wall"] = time.perf_counter() - t0
    out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def measure(mode: str, logs: Path, accounts: Path) -> dict[str, Any]:
    """Run one measurement in a fresh process and return its JSON report."""
    cmd = [sys.executable, __file__, "--worker", mode, str(logs), str(accounts)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} on {logs} failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def warm(*paths: Path) -> None:
    """Read every byte of the files the tool reads for ``paths`` (files or folders) once,
    so that the first run measured reads its input from the page cache like the runs
    after it."""
    for found in _expand(paths):
        with found.path.open("rb") as handle:
            while handle.read(1 << 24):
                pass


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median wall time (the lower middle one of an even number)."""
    ranked = sorted(runs, key=lambda r: r["wall"])
    return ranked[(len(ranked) - 1) // 2]


# --------------------------------------------------------------------------- commands

COMMANDS = ("cluster", "explain", "graph", "indicators")
"""The commands ``--commands`` runs, in this order (explain takes cluster's top id)."""


def _command_args(name: str, logs: Path, accounts: Path, out: Path, top: str) -> list[str]:
    inputs = [str(logs), "--accounts", str(accounts), "--quiet"]
    if name == "cluster":
        return ["cluster", *inputs, "-o", str(out / "report.csv")]
    if name == "explain":
        return ["explain", *inputs, "--cluster", top, "--format", "json"]
    if name == "graph":
        return ["graph", *inputs, "-o", str(out / "net.graphml")]
    return [
        "indicators",
        *inputs,
        "--hash-key",
        "benchmark key",
        "-o",
        str(out / "iocs.csv"),
        "--stix-output",
        str(out / "bundle.json"),
    ]


def run_command(args: list[str]) -> dict[str, Any]:
    """Run ``distill-forensics ARGS`` as the command line does, in a fresh process: its
    wall time and its own peak RSS (stdout is discarded)."""
    code = "from distill_forensics.cli import main; main()"
    t = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"distill-forensics {shlex.join(args)} failed: {stderr[-2000:]}")
    return {"wall": wall, "max_rss_mb": usage.ru_maxrss / 1024}


def measure_commands(scale: str) -> list[str]:
    """Table lines: each of ``COMMANDS`` on the logs of ``scale``."""
    base = dataset(scale)
    logs, accounts = base / "logs.parquet", base / "accounts.parquet"
    warm(logs, accounts)
    lines = [
        f"\nInvestigation commands on `{scale}` (one Parquet file):\n",
        "| command | wall s | peak RSS MB |",
        "|---|---|---|",
    ]
    top = ""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for name in COMMANDS:
            args = _command_args(name, logs, accounts, out, top)
            got = run_command(args)
            if name == "cluster":
                report = pl.read_csv(out / "report.csv")
                top = str(report.filter(pl.col("suspected")).get_column("cluster_id")[0])
            shown = f"explain {top}" if name == "explain" else name
            lines.append(f"| {shown} | {got['wall']:.1f} | {got['max_rss_mb']:,.0f} |")
    return lines


# --------------------------------------------------------------------------- driver


@click.command()
@click.option(
    "--sizes",
    default="small,seed",
    show_default=True,
    help="Simulator scales: small ~1M, seed ~4M, large ~16M requests.",
)
@click.option("--daily/--no-daily", "with_daily", default=True, show_default=True)
@click.option("--csv/--no-csv", "with_csv", default=False, show_default=True)
@click.option(
    "--x4/--no-x4",
    default=False,
    show_default=True,
    help="Also extract the largest size repeated four times across daily files.",
)
@click.option(
    "--repeat",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Runs of the tool and of the floor per layout, taken in turn; the table shows "
    "the median run of each and every run's ratio.",
)
@click.option(
    "--commands/--no-commands",
    default=False,
    show_default=True,
    help="Also run cluster, explain, graph and indicators on the largest size.",
)
@click.option("--record/--no-record", default=True, show_default=True)
@click.option("--worker", nargs=3, type=str, default=None, hidden=True)
def main(
    sizes: str,
    with_daily: bool,
    with_csv: bool,
    x4: bool,
    repeat: int,
    commands: bool,
    record: bool,
    worker: tuple[str, str, str] | None,
) -> None:
    """Print the speed and memory table of ``cluster`` beside the floor."""
    if worker:
        print(json.dumps(_worker(*worker)))
        return
    scales = [s.strip() for s in sizes.split(",") if s.strip()]
    out = RESULTS.open("a") if record else None
    if out:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        cmd = "python benchmarks/scale.py " + shlex.join(sys.argv[1:])
        out.write(f"\n## Scale, {stamp}\n\nCommand: `{cmd.strip()}` ({os.cpu_count()} cores)\n\n")

    def emit(line: str) -> None:
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    lines = [
        "| logs | layout | rows | tool s | floor s | tool/floor | read+extract | link | "
        "cluster | score | write | peak RSS MB (tool) | peak RSS MB (floor) | suspected |"
        + (" each run's tool/floor |" if repeat > 1 else ""),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        + ("---|" if repeat > 1 else ""),
    ]
    for line in lines:
        emit(line)
    per_row: dict[str, float] = {}
    for scale in scales:
        base = dataset(scale)
        accounts = base / "accounts.parquet"
        layouts = [("parquet", base / "logs.parquet")]
        if with_daily:
            layouts.append(("daily parquet", daily(scale)))
        if with_csv:
            layouts.append(("csv", csv(scale)))
        for layout, path in layouts:
            # Tool and floor in turn, so a slow spell of the machine falls on both;
            # the input is read once first, so neither pays for the disk alone.
            warm(path, accounts)
            tools, floors = [], []
            for _ in range(repeat):
                tools.append(measure("tool", path, accounts))
                floors.append(measure("floor", path, accounts))
            tool, floor = _median_run(tools), _median_run(floors)
            ratios = [t["wall"] / f["wall"] for t, f in zip(tools, floors, strict=True)]
            tm = tool["timings"]
            rows, wall, fwall = tool["rows"], tool["wall"], floor["wall"]
            peak = max(t["max_rss_mb"] for t in tools)
            floor_peak = max(f["max_rss_mb"] for f in floors)
            if layout == "parquet":
                per_row[scale] = wall / rows
            lines.append(
                f"| {scale} | {layout} | {rows:,} | {wall:.1f} | {fwall:.1f} | "
                f"{wall / fwall:.2f} | "
                + f"{tm.get('read', 0.0) + tm.get('extract', 0.0):.1f} | "
                + " | ".join(f"{tm.get(k, 0.0):.1f}" for k in ("link", "cluster", "score", "write"))
                + f" | {peak:,.0f} | {floor_peak:,.0f} | {tool['suspected']} |"
                + (f" {', '.join(f'{r:.2f}' for r in ratios)} |" if repeat > 1 else "")
            )
            emit(lines[-1])
    if len(per_row) >= 2:
        first, last = scales[0], scales[-1]
        growth = per_row[last] / per_row[first]
        emit(
            f"\nPer-row cost growth {first} -> {last}: {growth:.2f}x "
            f"({per_row[first] * 1e6:.2f} -> {per_row[last] * 1e6:.2f} us/row)"
        )
    if x4:
        scale = scales[-1]
        accounts = dataset(scale) / "accounts.parquet"
        warm(daily(scale), accounts)  # (the copies are hard links to these)
        one = measure("extract", daily(scale), accounts)
        four = measure("extract", repeated(scale), accounts)
        emit(
            f"\nExtraction only, daily files of `{scale}`: {one['rows']:,} rows "
            f"{one['wall']:.1f} s peak {one['max_rss_mb']:,.0f} MB; "
            f"repeated x4: {four['rows']:,} rows {four['wall']:.1f} s "
            f"peak {four['max_rss_mb']:,.0f} MB"
        )
    if commands:
        for line in measure_commands(scales[-1]):
            emit(line)
    if out:
        out.close()


if __name__ == "__main__":
    main()
