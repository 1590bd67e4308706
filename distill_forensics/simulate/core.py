"""Generate a full simulated dataset and write it to disk.

:func:`generate` builds every population and campaign, assigns opaque ids, injects a few
malformed log rows and returns polars tables; :func:`simulate` writes them as parquet or
CSV with fixed writer settings, so the same seed, scale and mix give byte-identical files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from distill_forensics.errors import InputError
from distill_forensics.simulate import benign, campaigns, values
from distill_forensics.simulate.config import (
    BENIGN_KINDS,
    MODELS,
    resolve_format,
    resolve_mix,
    resolve_scale,
)
from distill_forensics.simulate.world import Part, World

#: Called as ``progress(description, steps_done, steps_total)``.
ProgressCallback = Callable[[str, int, int], None]

#: Share of log rows damaged on purpose so readers' malformed-row handling gets exercised.
MALFORMED_SHARE = 0.0005
_BAD_IPS = ("unknown", "-")

TRUTH_SCHEMA: dict[str, pl.DataType] = {
    "account_id": pl.String(),
    "group_id": pl.String(),
    "group_kind": pl.String(),
    "is_attack": pl.Boolean(),
}


@dataclass
class SimulatedData:
    """The three tables of a simulation plus a summary of each planted campaign."""

    logs: pl.DataFrame
    accounts: pl.DataFrame
    truth: pl.DataFrame
    campaigns: list[dict[str, Any]] = field(default_factory=list)
    malformed_rows: int = 0


def generate(
    scale: str = "small",
    seed: int = 0,
    mix: str = "default",
    progress: ProgressCallback | None = None,
) -> SimulatedData:
    """Simulate 30 days of API traffic with planted distillation campaigns.

    >>> data = generate("tiny", seed=1)  # doctest: +SKIP
    >>> data.truth.group_by("group_kind").len()  # doctest: +SKIP
    """
    sc = resolve_scale(scale)
    mx = resolve_mix(mix)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    world = World(sc, mx, seed)
    sizes = benign.benign_sizes(sc)
    steps: list[tuple[str, Callable[[], Part]]] = []
    for kind in BENIGN_KINDS:
        steps.append((kind, _bind(benign.BUILDERS[kind], world, sizes[kind])))
    for kind in mx.campaigns:
        steps.append((kind, _bind_campaign(kind, world, sc.attack_size(kind))))
    total = len(steps) + 1
    parts: list[Part] = []
    for i, (label, build) in enumerate(steps):
        if progress:
            progress(f"simulating {label}", i, total)
        parts.append(build())
    if progress:
        progress("assembling tables", len(steps), total)
    data = _assemble(world, parts)
    if progress:
        progress("done", total, total)
    return data


def _bind(builder: Callable[[World, int], Part], world: World, n: int) -> Callable[[], Part]:
    return lambda: builder(world, n)


def _bind_campaign(kind: str, world: World, n: int) -> Callable[[], Part]:
    return lambda: campaigns.BUILDERS[kind](world, n, world.mix)


def _ids(rng: np.random.Generator, n: int, prefix: str, width: int) -> tuple[pl.Series, np.ndarray]:
    """Opaque random ids ``prefix + hex``: text by handle and each handle's sort rank."""
    ints = values.unique_random_ints(rng, n, 4 * width)
    text = pl.Series(values.hex_strings(ints, width), dtype=pl.String)
    text = pl.select(pl.concat_str([pl.lit(prefix), text])).to_series()
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(ints, kind="stable")] = np.arange(n)
    return text, rank


def _nullable_gather(texts: pl.Series, idx: np.ndarray) -> pl.Series:
    """``texts[idx]`` with null wherever ``idx`` is negative."""
    s = pl.Series(idx, dtype=pl.Int64)
    return texts.gather(pl.select(pl.when(s >= 0).then(s)).to_series())


