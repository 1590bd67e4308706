"""Shared state of one simulation: seeded random streams, value registries, traffic helpers.

Populations allocate IPs, cards, organisations and clients through registries that hand
out integer handles; the final text values (opaque hex ids, dotted IPs) are produced once
when the tables are assembled, so ids never reveal which population made them.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from distill_forensics.simulate import prompts, values
from distill_forensics.simulate.config import (
    M_NEW,
    RELEASE_US,
    US_PER_DAY,
    US_PER_HOUR,
    Mix,
    Scale,
)
from distill_forensics.simulate.timing import grouped_choice

NEVER = np.iinfo(np.int64).max


class IpRegistry:
    """IP addresses handed out as integer handles; text is rendered at the end."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray | pl.Series] = []
        self._size = 0

    def _take(self, n: int) -> np.ndarray:
        idx = np.arange(self._size, self._size + n, dtype=np.int64)
        self._size += n
        return idx

    def add_v4(self, ints: np.ndarray) -> np.ndarray:
        """Register IPv4 addresses (as integers); returns their handles."""
        self._chunks.append(np.asarray(ints, dtype=np.int64))
        return self._take(len(ints))

    def add_text(self, texts: pl.Series) -> np.ndarray:
        """Register addresses already in text form (IPv6, malformed values)."""
        self._chunks.append(texts.cast(pl.String))
        return self._take(len(texts))

    def text(self) -> pl.Series:
        """Text of every registered address, indexed by handle."""
        parts = [
            c if isinstance(c, pl.Series) else values.ipv4_text(c) for c in self._chunks if len(c)
        ]
        return (
            pl.concat([p.alias("ip") for p in parts]) if parts else pl.Series("ip", [], pl.String)
        )


class ClientRegistry:
    """User-agent / TLS pairs, deduplicated."""

    def __init__(self) -> None:
        self._clients: list[values.Client] = []
        self._index: dict[tuple[str, str], int] = {}

    def add(self, client: values.Client) -> int:
        """Handle of ``client``, registering it on first use."""
        key = (client.ua, client.tls)
        if key not in self._index:
            self._index[key] = len(self._clients)
            self._clients.append(client)
        return self._index[key]

    def add_many(self, clients: Sequence[values.Client]) -> np.ndarray:
        """Handles of several clients."""
        return np.array([self.add(c) for c in clients], dtype=np.int64)

    def ua(self) -> pl.Series:
        """User-agent text by handle."""
        return pl.Series("user_agent", [c.ua for c in self._clients], dtype=pl.String)

    def tls(self) -> pl.Series:
        """TLS fingerprint text by handle."""
        return pl.Series("tls_fingerprint", [c.tls for c in self._clients], dtype=pl.String)


class CardRegistry:
    """Payment cards: one handle per distinct card, with its issuer BIN."""

    def __init__(self) -> None:
        self._bins: list[pl.Series] = []
        self._size = 0

    def new(self, bins: pl.Series) -> np.ndarray:
        """Register one new card per BIN given; returns their handles."""
        self._bins.append(bins.cast(pl.String))
        idx = np.arange(self._size, self._size + len(bins), dtype=np.int64)
        self._size += len(bins)
        return idx

    def __len__(self) -> int:
        return self._size

    def bins(self) -> pl.Series:
        """BIN of every card, by handle."""
        return pl.concat(self._bins) if self._bins else pl.Series([], dtype=pl.String)


class Counter:
    """Hands out consecutive integer handles (organisations, API keys)."""

    def __init__(self) -> None:
        self.size = 0

    def new(self, n: int) -> np.ndarray:
        """``n`` fresh handles."""
        idx = np.arange(self.size, self.size + n, dtype=np.int64)
        self.size += n
        return idx


@dataclass
class Part:
    """Accounts and requests of one population or campaign, with local account indices.

    ``accounts`` columns: created_us, email, card (handle or -1), country, signup_ip
    (handle), org (handle or -1), group_id, group_kind, is_attack.
    """

    accounts: pl.DataFrame
    acct: np.ndarray
    ts: np.ndarray
    ip: np.ndarray
    client: np.ndarray
    model: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    prompt: pl.Series
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_requests(self) -> int:
        """Number of requests in the part."""
        return len(self.acct)


