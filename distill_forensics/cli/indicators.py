"""``distill-forensics indicators``: shareable indicators of the suspected clusters."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from distill_forensics.cli.common import (
    Status,
    check_outputs,
    handle_errors,
    input_options_or_evidence,
    previous_option,
    quiet_option,
    resolve_inputs,
    threshold_option,
    warn_evidence,
)
from distill_forensics.cli.sources import check_sources, evidence_options, run_inputs
from distill_forensics.errors import InputError
from distill_forensics.indicators import MIN_SHARE, to_stix
from distill_forensics.indicators import indicators as find_indicators
from distill_forensics.write import FORMATS, table_file, to_csv_text, write_files

HASH_KEY_ENV = "DISTILL_FORENSICS_HASH_KEY"
SHORT_KEY = 16
"""Keys shorter than this many bytes can be guessed, and with them the hashed values."""


def _check_table_name(path: str) -> None:
    if not any(path.lower().endswith(ending) for ending in FORMATS):
        raise InputError(
            f"{path}: unknown output file type; name it with one of {', '.join(FORMATS)}"
        )


def _check_stix_name(path: str) -> None:
    if Path(path).suffix.lower() != ".json":
        raise InputError(f"{path}: a STIX bundle is JSON; name it with .json, e.g. bundle.json")


@click.command()
@input_options_or_evidence
@evidence_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Write the indicators here (.csv, .csv.gz, .json, .jsonl/.ndjson or .parquet); "
    "default: CSV on stdout.",
)
@click.option(
    "--stix-output",
    type=click.Path(dir_okay=False),
    help="Also write them as a STIX 2.1 bundle (.json).",
)
@click.option(
    "--hash-key",
    envvar=HASH_KEY_ENV,
    show_envvar=True,
    metavar="KEY",
    help="Key of the HMAC that hides emails, payment fingerprints and account ids; "
    "agree it with partners. Prefer the environment variable: options show in `ps`.",
)
@click.option(
    "--min-share",
    type=click.FloatRange(0, 1),
    default=MIN_SHARE,
    show_default=True,
    help="Share of a value's accounts that must be in suspected clusters (0: every "
    "value two members used).",
)
@threshold_option
@previous_option
@quiet_option
@handle_errors
def indicators(
    logs: tuple[str, ...],
    evidence: str | None,
    window: str | None,
    accounts: str | None,
    column: tuple[str, ...],
    config: str | None,
    time_from: str | None,
    time_to: str | None,
    output: str | None,
    stix_output: str | None,
    hash_key: str | None,
    min_share: float,
    threshold: float,
    previous: str | None,
    quiet: bool,
) -> None:
    """Export the indicators behind suspected clusters for sharing with partners.

    IPs, networks, TLS fingerprints, user agents and prompt templates are shared
    as they are; emails, payment fingerprints and account ids only as keyed
    hashes (hmac-sha256), so a partner with the same key can match its own
    customers without learning yours.

    \b
    Examples:
        export DISTILL_FORENSICS_HASH_KEY='a long secret agreed with partners'
        distill-forensics indicators sample_logs/logs.parquet \\
            --accounts sample_logs/accounts.parquet -o iocs.csv --stix-output bundle.json
        distill-forensics indicators --evidence evidence/ --window 30d -o iocs.csv
    """
    sources = check_sources(
        logs, evidence=evidence, window=window, accounts=accounts, column=column, config=config
    )
    kwargs = resolve_inputs(column, config, time_from, time_to)
    if not hash_key:
        raise InputError(
            f"no hash key; set --hash-key or {HASH_KEY_ENV} "
            "(the key shared with partners for matching hashed identifiers)"
        )
    if output:
        _check_table_name(output)
    if stix_output:
        _check_stix_name(stix_output)
    # Both outputs are checked before the run: a failure leaves neither written.
    check_outputs(
        {"-o": output, "--stix-output": stix_output},
        sources,
        tables=False,
        previous=previous,
    )
    status = Status(quiet)
    if len(hash_key.encode("utf-8")) < SHORT_KEY:
        status.warn(
            f"hash key shorter than {SHORT_KEY} bytes: whoever guesses it can test "
            "emails and account ids against the hashes"
        )
    result = run_inputs(sources, kwargs, threshold=threshold, previous=previous, status=status)
    table = find_indicators(result, hash_key.encode("utf-8"), min_share=min_share)
    files = [table_file(table, output)] if output else []
    if stix_output:
        bundle = to_stix(table)  # timestamps from the data, never from the clock
        text = json.dumps(bundle, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        files.append((Path(stix_output), lambda fh: fh.write(text.encode("utf-8"))))
    write_files(files)  # both or neither
    if not output:
        sys.stdout.write(to_csv_text(table))
    n_clusters = table.get_column("cluster_id").n_unique()
    status.message(f"{table.height:,} indicators for {n_clusters:,} suspected clusters")
    warn_evidence(status, result.evidence)