def _assemble(world: World, parts: list[Part]) -> SimulatedData:
    """Join the parts into the three tables: ids, keys, damaged rows, sorting.

    Empties ``parts`` on the way to free memory.
    """
    rng = world.rng("assemble")
    acc = pl.concat([p.accounts for p in parts])
    n_acct = acc.height
    offsets = np.cumsum([0] + [p.accounts.height for p in parts])[:-1]

    acct_text, acct_rank = _ids(rng, n_acct, "acct_", 12)
    org_text, _ = _ids(rng, max(world.orgs.size, 1), "org_", 12)
    card_text, _ = _ids(rng, max(len(world.cards), 1), "pm_", 16)
    n_keys = rng.choice([1, 2, 3], n_acct, p=[0.7, 0.22, 0.08])
    key_first = np.concatenate([[0], np.cumsum(n_keys)[:-1]])
    key_text, _ = _ids(rng, int(n_keys.sum()), "key_", 16)

    acct = np.concatenate([p.acct + o for p, o in zip(parts, offsets, strict=True)])
    ts = np.concatenate([p.ts for p in parts])
    ip = np.concatenate([p.ip for p in parts])
    client = np.concatenate([p.client for p in parts])
    model = np.concatenate([p.model for p in parts])
    inp = np.concatenate([p.input_tokens for p in parts])
    out = np.concatenate([p.output_tokens for p in parts])
    prompt = pl.concat([p.prompt.alias("prompt") for p in parts], rechunk=False)
    metas = [{**p.meta, "requests": p.n_requests} for p in parts if p.meta]
    # Drop the per-part copies now: at the large scale they are gigabytes.
    parts.clear()
    n_req = len(acct)
    # Keys: most traffic on an account's first key.
    key_pick = np.where(rng.random(n_req) < 0.8, 0, rng.integers(0, 3, n_req)) % n_keys[acct]
    key = key_first[acct] + key_pick
    org = acc["org"].to_numpy()[acct]

    # A few damaged rows: unparseable addresses or a lost account id.
    n_bad = int(round(n_req * MALFORMED_SHARE))
    bad_rows = rng.choice(n_req, n_bad, replace=False) if n_bad else np.zeros(0, np.int64)
    bad_kind = rng.integers(0, 4, n_bad)
    bad_ip = bad_rows[bad_kind < 3]
    k = len(bad_ip)
    invalid = (
        pl.DataFrame(
            {
                f"o{i}": pl.Series(rng.integers(lo, 1000 if i == 0 else 256, k)).cast(pl.String)
                for i, lo in enumerate((256, 0, 0, 0))
            }
        )
        .select(pl.concat_str(pl.all(), separator="."))
        .to_series()
    )
    words = pl.Series(list(_BAD_IPS), dtype=pl.String)
    kinds = pl.Series(bad_kind[bad_kind < 3])
    bad_text = pl.select(
        pl.when(kinds == 2).then(invalid).otherwise(words.gather(kinds.clip(0, 1)))
    ).to_series()
    ip[bad_ip] = world.ips.add_text(bad_text)
    who = acct.copy()
    who[bad_rows[bad_kind == 3]] = -1
    rank = np.where(who >= 0, acct_rank[acct], -1)

    order = np.lexsort((rank, ts))
    prompt = prompt.gather(order)
    ip_text = world.ips.text()
    models = pl.Series(list(MODELS), dtype=pl.String)
    logs = pl.DataFrame(
        {
            "timestamp": pl.Series(ts[order]).cast(pl.Datetime("us", "UTC")),
            "account_id": _nullable_gather(acct_text, who[order]),
            "org_id": _nullable_gather(org_text, org[order]),
            "api_key_id": key_text.gather(key[order]),
            "ip": ip_text.gather(ip[order]),
            "user_agent": world.clients.ua().gather(client[order]),
            "tls_fingerprint": world.clients.tls().gather(client[order]),
            "model": models.gather(model[order]),
            "input_tokens": pl.Series(inp[order], dtype=pl.Int64),
            "output_tokens": pl.Series(out[order], dtype=pl.Int64),
            "prompt": prompt,
        }
    )
    del prompt

    card = acc["card"].to_numpy()
    accounts = pl.DataFrame(
        {
            "account_id": acct_text,
            "created_at": acc["created_us"].cast(pl.Datetime("us", "UTC")),
            "email": acc["email"],
            "payment_fingerprint": _nullable_gather(card_text, card),
            "card_bin": _nullable_gather(world.cards.bins(), card),
            "billing_country": acc["country"],
            "signup_ip": ip_text.gather(acc["signup_ip"].to_numpy()),
        }
    )
    truth = pl.DataFrame(
        {
            "account_id": acct_text,
            "group_id": acc["group_id"],
            "group_kind": acc["group_kind"],
            "is_attack": acc["is_attack"],
        }
    )
    by_id = np.argsort(acct_rank)
    accounts = accounts[by_id]
    truth = truth[by_id]

    return SimulatedData(logs, accounts, truth, metas, n_bad)