class World:
    """Random streams and registries shared by every population of one simulation."""

    def __init__(self, scale: Scale, mix: Mix, seed: int) -> None:
        self.scale = scale
        self.mix = mix
        self.seed = seed
        self.ips = IpRegistry()
        self.clients = ClientRegistry()
        self.cards = CardRegistry()
        self.orgs = Counter()
        self._proxy_pool: np.ndarray | None = None
        self._cgnat: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        common = values.common_clients()
        self.common = self.clients.add_many(common)
        self.common_family = np.array([c.family for c in common])
        self.niche = self.clients.add_many(values.NICHE_CLIENTS)
        self.rare = self.clients.add(values.RARE_CLIENT)

    def rng(self, stream: str) -> np.random.Generator:
        """An independent generator per named stream, so populations do not disturb each
        other: the benign traffic is the same whichever campaign mix is chosen."""
        key = zlib.crc32(stream.encode())
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(key,)))

    def proxy_pool(self) -> np.ndarray:
        """Exit IPs of a commercial proxy service (datacenter /24s of many providers)."""
        if self._proxy_pool is None:
            rng = self.rng("proxy-pool")
            n = self.scale.proxy_pool
            n_subnets = max(8, n // 6)
            subnets = values.cloud_subnets(rng, n_subnets)
            hosts = rng.integers(2, 254, n)
            ips = subnets[rng.integers(0, n_subnets, n)] + hosts
            self._proxy_pool = self.ips.add_v4(np.unique(ips))
        return self._proxy_pool

    def cgnat_pools(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mobile carriers' CGNAT egress pools, two regional pools per carrier.

        Returns (carrier index per pool, pool size, IP handles padded to pools x max size).
        """
        if self._cgnat is None:
            rng = self.rng("cgnat-pools")
            carriers, pools = [], []
            for ci, carrier in enumerate(values.CARRIERS):
                for _ in range(2):
                    a, b = carrier.blocks[int(rng.integers(len(carrier.blocks)))]
                    c = int(rng.integers(0, 256))
                    size = int(rng.integers(10, 41))
                    hosts = np.sort(rng.choice(np.arange(1, 255), size, replace=False))
                    pools.append(self.ips.add_v4(values.ipv4(a, b, c, hosts)))
                    carriers.append(ci)
            sizes = np.array([len(p) for p in pools])
            table = np.zeros((len(pools), sizes.max()), dtype=np.int64)
            for i, p in enumerate(pools):
                table[i, : len(p)] = p
            self._cgnat = (np.array(carriers), sizes, table)
        return self._cgnat

    def clients_of(self, families: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """Common client handles and weights, by family share (desktop/mobile/sdk)."""
        idx, w = [], []
        for fam, share in families.items():
            members = self.common[self.common_family == fam]
            # Newer versions are more popular: weight falls along the catalogue order.
            ww = 1.0 / np.arange(1, len(members) + 1) ** 0.5
            idx.append(members)
            w.append(share * ww / ww.sum())
        return np.concatenate(idx), np.concatenate(w)


# --------------------------------------------------------------------------- traffic helpers


def per_account_choice(
    rng: np.random.Generator, n_acct: int, options: np.ndarray, weights: np.ndarray, k: int = 2
) -> np.ndarray:
    """``k`` option handles per account (column 0 is the account's usual one)."""
    w = weights / weights.sum()
    return options[rng.choice(len(options), size=(n_acct, k), p=w)]


def pick_per_request(
    rng: np.random.Generator, table: np.ndarray, acct: np.ndarray, usual: float
) -> np.ndarray:
    """Per request, the account's usual value (column 0) with probability ``usual``,
    otherwise one of its other columns."""
    n = len(acct)
    if table.shape[1] == 1:
        return table[acct, 0]
    other = 1 + (rng.random(n) * (table.shape[1] - 1)).astype(np.int64)
    col = np.where(rng.random(n) < usual, 0, other)
    return table[acct, col]


def adoption(
    rng: np.random.Generator, n_acct: int, early: float, gradual: float
) -> tuple[np.ndarray, np.ndarray]:
    """When each account starts using frontier-4 and what share of its traffic moves.

    ``early``: switch within 24 h of release; ``gradual``: over the following days; the
    rest never adopt in the window.
    """
    u = rng.random(n_acct)
    when = np.full(n_acct, NEVER, dtype=np.int64)
    share = np.zeros(n_acct)
    e = u < early
    g = (u >= early) & (u < early + gradual)
    when[e] = RELEASE_US + (rng.random(int(e.sum())) * 24 * US_PER_HOUR).astype(np.int64)
    share[e] = rng.uniform(0.5, 0.98, int(e.sum()))
    when[g] = RELEASE_US + (rng.exponential(3.0, int(g.sum())) * US_PER_DAY).astype(np.int64)
    share[g] = rng.uniform(0.1, 0.7, int(g.sum()))
    return when, share


def choose_models(
    rng: np.random.Generator,
    acct: np.ndarray,
    ts: np.ndarray,
    mix: np.ndarray,
    adopt_us: np.ndarray,
    new_share: np.ndarray,
) -> np.ndarray:
    """Model index per request from the account's mix, with frontier-4 after adoption."""
    n = len(acct)
    cum = np.cumsum(mix, axis=1)[acct]
    u = rng.random(n)
    m = np.minimum((u[:, None] > cum).sum(axis=1), mix.shape[1] - 1)
    new = (ts >= np.maximum(adopt_us[acct], RELEASE_US)) & (rng.random(n) < new_share[acct])
    return np.where(new, M_NEW, m).astype(np.int8)


def render(
    rng: np.random.Generator,
    kind: np.ndarray,
    generators: Sequence[prompts.PromptGen],
    null_share: float = 0.03,
) -> pl.Series:
    """Prompts for requests whose generator index is ``kind``."""
    raw = prompts.render_assigned(rng, kind, generators)
    return prompts.finish(raw, rng, null_share)


def tokens(
    rng: np.random.Generator,
    profile: np.ndarray,
    profiles: Sequence[str],
    prompt: pl.Series,
    model: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Input and output token counts from the prompt length, kind profile and model."""
    table = [prompts.TOKENS[p] for p in profiles]
    ctx_m = np.log(np.array([t.context for t in table]))[profile]
    ctx_s = np.array([t.context_sigma for t in table])[profile]
    out_m = np.log(np.array([t.output for t in table]))[profile]
    out_s = np.array([t.output_sigma for t in table])[profile]
    n = len(profile)
    chars = prompt.str.len_chars().fill_null(240).to_numpy().astype(np.int64)
    ctx = np.exp(ctx_m + ctx_s * rng.standard_normal(n))
    inp = np.maximum(1, chars // 4 + ctx.astype(np.int64))
    out = np.exp(out_m + out_s * rng.standard_normal(n)) * prompts.MODEL_OUTPUT_FACTOR[model]
    out = np.clip(out, 1, 32_000).astype(np.int64)
    return np.minimum(inp, 200_000), out


def account_frame(
    created_us: np.ndarray,
    email: pl.Series,
    card: np.ndarray,
    country: pl.Series,
    signup_ip: np.ndarray,
    org: np.ndarray,
    group_id: pl.Series,
    group_kind: str,
    is_attack: bool,
) -> pl.DataFrame:
    """The per-population account table in the layout :class:`Part` expects."""
    n = len(created_us)
    return pl.DataFrame(
        {
            "created_us": pl.Series(created_us, dtype=pl.Int64),
            "email": email.cast(pl.String),
            "card": pl.Series(card, dtype=pl.Int64),
            "country": country.cast(pl.String),
            "signup_ip": pl.Series(signup_ip, dtype=pl.Int64),
            "org": pl.Series(org, dtype=pl.Int64),
            "group_id": group_id.cast(pl.String),
            "group_kind": pl.Series([group_kind] * n, dtype=pl.String),
            "is_attack": pl.Series([is_attack] * n, dtype=pl.Boolean),
        }
    )


def group_ids(kind: str, group: np.ndarray) -> pl.Series:
    """``kind-0007`` style group ids from integer group numbers."""
    num = pl.Series(group).cast(pl.String).str.zfill(4)
    return pl.select(pl.concat_str([pl.lit(kind + "-"), num])).to_series().alias("group_id")


def lognormal_counts(
    rng: np.random.Generator, n: int, median: float, sigma: float, lo: int = 1, hi: int = 1_000_000
) -> np.ndarray:
    """Heavy-tailed integer request counts."""
    x = rng.lognormal(np.log(max(median, 1e-3)), sigma, n)
    return np.clip(np.round(x), lo, hi).astype(np.int64)


Kind = tuple[prompts.PromptGen, str]
"""A prompt generator with the name of its token profile."""


def per_request_choice(rng: np.random.Generator, probs: np.ndarray, acct: np.ndarray) -> np.ndarray:
    """Per request, a category drawn from its account's row of ``probs`` (accounts x k).

    Searches one flattened table of cumulative rows, so memory stays O(accounts x k)
    however many requests there are.
    """
    return grouped_choice(rng, probs, acct)


def make_part(
    rng: np.random.Generator,
    accounts: pl.DataFrame,
    acct: np.ndarray,
    ts: np.ndarray,
    ip: np.ndarray,
    client: np.ndarray,
    kind: np.ndarray,
    kinds: Sequence[Kind],
    model: np.ndarray,
    null_share: float = 0.03,
    meta: dict[str, Any] | None = None,
) -> Part:
    """Render prompts and token counts for finished request arrays and wrap them up."""
    prompt = render(rng, kind, [g for g, _ in kinds], null_share)
    profiles = [p for _, p in kinds]
    inp, out = tokens(rng, kind, profiles, prompt, model)
    return Part(
        accounts=accounts,
        acct=acct.astype(np.int64),
        ts=ts.astype(np.int64),
        ip=ip.astype(np.int64),
        client=client.astype(np.int64),
        model=model.astype(np.int8),
        input_tokens=inp,
        output_tokens=out,
        prompt=prompt,
        meta=meta or {},
    )
