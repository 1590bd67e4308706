"""Detection quality on simulated traffic, beside three simple peers.

Runs ``distill-forensics``' detector and the peers of ``peers.py`` on several
seeds and tactic mixes of the simulator and prints, per scenario and method:
account-level precision / recall / F1 of the accounts marked suspected, the
worst campaign recall and fragmentation, ranking average precision over
clusters, and false-positive accounts per benign kind. The latest table is
appended to ``benchmarks/RESULTS.md`` with the date and the command.

    python benchmarks/quality.py                    # small scale, 4 scenarios
    python benchmarks/quality.py --scale seed       # the seed scale
    python benchmarks/quality.py --no-fraudar       # skip the slowest peer
"""

from __future__ import annotations

import datetime as dt
import shlex
import sys
import time
from pathlib import Path

import click
import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import peers  # noqa: E402

from distill_forensics.pipeline import run_cluster  # noqa: E402
from distill_forensics.simulate import simulate  # noqa: E402

CACHE = HERE / ".cache"
RESULTS = HERE / "RESULTS.md"

SCENARIOS: list[tuple[int, str]] = [
    (101, "default"),
    (202, "camouflage"),
    (303, "stealth"),
    (404, "hydra-only"),
]


def scenario_dir(scale: str, seed: int, mix: str) -> Path:
    """Simulate once per (scale, seed, mix) and reuse the files afterwards."""
    out = CACHE / f"{scale}-{seed}-{mix}"
    if not (out / "truth.parquet").exists():
        simulate(out, scale=scale, seed=seed, mix=mix, fmt="parquet")
    return out


def average_precision(clusters: pl.DataFrame) -> float:
    """AP of the ranked clusters (score desc), a cluster relevant when most members attack."""
    ranked = clusters.sort(["score", "cluster_id"], descending=[True, False])
    rel = ranked.get_column("relevant").to_list()
    hits, total = 0, 0.0
    for k, r in enumerate(rel, start=1):
        if r:
            hits += 1
            total += hits / k
    return total / hits if hits else 0.0


def evaluate(members: pl.DataFrame, truth: pl.DataFrame) -> dict[str, object]:
    """Quality figures of one method's members frame against the truth table."""
    t = truth.join(
        members.select("account_id", "cluster_id", "score", "suspected"),
        on="account_id",
        how="left",
    ).with_columns(pl.col("suspected").fill_null(False))
    tp = t.filter(pl.col("suspected") & pl.col("is_attack")).height
    fp = t.filter(pl.col("suspected") & ~pl.col("is_attack")).height
    fn = t.filter(~pl.col("suspected") & pl.col("is_attack")).height
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0

    campaigns = (
        t.filter(pl.col("is_attack"))
        .group_by("group_id")
        .agg(
            pl.len().alias("n"),
            pl.col("suspected").mean().alias("recall"),
            pl.col("cluster_id").filter(pl.col("suspected")).n_unique().alias("clusters"),
        )
        .sort("group_id")
    )
    benign = (
        t.filter(~pl.col("is_attack"))
        .group_by("group_kind")
        .agg(pl.len().alias("n"), pl.col("suspected").sum().alias("fp"))
        .with_columns(fp_pct=100 * pl.col("fp") / pl.col("n"))
        .sort("group_kind")
    )
    clusters = (
        t.filter(pl.col("cluster_id").is_not_null())
        .group_by("cluster_id")
        .agg(pl.col("score").first(), (pl.col("is_attack").mean() > 0.5).alias("relevant"))
    )
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "ap": average_precision(clusters),
        "min_campaign_recall": float(campaigns["recall"].min() or 0.0),
        "max_fragments": int(campaigns["clusters"].max() or 0),
        "max_benign_fp_pct": float(benign["fp_pct"].max() or 0.0),
        "campaigns": campaigns,
        "benign": benign,
    }


def _row(name: str, m: dict[str, object], seconds: float) -> str:
    return (
        f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['ap']:.3f} | "
        f"{m['min_campaign_recall']:.3f} | {m['max_fragments']} | "
        f"{m['max_benign_fp_pct']:.2f} | {seconds:.1f} |"
    )


