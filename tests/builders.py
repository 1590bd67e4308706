"""Small hand-built traffic for stage tests: a few named populations, deterministic."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def campaign(
    n: int, *, tag: str = "att", seed: int = 0, org: str | None = None
) -> tuple[list, list]:
    """Accounts running one CoT template in synchronised sessions, rare TLS, a card pool."""
    rng = np.random.default_rng(seed)
    rows, accounts = [], []
    for a in range(n):
        aid = f"acct_{tag}{a:04d}"
        accounts.append(
            dict(
                account_id=aid,
                created_at=T0 - dt.timedelta(hours=a % 5),
                email=f"{tag}{a}@gmail.com",
                payment_fingerprint=f"pm_{tag}{a % 4}",
                card_bin="411111",
                billing_country="US",
                signup_ip=f"5.6.{a % 250}.{a // 250 + 1}",
            )
        )
        for session in range(10):
            for r in range(5):
                ts = T0 + dt.timedelta(days=session, hours=3, minutes=int(rng.integers(0, 10)))
                rows.append(
                    dict(
                        timestamp=ts,
                        account_id=aid,
                        org_id=org,
                        ip=f"77.{a % 250}.{session}.{r + 1}",
                        user_agent="weird-ua/1",
                        tls_fingerprint=f"t13_{tag}",
                        model="frontier-3",
                        input_tokens=100,
                        output_tokens=900,
                        prompt=f"Solve the following problem and show your full reasoning step by "
                        f"step: {rng.integers(1, 10**6)} apples and {rng.integers(1, 99)} pears",
                    )
                )
    return rows, accounts


def strangers(
    n: int,
    *,
    ip: str = "100.64.0.1",
    tag: str = "cg",
    seed: int = 1,
    org: str | None = None,
    card: str | None = None,
) -> tuple[list, list]:
    """Unrelated accounts behind one shared address (CGNAT) with diverse prompts."""
    rng = np.random.default_rng(seed)
    rows, accounts = [], []
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, 5)) for _ in range(400)]
    for a in range(n):
        aid = f"acct_{tag}{a:04d}"
        accounts.append(
            dict(
                account_id=aid,
                created_at=T0 - dt.timedelta(seconds=int(rng.integers(30 * 86400, 900 * 86400))),
                email=f"{tag}{a}@gmail.com",
                payment_fingerprint=card or f"pm_{tag}{a}",
                card_bin="522222",
                billing_country="DE",
                signup_ip=f"{9 + seed}.{a % 250}.{a // 250}.1",
            )
        )
        for _ in range(int(rng.integers(2, 30))):
            ts = T0 + dt.timedelta(minutes=int(rng.integers(0, 40_000)))
            w = " ".join(rng.choice(words, 9))
            rows.append(
                dict(
                    timestamp=ts,
                    account_id=aid,
                    org_id=org,
                    ip=ip,
                    user_agent="Mozilla/5.0 Chrome",
                    tls_fingerprint="t13_chrome",
                    model="frontier-3",
                    input_tokens=50,
                    output_tokens=200,
                    prompt=f"{w} {rng.integers(0, 10**6)}",
                )
            )
    return rows, accounts


def background(n: int = 800, seed: int = 2) -> tuple[list, list]:
    """Unrelated individuals, each on an address of their own: the crowd every log has."""
    rows, accounts = strangers(n, tag="bg", seed=seed)
    for r in rows:
        k = int(r["account_id"][-4:])
        r["ip"] = f"{80 + k % 40}.{k // 40}.{k % 7}.{k % 200 + 1}"
    return rows, accounts


def write(tmp: Path, *parts: tuple[list, list]) -> tuple[Path, Path]:
    """Write the parts as logs.parquet and accounts.parquet in ``tmp``."""
    rows = [r for p in parts for r in p[0]]
    accounts = [a for p in parts for a in p[1]]
    logs = pl.DataFrame(rows, schema_overrides={"org_id": pl.String}).sort(
        "timestamp", "account_id"
    )
    logs.write_parquet(tmp / "logs.parquet")
    pl.DataFrame(accounts).write_parquet(tmp / "accounts.parquet")
    return tmp / "logs.parquet", tmp / "accounts.parquet"
