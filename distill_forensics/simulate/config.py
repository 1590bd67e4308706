"""Presets of the simulator: the time window, the models, the scales and the campaign mixes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from distill_forensics.errors import InputError

US_PER_SECOND = 1_000_000
US_PER_HOUR = 3_600 * US_PER_SECOND
US_PER_DAY = 24 * US_PER_HOUR

#: First instant of the simulated window (a Sunday).
WINDOW_START = datetime(2026, 3, 1, tzinfo=UTC)
#: Length of the simulated window.
WINDOW_DAYS = 30
#: Weekday of WINDOW_START, Monday = 0.
WINDOW_START_WEEKDAY = WINDOW_START.weekday()

MODELS: tuple[str, ...] = ("frontier-3", "frontier-3-mini", "frontier-3-reasoning", "frontier-4")
M_BASE, M_MINI, M_REASONING, M_NEW = range(4)
#: frontier-4 becomes available 20 days and 16 hours into the window; no request uses it before.
RELEASE_OFFSET_US = 20 * US_PER_DAY + 16 * US_PER_HOUR
FRONTIER4_RELEASE = datetime(2026, 3, 21, 16, tzinfo=UTC)

START_US = int(WINDOW_START.timestamp()) * US_PER_SECOND
END_US = START_US + WINDOW_DAYS * US_PER_DAY
RELEASE_US = START_US + RELEASE_OFFSET_US

#: Benign population kinds, in the order they are generated.
BENIGN_KINDS: tuple[str, ...] = (
    "individual",
    "company",
    "university",
    "cgnat",
    "ci_benchmark",
    "family",
    "heavy_app",
    "reseller",
)
#: Attack campaign kinds, in the order they are generated.
ATTACK_KINDS: tuple[str, ...] = ("hydra", "residential_proxy", "low_and_slow", "model_pivot")


@dataclass(frozen=True)
class Scale:
    """How many accounts of each population to plant and how busy they are.

    ``volume`` multiplies every benign per-account request rate; attack sizes are
    set per campaign so that attacks stay roughly 10-20% of the accounts.
    """

    name: str
    accounts: int
    volume: float
    hydra: int
    residential_proxy: int
    low_and_slow: int
    model_pivot: int
    proxy_pool: int
    universities: int

    def attack_size(self, kind: str) -> int:
        """Number of accounts planted for one campaign kind."""
        return int(getattr(self, kind))


SCALES: dict[str, Scale] = {
    s.name: s
    for s in (
        Scale("tiny", 1_500, 0.40, 120, 40, 40, 30, 120, 1),
        Scale("sample", 3_000, 0.24, 220, 60, 60, 50, 160, 1),
        Scale("small", 20_000, 1.00, 1_500, 300, 300, 250, 300, 3),
        Scale("seed", 50_000, 1.70, 5_000, 500, 450, 400, 600, 5),
        Scale("large", 120_000, 2.60, 20_000, 800, 600, 600, 1_500, 8),
    )
}


@dataclass(frozen=True)
class Mix:
    """Which campaigns run and how hard they hide.

    ``diverse_share``: fraction of an attack account's prompts drawn from the benign
    prompt generator. ``unique_card_share``: attack accounts paying with a card of
    their own instead of a pooled one. ``fake_org_share``: attack accounts placed in
    a made-up organisation. ``common_client_share``: attack accounts presenting a
    common SDK user agent instead of the campaign's own tooling. ``jitter``: share of
    requests sent outside the campaign's synchronized batch windows.
    """

    name: str
    campaigns: tuple[str, ...]
    diverse_share: float
    unique_card_share: float
    fake_org_share: float
    common_client_share: float
    jitter: float


MIXES: dict[str, Mix] = {
    m.name: m
    for m in (
        Mix("default", ATTACK_KINDS, 0.12, 0.15, 0.10, 0.20, 0.05),
        Mix("camouflage", ATTACK_KINDS, 0.40, 0.40, 0.30, 0.50, 0.25),
        Mix("stealth", ("residential_proxy", "low_and_slow"), 0.20, 0.25, 0.15, 0.30, 0.10),
        Mix("hydra-only", ("hydra",), 0.12, 0.15, 0.10, 0.20, 0.05),
    )
}

FORMATS: tuple[str, ...] = ("parquet", "csv")


def resolve_scale(name: str) -> Scale:
    """Return the preset called ``name`` or raise InputError naming the valid ones."""
    try:
        return SCALES[name]
    except KeyError:
        raise InputError(f"unknown scale {name!r}: choose one of {', '.join(SCALES)}") from None


def resolve_mix(name: str) -> Mix:
    """Return the campaign mix called ``name`` or raise InputError naming the valid ones."""
    try:
        return MIXES[name]
    except KeyError:
        raise InputError(f"unknown mix {name!r}: choose one of {', '.join(MIXES)}") from None


def resolve_format(name: str) -> str:
    """Check an output format name or raise InputError naming the valid ones."""
    if name not in FORMATS:
        raise InputError(f"unknown format {name!r}: choose one of {', '.join(FORMATS)}")
    return name