HEADER = (
    "| method | precision | recall | F1 | AP | worst campaign recall | max fragments | "
    "worst benign FP % | seconds |\n|---|---|---|---|---|---|---|---|---|"
)


@click.command()
@click.option("--scale", default="small", show_default=True)
@click.option("--seeds", default=None, help="Comma-separated seeds (default: built-in scenarios).")
@click.option("--mix", "mixes", multiple=True, help="Restrict to these mixes.")
@click.option("--fraudar/--no-fraudar", default=True, show_default=True)
@click.option("--peers/--no-peers", "with_peers", default=True, show_default=True)
@click.option(
    "--record/--no-record",
    default=True,
    show_default=True,
    help="Append the table to benchmarks/RESULTS.md.",
)
@click.option(
    "--detail/--no-detail",
    default=True,
    show_default=True,
    help="Print per-campaign and per-benign-kind tables for the tool.",
)
def main(
    scale: str,
    seeds: str | None,
    mixes: tuple[str, ...],
    fraudar: bool,
    with_peers: bool,
    record: bool,
    detail: bool,
) -> None:
    """Print the quality table of the detector and its peers."""
    scenarios = SCENARIOS
    if seeds:
        chosen = [int(s) for s in seeds.split(",")]
        scenarios = [(s, m) for s in chosen for m in (mixes or ("default",))]
    elif mixes:
        scenarios = [(s, m) for s, m in SCENARIOS if m in mixes]
    lines: list[str] = []
    for seed, mix in scenarios:
        d = scenario_dir(scale, seed, mix)
        truth = pl.read_parquet(d / "truth.parquet")
        lines.append(f"\n### {scale}, seed {seed}, mix {mix} ({truth.height:,} accounts)\n")
        lines.append(HEADER)
        t0 = time.perf_counter()
        result = run_cluster(d / "logs.parquet", d / "accounts.parquet")
        secs = time.perf_counter() - t0
        m = evaluate(result.members, truth)
        lines.append(_row("distill-forensics", m, secs))
        detail_lines = []
        if detail:
            detail_lines.append(
                "\ncampaigns (tool): "
                + ", ".join(
                    f"{r['group_id']} n={r['n']} recall={r['recall']:.3f} clusters={r['clusters']}"
                    for r in m["campaigns"].iter_rows(named=True)  # type: ignore[attr-defined]
                )
            )
            detail_lines.append(
                "benign FP (tool): "
                + ", ".join(
                    f"{r['group_kind']} {r['fp']}/{r['n']} ({r['fp_pct']:.2f}%)"
                    for r in m["benign"].iter_rows(named=True)  # type: ignore[attr-defined]
                )
            )
        if with_peers:
            logs = pl.read_parquet(
                d / "logs.parquet", columns=["account_id", "ip", "tls_fingerprint", "user_agent"]
            )
            logs = logs.filter(pl.col("account_id").is_not_null())
            accounts = pl.read_parquet(d / "accounts.parquet")
            methods = [
                ("peer: CC any IP/card", peers.cc_any),
                ("peer: CC IP/card shared by <=50", peers.cc_rare),
            ]
            if fraudar and peers.has_fraudar():
                methods.append(("peer: FRAUDAR (ugfraud)", peers.fraudar))
            elif fraudar:
                lines.append(
                    "| peer: FRAUDAR (ugfraud) | not installed: pip install -e '.[bench]' |"
                )
            for name, fn in methods:
                t0 = time.perf_counter()
                pm = evaluate(fn(logs, accounts), truth)
                lines.append(_row(name, pm, time.perf_counter() - t0))
        lines.extend(detail_lines)
        print("\n".join(lines[-(len(detail_lines) + 6) :]), flush=True)
    if record:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        cmd = "python benchmarks/quality.py " + shlex.join(sys.argv[1:])
        with RESULTS.open("a") as fh:
            fh.write(f"\n## Quality, {stamp}\n\nCommand: `{cmd.strip()}`\n")
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