# --------------------------------------------------------------------------- writing


def output_files(fmt: str) -> dict[str, str]:
    """File names written for a format, by table."""
    if fmt == "csv":
        return {"logs": "logs.csv.gz", "accounts": "accounts.csv", "truth": "truth.csv"}
    return {"logs": "logs.parquet", "accounts": "accounts.parquet", "truth": "truth.parquet"}


def write_table(df: pl.DataFrame, path: Path) -> None:
    """Write one table with fixed settings, choosing the format from the file name."""
    name = path.name
    if name.endswith(".parquet"):
        df.write_parquet(
            path, compression="zstd", compression_level=3, statistics=True, row_group_size=262_144
        )
    elif name.endswith((".csv", ".csv.gz")):
        df.write_csv(
            path,
            compression="gzip" if name.endswith(".gz") else "uncompressed",
            datetime_format="%Y-%m-%dT%H:%M:%S%.6fZ",
        )
    else:
        raise InputError(f"cannot tell the format of {path}: use .parquet, .csv or .csv.gz")


def prepare_out_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` if needed and check it is writable (InputError otherwise)."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"cannot write to output directory {out}: {exc.strerror}") from None
    return out


def write(data: SimulatedData, out_dir: str | Path, fmt: str = "parquet") -> dict[str, str]:
    """Write the logs, accounts and truth tables of ``data``; returns the paths by table."""
    resolve_format(fmt)
    out = prepare_out_dir(out_dir)
    tables = {"logs": data.logs, "accounts": data.accounts, "truth": data.truth}
    written = {}
    for table, name in output_files(fmt).items():
        path = out / name
        try:
            write_table(tables[table], path)
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror}") from None
        written[table] = str(path)
    return written


def simulate(
    out_dir: str | Path,
    *,
    scale: str = "small",
    seed: int = 0,
    mix: str = "default",
    fmt: str = "parquet",
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Generate a dataset and write logs, accounts and truth tables into ``out_dir``.

    Returns a summary: file paths, row counts and the planted campaigns. Options are
    checked and the directory is created before any work starts.

    >>> simulate("out", scale="tiny", seed=7)["requests"]  # doctest: +SKIP
    """
    resolve_format(fmt)
    resolve_scale(scale)
    resolve_mix(mix)
    prepare_out_dir(out_dir)
    steps_total = 1

    def generating(description: str, done: int, total: int) -> None:
        # One extra step for writing the files once generation reports it is done.
        nonlocal steps_total
        steps_total = total + 1
        if progress:
            progress("writing files" if done == total else description, done, steps_total)

    data = generate(scale, seed, mix, generating)
    written = write(data, out_dir, fmt)
    if progress:
        progress("done", steps_total, steps_total)
    kinds = data.truth.group_by("group_kind").len().sort("group_kind")
    return {
        "out_dir": str(out_dir),
        "scale": scale,
        "seed": seed,
        "mix": mix,
        "format": fmt,
        "files": written,
        "accounts": data.accounts.height,
        "requests": data.logs.height,
        "attack_accounts": int(data.truth["is_attack"].sum()),
        "malformed_rows": data.malformed_rows,
        "populations": dict(zip(kinds["group_kind"], kinds["len"], strict=True)),
        "campaigns": data.campaigns,
    }
